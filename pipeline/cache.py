"""What a run may skip: the cache keys of stored results, the plan of what to measure per shape, and the
clean-up of report and log files no record names any more.

A (variant, config, shape) result is reused while its key (variant_key: the variant's source and config on
top of the shape's key) matches; a shape with anything to measure re-times its cached fastest and baseline
variants beside the new ones (the controls), so the comparisons the report makes come from one run.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import recommend
from pipeline.config import Shape
from pipeline.ops import Op, Variant

# Statuses measured again on the next run even when nothing changed: the measuring machinery failed,
# not the variant. Everything else a variant earns (crashes and hangs included) recurs, so it is cached.
REMEASURE = {"worker-error"}
# Errors that say the machine could not run anything (no driver, no device, the interpreter not set up), not
# that the variant is wrong: measured again on the next run, whatever status they were recorded under.
ENVIRONMENT_ERRORS = re.compile(r"0 active drivers|Found no NVIDIA driver|no CUDA GPUs are available|"
                                r"no CUDA-capable device|CUDA driver version is insufficient|"
                                r"Torch not compiled with CUDA enabled")
# ncu outcomes that stand for the variant's profile; any other makes a selected variant be profiled again
# bumped whenever verification or the evidence rules change, so results judged by older rules are measured again
CHECKS_VERSION = 3
NCU_FINAL = {"ok", "no-kernels", "count-mismatch", "timeout", "failed", "profile-error", "permission-denied"}


@dataclass
class ShapeWork:
    """One shape of one op to measure in this run, and what its stored record lets it skip."""
    op: Op
    shape: Shape
    index: int                                   # position in its op's jobs: NVTX range s<index>
    key: str                                     # shape_key: reference, shape, GPU, tools, settings
    measure: list[tuple[int, Variant]]           # verified, timed and (if selected) profiled now
    controls: list[tuple[int, Variant]]          # cached correct variants re-timed beside them
    cached: dict[str, dict[str, Any]]            # stored variant records reused as they are
    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    timing: dict[str, Any] | None = None
    after: dict[str, Any] = field(default_factory=dict)   # each timed variant's recheck (timing.recheck)
    min_bytes: int | None = None
    input_bytes: int | None = None                # of min_bytes, what the inputs occupy (evidence.py)
    env: dict[str, Any] | None = None
    errors: list[str] = field(default_factory=list)
    timed: bool = False
    compiled: dict[str, Any] | None = None       # the worker's concurrent compile: seconds, kernels, threads
    ahead: dict[str, Any] | None = None          # the compile done ahead, during the op before's ncu
    wall: dict[str, float] = field(default_factory=lambda: {"verify": 0.0, "time": 0.0, "ncu": 0.0})
    root: Path = Path()                          # the project root: results name source files relative to it

    @property
    def id(self) -> str:
        return self.shape.id


def shape_key(op: Op, shape: Shape, facts: dict[str, Any]) -> str:
    """Hash of everything but the variants that can change a shape's results: the reference's source, the
    shape, GPU, driver, tools and every measurement setting."""
    cfg = op.config
    # worker.precompile only changes when kernels compile, never what is measured
    worker = {k: val for k, val in vars(cfg.worker).items() if k != "precompile"}
    # ncu.extra_metrics is already in ncu.metrics (config folds it in at load); ncu.detail adds a pass over
    # whichever picks lack one (pipeline/detail.py), so turning it on re-measures nothing
    ncu = {k: val for k, val in vars(cfg.ncu).items() if k not in ("extra_metrics", "detail")}
    parts = {"checks": CHECKS_VERSION, "reference": op.reference_sha256, "shape": [shape.params, shape.dtype],
             "facts": facts, "settings": [vars(cfg.verify), vars(cfg.timing), ncu, worker]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def variant_key(v: Variant, key: str) -> str:
    """One (variant, config, shape) result's key: its source and config on top of the shape's key."""
    parts = [key, v.name, v.sha256, v.config, v.problem]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def remeasure(record: dict[str, Any]) -> bool:
    """A stored result the next run measures again although nothing changed: the machine failed, not the variant."""
    return record["status"] in REMEASURE or \
        (record["status"] != "ok" and bool(ENVIRONMENT_ERRORS.search(record.get("error") or "")))


def _fastest(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fastest correct record and every record tied with it: a rerun re-times them all, so a tie stored
    once is decided again beside the new variants rather than kept from an old run."""
    timed = recommend.rank(records)
    return [r for r in timed if recommend.tied(timed[0]["timing"], r["timing"])] if timed else []


def plan_shape(op: Op, shape: Shape, stored: dict[str, Any] | None, key: str, force: bool) -> ShapeWork:
    """Split a shape's variants into cached (same key, stored result) and to-measure; pick the controls. The
    variants `profile --detail` names (op.detail_asked) are measured again."""
    indexed = list(enumerate(op.variants))
    old = {r["name"]: r for r in (stored or {}).get("variants", [])}
    cached = {}
    if not force and stored is not None and stored.get("cache_key") == key:
        for _, v in indexed:
            r = old.get(v.name)
            if r and r.get("cache_key") == variant_key(v, key) and not remeasure(r) and v.name not in op.detail_asked:
                cached[v.name] = r
    measure = [(i, v) for i, v in indexed if v.name not in cached]
    controls = []
    if measure and cached:
        records = list(cached.values())
        picks = _fastest(records) + _fastest([r for r in records if r.get("baseline")])[:1]
        names = {p["name"] for p in picks}
        controls = [(i, v) for i, v in indexed if v.name in names]
    return ShapeWork(op, shape, 0, key, measure, controls, cached)


def prune(op_dir: Path, doc: dict[str, Any]) -> None:
    """Delete ncu reports, ncu logs, ncu job files and worker logs that no record of the results file names any
    more."""
    named = {doc_name for s in doc["shapes"] for doc_name in
             [s.get("worker_log")]
             + [(s.get(k) or {}).get(f) for k in ("ncu", "detail") for f in ("report", "log", "job")]
             + [(v.get(k) or {}).get("report") for v in s["variants"] for k in ("ncu", "detail")] if doc_name}
    for pattern in ("*.ncu-rep", "*.ncu.log", "*.job.json", "*.worker.log"):
        for f in op_dir.glob(pattern):
            if f.name not in named:
                f.unlink(missing_ok=True)
