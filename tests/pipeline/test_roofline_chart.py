"""The roofline chart (charts.roofline_chart) on the H100 samples: drawn where the op declares its FLOPs,
its ceilings are the measured copy bandwidth and matmul rate, every profiled variant is a point."""
import re

from testenv import REPO
from pipeline import analysis, charts, report, results, shapeanalysis

SAMPLES = REPO / "profiles" / "nvidia-h100-80gb-hbm3"


def charts_of(op):
    doc = results.load(SAMPLES / op / "results.json")
    return doc, [(sa, charts.chart_data(op, sa)) for sa in shapeanalysis.analyze_doc(doc)]


def test_compute_ops_get_a_roofline_under_the_measured_ceilings():
    doc, shapes = charts_of("matmul")
    ceil = analysis.ceilings(doc["environment"])
    for sa, data in shapes:
        assert data.roof.gbs == ceil["copy_gbs"] and data.roof.tflops == ceil["matmul_tflops"][sa.shape["dtype"]]
        assert data.roof.flops == sa.shape["flops"]
        drawn = charts.shape_charts(data, report._styles(doc))
        assert drawn[-1].title == "Roofline"
        svg = str(drawn[-1].svg)
        profiled = [p for p in data.points if p.dram_bytes and p.median_ms]
        assert profiled and len(profiled) == len([v for v in sa.shape["variants"]
                                                  if analysis.dram_bytes(v) and v["status"] == "ok"])
        # no point above the roof: achieved FLOP/s within the ceiling at its intensity (2 % for clock drift)
        for p in profiled:
            ai = data.roof.flops / p.dram_bytes
            assert data.roof.flops / (p.median_ms * 1e-3) <= 1.02 * min(ai * data.roof.gbs * 1e9, data.roof.tflops * 1e12)
        assert re.search(r"copy [\d,]+ GB/s, float16 matmul|copy [\d,]+ GB/s, bfloat16 matmul", svg)


def test_ops_without_declared_flops_have_no_roofline():
    doc, shapes = charts_of("rmsnorm")
    for sa, data in shapes:
        assert data.roof is None
        assert [c.title for c in charts.shape_charts(data, report._styles(doc))][-1] != "Roofline"
