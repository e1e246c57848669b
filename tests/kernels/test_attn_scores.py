"""Correctness and contract tests for the attn_scores variants in kernels/attn_scores/.

Variants and the reference are loaded by path (no pipeline import). Without an NVIDIA GPU the
kernels run in the Triton CPU interpreter (conftest.py sets TRITON_INTERPRET=1 before triton is
imported). The reference's module-level sizes are overridden to small shapes; every variant x
every config (fp16) is compared with the reference run in fp32, with op.yaml's tolerances.
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

OP = "attn_scores"
ROOT = Path(__file__).resolve().parents[2]
KDIR = ROOT / "kernels" / OP
OP_YAML = yaml.safe_load((KDIR / "op.yaml").read_text())
VARIANTS = sorted(p.stem for p in KDIR.glob("*.py") if p.stem != "reference" and not p.stem.startswith("_"))
REQUIRED = ["flat_1d_naive", "flat_1d", "grid_bh_m_n", "grid_b_hm_n"]
SIZE_NAMES = ("B", "H", "M", "N", "D")
# Ragged M and N (partial tiles), D at tl.dot's minimum of 16; then whole tiles at D = 64.
SHAPES = [dict(B=2, H=3, M=17, N=33, D=16), dict(B=1, H=2, M=64, N=48, D=64)]
DTYPES = [torch.float16]
DEFAULT_TOL = {"float32": (1e-4, 1e-5), "float16": (1e-2, 1e-3), "bfloat16": (2e-2, 1e-2)}
SMALL_TILES = dict(BLOCK_M=16, BLOCK_N=16, num_warps=4)

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


@pytest.mark.parametrize("stem", VARIANTS)
def test_many_tiles_every_axis(stem):
    """16x16 tiles on B=2, H=3, M=40, N=50: 3 m-tiles x 4 n-tiles per head, all ragged, so every
    grid axis and every unflattening div/mod is exercised; D = 24 pads to 32 (masked)."""
    _check(_load(stem).ModelNew(**SMALL_TILES), _inputs(dict(B=2, H=3, M=40, N=50, D=24), torch.float16, seed=1))


@pytest.mark.parametrize("stem", VARIANTS)
def test_default_config_strided_inputs(stem):
    """Q as [B, M, H, D] storage viewed as [B, H, M, D] (the usual attention layout), K as
    [B, H, D, N] storage viewed as [B, H, N, D] (unit stride along N, not D)."""
    B, H, M, N, D = 2, 3, 20, 36, 32
    q = torch.randn(B, M, H, D).to(torch.float16).to(DEVICE).permute(0, 2, 1, 3)
    k = torch.randn(B, H, D, N).to(torch.float16).to(DEVICE).transpose(-2, -1)
    assert not q.is_contiguous() and not k.is_contiguous()
    _check(_load(stem).ModelNew(), [q, k])


@pytest.mark.parametrize("stem", VARIANTS)
def test_refuses_unsupported_inputs(stem):
    model = _load(stem).ModelNew()
    with pytest.raises(NotImplementedError, match="exceeds"):
        q = torch.zeros(1, 1, 1, 1, dtype=torch.float16, device=DEVICE).expand(1, 1, 16, 300)
        model(q, q)
    with pytest.raises(NotImplementedError, match="fp16/bf16"):
        q = torch.zeros(1, 1, 16, 16, device=DEVICE)
        model(q, q)


def test_grid_y_limit_is_the_merged_axis():
    """(B, H·cdiv(M,BM), cdiv(N,BN)) puts the merged product on y (<= 65535) and must refuse
    H = 1025, M = 8192 at BM = 128 (65600 programs on y), where (B·H, cdiv(M,BM), cdiv(N,BN))
    launches (1025, 64, 1). Zero-stride views: no memory, no launch."""
    q = torch.zeros(1, 1, 1, 16, dtype=torch.float16, device=DEVICE).expand(1, 1025, 8192, 16)
    k = torch.zeros(1, 1, 1, 16, dtype=torch.float16, device=DEVICE).expand(1, 1025, 1, 16)
    with pytest.raises(NotImplementedError, match="65535"):
        _load("grid_b_hm_n").ModelNew(BLOCK_M=128)(q, k)  # 1025 * 64 = 65600 programs on y


# --------------------------------------------------------------------------------------------
# The contract.

def test_required_variants_and_baseline():
    assert not [s for s in REQUIRED if s not in VARIANTS]
    assert OP_YAML["baseline"] in VARIANTS
    assert OP_YAML["description"]


def test_op_yaml_shapes_and_flops():
    ref_tree = ast.parse((KDIR / "reference.py").read_text())
    sizes = {t.id for n in ref_tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
             for t in n.targets if isinstance(t, ast.Name)}
    assert set(SIZE_NAMES) <= sizes
    shapes = OP_YAML["shapes"] + [s for ss in OP_YAML["suites"].values() for s in ss]
    assert len(OP_YAML["suites"]["small"]) == 2
    for s in shapes:
        p = {k: v for k, v in s.items() if k not in ("name", "dtype")}
        assert set(p) <= sizes, s
        assert s.get("dtype", "float32") in DEFAULT_TOL
        full = {**{n: getattr(_load("reference"), n) for n in SIZE_NAMES}, **p}
        flops = eval(OP_YAML["flops"], {"__builtins__": {}}, full)  # noqa: S307 - a literal from op.yaml
        assert flops == 2 * full["B"] * full["H"] * full["M"] * full["N"] * full["D"]
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
