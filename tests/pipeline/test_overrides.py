"""Shape overrides of a reference's module-level names: listed statically in the parent, checked against
their defaults with op.yaml's and reference.py's lines, and substituted at their assignments in the worker,
so names derived from them are computed again."""
import ast
import inspect
import json
import sys
import textwrap

import pytest

from pipeline import build, config, ops, toplevel
from pipeline.errors import ConfigError

REFERENCE = textwrap.dedent('''
    import torch
    import torch.nn as nn

    class Model(nn.Module):
        def __init__(self, scale, flag, mode):
            super().__init__()
            self.scale, self.flag, self.mode = scale, flag, mode

        def forward(self, x, y):
            return x.sum() * self.scale + y.sum()

    batch = 4
    N = 2048 * 2
    D, H, W = (6, 8, 10)
    a, b = 1, 2
    low = -1.0
    multiplier = 2.0
    input_shape = (N,)
    flag = True
    mode = "sum"
    rows: int = 3
    rows += 1
    h = w = 16
    pair = (a, b)
    total = batch * N
    dev = torch.device("cpu")
    c, d = divmod(7, 2)

    def get_inputs():
        return [torch.rand(batch, *input_shape), torch.rand(D, H, W, rows, h, w)]

    def get_init_inputs():
        return [multiplier, flag, mode]
    ''')

DEFAULTS = {"batch": 4, "N": 4096, "D": 6, "H": 8, "W": 10, "a": 1, "b": 2, "low": -1.0, "multiplier": 2.0,
            "input_shape": (4096,), "flag": True, "mode": "sum", "rows": 4, "h": 16, "w": 16, "pair": (1, 2),
            "total": 4 * 4096}


def make_op(tmp_path, op_yaml):
    d = tmp_path / "kernels" / "ovr"
    d.mkdir(parents=True)
    (d / "reference.py").write_text(REFERENCE)
    (d / "op.yaml").write_text(textwrap.dedent(op_yaml))
    (d / "v.py").write_text("class ModelNew:\n    pass\n")
    return d


def test_every_module_level_name_is_listed_with_its_static_default():
    names = toplevel.module_names(ast.parse(REFERENCE))
    assert set(names) == set(DEFAULTS) | {"dev", "c", "d"}
    assert {n: a.default for n, a in names.items() if a.known} == DEFAULTS
    assert not any(names[n].known for n in ("dev", "c", "d"))      # calls are never evaluated
    lines = REFERENCE.splitlines()
    assert lines[names["H"].line - 1] == "D, H, W = (6, 8, 10)"
    assert lines[names["rows"].line - 1] == "rows += 1"             # the assignment that sets the default


def test_worker_substitutes_overrides_and_recomputes_derived_names(tmp_path):
    ref = tmp_path / "reference.py"
    ref.write_text(REFERENCE)
    params = {"N": 8, "H": 3, "a": 5, "multiplier": 3, "rows": 2, "h": 5, "low": -0.5, "flag": False,
              "mode": "max", "c": 9, "batch": 2}
    job = {"op": "ovr_t", "reference": str(ref), "params": json.loads(json.dumps(params))}   # as the job file
    mod = build.load_reference(job)
    assert sys.modules["_reference_ovr_t"] is mod
    assert (mod.N, mod.input_shape, mod.total) == (8, (8,), 16)     # derived from the override, not 4096
    assert (mod.D, mod.H, mod.W) == (6, 3, 10)
    assert (mod.a, mod.b, mod.pair) == (5, 2, (5, 2))
    assert mod.multiplier == 3.0 and isinstance(mod.multiplier, float)
    assert (mod.rows, mod.h, mod.w, mod.low, mod.flag, mod.mode) == (2, 5, 16, -0.5, False, "max")
    assert (mod.c, mod.d) == (9, 1)
    x, y = mod.get_inputs()
    assert tuple(x.shape) == (2, 8) and tuple(y.shape) == (6, 3, 10, 2, 5, 16)
    # the code runs from the real file: line numbers and source lookup (Triton's jit) still work
    assert mod.get_inputs.__code__.co_filename == str(ref)
    assert inspect.getsource(mod.get_inputs).startswith("def get_inputs():")
    assert mod.Model(*mod.get_init_inputs()).scale == 3.0

    tup = build.load_reference({**job, "params": {"input_shape": [3], "pair": [7, 8]}})
    assert (tup.input_shape, tup.pair, tup.N) == ((3,), (7, 8), 4096)


def test_worker_refuses_unknown_names_and_wrong_kinds(tmp_path):
    ref = tmp_path / "reference.py"
    ref.write_text(REFERENCE)
    job = {"op": "ovr_bad", "reference": str(ref)}
    with pytest.raises(ConfigError, match=r"get_inputs not a module-level size in .*reference.py"):
        build.load_reference({**job, "params": {"get_inputs": 1}})
    line = REFERENCE.splitlines().index("N = 2048 * 2") + 1
    with pytest.raises(ConfigError, match=rf"N must be int like its default 4096, got float 2.5 "
                                          rf"\(.*reference.py:{line}\)"):
        build.load_reference({**job, "params": {"N": 2.5}})


@pytest.mark.parametrize("shape, message", [
    ("{N: 2.5}", r"N must be int like its default 4096, got float 2.5"),
    ("{N: '9'}", r"N must be int like its default 4096, got str '9'"),
    ("{flag: 1}", r"flag must be bool like its default True, got int 1"),
    ("{input_shape: 16}", r"input_shape must be tuple like its default \(4096,\), got int 16"),
    ("{input_shape: [1.5]}", r"input_shape\[0\] must be int like its default 4096, got float 1.5"),
    ("{mode: 3}", r"mode must be str like its default 'sum', got int 3"),
    ("{low: 1e-5}", r"low must be float .*got str '1e-5' \(YAML reads 1e-5 as a string: write 1.0e-5\)"),
    ("{get_inputs: 1}", r"get_inputs not a module-level size in .*reference.py \(names assigned at its top "
                        r"level: batch, N, D"),
])
def test_load_op_dir_names_both_files_for_a_wrong_override(tmp_path, shape, message):
    d = make_op(tmp_path, f"""
        baseline: v
        shapes:
          - {{N: 8}}
        suites:
          small:
            - {{batch: 2}}
            - {shape}
        """)
    with pytest.raises(ConfigError, match=rf"op.yaml:8: suites.small\[1\]: {message}") as exc:
        ops.load_op_dir(d, config.Config())
    if "get_inputs" not in shape:          # the reference's line of the assignment, too
        key = shape.strip("{}").split(":")[0]
        line = toplevel.module_names(ast.parse(REFERENCE))[key].line
        assert str(exc.value).endswith(f"reference.py:{line})")


def test_load_op_dir_accepts_every_kind_and_flops_follow_derived_names(tmp_path):
    d = make_op(tmp_path, """
        baseline: v
        flops: 2*total
        shapes:
          - {N: 8, multiplier: 3, low: -0.5, input_shape: [16], flag: false, mode: max, H: 2, pair: [3, 4]}
          - {params: {batch: 1}, dtype: float16}
        """)
    op = ops.load_op_dir(d, config.Config())
    assert op.sizes == DEFAULTS                  # unknown defaults (dev, c, d) are not available to flops
    assert set(op.size_names) == set(DEFAULTS) | {"dev", "c", "d"}
    first, second = op.config.op.shapes
    assert first.params["multiplier"] == 3 and first.params["input_shape"] == [16]
    assert op.flops({}) == 2 * 4 * 4096
    assert op.flops(first.params) == 2 * 4 * 8          # total = batch * N, recomputed at N = 8
    assert op.flops(second.params) == 2 * 1 * 4096


def test_config_refuses_a_mapping_as_an_override(tmp_path):
    p = tmp_path / "op.yaml"
    p.write_text("shapes:\n  - {N: {a: 1}}\n")
    with pytest.raises(ConfigError, match=r"op.yaml:2: 'shapes\[0\].N' must be a number, bool, string or list"):
        config.load_op(config.Config(), p)
    p.write_text("shapes:\n  - {multiplier: 3.0, dims: [1, 2], enabled: true, mode: max}\n")
    assert config.load_op(config.Config(), p).op.shapes[0].params == \
        {"multiplier": 3.0, "dims": [1, 2], "enabled": True, "mode": "max"}
