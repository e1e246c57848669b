"""Flat outputs on the committed samples: CSV and JSON rows per variant × shape with the documented columns,
derived numbers equal to the report's (recommend, analysis), and the long-format DataFrame."""
import csv
import io
import json
import subprocess
import sys

import pytest

from testenv import REPO
from pipeline import analysis, flat, recommend, results

SAMPLE = next(p for p in results.find_all(REPO / "profiles") if p.parent.name == "rmsnorm")


def test_docs_list_the_columns():
    docs = (REPO / "docs" / "results.md").read_text()
    for column, meaning in flat.COLUMNS:
        assert f"| `{column}` | {meaning} |" in docs


def test_one_row_per_variant_and_shape_with_the_report_numbers():
    doc = results.load(SAMPLE)
    table = flat.rows(doc)
    assert len(table) == sum(len(s["variants"]) for s in doc["shapes"])
    for shape in doc["shapes"]:
        rec = recommend.recommend(shape)
        picked = [r for r in table if r["shape"] == shape["id"] and r["recommended"]]
        assert [r["variant"] for r in picked] == [rec.variant["name"]]
        assert picked[0]["fraction_of_copy"] == analysis.fraction_of_copy(rec.variant, shape)
        assert {r["variant"] for r in table if r["shape"] == shape["id"] and r["tied"]} == set(rec.ties)


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_export_prints_them(fmt):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "export", "--op", "rmsnorm", "--format", fmt,
                           "--shape", "L1-36"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    table = list(csv.DictReader(io.StringIO(proc.stdout))) if fmt == "csv" else json.loads(proc.stdout)
    assert table and {r["shape"] for r in table} == {"L1-36"}
    assert list(table[0]) == [c for c, _ in flat.COLUMNS]


def test_long_frame():
    pd = pytest.importorskip("pandas")
    frame = flat.load_frame(SAMPLE)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["op", "gpu", "shape", "variant", "kernel",
                                                                       "metric", "value", "unit"]
    dram = frame[(frame["metric"] == analysis.DRAM) & (frame["shape"] == "L1-36")]
    assert len(dram) >= 1 and dram["value"].between(0, 100).all()
