"""coop_c: the channel column split over programs that exchange flagged partial sums.

Under the Triton CPU interpreter programs run one at a time, so coop_c runs one program per tile
there (SPLIT = 1: the flags, the workspace slots and the launch-number wrap are exercised alone);
the split itself (2 to 16 programs per tile, a ragged last chunk, several rounds per group, the
workspace reused across launches) is checked on the GPU (marked gpu).
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
        for seed in (0, 1):     # a second launch reuses the workspace under the next launch number
            x = uniform((3, 70, 9, 11), dtype, seed=seed)
            _check(model, x)
        assert model.workspaces[x.device][1] == 2


def test_launch_number_wraps_to_a_zeroed_workspace():
    model = MODULE.ModelNew(64, **MODULE.CONFIGS[0])
    x = uniform((2, 64, 4, 8), torch.float32, seed=5)
    _check(model, x)
    ws, _ = model.workspaces[x.device]
    model.workspaces[x.device] = (ws, MODULE.SEQ_MAX)
    _check(model, x)
    assert model.workspaces[x.device][1] == 1 and model.workspaces[x.device][0] is ws


def test_words_left_from_the_last_launch_are_not_read_as_this_ones():
    """Every word carries the last launch's flag for every iteration parity, with wrong values: the next
    launch waits for its own words (on the GPU its 16 programs per tile each wait for the 15 others)."""
    C = 4096 if DEVICE == "cuda" else 64
    model = MODULE.ModelNew(C, **MODULE.CONFIGS[0])
    x = uniform((2, C, 4, 8), torch.float32, seed=6)
    _check(model, x)
    ws, seq = model.workspaces[x.device]
    split = C // 256 if DEVICE == "cuda" else 1     # CONFIGS[0]: 256 x 32 chunks
    slots = ws.view(-1, 2, split * 32)              # [group, iteration parity, SPLIT x BLOCK_HW words]
    slots[:, 0] = ((seq * 65536) << 32) | 0x3F800000        # partial sum 1.0 under the last launch's flag
    slots[:, 1] = ((seq * 65536 + 1) << 32) | 0x3F800000    # ... for both iteration parities
    _check(model, x)


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
        assert model.workspaces[x.device][1] == 3
