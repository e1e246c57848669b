"""JSON for scripts: `list --json` and `profile --json-summary PATH` (`gate --json` is pipeline.gate_output's).

Paths are absolute, except a variant's `file`, which is relative to the project root as in results files.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pipeline import results, shapeanalysis
from pipeline.ops import Op

SCHEMA_VERSION = 1


def _shape(s: Any) -> dict[str, Any]:
    return {"id": s.id, "params": s.params, "dtype": s.dtype}


def op_listing(ops: list[Op], root: Path, kernels_dir: Path) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "root": str(root), "kernels_dir": str(kernels_dir), "ops": [{
        "name": op.name, "dir": str(op.dir), "reference": str(op.reference),
        "description": op.config.op.description, "baseline": op.config.op.baseline or None,
        "shapes": [_shape(s) for s in op.config.op.shapes],
        "suites": {name: [_shape(s) for s in shapes] for name, shapes in op.config.op.suites.items()},
        "variants": [{"name": v.name, "stem": v.stem, "file": os.path.relpath(v.file, root), "layout": v.layout,
                      "config": v.config, "baseline": v.baseline, "problem": v.problem or None}
                     for v in op.variants]} for op in ops]}


def _recommended(sa: shapeanalysis.ShapeAnalysis) -> dict[str, Any] | None:
    rec = sa.recommendation
    if rec is None:
        return None
    return {"variant": rec.variant["name"], "layout": rec.variant.get("layout", ""), "median_ms": rec.median_ms,
            "ties": rec.ties, "baseline": rec.baseline, "speedup_vs_baseline": rec.speedup_vs_baseline,
            "speedup_vs_reference": rec.speedup_vs_reference, "fraction_of_copy": rec.fraction_of_copy,
            "grid": rec.grid, "block": rec.block}


def profile_summary(paths: list[Path], index: Path | None, exit_code: int, replayed: bool) -> dict[str, Any]:
    """What a `profile` run left: per results file and shape, the recommendation and every variant's status."""
    ops = []
    for path in paths:
        doc = results.load(path)
        ops.append({"op": doc["op"], "gpu": doc["environment"].get("gpu_name"), "results": str(path),
                    "shapes": [{"id": s["id"], "measured_at": s.get("measured_at"),
                                "recommended": _recommended(shapeanalysis.analyze_shape(s, doc["environment"])),
                                "status": {v["name"]: v["status"] for v in s["variants"]},
                                "failed": sorted(v["name"] for v in s["variants"]
                                                 if v["status"] not in ("ok", "unsupported")),
                                "errors": s.get("errors", [])} for s in doc["shapes"]]})
    return {"schema_version": SCHEMA_VERSION, "exit_code": exit_code, "replayed": replayed,
            "report": str(index) if index else None, "ops": ops}
