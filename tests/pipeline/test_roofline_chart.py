"""The roofline chart (charts.roofline_chart): each profiled variant placed by the FLOPs ncu counted in its kernels
(analysis.ncu_flops) over its DRAM bytes, under the measured copy bandwidth and matmul rate.

tests/fixtures/flops: one shape or three per op recorded on the H100 with ncu's FLOP counters collected
(`profile --force --require-gpu --op OP --shape ...` with tests/fixtures/flops/pipeline.yaml, whose kernels_dir and
profiles_dir were the device's)."""
import re

import pytest

from testenv import FIXTURES
from pipeline import analysis, charts, report, results, shapeanalysis

FLOPS = FIXTURES / "flops" / "nvidia-h100-80gb-hbm3"


def charts_of(path):
    doc = results.load(path)
    return doc, [(sa, charts.chart_data(doc["op"], sa)) for sa in shapeanalysis.analyze_doc(doc)]


def profiled(shape):
    return [v for v in shape["variants"] if v["status"] == "ok" and analysis.dram_bytes(v)]


@pytest.mark.parametrize("op", ["matmul", "attn_scores"])
def test_ncu_counts_exactly_the_declared_flops_of_tensor_core_ops(op):
    doc = results.load(FLOPS / op / "results.json")
    for s in doc["shapes"]:
        assert s["flops"] and profiled(s)
        for v in profiled(s):
            tensor = sum(analysis.m(k, n) or 0 for k in v["ncu"]["kernels"] for n in analysis.FLOP_WEIGHTS
                         if n.startswith("sm__ops_path_tensor"))
            assert tensor == s["flops"], (s["id"], v["name"])
            # on top, only split-K's reduction kernel adds: one fadd per output element per split
            extra = analysis.ncu_flops(v) - s["flops"]
            if v["stem"] == "split_k":
                assert extra == s["params"]["M"] * s["params"]["N"] * v["config"]["SPLIT_K"]
            else:
                assert extra == 0, (s["id"], v["name"])


@pytest.mark.parametrize("op", ["matmul", "rmsnorm", "softmax"])
def test_every_profiled_variant_sits_under_the_measured_ceilings(op):
    doc, shapes = charts_of(FLOPS / op / "results.json")
    ceil = analysis.ceilings(doc["environment"])
    for sa, data in shapes:
        assert data.roof.gbs == ceil["copy_gbs"] and data.roof.tflops == ceil["matmul_tflops"][sa.shape["dtype"]]
        drawn = charts.shape_charts(data, report._styles(doc))
        assert drawn[-1].title == "Roofline"
        placed = [p for p in data.points if p.flops and p.dram_bytes and p.median_ms]
        assert len(placed) == len(profiled(sa.shape))
        by_name = {v["name"]: v for v in sa.shape["variants"]}
        for p in placed:
            assert p.flops == analysis.ncu_flops(by_name[p.name])      # ncu's count, not a declared one
            ai = p.flops / p.dram_bytes
            # achieved FLOP/s within the ceiling at its intensity (2 % for clock drift)
            assert p.flops / (p.median_ms * 1e-3) <= 1.02 * min(ai * data.roof.gbs * 1e9, data.roof.tflops * 1e12)
        assert re.search(rf"copy [\d,]+ GB/s, {sa.shape['dtype']} matmul", str(drawn[-1].svg))


def test_rmsnorm_variants_differ_in_the_arithmetic_they_do():
    # one op, one shape: the FLOP count is the variant's, so the points spread along the intensity axis
    doc = results.load(FLOPS / "rmsnorm" / "results.json")
    s = next(s for s in doc["shapes"] if s["id"] == "L1-36")
    counts = {v["stem"]: analysis.ncu_flops(v) for v in profiled(s)}
    assert len(set(counts.values())) > 3 and max(counts.values()) > 2 * min(counts.values())


def test_without_flop_counters_or_declared_flops_there_is_no_roofline():
    doc, shapes = charts_of(FIXTURES / "samples-h200" / "nvidia-h200" / "rmsnorm" / "results.json")
    for sa, data in shapes:
        assert all(analysis.ncu_flops(v) is None for v in sa.shape["variants"])
        assert [c.title for c in charts.shape_charts(data, report._styles(doc))][-1] != "Roofline"


def test_a_kernel_that_used_the_tensor_pipe_uncounted_has_no_flop_count():
    doc = results.load(FLOPS / "matmul" / "results.json")
    v = profiled(doc["shapes"][0])[0]
    k = {**v["ncu"]["kernels"][0], "metrics": {n: x for n, x in v["ncu"]["kernels"][0]["metrics"].items()
                                                if not n.startswith("sm__ops_path_tensor")}}
    assert analysis.ncu_flops({**v, "ncu": {**v["ncu"], "kernels": [k]}}) is None
