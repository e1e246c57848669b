"""Correctness and contract tests for the softmax variants in kernels/softmax/.

Variants and the reference are loaded by path (no pipeline import). Without an NVIDIA GPU the
kernels run in the Triton CPU interpreter (conftest.py sets TRITON_INTERPRET=1 before triton is
imported). The reference's module-level sizes are overridden to small shapes; every variant x
every config x {fp32, fp16} is compared with the reference run in fp32, with op.yaml's tolerances.
"""
import ast
import importlib.util
import inspect
import os
import shutil
from pathlib import Path

if shutil.which("nvidia-smi") is None:  # also set by conftest.py; repeated for standalone runs
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch
import yaml

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DEVICE = "cuda" if (not INTERPRET and torch.cuda.is_available()) else "cpu"

OP = "softmax"
ROOT = Path(__file__).resolve().parents[2]
KDIR = ROOT / "kernels" / OP
OP_YAML = yaml.safe_load((KDIR / "op.yaml").read_text())
VARIANTS = sorted(p.stem for p in KDIR.glob("*.py") if p.stem != "reference" and not p.stem.startswith("_"))
REQUIRED = ["naive_3pass", "row_per_program", "multi_row", "persistent", "online_2pass"]
SIZE_NAMES = ("batch_size", "dim")
SHAPES = [dict(batch_size=5, dim=37), dict(batch_size=3, dim=1000)]
DTYPES = [torch.float32, torch.float16]
DEFAULT_TOL = {"float32": (1e-4, 1e-5), "float16": (1e-2, 1e-3), "bfloat16": (2e-2, 1e-2)}

_MODULES = {}


def _load(stem):
    if stem not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"_test_{OP}_{stem}", KDIR / f"{stem}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _MODULES[stem] = module
    return _MODULES[stem]


def _tol(dtype):
    name = str(dtype).replace("torch.", "")
    t = ((OP_YAML.get("verify") or {}).get("tolerance") or {}).get(name)
    return (float(t["rtol"]), float(t["atol"])) if t else DEFAULT_TOL[name]


def _inputs(sizes, dtype, seed):
    """The reference's get_inputs() at overridden module-level sizes, cast like the pipeline does."""
    ref = _load("reference")
    for k, v in sizes.items():
        setattr(ref, k, v)
    torch.manual_seed(seed)
    return [t.to(dtype).to(DEVICE) if t.is_floating_point() else t.to(DEVICE) for t in ref.get_inputs()]


def _check(model, inputs):
    ref = _load("reference")
    ref_model = ref.Model(*ref.get_init_inputs())
    expected = ref_model(*[t.float() for t in inputs])
    out_dtype = ref_model(*inputs).dtype
    out = model(*inputs)
    assert out.shape == expected.shape and out.dtype == out_dtype and out.device == inputs[0].device
    o = out.float()
    assert torch.isfinite(o).all(), "non-finite output (unwritten or NaN)"
    rtol, atol = _tol(inputs[0].dtype)
    torch.testing.assert_close(o, expected, rtol=rtol, atol=atol)


def _run(model, inputs):
    try:
        _check(model, inputs)
    except NotImplementedError as e:
        pytest.skip(f"unsupported: {e}")


def _id(x):
    if isinstance(x, dict):
        return "-".join(f"{k}{v}" for k, v in x.items())
    return str(x).replace("torch.", "")


_CASES = [pytest.param(stem, cfg, sizes, dtype, id=f"{stem}-{_id(cfg)}-{_id(sizes)}-{_id(dtype)}")
          for stem in VARIANTS for cfg in _load(stem).CONFIGS for sizes in SHAPES for dtype in DTYPES]


@pytest.mark.parametrize("stem,cfg,sizes,dtype", _CASES)
def test_every_config(stem, cfg, sizes, dtype):
    ref = _load("reference")
    _run(_load(stem).ModelNew(*ref.get_init_inputs(), **cfg), _inputs(sizes, dtype, seed=0))


@pytest.mark.parametrize("stem", ["naive_3pass", "online_2pass"])
@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
def test_chunked_rows_cross_several_blocks(stem, dtype):
    """BLOCK_N = 128 over dim 1000: 8 blocks, ragged last one; rows whose max sits in a late block
    (increasing ramp) and large magnitudes make the online rescaling matter."""
    model = _load(stem).ModelNew(BLOCK_N=128, num_warps=4)
    x = _inputs(dict(batch_size=3, dim=1000), dtype, seed=1)[0]
    _check(model, [x])
    ramp = torch.linspace(-30, 30, 1000).repeat(4, 1)
    ramp[1] = ramp[1].flip(0)  # max in the first block
    ramp[2] *= 0.1
    ramp[3] = torch.randn(1000) * 20
    _check(model, [ramp.to(dtype).to(DEVICE)])


def test_online_masked_lanes_stay_finite():
    # dim 37 in a 64-wide block: 27 lanes only ever see masked (-inf) columns.
    _check(_load("online_2pass").ModelNew(BLOCK_N=64, num_warps=2), _inputs(dict(batch_size=2, dim=37),
                                                                           torch.float32, seed=2))


def test_persistent_more_blocks_than_programs():
    # The interpreter's fallback SM count is 4: 8 programs over 19 two-row blocks, ragged last block.
    model = _load("persistent").ModelNew(PROGRAMS_PER_SM=2, ROWS=2, num_warps=4)
    _check(model, _inputs(dict(batch_size=37, dim=100), torch.float32, seed=3))


@pytest.mark.parametrize("stem", VARIANTS)
def test_default_config_other_ranks_and_non_contiguous(stem):
    model = _load(stem).ModelNew()
    base = torch.randn(3, 70, 2)
    x = base.permute(2, 0, 1)  # (2, 3, 70), not contiguous
    assert not x.is_contiguous()
    _check(model, [x.to(DEVICE)])
    _check(model, [torch.randn(70).to(DEVICE)])


@pytest.mark.parametrize("stem", ["row_per_program", "multi_row", "persistent"])
def test_register_tiles_refuse_long_rows(stem):
    x = torch.randn(1, 65536, device=DEVICE)
    with pytest.raises(NotImplementedError, match="per thread"):
        _load(stem).ModelNew()(x)


# --------------------------------------------------------------------------------------------
# The contract.

def test_required_variants_and_baseline():
    assert not [s for s in REQUIRED if s not in VARIANTS]
    assert OP_YAML["baseline"] in VARIANTS
    assert OP_YAML["description"]


def test_op_yaml_shapes_name_reference_sizes():
    ref_tree = ast.parse((KDIR / "reference.py").read_text())
    sizes = {t.id for n in ref_tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
             for t in n.targets if isinstance(t, ast.Name)}
    assert set(SIZE_NAMES) <= sizes
    shapes = OP_YAML["shapes"] + [s for ss in OP_YAML["suites"].values() for s in ss]
    assert len(OP_YAML["suites"]["small"]) == 2
    for s in shapes:
        assert set(s) - {"name", "dtype"} <= sizes, s
        assert s.get("dtype", "float32") in DEFAULT_TOL
    top = {n.name for n in ref_tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert top == {"Model", "get_inputs", "get_init_inputs"}


@pytest.mark.parametrize("stem", VARIANTS)
def test_contract(stem):
    module = _load(stem)
    assert isinstance(module.LAYOUT, str) and module.LAYOUT.strip()
    configs = module.CONFIGS
    assert isinstance(configs, list) and 2 <= len(configs) <= 5
    assert all(isinstance(c, dict) and c for c in configs)
    assert len({tuple(sorted(c.items())) for c in configs}) == len(configs), "duplicate configs"
    params = inspect.signature(module.ModelNew.__init__).parameters
    defaults = {n for n, p in params.items() if p.default is not inspect.Parameter.empty}
    init_inputs = _load("reference").get_init_inputs()
    for cfg in configs:
        assert set(cfg) <= defaults, set(cfg) - defaults
        assert isinstance(module.ModelNew(*init_inputs, **cfg), torch.nn.Module)
    module.ModelNew(*init_inputs)
    src = (KDIR / f"{stem}.py").read_text()
    assert "autotune" not in src and "def get_inputs" not in src
    tree = ast.parse(src)
    jitted = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)
              and any("jit" in ast.unparse(d) for d in n.decorator_list)]
    assert jitted and all(n.startswith(f"_{OP}_") and n.endswith("_kernel") for n in jitted), jitted
    imported = {a.name for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    assert {"torch", "torch.nn", "triton", "triton.language"} <= imported
