"""The evidence rules (pipeline/evidence.py) on variant records shaped as the pipeline stores them: each
rule marks its case suspect with its reason, and an honest record stays ok."""
import copy

import pytest

from pipeline import evidence

COPY = {"median_ms": 1.0}
HONEST = {"name": "v", "status": "ok", "error": "", "timing": {"median_ms": 1.05},
          "launched": ["_k"], "compiled": [{"name": "_k"}], "other_streams": [], "kernel_ms": 1.0,
          "after_timing": {"ok": True, "suspect": False, "launched": ["_k"], "kernel_ms": 1.0, "other_streams": []},
          "ncu": {"status": "ok"}}


def judged(**changes):
    rec = copy.deepcopy(HONEST)
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".")
            rec[outer][inner] = value
        else:
            rec[key] = value
    evidence.judge(rec, COPY)
    return rec


def test_an_honest_record_stays_ok():
    assert judged()["status"] == "ok"


@pytest.mark.parametrize("changes, reason", [
    ({"after_timing.suspect": True, "after_timing.ok": False, "after_timing.reason": "held from before"},
     "after timing: held from before"),
    ({"other_streams": ["_k"]}, "stream the timing events do not see"),
    ({"launched": [], "after_timing.launched": []}, "launches no GPU kernel"),
    ({"compiled": []}, "compiled no Triton kernel"),
    ({"after_timing.kernel_ms": 3.0}, "work ran outside the timed stream"),
    ({"timing": {"median_ms": 0.5}}, "faster than the device's copy"),
    ({"ncu": {"status": "count-mismatch", "error": "2 kernels profiled, 1 launched outside ncu"}}, "ncu count-mismatch"),
])
def test_each_rule_marks_its_case_suspect(changes, reason):
    rec = judged(**changes)
    assert rec["status"] == "suspect" and reason in rec["error"], rec


def test_a_wrong_output_after_timing_is_incorrect():
    rec = judged(**{"after_timing.ok": False, "after_timing.reason": "3 of 9 elements outside tolerance"})
    assert rec["status"] == "incorrect" and "after timing: 3 of 9" in rec["error"]


def test_a_failed_record_is_left_alone():
    rec = judged(status="incorrect", error="seed 0: wrong", other_streams=["_k"])
    assert rec["status"] == "incorrect" and rec["error"] == "seed 0: wrong"


def test_within_the_copy_bound_is_not_suspect():
    # the best honest kernels reach about the copy's speed: 1.2x faster than the copy is still allowed
    assert judged(timing={"median_ms": 1.0 / 1.2})["status"] == "ok"


def _read(mbytes):
    return {"status": "ok", "kernels": [{"metrics": {evidence.READ: {"value": mbytes, "unit": "Mbyte"}}}]}


def test_dram_reads_below_the_inputs_are_suspect():
    rec = copy.deepcopy(HONEST)
    rec["ncu"] = _read(10.0)
    evidence.judge(rec, COPY, input_bytes=134_217_728)
    assert rec["status"] == "suspect" and "read 10 MB from DRAM" in rec["error"]
    honest = copy.deepcopy(HONEST)
    honest["ncu"] = _read(134.2)
    evidence.judge(honest, COPY, input_bytes=134_217_728)
    assert honest["status"] == "ok"


def test_recorded_kernels_read_their_inputs():
    """On the default suite recorded on a GPU, no profiled rmsnorm or softmax kernel reads less than its
    input (the output is as large as the input there, so the input is half the minimal bytes)."""
    import glob
    import json
    from testenv import REPO
    checked = 0
    for op in ("rmsnorm", "softmax"):
        for path in glob.glob(str(REPO / "profiles" / "nvidia-h100-80gb-hbm3" / op / "results.json")):
            for shape in json.load(open(path))["shapes"]:
                for v in shape["variants"]:
                    if v["status"] == "ok" and v["ncu"].get("status") == "ok":
                        reasons = evidence.suspicions(v, shape["copy"]["timing"], shape["min_bytes"] // 2)
                        assert not [r for r in reasons if "DRAM" in r], (op, shape["id"], v["name"])
                        checked += 1
    assert checked > 50


def test_the_declared_baseline_may_be_torch_eager_but_a_candidate_may_not():
    assert judged(compiled=[], baseline=True)["status"] == "ok"
    assert judged(compiled=[], baseline=False)["status"] == "suspect"
