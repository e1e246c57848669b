"""KernelBench's 200 problem files as op references: each is discovered, each of its module-level names is
listed as overridable, and with small overrides the worker-side loader runs it at exactly the shape that
the overrides give when the file is run statement by statement here with those names set (a separate
route to the same values), so the bytes timing records are those of the shape recorded."""
import ast
import json
import types

import pytest
import torch

from testenv import REPO
from pipeline import build, config, ops, supervise, timing

KB = REPO.parent / "shared" / "kernelbench"
pytestmark = pytest.mark.skipif(not KB.is_dir(), reason=f"KernelBench problem files not at {KB}")
FILES = sorted(KB.glob("level[12]/*.py"))

# Problems whose reference cannot run with every size scaled to SMALL: a kernel wider than the input
# (41, 45, 62, 76, 80 of level 1), or a LayerNorm over out_channels applied to the last spatial axis
# (3, 34 of level 2, equal only at the original sizes).
TOO_SMALL = {"level1/41", "level1/45", "level1/62", "level1/76", "level1/80", "level2/3", "level2/34"}
SMALL = 8        # every int size of 16 or more becomes this; smaller ints (kernels, strides, dims) stay


def key(path):
    return f"{path.parent.name}/{path.name.split('_')[0]}"


def executed_names(path, overrides=None):
    """The file's module-level values, run one top-level statement at a time; after each assignment that
    binds an overridden name, that name is set to the override (a tuple where the file assigned one)."""
    overrides = overrides or {}
    ns = {"__name__": f"kb_{key(path).replace('/', '_')}"}
    for stmt in ast.parse(path.read_text()).body:
        exec(compile(ast.Module([stmt], []), str(path), "exec"), ns)
        if isinstance(stmt, ast.Assign):
            for n in {e.id for t in stmt.targets for e in ast.walk(t) if isinstance(e, ast.Name)} & set(overrides):
                ns[n] = tuple(overrides[n]) if isinstance(ns[n], tuple) else overrides[n]
    return ns


def values_of(ns):
    return {k: v for k, v in ns.items() if not k.startswith("__")
            and not isinstance(v, (types.ModuleType, types.FunctionType, type))}


def small(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if value < 16 else SMALL
    if isinstance(value, float):
        return value / 2       # keeps the sign: -1.0 becomes -0.5
    if isinstance(value, tuple):
        return [small(v) for v in value]       # a YAML list where the file has a tuple
    return value


def small_overrides(path, names):
    """Every name whose default differs when scaled, except names computed from other names
    (input_shape = (num_classes,), groups = in_channels): those must follow their sources."""
    derived = {e.id for s in ast.parse(path.read_text()).body if isinstance(s, ast.Assign)
               and any(isinstance(v, ast.Name) for v in ast.walk(s.value))
               for t in s.targets for e in ast.walk(t) if isinstance(e, ast.Name)}
    return {n: small(a.default) for n, a in names.items()
            if n not in derived and small(a.default) != a.default}


def patterns(path, overridden):
    """The assignment patterns of this file that the overrides exercise."""
    found = set()
    for s in ast.parse(path.read_text()).body:
        if not isinstance(s, ast.Assign):
            continue
        bound = {e.id for t in s.targets for e in ast.walk(t) if isinstance(e, ast.Name)}
        if any(isinstance(v, ast.Name) for v in ast.walk(s.value)):
            if any(n in overridden for v in ast.walk(s.value) if isinstance(v, ast.Name) for n in [v.id]):
                found.add("derived")
            continue
        if not bound & set(overridden):
            continue
        v = s.value
        if isinstance(s.targets[0], ast.Tuple):
            found.add("tuple unpacking")
        elif len(s.targets) > 1:
            found.add("chained")
        elif isinstance(v, ast.BinOp):
            found.add("expression")
        elif isinstance(v, ast.UnaryOp):
            found.add("negative")
        elif isinstance(v, ast.Tuple):
            found.add("tuple")
        elif isinstance(v, ast.Constant) and isinstance(v.value, float):
            found.add("float")
        elif isinstance(v, ast.Constant) and isinstance(v.value, int):
            found.add("literal")
    return found


def discovered(tmp_path):
    for f in FILES:
        d = tmp_path / "kernels" / key(f).replace("/", "_")
        d.mkdir(parents=True)
        (d / "reference.py").write_text(f.read_text())
        (d / "v.py").write_text("class ModelNew:\n    pass\n")
    return {op.name: op for op in ops.discover(config.Config(kernels_dir=str(tmp_path / "kernels")), tmp_path)}


def min_bytes(tmp_path, op, params):
    """The minimal bytes time_variants records for the reference at these overrides, in the worker's way:
    job params through JSON, load_reference, reference_model, make_inputs."""
    job = {"op": op.name, "reference": str(op.reference), "params": json.loads(json.dumps(params)),
           "device": "cpu", "seeds": [0],
           "timing": {"warmup": 1, "min_reps": 1, "max_reps": 1, "rounds": 1, "flush_l2": False, "queue_ahead": 0}}
    shape = {"id": "small", "dtype": "float32", "time": [], "tolerance": {"rtol": 1e-4, "atol": 1e-5}}
    ref_mod = build.load_reference(job)
    events = tmp_path / f"{op.name}.jsonl"
    timing.time_variants(job, shape, ref_mod, build.reference_model(ref_mod, "cpu"), {}, 0,
                         supervise.Events(str(events)))
    done = [e for e in map(json.loads, events.read_text().splitlines()) if e["event"] == "timing"]
    return done[0]["min_bytes"], ref_mod


def nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def test_every_problem_is_an_op_and_every_module_level_name_is_overridable(tmp_path):
    assert len(FILES) == 200
    found = discovered(tmp_path)
    assert len(found) == 200
    n_names = 0
    for f in FILES:
        op = found[key(f).replace("/", "_")]
        executed = values_of(executed_names(f))
        assert set(op.size_names) == set(executed), key(f)
        assert op.sizes == executed, key(f)      # every default computed statically, and equal to the file's
        n_names += len(executed)
    print(f"\nKernelBench: {len(found)} files discovered as ops, {n_names} module-level names listed")
    assert n_names > 1000


def test_small_overrides_run_the_shape_that_is_recorded(tmp_path):
    found = discovered(tmp_path)
    ran, covered = [], set()
    for f in FILES:
        if key(f) in TOO_SMALL:
            continue
        op = found[key(f).replace("/", "_")]
        params = small_overrides(f, op.names)
        got, ref_mod = min_bytes(tmp_path, op, params)
        ns = executed_names(f, params)
        assert values_of(vars(ref_mod)) == values_of(ns), key(f)   # the module ran at the recorded values
        torch.manual_seed(0)
        inputs = ns["get_inputs"]()
        torch.manual_seed(0)
        with torch.no_grad():
            out = ns["Model"](*ns["get_init_inputs"]())(*inputs)
        assert got == nbytes(inputs) + nbytes([out]), key(f)
        ran.append(key(f))
        covered |= patterns(f, params)
    print(f"KernelBench: {len(ran)} files ran on the CPU with small overrides; patterns: {sorted(covered)}")
    assert len(ran) >= 40
    assert covered == {"literal", "expression", "tuple unpacking", "chained", "negative", "float", "tuple",
                       "derived"}


@pytest.mark.parametrize("problem, params, expected", [
    # cross_entropy: predictions (3, input_shape = (num_classes,)) f32, targets (3,) i64, a scalar loss
    ("level1/95", {"batch_size": 3, "num_classes": 5}, 3 * 5 * 4 + 3 * 8 + 4),
    # M = 1024 * 2 ...: A (K, M), B (K, N), A.T @ B (M, N)
    ("level1/16", {"M": 3, "K": 5, "N": 7}, (5 * 3 + 5 * 7 + 3 * 7) * 4),
    # depth, height, width = 24, 48, 48; ConvTranspose3d k3 s2 p1: each spatial size s becomes 2s - 1
    ("level2/100", {"batch_size": 2, "in_channels": 3, "out_channels": 4, "depth": 3, "height": 4, "width": 5,
                    "min_value": -0.5}, (2 * 3 * 3 * 4 * 5 + 2 * 4 * 5 * 7 * 9) * 4),
])
def test_hand_computed_bytes(tmp_path, problem, params, expected):
    f = next(KB.glob(f"{problem}_*.py"))
    op = discovered_one(tmp_path, f)
    got, ref_mod = min_bytes(tmp_path, op, params)
    assert got == expected
    assert all(getattr(ref_mod, k) == v for k, v in params.items())


def discovered_one(tmp_path, f):
    d = tmp_path / "kernels" / "one"
    d.mkdir(parents=True)
    (d / "reference.py").write_text(f.read_text())
    (d / "v.py").write_text("class ModelNew:\n    pass\n")
    return ops.load_op_dir(d, config.Config())
