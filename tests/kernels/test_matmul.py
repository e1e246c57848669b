"""Correctness and contract tests for the matmul variants in kernels/matmul/.

Variants and the reference are loaded by path (no pipeline import). Without an NVIDIA GPU the
kernels run in the Triton CPU interpreter (conftest.py sets TRITON_INTERPRET=1 before triton is
imported). The reference's module-level sizes are overridden to small shapes; every variant x
every config x {fp16, bf16} is compared with the reference run in fp32, with op.yaml's tolerances.

The interpreter's tl.dot multiplies bfloat16 operands as their raw uint16 storage (Triton 3.9;
np.matmul on the bit patterns), so under the interpreter a module-scoped fixture widens bf16
dot operands to fp32 first; the kernels themselves are unchanged.
"""
import inspect

# First: opkit sets TRITON_INTERPRET (no GPU) before triton is imported.
from opkit import DEVICE, INTERPRET, OpKit, case_id

import numpy as np
import pytest
import torch
import triton.language as tl

KIT = OpKit("matmul")
OP_YAML, VARIANTS = KIT.op_yaml, KIT.variants
REQUIRED = ["grid_2d", "grouped_1d", "persistent", "split_k"]
SIZE_NAMES = ("M", "N", "K")
SHAPES = [dict(M=64, N=48, K=128), dict(M=33, N=17, K=40)]  # K a multiple of every BLOCK_K; all odd
DTYPES = [torch.float16, torch.bfloat16]
SMEM_PER_BLOCK = 227 * 1024  # H100 (sm_90) opt-in shared memory per block
SMALL_TILES = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=16, num_warps=4, num_stages=2)

_CASES = KIT.config_cases(SHAPES, DTYPES)


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


@pytest.mark.parametrize("stem,cfg,sizes,dtype", _CASES)
def test_every_config(stem, cfg, sizes, dtype):
    model = KIT.load(stem).ModelNew(*KIT.ref.get_init_inputs(), **cfg)
    KIT.run(model, KIT.inputs(sizes, dtype, seed=0))


@pytest.mark.parametrize("dtype", DTYPES, ids=case_id)
@pytest.mark.parametrize("stem", VARIANTS)
def test_many_small_tiles(stem, dtype):
    """16x16x16 tiles on 70x50x90: 5x4 tiles (a short last GROUP_M group, more tiles than the
    interpreter's 4 persistent programs), 6 K steps with a ragged last one."""
    extra = {"grouped_1d": dict(GROUP_M=2), "persistent": dict(GROUP_M=3), "split_k": dict(SPLIT_K=3)}
    model = KIT.load(stem).ModelNew(**SMALL_TILES, **extra.get(stem, {}))
    KIT.check(model, KIT.inputs(dict(M=70, N=50, K=90), dtype, seed=1))


@pytest.mark.parametrize("split_k", [2, 4, 7])
def test_split_k_slices_and_determinism(split_k):
    # K = 90 in 16-wide steps: 6 steps; SPLIT_K = 4 leaves an empty last slice, 7 two empty ones.
    model = KIT.load("split_k").ModelNew(**SMALL_TILES, SPLIT_K=split_k)
    inputs = KIT.inputs(dict(M=40, N=24, K=90), torch.float16, seed=2)
    first = KIT.check(model, inputs)
    assert torch.equal(first, model(*inputs)), "workspace reduction must be deterministic"


@pytest.mark.parametrize("stem", VARIANTS)
def test_default_config_non_contiguous(stem):
    # A and B as transposed views: unit stride along M and K instead of K and N.
    a = torch.randn(40, 33).to(torch.float16).to(DEVICE).t()  # (33, 40)
    b = torch.randn(17, 40).to(torch.float16).to(DEVICE).t()  # (40, 17)
    assert not a.is_contiguous() and not b.is_contiguous()
    KIT.check(KIT.load(stem).ModelNew(), [a, b])


@pytest.mark.parametrize("stem", VARIANTS)
def test_refuses_unsupported_inputs(stem):
    model = KIT.load(stem).ModelNew()
    with pytest.raises(NotImplementedError, match="fp16/bf16"):
        model(torch.randn(16, 16, device=DEVICE), torch.randn(16, 16, device=DEVICE))
    with pytest.raises(NotImplementedError, match="2D"):
        model(torch.randn(2, 16, 16, device=DEVICE).half(), torch.randn(16, 16, device=DEVICE).half())


# --------------------------------------------------------------------------------------------
# The contract.

def test_required_variants_and_baseline():
    KIT.check_required(REQUIRED)


def test_op_yaml_shapes_and_flops():
    for params in KIT.check_op_yaml_shapes(SIZE_NAMES):
        flops = eval(OP_YAML["flops"], {"__builtins__": {}}, params)  # noqa: S307 - a literal from op.yaml
        assert flops == 2 * params["M"] * params["N"] * params["K"]


@pytest.mark.parametrize("stem", VARIANTS)
def test_contract(stem):
    KIT.check_contract(stem)


@pytest.mark.parametrize("stem", VARIANTS)
def test_configs_fit_h100(stem):
    """Pipelined operand buffers within the shared memory of a block; fp32 accumulator <= 128
    registers per thread (the rest of the 255 for addresses and the wgmma pipeline)."""
    sig = inspect.signature(KIT.load(stem).ModelNew.__init__).parameters
    defaults = {n: p.default for n, p in sig.items() if p.default is not inspect.Parameter.empty}
    for cfg in [{}] + KIT.load(stem).CONFIGS:
        c = {**defaults, **cfg}
        smem = c["num_stages"] * (c["BLOCK_M"] * c["BLOCK_K"] + c["BLOCK_K"] * c["BLOCK_N"]) * 2
        assert smem <= SMEM_PER_BLOCK, (cfg, smem)
        assert c["BLOCK_M"] * c["BLOCK_N"] // (32 * c["num_warps"]) <= 128, cfg
        assert min(c["BLOCK_M"], c["BLOCK_N"], c["BLOCK_K"]) >= 16, "tl.dot needs every dim >= 16"
