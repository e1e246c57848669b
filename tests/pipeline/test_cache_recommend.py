"""The ranking's tie rule (recommend.tied) and the plan of a rerun (cache.plan_shape): tied runners-up are
re-timed beside whatever a rerun measures, so a tie stored once is decided again."""
import json

from testenv import FIXTURES
from pipeline import cache, config, ops, recommend

FAULTS = FIXTURES / "faulty" / "kernels"


def _t(median, p25=None, p75=None):
    return {"median_ms": median, "p25_ms": p25 if p25 is not None else median, "p75_ms": p75 if p75 is not None else median}


def test_ties_are_overlapping_quartiles_or_medians_within_the_margin():
    assert recommend.tied(_t(1.0, 0.9, 1.1), _t(1.15, 1.05, 1.2))                # quartiles overlap
    assert recommend.tied(_t(1.0), _t(1.0 + recommend.TIE_MARGIN * 0.99))          # within 2 %
    assert not recommend.tied(_t(1.0), _t(1.0 + recommend.TIE_MARGIN * 1.01))      # beyond, quartiles apart


def test_recommendation_names_every_variant_within_the_margin_as_tied():
    shape = {"variants": [{"name": n, "status": "ok", "timing": _t(m)} for n, m in
                          (("a", 1.000), ("b", 1.015), ("c", 1.030), ("d", 0.999))],
             "reference": {"timing": None}, "copy": {"timing": None}}
    rec = recommend.recommend(shape)
    assert rec.variant["name"] == "d" and rec.ties == ["a", "b"]     # c is 3.1 % slower than d


def test_a_rerun_retimes_the_fastest_and_its_ties_beside_a_changed_variant():
    op = ops.load_op_dir(FAULTS / "faults", config.Config())
    shape = op.config.op.shape_list(None)[0]
    key = "shape-key"
    by_name = {v.name: v for v in op.variants}
    medians = {"good": 1.0, "wrong": 1.01, "partial": 1.5}      # pretend all three were ok; wrong ties good

    def stored(name):
        return {"name": name, "status": "ok", "timing": _t(medians[name]), "baseline": name == "good",
                "cache_key": cache.variant_key(by_name[name], key)}

    record = {"cache_key": key, "variants": [stored(n) for n in medians]}
    work = cache.plan_shape(op, shape, json.loads(json.dumps(record)), key, force=False)
    # every other variant file has no stored record, so it is measured; the cached tied pair is re-timed
    assert {v.name for _, v in work.controls} == {"good", "wrong"}
    assert set(work.cached) == {"good", "wrong", "partial"}
