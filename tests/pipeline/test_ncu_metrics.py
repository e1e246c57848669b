"""Extraction from real .ncu-rep files recorded on the H100 (fixtures) and the H200 (samples), read with the real ncu_report module."""
import json
from pathlib import Path

import pytest

from testenv import FIXTURES
from pipeline import config, metrics, ncu, results
from pipeline.errors import ResultsError

FIX = FIXTURES / "profiles" / "nvidia-h100-80gb-hbm3" / "rmsnorm"


@pytest.fixture(scope="module")
def doc():
    return results.load(FIX / "results.json")


def small_shape(doc):
    return next(s for s in doc["shapes"] if s["id"] == "small")


def range_of(v):
    """The NVTX range a variant ran in (recorded as `range`; fixtures of one shape per report: v<index>)."""
    return v["ncu"].get("range") or f"v{v['index']}"


@pytest.fixture(scope="module")
def small_report(doc):
    return metrics.read_report(FIX / small_shape(doc)["ncu"]["report"], doc["environment"]["ncu_settings"]["metrics"])


def test_every_profiled_kernel_is_attributed_to_a_variant_range(small_report, doc):
    profiled = [v for v in small_shape(doc)["variants"] if v["ncu"]["status"] == "ok"]
    assert small_report["unattributed"] == []
    assert sorted(small_report["by_range"]) == sorted(range_of(v) for v in profiled)
    for v in profiled:
        kernels = small_report["by_range"][range_of(v)]
        assert [k["name"] for k in kernels] == v["launched"]   # same kernels ncu saw as launched outside it


def test_extraction_matches_what_the_results_file_stored(small_report, doc):
    for v in small_shape(doc)["variants"]:
        if v["ncu"]["status"] != "ok":
            continue
        fresh = small_report["by_range"][range_of(v)]
        stored = v["ncu"]["kernels"]
        assert [k["metrics"] for k in fresh] == [k["metrics"] for k in stored]


def test_core_metrics_present_with_units(small_report):
    kernel = next(iter(small_report["by_range"].values()))[0]
    for name in ("sm__throughput.avg.pct_of_peak_sustained_elapsed", "sm__warps_active.avg.pct_of_peak_sustained_active",
                 "launch__grid_size", "dram__throughput.avg.pct_of_peak_sustained_elapsed", "gpu__time_duration.sum"):
        assert name in kernel["metrics"], name
    assert kernel["metrics"]["sm__throughput.avg.pct_of_peak_sustained_elapsed"]["unit"] == "%"
    assert kernel["metrics"]["gpu__time_duration.sum"]["unit"] == "ns"
    grid = kernel["metrics"]["launch__grid_size"]["value"]
    dims = [kernel["metrics"][f"launch__grid_dim_{a}"]["value"] for a in "xyz"]
    assert grid == dims[0] * dims[1] * dims[2] and isinstance(grid, int)
    assert kernel["missing"] == []
    assert kernel["metrics"]["profiler__replayer_passes"]["value"] == 10


def test_stored_ncu_command_is_the_one_built(doc):
    shape = doc["shapes"][0]
    cmd = shape["ncu"]["command"]
    settings = doc["environment"]["ncu_settings"]
    rebuilt = ncu.command(cmd[0], config.NcuConfig(metrics=settings["metrics"]), FIX / "x.ncu-rep",
                          [], cmd[cmd.index("-o") + 2:])
    assert rebuilt[:12] == cmd[:12]
    assert cmd[1:11] == ["--replay-mode", "kernel", "--clock-control", "base", "--cache-control", "all",
                         "--nvtx", "--nvtx-include", "pipeline", "--metrics"]
    assert cmd[cmd.index("-k") + 1].startswith("regex:^(")


def test_command_line_pinned():
    cmd = ncu.command("/usr/local/cuda/bin/ncu", config.NcuConfig(metrics=["a.sum", "b.pct"]), Path("/p/s.ncu-rep"),
                      ["k_b", "k.a", "k_b"], ["python3", "-m", "pipeline.worker", "job.json"])
    assert cmd == ["/usr/local/cuda/bin/ncu", "--replay-mode", "kernel", "--clock-control", "base",
                   "--cache-control", "all", "--nvtx", "--nvtx-include", "pipeline", "--metrics", "a.sum,b.pct",
                   "-k", r"regex:^(k\.a|k_b)$", "-f", "-o", "/p/s", "python3", "-m", "pipeline.worker", "job.json"]


def test_real_log_reads_clean():
    found = ncu.read_log((FIX / "small.ncu.log").read_text())
    assert not found.errors and not found.no_kernels and not found.permission


@pytest.mark.parametrize("text,field", [
    ("==PROF== Disconnected\n==WARNING== No kernels were profiled.\n", "no_kernels"),
    ("==ERROR== ERR_NVGPUCTRPERM - The user does not have permission to access NVIDIA GPU Performance Counters",
     "permission"),
])
def test_log_findings(text, field):
    assert getattr(ncu.read_log(text), field)


def test_missing_ncu_names_where_it_looked(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(ncu, "candidate_paths", lambda: [])
    with pytest.raises(Exception, match=r"ncu\) not found; looked in PATH, \$CUDA_HOME/bin, /usr/local/cuda\*/bin"):
        ncu.locate(config.NcuConfig())


def test_results_load_rejects_corrupt_and_foreign_files(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text("{not json")
    with pytest.raises(ResultsError, match="not readable JSON"):
        results.load(bad)
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ResultsError, match="not a results file"):
        results.load(bad)
    with pytest.raises(ResultsError, match="no such results file"):
        results.load(tmp_path / "none.json")


def test_atomic_write_leaves_no_partial_file(tmp_path):
    target = tmp_path / "r.json"
    results.write_atomic(target, "old")

    with pytest.raises(TypeError):
        results.write_atomic(target, None)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_isolated_read_equals_in_process_read(small_report, doc):
    isolated = metrics.read_report_isolated(FIX / small_shape(doc)["ncu"]["report"], doc["environment"]["ncu_settings"]["metrics"], None)
    assert isolated == small_report


@pytest.mark.parametrize("profiler_name,base", [
    ("void at::native::vectorized_elementwise_kernel<4, at::native::BinaryFunctor<float, float, float, "
     "at::native::binary_internal::DivFunctor<float> >, std::array<char*, 3ul> >(int, "
     "at::native::BinaryFunctor<float, float, float, at::native::binary_internal::DivFunctor<float> >, "
     "std::array<char*, 3ul>)", "vectorized_elementwise_kernel"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<float, at::native::MeanOps<float, float, "
     "float, float>, unsigned int, float, 4, 4> >(at::native::ReduceOp<float, at::native::MeanOps<float, "
     "float, float, float>, unsigned int, float, 4, 4>)", "reduce_kernel"),
    ("_rmsnorm_flat_1d_kernel", "_rmsnorm_flat_1d_kernel"),
])
def test_kernel_guard_uses_ncu_function_names(profiler_name, base):
    # the guard once held full signatures and matched nothing: ncu then profiled no kernel (seen on the H100)
    assert ncu.function_name(profiler_name) == base


def test_metric_availability_by_base_name():
    bases = {"sm__throughput", "dram__bytes_read", "gpu__time_duration"}
    kept, skipped = ncu.available(bases, ["sm__throughput.avg.pct_of_peak_sustained_elapsed", "launch__grid_size",
                                          "sm__maximum_warps_per_active_cycle_pct", "l1tex__made_up.sum"])
    # launch properties and unsuffixed derived ratios are never listed by --query-metrics (seen on the H100)
    assert kept == ["sm__throughput.avg.pct_of_peak_sustained_elapsed", "launch__grid_size",
                    "sm__maximum_warps_per_active_cycle_pct"]
    assert skipped == ["l1tex__made_up.sum"]
    assert ncu.available(set(), ["x.sum"]) == (["x.sum"], [])   # a failed query filters nothing


def test_one_report_per_op_attributes_kernels_to_shape_and_variant():
    """The recorded H200 softmax sample: one ncu process profiled the family-best variants of all three
    shapes; each kernel is found under its s<shape>.v<variant> range with the metrics the results file holds."""
    sample = FIXTURES / "samples-h200" / "nvidia-h200" / "softmax"
    doc = results.load(sample / "results.json")
    (name,) = {s["ncu"]["report"] for s in doc["shapes"]}
    read = metrics.read_report(sample / name, doc["environment"]["ncu_settings"]["metrics"])
    assert read["unattributed"] == []
    profiled = {v["ncu"]["range"]: v for s in doc["shapes"] for v in s["variants"] if v["ncu"]["status"] == "ok"}
    assert sorted(read["by_range"]) == sorted(profiled)
    assert {r.split(".")[0] for r in profiled} == {f"s{j}" for j in range(len(doc["shapes"]))}
    for rng, v in profiled.items():
        assert [k["metrics"] for k in read["by_range"][rng]] == [k["metrics"] for k in v["ncu"]["kernels"]]
