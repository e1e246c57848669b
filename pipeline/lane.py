"""One lane of a `profile` run: one GPU's share of the work, wherever the backend runs it (a thread here, or a
Ray actor on any node). Its worker process verifies and times an op's shapes, one ncu process profiles them,
the detail pass follows, and `assemble` builds each shape's record; the lane returns the records and the files
they name (OpResult) for pipeline/profiling.py to write.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from rich.markup import escape

from pipeline import detail, evidence, host, ncupass, shard
from pipeline.cache import ShapeWork, variant_key
from pipeline.config import Config, NcuConfig
from pipeline.errors import NoGpuError
from pipeline.measure import Say, Tracker, measure_ceilings, measure_op
from pipeline.ops import Op
from pipeline.records import ShapeRecord
from pipeline.supervise import Worker, kill_all, track

# measured_on: which GPU measured a shape (the lane's facts)
PER_GPU = ("gpu_uuid", "cuda_visible_devices", "host", "node_id")


def assemble(w: ShapeWork, prof: dict[str, Any] | None, picked: set[str], select: str,
             worker_log: str) -> ShapeRecord:
    """The shape's record: fresh results for measured variants, stored ones (marked cached) for the rest."""
    op, timing = w.op, w.timing or {}
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    variants = []
    for i, v in enumerate(op.variants):
        if v.name in w.cached:
            rec = dict(w.cached[v.name], index=i, cached=True)
            if v.name in timing:               # a control, re-timed beside the variants measured now
                rec.update(timing=timing[v.name], retimed_at=now)
            if v.name in picked and prof is not None:
                rec["ncu"] = ncupass.profile_of(i, v, w, rec, prof)
            variants.append(rec)
            continue
        measured = w.done.get(v.name) or {"name": v.name, "status": "worker-error", "error": "not measured"}
        rec = {"name": v.name, "file": os.path.relpath(v.file, w.root), "stem": v.stem, "layout": v.layout,
               "config": v.config, "baseline": v.baseline, "index": i,
               "source_sha256": v.sha256,
               "cache_key": variant_key(v, w.key), "measured_at": now, "cached": False}
        rec.update({k: val for k, val in measured.items() if k != "name"})
        rec["timing"] = timing.get(v.name)
        if v.name in w.after:
            rec["after_timing"] = w.after[v.name]
        if rec["status"] == "ok" and rec["timing"] is None:
            rec.update(status="worker-error", error="not timed: the timing phase failed")
        if rec["status"] != "ok":
            rec["ncu"] = {"status": "not-profiled", "kernels": []}
        elif prof is None:
            rec["ncu"] = {"status": "skipped", "kernels": []}
        elif v.name in picked:
            rec["ncu"] = ncupass.profile_of(i, v, w, measured, prof)
        else:
            rec["ncu"] = {"status": "not-selected", "kernels": [],
                          "error": f"not the fastest config of its layout family (ncu.select: {select})"}
        evidence.judge(rec, timing.get("__copy__"), w.input_bytes)
        variants.append(rec)
    facts = w.env or {}
    ncu_rec = {k: val for k, val in prof.items() if k not in ("by_range", "worker_events")} if prof else None
    return ShapeRecord.of({
        "id": w.id, "params": w.shape.params, "dtype": w.shape.dtype,
        "min_bytes": w.min_bytes, "input_bytes": w.input_bytes,
        "flops": op.flops(w.shape.params), "reference_sha256": op.reference_sha256,
        "reference": {"timing": timing.get("__reference__")}, "copy": {"timing": timing.get("__copy__")},
        "matmul": {"timing": timing.get("__matmul__")},
        "errors": w.errors, "worker_log": worker_log,
        # which GPU measured this shape: lanes of one host may differ in their unit, never in their model
        "measured_on": {k: facts.get(k) for k in PER_GPU},
        "ncu": ncu_rec or {"status": "skipped"},
        # where the pipeline's own time went in this run; compile is inside verify: the concurrent compile
        # of the shape's kernels, first calls (which compile whatever it could not), and the wait for the
        # compile done ahead (the rest of it ran hidden under the ncu of the op before)
        "wall_s": {"verify": round(w.wall["verify"], 2), "time": round(w.wall["time"], 2),
                   "ncu": round(w.wall["ncu"], 2),
                   "compile": round((w.compiled or {}).get("seconds", 0) + (w.ahead or {}).get("waited_s", 0)
                                    + sum(r.get("first_call_s") or 0 for r in w.done.values()), 2),
                   "total": round(sum(w.wall.values()), 2)},
        "measured_at": now, "cache_key": w.key,
        "counts": {"measured": len(w.measure), "cached": len(w.cached), "retimed": len(w.controls)},
        "precompile": {**w.compiled, "ahead": w.ahead} if w.compiled and w.ahead else w.compiled,
        "variants": variants,
    })


class Stopped(Exception):
    """The lane was stopped (an interrupt, or a backend giving its work up): it starts no process any more."""


class LaneWorker(Worker):
    """A lane's worker: once its lane is stopped it starts nothing, and a process started in that very moment
    is ended at once (kill_all may have run just before it was tracked)."""
    stopped = False

    def submit(self, job_file: Path, log: Path) -> subprocess.Popen:
        if self.stopped:
            raise Stopped("lane stopped")
        proc = super().submit(job_file, log)
        self._end_if_stopped(proc)
        return proc

    def track(self, proc: subprocess.Popen, alive: bool) -> None:
        """supervise.track for the lane's ncu processes."""
        track(proc, alive)
        if alive:
            self._end_if_stopped(proc)

    def _end_if_stopped(self, proc: subprocess.Popen) -> None:
        if self.stopped:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@dataclasses.dataclass
class Job:
    """One shape's work as a lane gets it (shard.Item.payload): its plan, the GPU model it is planned for, and
    the op folder's files by the paths the op names them with, for lanes on machines that do not share them."""
    work: ShapeWork
    model: str
    sources: dict[str, bytes]


@dataclasses.dataclass
class OpResult:
    """What a lane's work on one op returns: each shape's record, the worker's facts for each, and the files
    the records name (ncu report, ncu log, worker log) by name. Only the caller writes them, under profiles_dir."""
    op: str
    records: list[dict[str, Any]]
    envs: list[dict[str, Any] | None]
    files: dict[str, bytes]


class Lane:
    """One GPU's share of a run, wherever it runs (a thread here, or a Ray actor on any node): a long-lived worker
    process on its GPU, one ncu process per op, the lane's next op compiled ahead. Backends make lanes
    (shard.MakeLane) and call `facts`, `ceilings` and `work` on them; nothing here knows which backend runs it.

    A `remote` lane does not assume this machine's files: it writes each op's shipped sources into a folder of
    its own under the same paths (so records name the same files) and strips that folder from what it returns."""

    def __init__(self, name: str, label: str, gpu: str | None, say: Say, tracker: Tracker, device: str, root: Path,
                 remote: bool = False, where: dict[str, Any] | None = None):
        self.name, self.label, self.say, self.tracker, self.device = name, label, say, tracker, device
        self.mirror = Path(tempfile.mkdtemp(prefix="pipeline-lane-")) if remote else None
        self.root = Path(self._here(root))
        self.root.mkdir(parents=True, exist_ok=True)
        self.worker = LaneWorker(gpu, device, self.root)
        self.where = {"host": platform.node(), "node_id": None, **(where or {})}
        self.ncu_path = ""
        self.ran: dict[str, int] = {}      # ops this lane measured in this run: a second batch of one gets new files

    def _here(self, path: str | Path) -> str:
        return os.path.join(self.mirror, str(path).lstrip(os.sep)) if self.mirror else str(path)

    def facts(self, ncu_cfg: NcuConfig) -> dict[str, Any]:
        """This lane's GPU (gpu_name is its model), tools and place; NoGpuError or ToolError before any work.
        `key` holds exactly the facts that key cached results (host.key_facts)."""
        bases: list[str] = []
        if self.device == "cuda":
            present, why = host.gpu_present()
            if not present:
                raise NoGpuError(why)
            self.ncu_path, bases = host.ncu_here(ncu_cfg.path)
        key = host.key_facts(self.device, self.ncu_path)
        gpu = self.worker.gpu or os.environ.get("CUDA_VISIBLE_DEVICES") or ""
        return {"gpu_name": key["gpu_name"], "key": key, "ncu_path": self.ncu_path, "bases": list(bases),
                "memory_bytes": host.gpu_memory(gpu) if self.device == "cuda" else None, "gpu": gpu,
                "package": host.package_digest(), **self.where}

    def ceilings(self, cfg: Config) -> dict[str, Any] | None:
        return measure_ceilings(cfg, self.device, self.say, self.worker)

    def work(self, batch: list[shard.Item], upcoming: list[shard.Item] | None, stamp: str) -> OpResult:
        """shard.Work: one op's shapes measured and profiled on this lane."""
        works = self._local([it.payload for it in batch])
        ahead = self._local([it.payload for it in upcoming or []])
        op = works[0].op
        lead = f"[dim]{escape(self.label)}[/] " if self.label else ""
        self.say(f"{lead}[bold]{escape(op.name)}[/]: verifying and timing {', '.join(escape(w.id) for w in works)}")
        self.ran[op.name] = n = self.ran.get(op.name, 0) + 1
        tag = "-".join(p for p in (stamp, self.name, str(n) if n > 1 else "") if p)
        with tempfile.TemporaryDirectory(prefix="pipeline-out-") as out:
            records = self._measure_and_profile(op, works, Path(out), tag, ahead)
            files = {f.name: f.read_bytes() for f in Path(out).iterdir() if f.is_file() and not f.name.startswith(".")}
        return self._unmirrored(OpResult(op.name, records, [w.env for w in works], files))

    def _measure_and_profile(self, op: Op, works: list[ShapeWork], out_dir: Path, stamp: str,
                             upcoming: list[ShapeWork]) -> list[dict[str, Any]]:
        """Measure the given shapes of one op on this lane's worker, then profile them; returns their records, in
        order, with the report and logs they name written to `out_dir`. `upcoming`: the shapes of the op the lane
        measures next, compiled ahead while ncu runs."""
        for j, w in enumerate(works):
            w.index = j
        with tempfile.TemporaryDirectory(prefix="pipeline-") as tmp:
            r = ncupass.OpRun(op, works, self.device, self.ncu_path, out_dir, stamp, Path(tmp), self.say, self.tracker,
                              self.worker.gpu, self.worker.track)
            wlog = r.workdir / "worker.log"
            measure_op(r.op, r.works, r.workdir, wlog, r.device, r.say, r.tracker, self.worker, upcoming)
            for w in works:
                # the lane's host and node, where the worker's own facts do not say (measured_on)
                w.env = {**self.where, **(w.env or {})}
            worker_log = f"{stamp}.worker.log"
            shutil.copyfile(wlog, out_dir / worker_log)
            picks, prof = ncupass.run(r)
            records = [assemble(w, prof if picks.get(w.id) else None, {v.name for _, v in picks.get(w.id, [])},
                                op.config.ncu.select, worker_log) for w in works]
            # the recommendation is known only now: the detail pass profiles it and what it is weighed against
            return detail.run(r, records)

    def _local(self, jobs: list[Job]) -> list[ShapeWork]:
        """The jobs' shapes, pointing at files this lane can read."""
        works = [j.work for j in jobs]
        if self.mirror is None or not jobs:
            return works
        for path, data in jobs[0].sources.items():
            target = Path(self._here(path))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        op = works[0].op
        variants = [dataclasses.replace(v, file=self._here(v.file)) for v in op.variants]
        op = dataclasses.replace(op, dir=Path(self._here(op.dir)), reference=Path(self._here(op.reference)),
                                 variants=variants)
        named = {v.name: v for v in variants}
        for w in works:
            w.op, w.root = op, Path(self._here(w.root))
            w.measure = [(i, named[v.name]) for i, v in w.measure]
            w.controls = [(i, named[v.name]) for i, v in w.controls]
        return works

    def _unmirrored(self, result: OpResult) -> OpResult:
        if self.mirror is None:
            return result
        prefix = str(self.mirror)
        quoted = json.dumps(prefix)[1:-1]

        def strip(obj: Any) -> Any:
            return json.loads(json.dumps(obj, default=str).replace(quoted, ""))
        files = {name: data.replace(prefix.encode(), b"") if name.endswith((".log", ".job.json")) else data
                 for name, data in result.files.items()}
        return OpResult(result.op, strip(result.records), strip(result.envs), files)

    def abort(self) -> None:
        """Stop at once: end this process's worker and ncu process groups, and start none from now on."""
        self.worker.stopped = True
        kill_all()

    def close(self) -> None:
        try:
            self.worker.close()
        finally:
            if self.mirror is not None:
                shutil.rmtree(self.mirror, ignore_errors=True)
