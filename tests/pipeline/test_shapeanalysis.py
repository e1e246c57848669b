"""analyze_shape on the committed samples, and that every consumer reads it instead of re-deriving the
recommendation or the bound."""
import ast

import pytest

from testenv import REPO
from pipeline import flat, recommend, results, shapeanalysis, shapeview

SAMPLES = results.find_all(REPO / "profiles")
DOCS = {p.parent.name: results.load(p) for p in SAMPLES}
# the one place that may compute them, and the modules defining them
ALLOWED = {"shapeanalysis.py", "recommend.py", "analysis.py"}
FORBIDDEN = {("recommend", "recommend"), ("analysis", "classify")}


def direct_calls(source: str) -> list[str]:
    """recommend.recommend(...) / analysis.classify(...) calls, or those names imported bare."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and isinstance(node.func.value, ast.Name) and (node.func.value.id, node.func.attr) in FORBIDDEN:
            found.append(f"line {node.lineno}: {node.func.value.id}.{node.func.attr}()")
        if isinstance(node, ast.ImportFrom) and node.module in ("pipeline.recommend", "pipeline.analysis"):
            found += [f"line {node.lineno}: from {node.module} import {a.name}" for a in node.names
                      if (node.module.rsplit(".", 1)[1], a.name) in FORBIDDEN]
    return found


def test_the_check_sees_direct_calls():
    assert direct_calls("from pipeline import recommend\nrecommend.recommend(s)\n")
    assert direct_calls("analysis.classify(v, s, e).kind\n")
    assert direct_calls("from pipeline.analysis import classify\n")
    assert not direct_calls("verify.classify(exc)\nrecommend.tied(a, b)\n")


def test_no_consumer_derives_the_recommendation_or_bound_itself():
    offenders = {p.name: calls for p in sorted((REPO / "pipeline").glob("*.py"))
                 if p.name not in ALLOWED and (calls := direct_calls(p.read_text()))}
    assert offenders == {}


@pytest.mark.parametrize("op", sorted(DOCS))
def test_ranking_recommendation_ties_and_family_bests(op):
    doc = DOCS[op]
    for shape in doc["shapes"]:
        sa = shapeanalysis.analyze_shape(shape, doc["environment"])
        ok = [v for v in shape["variants"] if v["status"] == "ok" and v.get("timing")]
        medians = [v["timing"]["median_ms"] for v in sa.ranking]
        assert medians == sorted(medians) and {v["name"] for v in sa.ranking} == {v["name"] for v in ok}
        rec = sa.recommendation
        assert rec == recommend.recommend(shape)
        assert rec.variant is sa.ranking[0]
        winner = rec.variant["timing"]
        assert sa.ties == [v["name"] for v in sa.ranking[1:] if recommend.tied(winner, v["timing"])]
        # one recommended variant, never also tied; tied exactly where the recommendation says
        assert [a.name for a in sa.variants if a.recommended] == [rec.variant["name"]]
        assert sa.recommended.variant is rec.variant
        assert sorted(a.name for a in sa.variants if a.tied) == sorted(rec.ties)
        for stem in {v.get("stem", v["name"]) for v in ok}:
            fastest = min((v for v in ok if v.get("stem", v["name"]) == stem), key=lambda v: v["timing"]["median_ms"])
            assert sa.family_best[stem]["timing"]["median_ms"] == fastest["timing"]["median_ms"]
        assert set(sa.family_best) == {v.get("stem", v["name"]) for v in ok}
        bests = [v["timing"]["median_ms"] for v in sa.family_best.values()]
        assert bests == sorted(bests)
        assert next(iter(sa.family_best.values())) is rec.variant
        assert sa.ties_winner(rec.variant) and all(sa.ties_winner(sa.of(n).variant) for n in rec.ties)
        assert sa.lead in ("compute", "memory")


def test_a_tie_in_the_samples_is_seen():
    # guards the tie assertions above against passing vacuously
    tied = [a for d in DOCS.values() for s in d["shapes"]
            for a in shapeanalysis.analyze_shape(s, d["environment"]).variants if a.tied]
    assert tied


def test_best_of_prefers_the_full_name_then_the_family():
    doc = DOCS["softmax"]
    sa = shapeanalysis.analyze_shape(doc["shapes"][0], doc["environment"])
    slow = sa.ranking[-1]
    assert sa.best_of(slow["name"]) is slow
    assert sa.best_of(slow["stem"]) is sa.family_best[slow["stem"]]
    assert sa.best_of("no-such-variant") is None


@pytest.mark.parametrize("op", sorted(DOCS))
def test_every_consumer_marks_the_same_variants(op, tmp_path):
    doc, path = DOCS[op], next(p for p in SAMPLES if p.parent.name == op)
    table = flat.rows(doc)
    for shape in doc["shapes"]:
        sa = shapeanalysis.analyze_shape(shape, doc["environment"])
        view = shapeview.shape_view(shape, doc["environment"], path.parent, tmp_path)
        want = {a.name: (a.recommended, a.tied) for a in sa.variants}
        assert {r.name: (r.recommended, r.tied) for r in view.rows} == want
        assert {r["variant"]: (r["recommended"], r["tied"]) for r in table if r["shape"] == shape["id"]} == want
        assert view.headline.name == sa.recommendation.variant["name"]
        assert view.headline.bound == sa.recommended.bound.label


def test_flat_vs_baseline_uses_the_fastest_baseline_config():
    # softmax's baseline file has two configs; the export divides by the faster one, as the page does
    doc = DOCS["softmax"]
    table = flat.rows(doc)
    for shape in doc["shapes"]:
        rec = shapeanalysis.analyze_shape(shape, doc["environment"]).recommendation
        assert len([v for v in shape["variants"] if v.get("baseline")]) > 1
        row = next(r for r in table if r["shape"] == shape["id"] and r["recommended"])
        assert row["vs_baseline"] == pytest.approx(rec.speedup_vs_baseline)
