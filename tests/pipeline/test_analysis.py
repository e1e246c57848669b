"""Bound classification and findings on real variants recorded on the H100 (fixtures) and the H200 (profiles/)."""
import copy
import re

import pytest

from testenv import FIXTURES, REPO
from pipeline import analysis, recommend, results

FIX = FIXTURES / "profiles" / "nvidia-h100-80gb-hbm3" / "rmsnorm" / "results.json"
SAMPLE = FIXTURES / "samples-h200" / "nvidia-h200" / "rmsnorm" / "results.json"


@pytest.fixture(scope="module")
def fixture_doc():
    return results.load(FIX)


@pytest.fixture(scope="module")
def sample_doc():
    return results.load(SAMPLE)


@pytest.fixture(scope="module")
def every_variant_doc():
    """The H100 L1-36 sample as recorded when ncu profiled every variant (before ncu.select family-best)."""
    return results.load(FIXTURES / "gate" / "sample" / "nvidia-h100-80gb-hbm3" / "rmsnorm" / "results.json")


def shape_of(doc, sid):
    return next(s for s in doc["shapes"] if s["id"] == sid)


def variant(shape, name):
    return next(v for v in shape["variants"] if v["name"] == name)


def best_copy_gbs(env):
    """The copy ceiling from its fastest stored repeat, recomputed here independently of analysis.py."""
    c = env["ceilings"]
    return c["copy_bytes"] / c["timing"]["copy"]["min_ms"] / 1e6


def best_matmul_tflops(env, dtype):
    c = env["ceilings"]
    return 2 * c["matmul_n"] ** 3 / c["timing"][f"matmul_{dtype}"]["min_ms"] / 1e9


def all_variants(doc):
    for s in doc["shapes"]:
        for v in s["variants"]:
            yield s, v


def test_every_threshold_is_documented_here_and_in_docs():
    docs = (REPO / "docs" / "report.md").read_text()
    for key, (value, doc) in analysis.THRESHOLDS.items():
        assert isinstance(value, float) and len(doc) > 30, key
        assert re.search(rf"\|\s*`{key}`\s*\|\s*{value:g}\s*\|", docs), f"docs/report.md lacks {key} = {value:g}"


def test_seed_baseline_spills_are_a_finding(fixture_doc):
    env = fixture_doc["environment"]
    seed = variant(shape_of(fixture_doc, "small"), "seed_2d_tiles")
    spills = seed["compiled"][0]["n_spills"]
    assert spills > 0                                    # the recorded seed kernel really spills
    hit = [f for f in analysis.findings(seed, shape_of(fixture_doc, "small"), env) if f.metric.startswith("n_spills")]
    assert len(hit) == 1 and hit[0].value == f"{spills} registers" and str(spills) in hit[0].text


def test_grid_smaller_than_the_gpu(fixture_doc):
    env = fixture_doc["environment"]
    checked = 0
    for shape, v in all_variants(fixture_doc):
        k = analysis.dominant_kernel(v)
        grid = analysis.m(k, "launch__grid_size")
        if grid is None or grid >= env["sm_count"]:
            continue
        f = [x for x in analysis.findings(v, shape, env) if x.metric == "launch__grid_size"]
        assert f and f[0].value == f"{grid:,.0f} blocks", v["name"]
        assert f"{env['sm_count'] - grid:,.0f} SMs get no block" in f[0].text
        checked += 1
    assert checked >= 5


def test_less_than_one_wave_and_tail_effects(sample_doc):
    env = sample_doc["environment"]
    seen = {"low": 0, "tail": 0}
    for shape, v in all_variants(sample_doc):
        k = analysis.dominant_kernel(v)
        waves, grid = analysis.m(k, analysis.WAVES), analysis.m(k, "launch__grid_size")
        if waves is None or grid < env["sm_count"]:
            continue
        f = [x for x in analysis.findings(v, shape, env) if x.metric == analysis.WAVES]
        if waves < 1:
            assert f and "of one wave" in f[0].text and f[0].value == f"{waves:.2f}"
            seen["low"] += 1
        elif waves < 4 and 0 < waves % 1 < 0.5:
            assert f and "tail effect" in f[0].text
            seen["tail"] += 1
        else:
            assert not f, (v["name"], waves)
    assert seen["low"] and seen["tail"]


def test_cluster_launch_that_leaves_sms_idle(sample_doc):
    """On the H200 sample: every profiled kernel reports launch__cluster_dim_* (0 x 0 x 0 without clusters); a
    cluster launch is a finding exactly when max active clusters x cluster size < cluster_fill x SMs x blocks/SM."""
    env = sample_doc["environment"]
    clustered = plain = 0
    for shape, v in all_variants(sample_doc):
        k = analysis.dominant_kernel(v)
        if k is None:
            continue
        dims = [analysis.m(k, f"launch__cluster_dim_{a}") for a in "xyz"]
        assert None not in dims, (shape["id"], v["name"])
        found = [f for f in analysis.findings(v, shape, env) if f.metric == "launch__cluster_max_active"]
        if not any(dims):
            assert analysis.cluster_dims(v) is None and not found
            plain += 1
            continue
        assert analysis.cluster_dims(v) == tuple(int(d) for d in dims)
        assert v["config"]["num_ctas"] == dims[0] * dims[1] * dims[2]     # Triton's num_ctas is the cluster
        active = analysis.m(k, "launch__cluster_max_active")
        per_sm = min(analysis.m(k, f"launch__occupancy_limit_{n}") for n in analysis.OCC_LIMITS)
        resident, slots = active * v["config"]["num_ctas"], env["sm_count"] * per_sm
        if resident < analysis.t("cluster_fill") * slots:
            assert found and f"at most {active:g} resident at once, {resident:g} blocks" in found[0].text
            assert f"{env['sm_count']} SMs × {per_sm:g} blocks/SM offer {slots:g} slots" in found[0].text
        else:
            assert not found
        clustered += 1
    assert clustered and plain


def test_occupancy_limiter_agrees_with_ncus_theoretical_occupancy():
    """launch__occupancy_limit_* are blocks/SM; the smallest sets ncu's theoretical occupancy.
    On the first H100 sample, which recorded sm__maximum_warps_per_active_cycle_pct for every kernel."""
    checked = 0
    frozen = results.load(FIXTURES / "gate" / "sample" / "nvidia-h100-80gb-hbm3" / "rmsnorm" / "results.json")
    for _, v in all_variants(frozen):
        for k in (v.get("ncu") or {}).get("kernels") or []:
            limits = {n: analysis.m(k, f"launch__occupancy_limit_{n}") for n in analysis.OCC_LIMITS}
            theo, block = analysis.m(k, analysis.THEORETICAL), analysis.m(k, "launch__block_size")
            warps_per_block = -(-block // 32)
            assert theo == pytest.approx(100 * min(limits.values()) * warps_per_block / 64, abs=0.01)
            lim = analysis.occupancy_limiter(k)
            if min(limits.values()) < limits["warps"]:
                assert lim and lim[1] == min(limits.values()) and lim[2] == limits["warps"]
            else:
                assert lim is None
            checked += 1
    assert checked > 200


def test_l1_36_winner_is_memory_bound_at_the_roofline(sample_doc):
    env, shape = sample_doc["environment"], shape_of(sample_doc, "L1-36")
    rec = recommend.recommend(shape)
    frac = shape["min_bytes"] / (best_copy_gbs(env) * 1e9) * 1e3 / rec.median_ms
    assert frac >= analysis.t("near_roofline_fraction")
    b = analysis.classify(rec.variant, shape, env)
    assert b.kind == "memory-bound" and f"{frac:.0%} of the memory roofline" in b.rule
    texts = [f.text for f in analysis.findings(rec.variant, shape, env)]
    assert any("at the memory limit" in t for t in texts)


def test_memory_bound_by_ncu_percentages_without_the_roofline(sample_doc):
    shape = shape_of(sample_doc, "L1-36")
    seed = variant(shape, "seed_2d_tiles")
    b = analysis.classify(seed, shape, sample_doc["environment"])
    dram = analysis.m(analysis.dominant_kernel(seed), analysis.DRAM)
    assert b.kind == "memory-bound" and f"DRAM {dram:.1f} % ≥ 60 %" in b.rule


def test_latency_and_launch_bound(every_variant_doc, fixture_doc):
    shape = shape_of(every_variant_doc, "L1-36")
    slow = variant(shape, "grid_3d(BLOCK_H=8,BLOCK_W=16,num_warps=4)")
    b = analysis.classify(slow, shape, every_variant_doc["environment"])
    assert b.kind == "latency-bound" and b.label == "latency/occupancy-bound" and "both < 60 %" in b.rule
    small = shape_of(fixture_doc, "small")
    kinds = {analysis.classify(v, small, fixture_doc["environment"]).kind for v in small["variants"]}
    assert "launch-bound" in kinds                      # 4 µs kernels on a 4 MB problem


def test_unknown_duration_unit_is_not_guessed(fixture_doc):
    v = copy.deepcopy(variant(shape_of(fixture_doc, "small"), "grid_2d(BLOCK_HW=64,num_warps=4)"))
    v["ncu"]["kernels"][0]["metrics"][analysis.DUR]["unit"] = "cycles"
    assert analysis.duration_us(v["ncu"]["kernels"][0]) is None
    assert analysis.classify(v).kind != "launch-bound"


def test_excess_bytes_and_low_l2_hit_on_re_read_data(every_variant_doc):
    env, shape = every_variant_doc["environment"], shape_of(every_variant_doc, "L1-36")
    v = variant(shape, "chunked_c(BLOCK_C=16,BLOCK_HW=256,num_warps=4)")      # two passes over C
    moved = analysis.dram_bytes(v)
    ratio = moved / shape["min_bytes"]
    fs = {f.metric: f for f in analysis.findings(v, shape, env)}
    assert ratio >= 1.25
    assert fs[f"{analysis.READ} + {analysis.WRITE}"].value == analysis.fmt_bytes(moved)
    assert f"{ratio:.2f}×" in fs[f"{analysis.READ} + {analysis.WRITE}"].text
    hit = analysis.m(analysis.dominant_kernel(v), analysis.L2_HIT)
    assert fs[analysis.L2_HIT].value == f"{hit:.1f} %"
    streaming = variant(shape, "grid_2d(BLOCK_HW=128,num_warps=8)")        # one pass: no re-reads
    assert not [f for f in analysis.findings(streaming, shape, env) if f.metric == analysis.L2_HIT]


def test_compute_roofline_only_for_ops_that_declare_flops(fixture_doc):
    env = fixture_doc["environment"]
    shape = copy.deepcopy(shape_of(fixture_doc, "small"))
    assert analysis.roofline(shape, env).compute_basis == "n/a (op declares no FLOPs)"
    shape["flops"] = 3 * 10**9
    r = analysis.roofline(shape, env)
    rate = best_matmul_tflops(env, shape["dtype"])
    assert r.compute_ms == pytest.approx(3e9 / (rate * 1e12) * 1e3)
    v = recommend.recommend(shape).variant
    assert analysis.roofline_fractions(v, shape, env)[1] == pytest.approx(r.compute_ms / v["timing"]["median_ms"])


def test_memory_bound_is_dram_bound_and_onchip_pressure_is_its_own_finding(sample_doc):
    """A kernel whose L1/shared traffic keeps the memory system busy while DRAM idles is not memory-bound."""
    seen = 0
    for shape in sample_doc["shapes"]:
        for v in shape["variants"]:
            k = analysis.dominant_kernel(v)
            onchip, dram = analysis.m(k, analysis.MEM), analysis.m(k, analysis.DRAM)
            if onchip is None or dram is None:
                continue
            b = analysis.classify(v, shape, sample_doc["environment"])
            if b.kind == "memory-bound" and "roofline" not in b.rule:
                assert "DRAM" in b.rule and dram * (analysis.clock_ratio(v) or 1) >= 60 * 0.95, (v["name"], b)
            pressure = [f for f in analysis.findings(v, shape, sample_doc["environment"]) if f.metric == analysis.MEM]
            assert bool(pressure) == (onchip - dram >= analysis.t("l1_pressure_gap_pct"))
            seen += 1
    assert seen > 10


def test_clock_ratio_flagged_beyond_five_percent(sample_doc):
    flagged = 0
    for shape in sample_doc["shapes"]:
        for v in shape["variants"]:
            ratio = analysis.clock_ratio(v)
            if ratio is None:
                continue
            found = [f for f in analysis.findings(v, shape, sample_doc["environment"]) if f.metric == analysis.DUR]
            assert bool(found) == (abs(ratio - 1) > 0.05), (v["name"], ratio)
            flagged += bool(found)
    assert flagged > 0
