"""The `profile` command: for each op, measure its shapes on the lane's GPU worker, then profile them under one ncu.

Data flows one way: ops → worker (verify, time) → ncu → metrics → results file. Each (variant, shape) result
carries a cache key (variant_key); a rerun measures only variants whose key changed, re-timing the shape's
fastest and baseline variants beside them so the comparisons it reports come from one run. Each shape's
record is written atomically as soon as its op is complete, so an interrupted run keeps finished ops.
Measuring is pipeline.measure, the ncu pass pipeline.ncupass, what may be skipped pipeline.cache, the host's
GPUs and tools pipeline.host; this module assembles the records and plans the run over lanes: a Lane is one
GPU's share, run by the backend that shard.backend names (threads here, or Ray actors anywhere), every
op × shape once per GPU model.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from rich.markup import escape

from pipeline import detail, evidence, host, ncupass, results, shard
from pipeline.cache import ShapeWork, plan_shape, prune, shape_key, variant_key
from pipeline.config import Config, NcuConfig, Shape
from pipeline.errors import ConfigError, NoGpuError, ResultsError, SelectionError
from pipeline.measure import Quiet, Say, Tracker, measure_ceilings, measure_op
from pipeline.ops import Op
from pipeline.records import ShapeRecord
from pipeline.supervise import Worker, kill_all, track


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


# measured_on: which GPU measured a shape; all but host are left out of the results file's environment
PER_GPU = ("gpu_uuid", "cuda_visible_devices", "host", "node_id")
LANE_ONLY = ("gpu_uuid", "cuda_visible_devices", "node_id")
STACK = ("driver", "torch", "triton", "ncu_version")      # what lanes of one GPU model must agree on


@dataclasses.dataclass(frozen=True)
class Request:
    """What one `profile` run was asked for, as its planning and the writing of its results read it."""
    ops: list[Op]
    cfg: Config
    shape_filter: list[str] | None      # shape ids to run; None: every shape of the suite
    suite: str | None
    force: bool                         # re-measure what the cache would skip
    device: str                         # cuda, or cpu (the Triton interpreter)
    say: Say
    tracker: Tracker
    root: Path                          # the project root: profiles_dir and results' file names are under it


def run(ops: list[Op], cfg: Config, shape_filter: list[str] | None, require_gpu: bool, say: Say,
        device: str = "cuda", suite: str | None = None, force: bool = False,
        gpus: list[str] | None = None, tracker: Tracker | None = None, root: Path | None = None,
        backend: str | None = None, ray_address: str | None = None, gpu_model: str | None = None,
        job_timeout: float | None = None) -> list[Path] | None:
    """Profile every op × shape; returns the results files written, or None when there is no GPU.

    `root`: the project root; a relative profiles_dir lies under it, and results name source files relative
    to it (default: the working directory).

    Variants whose cache key (variant_key) matches their stored record are not measured again unless
    `force`. The backend (`backend`, else cfg.backend) starts one lane per GPU: with `threads`, the GPUs of
    this host (`gpus`, default: every visible one); with `ray`, every GPU of the cluster at `ray_address`.
    Every op × shape is measured once per GPU model (only on `gpu_model` when given), spread over that
    model's lanes; each lane has one worker process for the whole run and one ncu process per op."""
    tracker = tracker or Quiet()
    root = (root or Path.cwd()).resolve()
    lanes = shard.backend(backend or cfg.backend, shard.Options(
        device=device, say=say, tracker=tracker, gpus=gpus, address=ray_address or cfg.ray_address,
        job_timeout=job_timeout))
    seen: list[shard.LaneInfo] = []

    def keep(info: shard.LaneInfo) -> bool:
        seen.append(info)
        return gpu_model is None or gpu_model.lower() in (info.model.lower(), results.slug(info.model))

    try:
        try:
            infos = lanes.open(functools.partial(Lane, device=device, root=root),
                               functools.partial(Lane.facts, ncu_cfg=cfg.ncu), keep)
        except NoGpuError as exc:
            if require_gpu:
                raise NoGpuError(f"no NVIDIA GPU: {exc} (--require-gpu)") from exc
            say(f"[bold yellow]No NVIDIA GPU found[/] ({escape(str(exc))}).")
            return None
        if not infos:
            models = collections.Counter(i.model for i in seen)
            raise SelectionError(f"no GPU of model '{gpu_model}' (--gpu-model) among the lanes; models: "
                                 + ", ".join(f"{m} ({n} GPU(s); --gpu-model {results.slug(m)})"
                                             for m, n in sorted(models.items())))
        return _run_lanes(Request(ops, cfg, shape_filter, suite, force, device, say, tracker, root), lanes, infos)
    except BaseException:
        kill_all()      # an interrupt or a failure: end every worker and ncu now, not after their jobs
        raise
    finally:
        lanes.close()


def _stand_in(model: str, group: list[shard.LaneInfo]) -> shard.LaneInfo:
    """The lane whose facts key a model's results: the lowest GPU UUID, so that a rerun keys them alike. Lanes
    of one model must run this very pipeline and one software stack."""
    for i in group:
        if i.facts.get("package") != host.package_digest():
            raise ConfigError(f"{i.label or i.name} ({i.facts.get('host')}) runs other pipeline code than this "
                              f"machine ({host.PACKAGE}); install this checkout on every node")
    stacks: dict[tuple, list[str]] = {}
    for i in group:
        stacks.setdefault(tuple(i.facts["key"].get(k) for k in STACK), []).append(i.label or i.name)
    if len(stacks) > 1:
        raise ConfigError(f"the GPUs of model {model} differ in their software; one model's results are keyed by "
                          "one " + ", ".join(STACK) + ": " + "; ".join(
                              f"{', '.join(names)}: " + ", ".join(f"{k} {v}" for k, v in zip(STACK, stack))
                              for stack, names in stacks.items()))
    return min(group, key=lambda i: (i.facts["key"].get("gpu_uuid") or "", i.name))


def _known_min_bytes(profiles: Path, op: str) -> dict[str, int]:
    """min_bytes of this op's shapes as any GPU's stored results give them (bytes do not depend on the GPU),
    by the shape's id, params and dtype."""
    known: dict[str, int] = {}
    for path in sorted(profiles.glob(f"*/{results.slug(op)}/results.json")):
        try:
            shapes = results.load(path)["shapes"]
        except ResultsError:
            continue
        for s in shapes:
            if s.get("min_bytes"):
                known.setdefault(json.dumps([s["id"], s.get("params"), s.get("dtype")], sort_keys=True),
                                 int(s["min_bytes"]))
    return known


def too_big(min_bytes: int | None, memory_bytes: int | None) -> str | None:
    """Why a shape cannot run on a GPU of this much memory, or None where it may (or either is unknown)."""
    if not min_bytes or not memory_bytes or min_bytes <= memory_bytes:
        return None
    return (f"its inputs and output alone take {_size(min_bytes)} (min_bytes, as stored), more than the GPU's "
            f"{_size(memory_bytes)}")


def _size(n: float) -> str:
    exp = min(3, int(math.log(max(n, 1), 1024)))
    return f"{n:.0f} B" if exp == 0 else f"{n / 1024**exp:.1f} {('KiB', 'MiB', 'GiB')[exp - 1]}"


def _job_limit(w: ShapeWork) -> float:
    """The longest a shape's work takes on a lane that is not stuck: every variant up to its limit three times
    (the compile, the check and a solo retry), the timing phase, ncu, and 5 minutes to start and read back."""
    c = w.op.config
    return 3 * len(w.measure) * c.worker.variant_timeout_s + c.worker.timing_timeout_s + c.ncu.timeout_s + 300


def _sources(op: Op) -> dict[str, bytes]:
    """The op folder's files (helpers of its variants included), its reference and variants wherever they are."""
    files = [p for p in sorted(Path(op.dir).rglob("*")) if p.is_file()
             and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(op.dir).parts)]
    found: dict[str, bytes] = {}
    for p in [*files, Path(op.reference), *(Path(v.file) for v in op.variants)]:
        try:
            found.setdefault(str(p), p.read_bytes())
        except OSError:
            pass        # a variant that cannot be read is marked import-error at discovery
    return found


def _lost(batch: list[shard.Item], reason: str) -> OpResult:
    """The records of shapes no lane could finish: each variant to measure fails with the reason."""
    records = []
    for it in batch:
        w = it.payload.work
        w.errors.append(reason)
        for _, v in w.measure:
            w.done.setdefault(v.name, {"name": v.name, "status": "import-error", "error": v.problem} if v.problem
                              else {"name": v.name, "status": "worker-error", "error": reason})
        records.append(assemble(w, None, set(), w.op.config.ncu.select, ""))
    return OpResult(batch[0].key[0], records, [None] * len(records), {})


def _run_lanes(req: Request, lanes: shard.Backend, infos: list[shard.LaneInfo]) -> list[Path]:
    profiles = req.root / req.cfg.profiles_dir
    docs: dict[tuple[str, str], tuple[Path, dict[str, Any]]] = {}
    plan: dict[str, list[shard.Item]] = {}
    shipped: dict[str, dict[str, bytes]] = {}
    models: dict[str, list[shard.LaneInfo]] = {}
    for info in infos:
        models.setdefault(info.model, []).append(info)
    for model, group in models.items():
        lead = _stand_in(model, group)
        facts = lead.facts["key"]
        memory = min((i.facts.get("memory_bytes") or 0 for i in group), default=0) or None
        pending: list[shard.Item] = []
        ceilings: list[dict[str, Any] | None] = []    # measured at most once per model, shared by its ops' files
        for op in req.ops:
            if req.device == "cuda":
                op = ncupass.only_available(op, set(lead.facts["bases"]), req.say)
            listed = op.config.op.shape_list(req.suite) or ([] if req.suite else [Shape()])
            path = results.path_for(profiles, facts["gpu_name"], op.name)
            doc = results.load(path) if path.exists() else results.new(op.name, {})
            docs[(model, op.name)] = (path, doc)
            stored = {s["id"]: s for s in doc["shapes"]}
            sizes = _known_min_bytes(profiles, op.name) if memory else {}
            for shape in (s for s in listed if not req.shape_filter or s.id in req.shape_filter):
                key = shape_key(op, shape, facts)
                work = plan_shape(op, shape, stored.get(shape.id), key, req.force)
                work.root = req.root
                if not work.measure:
                    req.say(f"[bold]{escape(op.name)}[/] {escape(shape.id)}: unchanged since "
                        f"{stored[shape.id].get('measured_at')}, cached (--force re-measures)")
                    continue
                why = too_big(sizes.get(json.dumps([shape.id, shape.params, shape.dtype], sort_keys=True)), memory)
                if why:
                    req.say(f"[yellow]{escape(op.name)} {escape(shape.id)}: skipped on {escape(model)}: {why}[/]")
                    continue
                if work.cached:
                    req.say(f"[bold]{escape(op.name)}[/] {escape(shape.id)}: {len(work.measure)} variant(s) changed, "
                        f"{len(work.cached)} cached; re-timing {', '.join(v.name for _, v in work.controls) or 'none'} "
                        "beside them")
                cost = ((stored.get(shape.id) or {}).get("wall_s") or {}).get("total") or 60.0
                if op.name not in shipped:
                    shipped[op.name] = _sources(op)
                pending.append(shard.Item((op.name, shape.id), cost * len(work.measure) / max(1, len(op.variants)),
                                          Job(work, model, shipped[op.name]), _job_limit(work)))
            env = doc["environment"]
            if any(it.key[0] == op.name for it in pending):
                if (env.get("gpu_name"), env.get("driver")) != (facts["gpu_name"], facts["driver"]) \
                        or not env.get("ceilings"):
                    if not ceilings:
                        ceilings.append(lanes.call(lead.name, Lane.ceilings, req.cfg))
                    env.clear()
                    env.update(gpu_name=facts["gpu_name"], driver=facts["driver"], ceilings=ceilings[0])
                env.update(ncu_path=lead.facts["ncu_path"], ncu_version=facts["ncu_version"],
                           skipped_metrics=op.skipped_metrics,
                           ncu_settings={"replay_mode": op.config.ncu.replay_mode,
                                         "clock_control": op.config.ncu.clock_control,
                                         "cache_control": op.config.ncu.cache_control, "select": op.config.ncu.select,
                                         "metrics": op.config.ncu.metrics})
        if pending and len(infos) > 1:
            req.say(f"{len(pending)} shape(s) over {len(group)} GPUs" + (f" of {model}" if len(models) > 1 else "")
                + f": {', '.join(i.label.removeprefix('gpu ') for i in group)}")
        if pending:
            plan.update(shard.plan(pending, [i.name for i in group]))
    req.tracker.add(sum(len(it.payload.work.measure) + 1 for items in plan.values() for it in items)
                + sum(len(shard.batches(items)) for items in plan.values()))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")

    def done(batch: list[shard.Item], result: OpResult | shard.Lost) -> None:
        """One op's shapes from one lane into their results file: the files they name first, then the file,
        each replaced whole; lanes finish shapes of one op in any order, and only this thread writes."""
        path, doc = docs[(batch[0].payload.model, batch[0].key[0])]
        if isinstance(result, shard.Lost):
            req.say(f"  [red]✗[/] {escape(batch[0].key[0])} {', '.join(escape(it.key[1]) for it in batch)}: "
                f"{escape(result.reason)}")
            result = _lost(batch, result.reason)
        for name, data in result.files.items():
            results.write_atomic(path.parent / Path(name).name, data)
        for env, record in zip(result.envs, result.records):
            doc["environment"].update({k: v for k, v in (env or {}).items() if k not in LANE_ONLY})
            results.merge_shape(doc, record)
        doc["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        results.save(path, doc)
        prune(path.parent, doc)

    if plan:
        lanes.run(plan, functools.partial(Lane.work, stamp=stamp), done)
    return [path for path, _ in docs.values() if path.exists()]
