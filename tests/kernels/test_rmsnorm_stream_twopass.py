"""Correctness and contract tests for the stream_1d and l2_twopass RMSNorm variants.

Without an NVIDIA GPU the kernels run in the Triton CPU interpreter (conftest.py
sets TRITON_INTERPRET=1 before triton is imported); with one, on the GPU.
"""
import inspect

import pytest
import torch

from opkit import OpKit, uniform

KIT = OpKit("rmsnorm")
STEMS = ["stream_1d", "l2_twopass"]
SHAPES = [(2, 8, 16, 16), (1, 3, 7, 9), (3, 65, 5, 13), (2, 48, 127, 3), (1, 300, 4, 4)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]

_CASES = KIT.config_cases(SHAPES, DTYPES, stems=STEMS)


def _check(model, x):
    # NaN poisoning: an output element the kernel never writes shows as non-finite.
    KIT.check(model, [x], poison=True)


@pytest.mark.parametrize("stem,cfg,shape,dtype", _CASES)
def test_every_config(stem, cfg, shape, dtype):
    x = uniform(shape, dtype, seed=11)
    model = KIT.load(stem).ModelNew(shape[1], **cfg)
    try:
        _check(model, x)
    except NotImplementedError as e:
        # Only the one-pass variant may refuse, and only for a tile over the register budget.
        assert stem == "stream_1d" and "per thread" in str(e) and "exceeds" in str(e), e
        assert shape[1] > 64, f"stream_1d must support C <= 64: {e}"


@pytest.mark.parametrize("stem", STEMS)
def test_default_config_and_other_ranks(stem):
    module = KIT.load(stem)
    base = uniform((3, 16, 2, 8), torch.float32, seed=5)
    x = base.permute(2, 1, 0, 3)  # (2, 16, 3, 8), not contiguous
    _check(module.ModelNew(x.shape[1]), x)
    for shape in [(2, 5, 33), (4, 7)]:
        _check(module.ModelNew(shape[1]), uniform(shape, torch.float32, seed=6))


@pytest.mark.parametrize("stem", STEMS)
def test_more_tiles_than_programs(stem):
    # Many tiles per persistent program (interpreter: 4 SMs), a ragged last round, small C.
    _check(KIT.load(stem).ModelNew(4), uniform((3, 4, 40, 41), torch.float32, seed=7))


def test_l2_twopass_many_chunks_multi_block():
    # C spans several BLOCK_C chunks (ragged last chunk) and several column blocks per program.
    module = KIT.load("l2_twopass")
    for cfg in [dict(BLOCK_C=16, BLOCK_HW=8, PROGRAMS_PER_SM=1, num_warps=4),
                dict(BLOCK_C=32, BLOCK_HW=16, PROGRAMS_PER_SM=2, num_warps=4)]:
        for dtype in (torch.float32, torch.bfloat16):
            _check(module.ModelNew(70, **cfg), uniform((2, 70, 9, 11), dtype, seed=8))


def test_stream_1d_refuses_too_many_channels():
    x = uniform((1, 600, 2, 2), torch.float32, seed=4)
    with pytest.raises(NotImplementedError, match="per thread"):
        KIT.load("stream_1d").ModelNew(600)(x)


def test_l2_twopass_plan_h100_c4096():
    """The launch plan keeps the L2 working set within the budget on an H100 (132 SMs, 50 MB L2)."""
    module = KIT.load("l2_twopass")
    l2 = 50 * 2**20
    B, C, HW = 8, 4096, 64 * 64
    for cfg in module.CONFIGS:
        for elem_bytes in (4, 2):
            p = module._plan(B, C, HW, elem_bytes, cfg["BLOCK_C"], cfg["BLOCK_HW"], cfg["PROGRAMS_PER_SM"],
                             cfg["num_warps"], 132, l2, cfg["L2_FRACTION"])
            assert p["fits"] and p["working_set"] <= cfg["L2_FRACTION"] * l2, (cfg, p)
            assert p["block_c"] * p["block_hw"] == cfg["BLOCK_C"] * cfg["BLOCK_HW"], (cfg, p)
            assert p["block_hw"] * elem_bytes >= 32, (cfg, p)  # full 32-byte sectors
            assert p["n_programs"] <= cfg["PROGRAMS_PER_SM"] * 132
            num_blocks = B * p["n_hw_blocks"]
            assert num_blocks % p["n_programs"] == 0  # balanced: no short last round here
    # A budget too small for 132 programs: narrowed to one sector, then fewer programs per SM.
    p = module._plan(B, C, HW, 4, 256, 32, 4, 4, 132, l2, 0.5)
    assert p["block_hw"] == 8 and p["block_c"] == 1024 and p["programs_per_sm"] == 1 and p["fits"]


def test_stream_1d_residency():
    module = KIT.load("stream_1d")
    # 128 live fp32 values (two 64-value tiles): one 8-warp program per SM.
    assert module._resident_programs(4, 128, 8, 4096) == 1
    assert module._resident_programs(2, 64, 8, 4096) == 2
    assert module._resident_programs(2, 64, 8, 127 * 129) == 1  # scalar accesses: ~4 regs/value


@pytest.mark.parametrize("stem", STEMS)
def test_contract(stem):
    KIT.check_contract(stem, min_configs=3)
    params = inspect.signature(KIT.load(stem).ModelNew.__init__).parameters
    assert list(params)[1] == "num_features" and params["eps"].default == 1e-5


def test_stream_1d_refuses_aligned_too_many_channels():
    x = uniform((1, 600, 4, 4), torch.float32, seed=4)  # H*W % 16 == 0: the flat_1d rule
    with pytest.raises(NotImplementedError, match="per thread"):
        KIT.load("stream_1d").ModelNew(600)(x)
