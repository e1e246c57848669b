"""The split-channel variants: a channel column shared by programs that meet at a barrier.

coop_c: programs of a group meet at an atomic counter in global memory. Under the Triton CPU
interpreter programs run one at a time, so coop_c runs one program per tile there (SPLIT = 1: the
counter, the workspace slots and the reset are exercised alone).
cluster_c: a program is a thread-block cluster whose CTAs hold one channel group each and meet at a
cluster barrier. Under the interpreter one program runs the whole tile (no cluster, no barrier), so
there the layout (channel group g as column block g) and the workspace slots are exercised alone.
The splits themselves (2 to 16 programs or CTAs per tile, ragged last chunks and groups, several
rounds per group, counters reused across launches) are checked on the GPU (marked gpu).
"""
import pytest
import torch

from opkit import DEVICE, OpKit, uniform

KIT = OpKit("rmsnorm")
COOP = KIT.load("coop_c")
CLUSTER = KIT.load("cluster_c")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
GPU_SHAPES = [(2, 4096, 16, 16), (3, 1000, 7, 9), (1, 300, 64, 65), (4, 64, 32, 32)]


def _check(model, x):
    KIT.check(model, [x], poison=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_coop_one_program_per_tile_many_rounds(dtype):
    # more tiles than the interpreter's programs: every group walks several tiles; ragged strip
    for cfg in COOP.CONFIGS:
        model = COOP.ModelNew(70, **cfg)
        for seed in (0, 1):     # a second launch reuses the counters the first left at 0
            x = uniform((3, 70, 9, 11), dtype, seed=seed)
            _check(model, x)
        assert int(model.state[x.device].abs().sum()) == 0


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cluster_groups_with_ragged_channels_and_strip(dtype):
    # C = 70: C_PAD = 128, the last group partly (num_ctas 2) or wholly (8) past C; HW = 99 leaves a ragged strip
    for cfg in CLUSTER.CONFIGS:
        _check(CLUSTER.ModelNew(70, **cfg), uniform((3, 70, 9, 11), dtype, seed=0))


def test_cluster_refuses_more_groups_than_channels():
    x = uniform((2, 3, 4, 4), torch.float32, seed=1)
    with pytest.raises(NotImplementedError, match="num_ctas = 8 channel groups exceeds C_PAD = 4"):
        CLUSTER.ModelNew(3, BLOCK_HW=32, num_warps=4, num_ctas=8)(x)


def test_cluster_refuses_a_group_tile_that_would_spill():
    x = uniform((1, 8192, 1, 64), torch.float32, seed=2)
    with pytest.raises(NotImplementedError, match="256 fp32 values per thread exceeds 128"):
        CLUSTER.ModelNew(8192, BLOCK_HW=64, num_warps=8, num_ctas=8)(x)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="the programs of a split must run concurrently")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("module", [COOP, CLUSTER], ids=["coop_c", "cluster_c"])
def test_split_on_gpu(module, shape, dtype):
    for cfg in module.CONFIGS:
        model = module.ModelNew(shape[1], **cfg)
        for seed in (2, 3, 4):
            x = uniform(shape, dtype, seed=seed)
            _check(model, x)
        if module is COOP:      # every launch leaves the barrier counters at 0
            assert int(model.state[x.device].abs().sum()) == 0
