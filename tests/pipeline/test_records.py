"""pipeline/records.py: the typed records results.load returns, on every committed results file."""
import copy
import json
import pickle

import pytest

from testenv import FIXTURES, REPO
from pipeline import analysis, results
from pipeline.records import KernelMetrics, OpRecord, ShapeRecord, Timing, VariantRecord

FILES = sorted([*(REPO / "profiles").rglob("results.json"), *FIXTURES.rglob("results.json")])


def loadable(path):
    try:
        return results.load(path)
    except Exception:           # fixtures of broken results files are tested in test_results.py
        return None


@pytest.mark.parametrize("path", [p for p in FILES if loadable(p) is not None], ids=lambda p: str(p.relative_to(REPO)))
def test_a_loaded_file_is_typed_and_writes_back_byte_identical(path):
    doc = results.load(path)
    raw = json.loads(path.read_text())
    assert json.dumps(doc, indent=1) == json.dumps(raw, indent=1)        # the schema is unchanged
    assert isinstance(doc, OpRecord) and doc.op == raw["op"] and doc.environment == raw["environment"]
    for shape, rs in zip(doc.shapes, raw["shapes"]):
        assert isinstance(shape, ShapeRecord) and shape.id == rs["id"]
        assert shape.copy_ms == ((rs.get("copy") or {}).get("timing") or {}).get("median_ms")
        assert shape.reference_ms == ((rs.get("reference") or {}).get("timing") or {}).get("median_ms")
        for v, rv in zip(shape.variants, rs["variants"]):
            assert isinstance(v, VariantRecord) and v.name == rv["name"] and v.ok == (rv["status"] == "ok")
            assert v.median_ms == (rv.get("timing") or {}).get("median_ms")
            t, rt = v.timing, rv.get("timing") or {}
            assert (t is None) == (rt.get("median_ms") is None)
            assert t is None or (t.median_ms, t.p25_ms, t.p75_ms) == (rt["median_ms"], rt["p25_ms"], rt["p75_ms"])
            assert len(v.kernels) == len((rv.get("ncu") or {}).get("kernels") or [])
            for k, rk in zip(v.kernels, (rv.get("ncu") or {}).get("kernels") or []):
                assert isinstance(k, KernelMetrics) and k.name == rk["name"]
                assert all(k.metric(n) == e["value"] and k.unit(n) == e.get("unit") for n, e in rk["metrics"].items())
    assert all(doc.shape(s["id"]).id == s["id"] for s in raw["shapes"]) and doc.shape("no such shape") is None


def test_of_types_a_plain_dict_once_and_a_record_never_again():
    doc = results.load(REPO / "profiles" / "nvidia-h100-80gb-hbm3" / "matmul" / "results.json")
    assert OpRecord.of(doc) is doc and ShapeRecord.of(doc.shapes[0]) is doc.shapes[0]
    plain = json.loads(json.dumps(doc.shapes[0]))
    typed = ShapeRecord.of(plain)
    assert typed == plain and type(plain) is dict and all(isinstance(v, VariantRecord) for v in typed.variants)
    # the analysis reads plain dicts and records alike
    v = next(v for v in typed.variants if v.kernels)
    assert analysis.dram_bytes(v) == analysis.dram_bytes(next(x for x in plain["variants"] if x["name"] == v.name))


def test_records_survive_copy_and_pickle_as_records():
    doc = results.load(REPO / "profiles" / "nvidia-h100-80gb-hbm3" / "rmsnorm" / "results.json")
    for other in (copy.deepcopy(doc), pickle.loads(pickle.dumps(doc))):     # report's drawing processes, Ray
        assert other == doc and isinstance(other, OpRecord) and isinstance(other.shapes[0].variants[0], VariantRecord)


def test_timing_of_a_missing_or_empty_block_is_none():
    assert Timing.of(None) is None and Timing.of({}) is None
    assert Timing.of({"median_ms": 2.0}) == Timing(2.0, 2.0, 2.0)
