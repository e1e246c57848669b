"""Faults only a GPU shows, as recorded on the H100 by tests/fixtures/record.sh: each variant ended with
its documented status, the good one was still verified, timed, profiled and recommended."""
import pytest

from testenv import FIXTURES
from pipeline import recommend, results

F = FIXTURES / "faulty-gpu"
GPU = "nvidia-h100-80gb-hbm3"


def variants(path):
    doc = results.load(path)
    return doc["shapes"], {v["name"]: v for v in doc["shapes"][0]["variants"]}


def test_each_gpu_fault_has_its_status_and_message():
    shapes, v = variants(F / "profiles" / GPU / "gpufaults" / "results.json")
    assert v["illegal_address"]["status"] == "crashed"
    assert "illegal memory access" in v["illegal_address"]["error"]
    assert v["hang_gpu"]["status"] == "timeout" and "killed after 45 s in phase verify" in v["hang_gpu"]["error"]
    assert v["compile_error"]["status"] == "compile-error" and "CompilationError" in v["compile_error"]["error"]
    assert v["launch_error"]["status"] == "launch-error" and "invalid argument" in v["launch_error"]["error"]
    # variants after the crash still ran: the worker restarted on them
    assert v["launch_error"]["status"] != "worker-error" and v["good"]["status"] == "ok"


def test_kernel_count_checks_per_variant_range():
    _, v = variants(F / "profiles" / GPU / "gpufaults" / "results.json")
    assert v["count_mismatch"]["ncu"]["status"] == "count-mismatch"
    assert v["count_mismatch"]["ncu"]["error"] == "6 kernels profiled, 5 launched outside ncu"
    assert v["cpu_only"]["ncu"]["status"] == "no-kernels" and "NVTX range s0.v2" in v["cpu_only"]["ncu"]["error"]
    assert v["good"]["ncu"]["status"] == "ok" and len(v["good"]["ncu"]["kernels"]) == len(v["good"]["launched"])


def test_good_variant_survives_and_is_recommended():
    shapes, _ = variants(F / "profiles" / GPU / "gpufaults" / "results.json")
    rec = recommend.recommend(shapes[0])
    assert rec.variant["name"] in ("good", "count_mismatch")   # the two correct ones; they may tie
    assert shapes[0]["ncu"]["status"] == "ok" and shapes[0]["ncu"]["unattributed"] == []


def test_no_kernels_profiled_is_read_from_the_log_despite_exit_0():
    shapes, v = variants(F / "profiles-nokernels" / GPU / "gpufaults" / "results.json")
    assert shapes[0]["ncu"]["exit_code"] == 0 and shapes[0]["ncu"]["status"] == "no-kernels"
    assert v["cpu_only"]["ncu"]["status"] == "no-kernels"


@pytest.mark.parametrize("shape", ["first", "second"])
def test_ncu_timeout_is_bounded_and_timings_are_kept(shape):
    # one ncu process covers the op's two shapes: killed at its limit, both shapes say so, timings stay
    doc = results.load(F / "profiles" / GPU / "ncutimeout" / "results.json")
    rec = next(s for s in doc["shapes"] if s["id"] == shape)
    assert rec["ncu"]["status"] == "timeout" and rec["ncu"]["message"] == "ncu killed after 3 s"
    assert rec["ncu"]["wall_s"] < 30
    good = rec["variants"][0]
    assert good["status"] == "ok" and good["timing"]["median_ms"] > 0 and good["ncu"]["status"] == "timeout"
