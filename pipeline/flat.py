"""Stored results as flat rows for scripts and notebooks: `export --format csv|json` (one row per variant ×
shape, the columns of COLUMNS) and `load_frame` (a pandas DataFrame in long format: one row per variant,
shape, kernel and metric, as nsight-python lays its data out).

Every derived number comes from the function that computes it for the report and the gate (recommend,
analysis); nothing here re-derives a ranking.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from pipeline import analysis, results, shapeanalysis
from pipeline.records import ShapeRecord

# (column, meaning): docs/results.md lists the same table (a test keeps them equal)
COLUMNS: list[tuple[str, str]] = [
    ("op", "op name"),
    ("gpu", "GPU that measured the shape (environment.gpu_name)"),
    ("shape", "shape id"),
    ("dtype", "input dtype"),
    ("variant", "full variant name"),
    ("stem", "variant file stem (its layout family)"),
    ("status", "ok, incorrect, suspect, unsupported, ... (docs/results.md)"),
    ("error", "the reason when not ok"),
    ("median_ms", "event-timed median, ms"),
    ("p25_ms", "first quartile, ms"),
    ("p75_ms", "third quartile, ms"),
    ("reps", "timed repeats"),
    ("recommended", "the shape's recommendation (shapeanalysis.analyze_shape)"),
    ("tied", "tied with the recommendation (recommend.tied)"),
    ("fraction_of_copy", "device-copy time of the op's minimal bytes over the median (analysis.fraction_of_copy)"),
    ("vs_baseline", "baseline median (its fastest correct config) over this median"),
    ("vs_torch_eager", "torch eager median over this median"),
    ("bound", "analysis.classify: memory-, compute-, latency-, launch-bound or unknown"),
    ("sm_pct", "ncu SM throughput % of peak (dominant kernel)"),
    ("dram_pct", "ncu DRAM throughput % of peak (dominant kernel)"),
    ("warps_active_pct", "ncu achieved occupancy % (dominant kernel)"),
    ("kernel_ms", "CUPTI kernel time of one call after timing, ms (GPU runs)"),
    ("ncu_status", "ncu outcome for this variant"),
]


def rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per variant × shape of a results document, keyed by COLUMNS."""
    out = []
    gpu = doc["environment"].get("gpu_name")
    for sa in shapeanalysis.analyze_doc(doc):
        shape = sa.shape
        ref_ms = shape.reference_ms
        base_ms = sa.baseline_ms
        for va in sa.variants:
            v, k = va.variant, va.kernel
            t = v.timing if v.ok else None
            median = t and t.median_ms
            out.append({
                "op": doc["op"], "gpu": gpu, "shape": shape["id"], "dtype": shape.get("dtype"),
                "variant": v.name, "stem": v.stem, "status": v.status,
                "error": v.get("error") or "",
                "median_ms": median, "p25_ms": t and t.p25_ms, "p75_ms": t and t.p75_ms, "reps": t and t.reps,
                "recommended": va.recommended,
                "tied": va.tied,
                "fraction_of_copy": va.fraction_of_copy if t else None,
                "vs_baseline": base_ms / median if base_ms and median else None,
                "vs_torch_eager": ref_ms / median if ref_ms and median else None,
                "bound": va.bound.kind if k else None,
                "sm_pct": analysis.m(k, analysis.SM), "dram_pct": analysis.m(k, analysis.DRAM),
                "warps_active_pct": analysis.m(k, analysis.WARPS),
                "kernel_ms": v.kernel_ms, "ncu_status": v.ncu_status,
            })
    return out


def to_csv(table: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[c for c, _ in COLUMNS], lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    return buf.getvalue()


def to_json(table: list[dict[str, Any]]) -> str:
    return json.dumps(table, indent=1)


def long_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """(op, gpu, shape, variant, kernel, metric, value, unit): every stored ncu metric of every kernel."""
    gpu = doc["environment"].get("gpu_name")
    return [{"op": doc["op"], "gpu": gpu, "shape": shape["id"], "variant": v["name"], "kernel": k.get("name"),
             "metric": name, "value": entry.get("value"), "unit": entry.get("unit")}
            for shape in map(ShapeRecord.of, doc["shapes"]) for v in shape.variants
            for k in v.kernels for name, entry in k["metrics"].items()]


def load_frame(path: str | Path):
    """A results file's ncu metrics as a pandas DataFrame in long format (variant, shape, kernel, metric,
    value, unit, plus op and gpu). pandas is imported here only: the pipeline does not need it."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("load_frame needs pandas: pip install pandas") from exc
    return pd.DataFrame(long_rows(results.load(Path(path))),
                        columns=["op", "gpu", "shape", "variant", "kernel", "metric", "value", "unit"])
