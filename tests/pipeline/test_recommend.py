"""recommend.py on its own: the tie rule, the ranking (correct and timed variants only, fastest first) and the
recommendation built from it, checked against the recorded H100 results of the cheats op, whose suspect
variants are timed faster than the honest one."""
import pytest

from testenv import FIXTURES
from pipeline import recommend, results

CHEATS = FIXTURES / "cheats" / "profiles" / "nvidia-h100-80gb-hbm3" / "cheats" / "results.json"


def _t(median, p25=None, p75=None):
    return {"median_ms": median, "p25_ms": p25 if p25 is not None else median, "p75_ms": p75 if p75 is not None else median}


@pytest.fixture(scope="module")
def cheats():
    return {s["id"]: s for s in results.load(CHEATS)["shapes"]}


def test_ties_are_overlapping_quartiles_or_medians_within_the_margin():
    assert recommend.tied(_t(1.0, 0.9, 1.1), _t(1.15, 1.05, 1.2))                # quartiles overlap
    assert recommend.tied(_t(1.0), _t(1.0 + recommend.TIE_MARGIN * 0.99))          # within 2 %
    assert not recommend.tied(_t(1.0), _t(1.0 + recommend.TIE_MARGIN * 1.01))      # beyond, quartiles apart
    # the rule is symmetric: the slower one named first ties alike
    assert recommend.tied(_t(1.0 + recommend.TIE_MARGIN * 0.99), _t(1.0))
    assert not recommend.tied(_t(1.0 + recommend.TIE_MARGIN * 1.01), _t(1.0))


def test_quartiles_that_only_touch_overlap():
    assert recommend.overlaps(_t(1.0, 0.9, 1.1), _t(1.3, 1.1, 1.5))
    assert not recommend.overlaps(_t(1.0, 0.9, 1.1), _t(1.3, 1.11, 1.5))


def test_recommendation_names_every_variant_within_the_margin_as_tied():
    shape = {"variants": [{"name": n, "status": "ok", "timing": _t(m)} for n, m in
                          (("a", 1.000), ("b", 1.015), ("c", 1.030), ("d", 0.999))],
             "reference": {"timing": None}, "copy": {"timing": None}}
    rec = recommend.recommend(shape)
    assert rec.variant["name"] == "d" and rec.ties == ["a", "b"]     # c is 3.1 % slower than d


def test_ranking_keeps_only_correct_timed_variants_fastest_first(cheats):
    for shape in cheats.values():
        order = recommend.ranked(shape)
        timed_ok = {v["name"] for v in shape["variants"] if v["status"] == "ok" and v.get("timing")}
        assert {v["name"] for v in order} == timed_ok
        medians = [v["timing"]["median_ms"] for v in order]
        assert medians == sorted(medians)


def test_equal_medians_keep_the_given_order():
    records = [{"name": n, "status": "ok", "timing": _t(1.0)} for n in ("z", "a", "m")]
    assert [r["name"] for r in recommend.rank(records)] == ["z", "a", "m"]


def test_a_suspect_variant_timed_faster_is_never_recommended(cheats):
    # side_stream's events saw 0.0016 ms against honest's 0.050 ms: its kernels ran on a stream they did not see
    shape = cheats["4096x8192-fp16"]
    by_name = {v["name"]: v for v in shape["variants"]}
    assert by_name["side_stream"]["timing"]["median_ms"] < by_name["honest"]["timing"]["median_ms"]
    rec = recommend.recommend(shape)
    assert rec.variant["name"] == "honest" and rec.ties == []
    assert rec.baseline == "honest" and rec.speedup_vs_baseline == 1.0


def test_the_recommendation_compares_with_the_baseline_reference_and_copy(cheats):
    # bf16: downcast (not the baseline) is 0.4 % faster than honest (the baseline): a win within the tie margin
    shape = cheats["4096x8192-bf16"]
    by_name = {v["name"]: v for v in shape["variants"]}
    best, base = by_name["downcast"]["timing"]["median_ms"], by_name["honest"]["timing"]["median_ms"]
    rec = recommend.recommend(shape)
    assert rec.variant["name"] == "downcast" and rec.median_ms == best
    assert rec.ties == ["honest"]
    assert rec.baseline == "honest" and rec.speedup_vs_baseline == pytest.approx(base / best)
    assert rec.speedup_vs_baseline > 1
    assert rec.speedup_vs_reference == pytest.approx(shape["reference"]["timing"]["median_ms"] / best)
    assert rec.fraction_of_copy == pytest.approx(shape["copy"]["timing"]["median_ms"] / best)


def test_no_baseline_no_reference_leaves_those_comparisons_empty(cheats):
    shape = dict(cheats["4096x8192-bf16"], reference={"timing": None})
    shape["variants"] = [dict(v, baseline=False) for v in shape["variants"]]
    rec = recommend.recommend(shape)
    assert rec.variant["name"] == "downcast"
    assert rec.baseline is None and rec.speedup_vs_baseline is None and rec.speedup_vs_reference is None


def test_a_shape_without_a_correct_timed_variant_has_no_recommendation(cheats):
    shape = dict(cheats["4096x8192"], variants=[v for v in cheats["4096x8192"]["variants"] if v["status"] != "ok"])
    assert recommend.ranked(shape) == [] and recommend.recommend(shape) is None
