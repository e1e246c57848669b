"""The ncu pass of one op: which of its measured variants ncu profiles, one ncu process over them for all the
op's shapes, and what each variant's NVTX range yielded (profile_of).

It runs after the op's shapes were verified and timed (pipeline.measure), so it knows which variants are
correct, how fast each is and which kernels each launched outside ncu (the kernel-name guard and the count
each range is checked against).
"""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from rich.markup import escape

from pipeline import metrics, ncu
from pipeline.cache import NCU_FINAL, ShapeWork
from pipeline.host import child_env
from pipeline.measure import Say, Tracker, variant_job
from pipeline.ops import Op, Variant
from pipeline.results import write_atomic
from pipeline.supervise import read_events

Picks = dict[str, list[tuple[int, Variant]]]     # shape id -> the (index, variant) pairs ncu profiles


@dataclasses.dataclass(frozen=True)
class OpRun:
    """One op's shapes on one lane in this run: what its measuring and its ncu pass share."""
    op: Op
    works: list[ShapeWork]
    device: str
    ncu_path: str
    out_dir: Path                   # the ncu report and log the records name are written here
    stamp: str                      # their names' prefix: unique per lane and batch
    workdir: Path                   # job and event files, gone once the op is done
    say: Say
    tracker: Tracker
    gpu: str | None                 # the lane's GPU: ncu and its worker are pinned to it
    track: Callable[[subprocess.Popen, bool], None]   # a stopped lane ends the ncu it starts (LaneWorker.track)


def only_available(op: Op, bases: set[str], say: Say) -> Op:
    """The op with the metrics this GPU does not report (ncu.available) left out, and named."""
    kept, skipped = ncu.available(bases, op.config.ncu.metrics)
    if skipped:
        say(f"[yellow]{op.name}: this GPU does not report {', '.join(skipped)}: skipped[/]")
    cfg = dataclasses.replace(op.config, ncu=dataclasses.replace(op.config.ncu, metrics=kept))
    return dataclasses.replace(op, config=cfg, skipped_metrics=skipped)


def selected(w: ShapeWork, select: str) -> list[tuple[int, Variant]]:
    """Variants ncu profiles now: with `family-best`, the fastest correct config of each layout family
    (cached ones count, so a family's best is profiled once); with `all`, every correct one."""
    records = {**w.cached, **w.done}
    timing = w.timing or {}

    def median(name: str) -> float | None:
        t = timing.get(name) or (w.cached.get(name) or {}).get("timing")
        return t["median_ms"] if t else None

    ok = [(i, v) for i, v in enumerate(w.op.variants)
          if records.get(v.name, {}).get("status") == "ok" and median(v.name) is not None]
    if select == "family-best":
        best: dict[str, tuple[int, Variant]] = {}
        for i, v in ok:
            if v.stem not in best or median(v.name) < median(best[v.stem][1].name):
                best[v.stem] = (i, v)
        # a baseline named as one config (not a whole file) is profiled even when its family has a faster one
        baseline = [(i, v) for i, v in ok if v.name == w.op.config.op.baseline]
        ok = sorted({v.name: (i, v) for i, v in [*best.values(), *baseline]}.values(), key=lambda iv: iv[0])
    # a cached variant keeps a profile that stands; everything else selected is profiled in this run
    return [(i, v) for i, v in ok
            if v.name in w.done or (w.cached[v.name].get("ncu") or {}).get("status") not in NCU_FINAL]


def run(r: OpRun) -> tuple[Picks, dict[str, Any] | None]:
    """Pick each shape's variants and profile them all under one ncu; (the picks, the ncu record or None
    where nothing was picked: the CPU, or no correct variant). Each shape is charged its share of ncu's time."""
    select = r.op.config.ncu.select
    picks = {w.id: selected(w, select) for w in r.works} if r.device == "cuda" else {}
    if not any(picks.values()):
        r.tracker.done()
        return picks, None
    n = sum(len(p) for p in picks.values())
    r.say(f"[bold]{escape(r.op.name)}[/]: ncu over {n} variant(s) of {sum(1 for p in picks.values() if p)} "
          f"shape(s) (ncu.select: {select})")
    prof = profile_op(r, picks)
    if prof["status"] != "ok":
        r.say(f"  [red]ncu {prof['status']}[/]: {escape(prof.get('message', ''))}")
    share = prof["wall_s"] / max(1, n)      # one process for all shapes: split by variants profiled
    for w in r.works:
        w.wall["ncu"] = share * len(picks.get(w.id, []))
    return picks, prof


def write_job(r: OpRun, picks: Picks, name: str) -> tuple[Path, Path]:
    """The worker's ncu-mode job over the picked variants (the worker runs each in its NVTX range); (the job
    file, the events file the worker writes). The job file is kept beside the report, named by the record, so
    the recorded ncu command runs again as it ran; the events go to the run's scratch folder."""
    events = r.workdir / f"events-{name}.jsonl"
    job_file = r.out_dir / f"{r.stamp}.{name}.job.json"
    write_atomic(job_file, json.dumps({
        "mode": "ncu", "op": r.op.name, "reference": str(r.op.reference), "device": r.device,
        "seeds": r.op.config.verify.seeds, "events": str(events),
        "shapes": [{"id": w.id, "index": w.index, "params": w.shape.params, "dtype": w.shape.dtype,
                    "variants": [variant_job(i, v) for i, v in picks[w.id]]} for w in r.works if picks.get(w.id)]}))
    return job_file, events


def worker_command(job_file: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline.worker", str(job_file)]


def kernel_guard(r: OpRun, picks: Picks) -> list[str]:
    """The kernels the picked variants launched outside ncu (ncu's -k filter), or [] where one is not known."""
    launched = [w.done.get(v.name, w.cached.get(v.name, {})).get("launched")
                for w in r.works for _, v in picks.get(w.id, [])]
    return sorted({ncu.function_name(n) for names in launched for n in names or []}) if all(launched) else []


def profile_op(r: OpRun, picks: Picks) -> dict[str, Any]:
    """One ncu process over the picked variants of every shape; returns the run's ncu record with the
    kernels of each NVTX range."""
    op = r.op
    shapes = [w for w in r.works if picks.get(w.id)]
    job_file, events = write_job(r, picks, "ncu")
    guard = kernel_guard(r, picks)
    rep, log = r.out_dir / f"{r.stamp}.ncu-rep", r.out_dir / f"{r.stamp}.ncu.log"
    tmp_rep = rep.with_name(f".{rep.name}")   # ncu writes here; renamed into place when complete
    cmd = ncu.command(r.ncu_path, op.config.ncu, tmp_rep, guard, worker_command(job_file))
    r.tracker.doing(f"{op.name}: ncu over {sum(len(picks[w.id]) for w in shapes)} variants of {len(shapes)} shape(s)")
    t0 = time.time()
    rc, found = ncu.run(cmd, log, op.config.ncu.timeout_s, child_env(r.gpu), r.track)
    record: dict[str, Any] = {
        "command": cmd, "report": rep.name, "log": log.name, "exit_code": rc, "wall_s": round(time.time() - t0, 2),
        "errors": found.errors, "warnings": found.warnings, "kernel_guard": bool(guard), "by_range": {},
        "job": job_file.name}
    if rc is None:
        record.update(status="timeout", message=f"ncu killed after {op.config.ncu.timeout_s:.0f} s")
    elif found.permission:
        record.update(status="permission-denied", message=ncu.PERMISSION_FIX)
    elif found.no_kernels:
        record.update(status="no-kernels", message="ncu: No kernels were profiled (see log)")
    elif not tmp_rep.exists():
        record.update(status="failed", message=(found.errors or [f"ncu exited {rc}, no report"])[0])
    else:
        os.replace(tmp_rep, rep)
        read = metrics.read_report_isolated(rep, op.config.ncu.metrics, ncu.install_dir(r.ncu_path))
        record.update(status="ok", by_range=read["by_range"], unattributed=read["unattributed"])
        passes = [k["metrics"].get("profiler__replayer_passes", {}).get("value")
                  for ks in read["by_range"].values() for k in ks]
        record["passes"] = max([p for p in passes if p is not None], default=None)
    if record["status"] != "ok":
        record["report"] = None
    record["worker_events"] = [e for e in read_events(events, 0)[0] if e["event"] == "variant"]
    r.tracker.done()
    return record


def profile_of(i: int, v: Variant, w: ShapeWork, measured: dict[str, Any], prof: dict[str, Any]) -> dict[str, Any]:
    """Variant `i` of shape `w` as ncu saw it in its range: its kernels, or why there are none to trust (ncu
    failed, the worker failed in the range, no kernel, or another count than launched outside ncu)."""
    kernels = prof["by_range"].get(ncu.range_name(w.index, i), [])
    expected = len(measured["launched"]) if "launched" in measured else None
    failed = next((e["result"] for e in prof.get("worker_events", [])
                   if e.get("shape") == w.id and e["result"]["name"] == v.name), None)
    if prof["status"] != "ok":
        status, error = prof["status"], prof.get("message", "")
    elif failed:
        status, error = "profile-error", failed.get("error", "")
    elif not kernels:
        status, error = "no-kernels", f"no kernel profiled in NVTX range {ncu.range_name(w.index, i)}"
    elif expected is not None and len(kernels) != expected:
        status, error = "count-mismatch", f"{len(kernels)} kernels profiled, {expected} launched outside ncu"
    else:
        status, error = "ok", ""
    return {"status": status, "error": error, "expected_kernels": expected, "kernels": kernels,
            "report": prof.get("report"), "range": ncu.range_name(w.index, i)}
