"""Correctness and contract tests for the softmax variants in kernels/softmax/.

Variants and the reference are loaded by path (no pipeline import). Without an NVIDIA GPU the
kernels run in the Triton CPU interpreter (conftest.py sets TRITON_INTERPRET=1 before triton is
imported). The reference's module-level sizes are overridden to small shapes; every variant x
every config x {fp32, fp16} is compared with the reference run in fp32, with op.yaml's tolerances.
"""
import pytest
import torch

from opkit import DEVICE, OpKit, case_id

KIT = OpKit("softmax")
VARIANTS = KIT.variants
REQUIRED = ["naive_3pass", "row_per_program", "multi_row", "persistent", "online_2pass"]
SIZE_NAMES = ("batch_size", "dim")
SHAPES = [dict(batch_size=5, dim=37), dict(batch_size=3, dim=1000)]
DTYPES = [torch.float32, torch.float16]

_CASES = KIT.config_cases(SHAPES, DTYPES)


@pytest.mark.parametrize("stem,cfg,sizes,dtype", _CASES)
def test_every_config(stem, cfg, sizes, dtype):
    model = KIT.load(stem).ModelNew(*KIT.ref.get_init_inputs(), **cfg)
    KIT.run(model, KIT.inputs(sizes, dtype, seed=0))


@pytest.mark.parametrize("stem", ["naive_3pass", "online_2pass"])
@pytest.mark.parametrize("dtype", DTYPES, ids=case_id)
def test_chunked_rows_cross_several_blocks(stem, dtype):
    """BLOCK_N = 128 over dim 1000: 8 blocks, ragged last one; rows whose max sits in a late block
    (increasing ramp) and large magnitudes make the online rescaling matter."""
    model = KIT.load(stem).ModelNew(BLOCK_N=128, num_warps=4)
    x = KIT.inputs(dict(batch_size=3, dim=1000), dtype, seed=1)[0]
    KIT.check(model, [x])
    ramp = torch.linspace(-30, 30, 1000).repeat(4, 1)
    ramp[1] = ramp[1].flip(0)  # max in the first block
    ramp[2] *= 0.1
    ramp[3] = torch.randn(1000) * 20
    KIT.check(model, [ramp.to(dtype).to(DEVICE)])


def test_online_masked_lanes_stay_finite():
    # dim 37 in a 64-wide block: 27 lanes only ever see masked (-inf) columns.
    model = KIT.load("online_2pass").ModelNew(BLOCK_N=64, num_warps=2)
    KIT.check(model, KIT.inputs(dict(batch_size=2, dim=37), torch.float32, seed=2))


def test_persistent_more_blocks_than_programs():
    # The interpreter's fallback SM count is 4: 8 programs over 19 two-row blocks, ragged last block.
    model = KIT.load("persistent").ModelNew(PROGRAMS_PER_SM=2, ROWS=2, num_warps=4)
    KIT.check(model, KIT.inputs(dict(batch_size=37, dim=100), torch.float32, seed=3))


@pytest.mark.parametrize("stem", VARIANTS)
def test_default_config_other_ranks_and_non_contiguous(stem):
    model = KIT.load(stem).ModelNew()
    base = torch.randn(3, 70, 2)
    x = base.permute(2, 0, 1)  # (2, 3, 70), not contiguous
    assert not x.is_contiguous()
    KIT.check(model, [x.to(DEVICE)])
    KIT.check(model, [torch.randn(70).to(DEVICE)])


@pytest.mark.parametrize("stem", ["row_per_program", "multi_row", "persistent"])
def test_register_tiles_refuse_long_rows(stem):
    x = torch.randn(1, 65536, device=DEVICE)
    with pytest.raises(NotImplementedError, match="per thread"):
        KIT.load(stem).ModelNew()(x)


# --------------------------------------------------------------------------------------------
# The contract.

def test_required_variants_and_baseline():
    KIT.check_required(REQUIRED)


def test_op_yaml_shapes_name_reference_sizes():
    KIT.check_op_yaml_shapes(SIZE_NAMES)


@pytest.mark.parametrize("stem", VARIANTS)
def test_contract(stem):
    KIT.check_contract(stem)
