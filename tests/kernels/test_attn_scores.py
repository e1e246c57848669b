"""Correctness and contract tests for the attn_scores variants in kernels/attn_scores/.

Variants and the reference are loaded by path (no pipeline import). Without an NVIDIA GPU the
kernels run in the Triton CPU interpreter (conftest.py sets TRITON_INTERPRET=1 before triton is
imported). The reference's module-level sizes are overridden to small shapes; every variant x
every config (fp16) is compared with the reference run in fp32, with op.yaml's tolerances.
"""
import pytest
import torch

from opkit import DEVICE, OpKit

KIT = OpKit("attn_scores")
OP_YAML, VARIANTS = KIT.op_yaml, KIT.variants
REQUIRED = ["flat_1d", "grid_bh_m_n", "grid_b_hm_n"]
SIZE_NAMES = ("B", "H", "M", "N", "D")
# Ragged M and N (partial tiles), D at tl.dot's minimum of 16; then whole tiles at D = 64.
SHAPES = [dict(B=2, H=3, M=17, N=33, D=16), dict(B=1, H=2, M=64, N=48, D=64)]
DTYPES = [torch.float16]
SMALL_TILES = dict(BLOCK_M=16, BLOCK_N=16, num_warps=4)

_CASES = KIT.config_cases(SHAPES, DTYPES)


@pytest.mark.parametrize("stem,cfg,sizes,dtype", _CASES)
def test_every_config(stem, cfg, sizes, dtype):
    model = KIT.load(stem).ModelNew(*KIT.ref.get_init_inputs(), **cfg)
    KIT.run(model, KIT.inputs(sizes, dtype, seed=0))


@pytest.mark.parametrize("stem", VARIANTS)
def test_many_tiles_every_axis(stem):
    """16x16 tiles on B=2, H=3, M=40, N=50: 3 m-tiles x 4 n-tiles per head, all ragged, so every
    grid axis and every unflattening div/mod is exercised; D = 24 pads to 32 (masked)."""
    inputs = KIT.inputs(dict(B=2, H=3, M=40, N=50, D=24), torch.float16, seed=1)
    KIT.check(KIT.load(stem).ModelNew(**SMALL_TILES), inputs)


@pytest.mark.parametrize("stem", VARIANTS)
def test_default_config_strided_inputs(stem):
    """Q as [B, M, H, D] storage viewed as [B, H, M, D] (the usual attention layout), K as
    [B, H, D, N] storage viewed as [B, H, N, D] (unit stride along N, not D)."""
    B, H, M, N, D = 2, 3, 20, 36, 32
    q = torch.randn(B, M, H, D).to(torch.float16).to(DEVICE).permute(0, 2, 1, 3)
    k = torch.randn(B, H, D, N).to(torch.float16).to(DEVICE).transpose(-2, -1)
    assert not q.is_contiguous() and not k.is_contiguous()
    KIT.check(KIT.load(stem).ModelNew(), [q, k])


@pytest.mark.parametrize("stem", VARIANTS)
def test_refuses_unsupported_inputs(stem):
    model = KIT.load(stem).ModelNew()
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
        KIT.load("grid_b_hm_n").ModelNew(BLOCK_M=128)(q, k)  # 1025 * 64 = 65600 programs on y


# --------------------------------------------------------------------------------------------
# The contract.

def test_required_variants_and_baseline():
    KIT.check_required(REQUIRED)


def test_op_yaml_shapes_and_flops():
    for p in KIT.check_op_yaml_shapes(SIZE_NAMES):
        full = {**{n: getattr(KIT.ref, n) for n in SIZE_NAMES}, **p}
        flops = eval(OP_YAML["flops"], {"__builtins__": {}}, full)  # noqa: S307 - a literal from op.yaml
        assert flops == 2 * full["B"] * full["H"] * full["M"] * full["N"] * full["D"]


@pytest.mark.parametrize("stem", VARIANTS)
def test_contract(stem):
    KIT.check_contract(stem)
