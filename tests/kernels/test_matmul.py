"""Correctness and contract tests for the matmul variants in kernels/matmul/.

Variants and the reference are loaded by path (no pipeline import). Without an NVIDIA GPU the
kernels run in the Triton CPU interpreter (conftest.py sets TRITON_INTERPRET=1 before triton is
imported). The reference's module-level sizes are overridden to small shapes; every variant x
every config x {fp16, bf16} is compared with the reference run in fp32, with op.yaml's tolerances.

The interpreter's tl.dot multiplies bfloat16 operands as their raw uint16 storage (Triton 3.9;
np.matmul on the bit patterns), so under the interpreter a module-scoped fixture widens bf16
dot operands to fp32 first; the kernels themselves are unchanged.
"""
import ast
import importlib.util
import inspect
import os
import shutil
from pathlib import Path

if shutil.which("nvidia-smi") is None:  # also set by conftest.py; repeated for standalone runs
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np
import pytest
import torch
import triton.language as tl
import yaml

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
DEVICE = "cuda" if (not INTERPRET and torch.cuda.is_available()) else "cpu"

OP = "matmul"
ROOT = Path(__file__).resolve().parents[2]
KDIR = ROOT / "kernels" / OP
OP_YAML = yaml.safe_load((KDIR / "op.yaml").read_text())
VARIANTS = sorted(p.stem for p in KDIR.glob("*.py") if p.stem != "reference" and not p.stem.startswith("_"))
REQUIRED = ["naive_2d", "grid_2d", "grouped_1d", "persistent", "split_k"]
SIZE_NAMES = ("M", "N", "K")
SHAPES = [dict(M=64, N=48, K=128), dict(M=33, N=17, K=40)]  # K a multiple of every BLOCK_K; all odd
DTYPES = [torch.float16, torch.bfloat16]
DEFAULT_TOL = {"float32": (1e-4, 1e-5), "float16": (1e-2, 1e-3), "bfloat16": (2e-2, 1e-2)}
SMEM_PER_BLOCK = 227 * 1024  # H100 (sm_90) opt-in shared memory per block
SMALL_TILES = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=2)

_MODULES = {}


@pytest.fixture(scope="module", autouse=True)
def _bf16_dot_in_interpreter():
    if not INTERPRET:
        yield
        return
    from triton.runtime import interpreter

    orig = interpreter.InterpreterBuilder.create_dot

    def widen(h):
        if h.dtype.scalar == tl.bfloat16:  # stored as uint16: the high half of an fp32
            return (h.data.astype(np.uint32) << 16).view(np.float32)
        return h.data.astype(np.float32)

    def create_dot(self, a, b, d, input_precision, max_num_imprecise_acc):
        if tl.bfloat16 in (a.dtype.scalar, b.dtype.scalar):
            return interpreter.TensorHandle(np.matmul(widen(a), widen(b), dtype=d.data.dtype) + d.data,
                                            d.dtype.scalar)
        return orig(self, a, b, d, input_precision, max_num_imprecise_acc)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(interpreter.InterpreterBuilder, "create_dot", create_dot)
        yield


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
    return out


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


@pytest.mark.parametrize("dtype", DTYPES, ids=_id)
@pytest.mark.parametrize("stem", VARIANTS)
def test_many_small_tiles(stem, dtype):
    """16x16x16 tiles on 70x50x90: 5x4 tiles (a short last GROUP_M group, more tiles than the
    interpreter's 4 persistent programs), 6 K steps with a ragged last one."""
    extra = {"grouped_1d": dict(GROUP_M=2), "persistent": dict(GROUP_M=3), "split_k": dict(SPLIT_K=3)}
    model = _load(stem).ModelNew(**SMALL_TILES, **extra.get(stem, {}))
    _check(model, _inputs(dict(M=70, N=50, K=90), dtype, seed=1))


@pytest.mark.parametrize("split_k", [2, 4, 7])
def test_split_k_slices_and_determinism(split_k):
    # K = 90 in 16-wide steps: 6 steps; SPLIT_K = 4 leaves an empty last slice, 7 two empty ones.
    model = _load("split_k").ModelNew(**SMALL_TILES, SPLIT_K=split_k)
    inputs = _inputs(dict(M=40, N=24, K=90), torch.float16, seed=2)
    first = _check(model, inputs)
    assert torch.equal(first, model(*inputs)), "workspace reduction must be deterministic"


@pytest.mark.parametrize("stem", VARIANTS)
def test_default_config_non_contiguous(stem):
    # A and B as transposed views: unit stride along M and K instead of K and N.
    a = torch.randn(40, 33).to(torch.float16).to(DEVICE).t()  # (33, 40)
    b = torch.randn(17, 40).to(torch.float16).to(DEVICE).t()  # (40, 17)
    assert not a.is_contiguous() and not b.is_contiguous()
    _check(_load(stem).ModelNew(), [a, b])


@pytest.mark.parametrize("stem", VARIANTS)
def test_refuses_unsupported_inputs(stem):
    model = _load(stem).ModelNew()
    with pytest.raises(NotImplementedError, match="fp16/bf16"):
        model(torch.randn(16, 16, device=DEVICE), torch.randn(16, 16, device=DEVICE))
    with pytest.raises(NotImplementedError, match="2D"):
        model(torch.randn(2, 16, 16, device=DEVICE).half(), torch.randn(16, 16, device=DEVICE).half())


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
        params = {k: v for k, v in s.items() if k not in ("name", "dtype")}
        assert set(params) <= sizes, s
        assert s.get("dtype", "float32") in DEFAULT_TOL
        flops = eval(OP_YAML["flops"], {"__builtins__": {}}, params)  # noqa: S307 - a literal from op.yaml
        assert flops == 2 * params["M"] * params["N"] * params["K"]
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


@pytest.mark.parametrize("stem", VARIANTS)
def test_configs_fit_h100(stem):
    """Pipelined operand buffers within the shared memory of a block; fp32 accumulator <= 128
    registers per thread (the rest of the 255 for addresses and the wgmma pipeline)."""
    sig = inspect.signature(_load(stem).ModelNew.__init__).parameters
    defaults = {n: p.default for n, p in sig.items() if p.default is not inspect.Parameter.empty}
    for cfg in [{}] + _load(stem).CONFIGS:
        c = {**defaults, **cfg}
        smem = c["num_stages"] * (c["BLOCK_M"] * c["BLOCK_K"] + c["BLOCK_K"] * c["BLOCK_N"]) * 2
        assert smem <= SMEM_PER_BLOCK, (cfg, smem)
        assert c["BLOCK_M"] * c["BLOCK_N"] // (32 * c["num_warps"]) <= 128, cfg
        assert min(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"]) >= 16, "tl.dot needs every dim >= 16"
