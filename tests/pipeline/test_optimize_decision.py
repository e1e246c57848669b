"""optimize's decision rule on real timings recorded on the H200 (tests/fixtures/samples-h200/nvidia-h200/): a candidate is
promoted only when it is faster than the current best beyond the tie on the tuning shapes, and correct on the
held-out ones; and the stage prompt the `cmd` proposer reads, rendered from a recorded results file."""
import pytest

from testenv import FIXTURES, REPO
from pipeline import optimize, proposer, recommend, results
from pipeline.stages import STAGES

H200 = FIXTURES / "samples-h200" / "nvidia-h200"


def records(op):
    doc = results.load(H200 / op / "results.json")
    shapes = {s["id"]: s for s in doc["shapes"]}

    def at(name, *sids):
        return {sid: next(v for v in shapes[sid]["variants"] if v["name"] == name) for sid in sids}
    return at


rmsnorm, matmul = records("rmsnorm"), records("matmul")
SEED, FLAT = "seed_2d_tiles", "flat_1d(BLOCK_HW=256,num_warps=8)"


def test_a_clear_win_is_promoted_with_its_speedup():
    v = optimize.judge(rmsnorm(SEED, "L1-36"), rmsnorm(FLAT, "L1-36"), ["L1-36"])
    assert v.ok and v.speedup == pytest.approx(61.444 / 3.6611, rel=1e-3)


def test_quartiles_apart_but_inside_the_margin_is_not_a_win():
    best = matmul("grid_2d(BLOCK_M=128,BLOCK_N=256,BLOCK_K=64,num_warps=8,num_stages=3)", "4096-fp16")
    cand = matmul("grouped_1d(BLOCK_M=128,BLOCK_N=256,BLOCK_K=64,GROUP_M=8,num_warps=8,num_stages=3)", "4096-fp16")
    assert not recommend.overlaps(best["4096-fp16"]["timing"], cand["4096-fp16"]["timing"])
    v = optimize.judge(best, cand, ["4096-fp16"])
    assert not v.ok and "not faster beyond the tie" in v.reason and 1 < v.speedup < 1 + recommend.TIE_MARGIN


def test_overlapping_quartiles_are_a_tie():
    best, cand = rmsnorm("grid_2d(BLOCK_HW=256,num_warps=8)", "L1-36"), rmsnorm(FLAT, "L1-36")
    assert recommend.overlaps(best["L1-36"]["timing"], cand["L1-36"]["timing"])
    assert not optimize.judge(best, cand, ["L1-36"]).ok


def test_slower_beyond_the_tie_on_any_tuning_shape_loses():
    shapes = ["L1-36", "batch1"]
    v = optimize.judge(rmsnorm("grid_2d(BLOCK_HW=64,num_warps=2)", *shapes), rmsnorm(FLAT, *shapes), shapes)
    assert not v.ok and v.reason.startswith("slower at batch1")


def test_a_candidate_not_ok_on_a_tuning_shape_loses_with_its_error():
    v = optimize.judge(rmsnorm(SEED, "C4096"), rmsnorm(FLAT, "C4096"), ["C4096"])
    assert not v.ok and v.reason.startswith("unsupported at C4096: one-pass tile")


def test_held_out_shapes_need_the_candidate_ok_where_the_best_is():
    # faster on L1-36, but it cannot run C4096 where the seed can: not promoted
    why = optimize.held_out(rmsnorm(SEED, "C3", "C4096"), rmsnorm(FLAT, "C3", "C4096"), ["C3", "C4096"])
    assert why.startswith("held-out shape C4096: unsupported: one-pass tile")
    # where the current best cannot run a shape either, the candidate need not
    best = rmsnorm("grid_2d(BLOCK_HW=256,num_warps=8)", "C3", "C4096")
    assert optimize.held_out(best, rmsnorm(FLAT, "C3", "C4096"), ["C3", "C4096"]) is None


def test_gpu_prompt_carries_the_stage_metrics_and_only_the_tuning_shapes():
    doc = results.load(H200 / "rmsnorm" / "results.json")
    recs = rmsnorm(FLAT, "L1-36")
    stage = STAGES["block_tiling"]
    text = proposer.stage_prompt(doc, ["L1-36"], recs, REPO / "kernels" / "rmsnorm" / "flat_1d.py",
                                 recs["L1-36"]["config"], stage, REPO, REPO / "kernels")
    assert stage.focus in text and "launch__occupancy_limit_registers" in text
    assert '"launch__registers_per_thread":' in text        # the measured value, from the results file
    assert "tuning shape L1-36" in text and '"batch_size": 112' in text
    assert "def _rmsnorm" in text or "@triton.jit" in text
    others = [s["id"] for s in doc["shapes"] if s["id"] != "L1-36"]
    assert not [sid for sid in others if f"shape {sid}" in text]
