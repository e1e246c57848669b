"""coop_c: the channel column split over programs that meet at a barrier.

Under the Triton CPU interpreter programs run one at a time, so coop_c runs one program per tile
there (SPLIT = 1: the counter, the workspace slots and the reset are exercised alone); the split
itself (2 to 16 programs per tile, a ragged last chunk, several rounds per group, counters reused
across launches) is checked on the GPU (marked gpu).
"""
import pytest
import torch

from opkit import DEVICE, OpKit, uniform

KIT = OpKit("rmsnorm")
MODULE = KIT.load("coop_c")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _check(model, x):
    KIT.check(model, [x], poison=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_one_program_per_tile_many_rounds(dtype):
    # more tiles than the interpreter's programs: every group walks several tiles; ragged strip
    for cfg in MODULE.CONFIGS:
        model = MODULE.ModelNew(70, **cfg)
        for seed in (0, 1):     # a second launch reuses the counters the first left at 0
            x = uniform((3, 70, 9, 11), dtype, seed=seed)
            _check(model, x)
        assert int(model.state[x.device].abs().sum()) == 0


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE != "cuda", reason="programs of a group must run concurrently")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 4096, 16, 16), (3, 1000, 7, 9), (1, 300, 64, 65), (4, 64, 32, 32)],
                         ids=lambda s: "x".join(map(str, s)))
def test_split_on_gpu(shape, dtype):
    for cfg in MODULE.CONFIGS:
        model = MODULE.ModelNew(shape[1], **cfg)
        for seed in (2, 3, 4):
            x = uniform(shape, dtype, seed=seed)
            _check(model, x)
        assert int(model.state[x.device].abs().sum()) == 0
