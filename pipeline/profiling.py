"""The `profile` command: for each op, measure its shapes on the lane's GPU worker, then profile them under one ncu.

Data flows one way: ops → worker (verify, time) → ncu → metrics → results file. Each (variant, shape) result
carries a cache key (variant_key); a rerun measures only variants whose key changed, re-timing the shape's
fastest and baseline variants beside them so the comparisons it reports come from one run. Each shape's
record is written atomically as soon as its op is complete, so an interrupted run keeps finished ops.
Measuring is pipeline.measure, what may be skipped is pipeline.cache; this module profiles under ncu and
assembles the records.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.markup import escape

from pipeline import evidence, metrics, ncu, results, shard
from pipeline.cache import NCU_FINAL, ShapeWork, plan_shape, prune, shape_key, variant_key
from pipeline.config import Config, Shape
from pipeline.errors import NoGpuError
from pipeline.measure import Quiet, Say, Tracker, variant_job, measure_ceilings, measure_op
from pipeline.ops import Op, Variant
from pipeline.supervise import Worker, child_env, kill_all, read_events, track


def gpu_present() -> tuple[bool, str]:
    """(present, why) without importing torch: nvidia-smi must list at least one GPU."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False, "nvidia-smi not found"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"nvidia-smi failed: {exc}"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return False, f"nvidia-smi lists no GPU ({(out.stderr or out.stdout).strip()[:200]})"
    return True, out.stdout.strip().splitlines()[0]


def host_facts(device: str, ncu_path: str) -> dict[str, Any]:
    """What the cache key needs, read without importing torch: GPU, driver, ncu and library versions."""
    facts: dict[str, Any] = {"device": device, "ncu_version": ncu.version(ncu_path) if ncu_path else None}
    for pkg in ("torch", "triton"):
        try:
            facts[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            facts[pkg] = None
    if device == "cpu":
        facts.update(gpu_name="cpu (Triton interpreter)", driver=None)
        return facts
    index = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,uuid", "--format=csv,noheader", "-i", index],
                         capture_output=True, text=True, timeout=60)
    # the UUID keys results to one card: two cards of a model differ in clocks and memory
    name, driver, uuid = [x.strip() for x in (out.stdout.strip().splitlines() or ["unknown, unknown, unknown"])[0]
                          .split(",")]
    facts.update(gpu_name=name, driver=driver, gpu_uuid=uuid)
    return facts


def _only_available(op: Op, bases: set[str], say: Say) -> Op:
    kept, skipped = ncu.available(bases, op.config.ncu.metrics)
    if skipped:
        say(f"[yellow]{op.name}: this GPU does not report {', '.join(skipped)}: skipped[/]")
    cfg = dataclasses.replace(op.config, ncu=dataclasses.replace(op.config.ncu, metrics=kept))
    return dataclasses.replace(op, config=cfg, skipped_metrics=skipped)


def _selected(w: ShapeWork, select: str) -> list[tuple[int, Variant]]:
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


def profile_op(op: Op, works: list[ShapeWork], picks: dict[str, list[tuple[int, Variant]]], ncu_path: str,
               out_dir: Path, stamp: str, workdir: Path, device: str, tracker: Tracker,
               gpu: str | None = None) -> dict[str, Any]:
    """One ncu process over the picked variants of every shape; returns the run's ncu record with the
    kernels of each NVTX range."""
    shapes = [w for w in works if picks.get(w.id)]
    events = workdir / "events-ncu.jsonl"
    job_file = workdir / "job-ncu.json"
    job_file.write_text(json.dumps({
        "mode": "ncu", "op": op.name, "reference": str(op.reference), "device": device,
        "seeds": op.config.verify.seeds, "events": str(events),
        "shapes": [{"id": w.id, "index": w.index, "params": w.shape.params, "dtype": w.shape.dtype,
                    "variants": [variant_job(i, v) for i, v in picks[w.id]]} for w in shapes]}))
    launched = [w.done.get(v.name, w.cached.get(v.name, {})).get("launched") for w in shapes for _, v in picks[w.id]]
    guard = sorted({ncu.function_name(n) for names in launched for n in names or []}) if all(launched) else []
    rep, log = out_dir / f"{stamp}.ncu-rep", out_dir / f"{stamp}.ncu.log"
    tmp_rep = rep.with_name(f".{rep.name}")   # ncu writes here; renamed into place when complete
    cmd = ncu.command(ncu_path, op.config.ncu, tmp_rep, guard, [sys.executable, "-m", "pipeline.worker", str(job_file)])
    tracker.doing(f"{op.name}: ncu over {sum(len(picks[w.id]) for w in shapes)} variants of {len(shapes)} shape(s)")
    t0 = time.time()
    rc, found = ncu.run(cmd, log, op.config.ncu.timeout_s, child_env(gpu), track)
    record: dict[str, Any] = {
        "command": cmd, "report": rep.name, "log": log.name, "exit_code": rc, "wall_s": round(time.time() - t0, 2),
        "errors": found.errors, "warnings": found.warnings, "kernel_guard": bool(guard), "by_range": {}}
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
        read = metrics.read_report_isolated(rep, op.config.ncu.metrics, ncu.install_dir(ncu_path))
        record.update(status="ok", by_range=read["by_range"], unattributed=read["unattributed"])
        passes = [k["metrics"].get("profiler__replayer_passes", {}).get("value")
                  for ks in read["by_range"].values() for k in ks]
        record["passes"] = max([p for p in passes if p is not None], default=None)
    if record["status"] != "ok":
        record["report"] = None
    record["worker_events"] = [e for e in read_events(events, 0)[0] if e["event"] == "variant"]
    tracker.done()
    return record


def _profile_of(i: int, v: Variant, w: ShapeWork, measured: dict[str, Any], prof: dict[str, Any]) -> dict[str, Any]:
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


def assemble(w: ShapeWork, prof: dict[str, Any] | None, picked: set[str], select: str,
             worker_log: str) -> dict[str, Any]:
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
                rec["ncu"] = _profile_of(i, v, w, rec, prof)
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
            rec["ncu"] = _profile_of(i, v, w, measured, prof)
        else:
            rec["ncu"] = {"status": "not-selected", "kernels": [],
                          "error": f"not the fastest config of its layout family (ncu.select: {select})"}
        evidence.judge(rec, timing.get("__copy__"))
        variants.append(rec)
    facts = w.env or {}
    ncu_rec = {k: val for k, val in prof.items() if k not in ("by_range", "worker_events")} if prof else None
    return {
        "id": w.id, "params": w.shape.params, "dtype": w.shape.dtype,
        "min_bytes": w.min_bytes,
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
    }


PER_GPU = ("gpu_uuid", "cuda_visible_devices")


def profile_op_shapes(op: Op, works: list[ShapeWork], out_dir: Path, ncu_path: str, device: str, say: Say,
                      tracker: Tracker, stamp: str, worker: Worker,
                      upcoming: list[ShapeWork] | None = None) -> list[dict[str, Any]]:
    """Measure the given shapes of one op on `worker`, then profile them; returns their records, in order.
    `upcoming`: the shapes of the op the lane measures next, compiled ahead while ncu runs."""
    gpu = worker.gpu
    for j, w in enumerate(works):
        w.index = j
    with tempfile.TemporaryDirectory(prefix="pipeline-") as tmp:
        workdir = Path(tmp)
        wlog = workdir / "worker.log"
        measure_op(op, works, workdir, wlog, device, say, tracker, worker, upcoming)
        worker_log = f"{stamp}.worker.log"
        shutil.copyfile(wlog, out_dir / worker_log)
        select = op.config.ncu.select
        picks = {w.id: _selected(w, select) for w in works} if device == "cuda" else {}
        prof = None
        if any(picks.values()):
            n = sum(len(p) for p in picks.values())
            say(f"[bold]{escape(op.name)}[/]: ncu over {n} variant(s) of {sum(1 for p in picks.values() if p)} "
                f"shape(s) (ncu.select: {select})")
            prof = profile_op(op, works, picks, ncu_path, out_dir, stamp, workdir, device, tracker, gpu)
            if prof["status"] != "ok":
                say(f"  [red]ncu {prof['status']}[/]: {escape(prof.get('message', ''))}")
            share = prof["wall_s"] / max(1, n)      # one process for all shapes: split by variants profiled
            for w in works:
                w.wall["ncu"] = share * len(picks.get(w.id, []))
        else:
            tracker.done()
    return [assemble(w, prof if picks.get(w.id) else None, {v.name for _, v in picks.get(w.id, [])}, select,
                     worker_log) for w in works]


def run(ops: list[Op], cfg: Config, shape_filter: list[str] | None, require_gpu: bool, say: Say,
        device: str = "cuda", suite: str | None = None, force: bool = False,
        gpus: list[str] | None = None, tracker: Tracker | None = None, root: Path | None = None) -> list[Path] | None:
    """Profile every op × shape; returns the results files written, or None when there is no GPU.

    `root`: the project root; a relative profiles_dir lies under it, and results name source files relative
    to it (default: the working directory).

    Variants whose cache key (variant_key) matches their stored record are not measured again unless
    `force`. With several GPUs (`gpus`, default: every visible one) shapes are spread over one lane per GPU.
    Each lane has one worker process for the whole run, which measures the shapes it holds one op at a
    time, and runs one ncu process per op."""
    tracker = tracker or Quiet()
    ncu_path = ""
    if device == "cuda":
        present, why = gpu_present()
        if not present:
            if require_gpu:
                raise NoGpuError(f"no NVIDIA GPU: {why} (--require-gpu)")
            say(f"[bold yellow]No NVIDIA GPU found[/] ({why}).")
            return None
        ncu_path = ncu.locate(cfg.ncu)
        bases = ncu.query_bases(ncu_path)
        ops = [_only_available(op, bases, say) for op in ops]
    lanes_for = gpus if gpus is not None else (shard.visible_gpus() if device == "cuda" else [])
    # one worker per lane; a single lane pins its GPU only when one was asked for
    root = (root or Path.cwd()).resolve()
    workers = {gpu: Worker(gpu, device, root) for gpu in lanes_for} if len(lanes_for) > 1 else \
        {None: Worker(lanes_for[0] if lanes_for and gpus is not None else None, device, root)}
    try:
        return _run_lanes(ops, cfg, shape_filter, say, device, suite, force, lanes_for, workers, ncu_path,
                          tracker, root)
    except BaseException:
        kill_all()      # an interrupt or a failure: end every worker and ncu now, not after their jobs
        raise
    finally:
        for worker in workers.values():
            worker.close()


def _run_lanes(ops: list[Op], cfg: Config, shape_filter: list[str] | None, say: Say, device: str,
               suite: str | None, force: bool, lanes_for: list[str], workers: dict[str | None, Worker],
               ncu_path: str, tracker: Tracker, root: Path) -> list[Path]:
    facts = host_facts(device, ncu_path)
    profiles = root / cfg.profiles_dir
    docs: dict[str, tuple[Path, dict[str, Any]]] = {}
    pending: list[shard.Item] = []
    ceilings: list[dict[str, Any] | None] = []    # measured at most once per run, shared by every op's file
    for op in ops:
        listed = op.config.op.shape_list(suite) or ([] if suite else [Shape()])
        path = results.path_for(profiles, facts["gpu_name"], op.name)
        doc = results.load(path) if path.exists() else results.new(op.name, {})
        docs[op.name] = (path, doc)
        stored = {s["id"]: s for s in doc["shapes"]}
        for shape in (s for s in listed if not shape_filter or s.id in shape_filter):
            key = shape_key(op, shape, facts)
            work = plan_shape(op, shape, stored.get(shape.id), key, force)
            work.root = root
            if not work.measure:
                say(f"[bold]{escape(op.name)}[/] {escape(shape.id)}: unchanged since "
                    f"{stored[shape.id].get('measured_at')}, cached (--force re-measures)")
                continue
            if work.cached:
                say(f"[bold]{escape(op.name)}[/] {escape(shape.id)}: {len(work.measure)} variant(s) changed, "
                    f"{len(work.cached)} cached; re-timing {', '.join(v.name for _, v in work.controls) or 'none'} "
                    "beside them")
            cost = ((stored.get(shape.id) or {}).get("wall_s") or {}).get("total") or 60.0
            pending.append(shard.Item((op.name, shape.id), cost * len(work.measure) / max(1, len(op.variants)),
                                      work))
        env = doc["environment"]
        if any(it.key[0] == op.name for it in pending):
            if (env.get("gpu_name"), env.get("driver")) != (facts["gpu_name"], facts["driver"]) \
                    or not env.get("ceilings"):
                if not ceilings:
                    ceilings.append(measure_ceilings(cfg, device, say, next(iter(workers.values()))))
                env.clear()
                env.update(gpu_name=facts["gpu_name"], driver=facts["driver"], ceilings=ceilings[0])
            env.update(ncu_path=ncu_path, ncu_version=facts["ncu_version"], skipped_metrics=op.skipped_metrics,
                       ncu_settings={"replay_mode": op.config.ncu.replay_mode,
                                     "clock_control": op.config.ncu.clock_control,
                                     "cache_control": op.config.ncu.cache_control, "select": op.config.ncu.select,
                                     "metrics": op.config.ncu.metrics})
    tracker.add(sum(len(it.payload.measure) + 1 for it in pending) + len({it.key[0] for it in pending}))
    lock = threading.Lock()
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")

    def work(gpu: str | None, batch: list[shard.Item], upcoming: list[shard.Item] | None) -> None:
        op = batch[0].payload.op
        worker = workers[gpu]
        path, doc = docs[op.name]
        lane = f"[dim]gpu {gpu}[/] " if gpu is not None and len(lanes_for) > 1 else ""
        say(f"{lane}[bold]{escape(op.name)}[/]: verifying and timing {', '.join(escape(it.key[1]) for it in batch)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        works = [it.payload for it in batch]
        tag = f"{stamp}-gpu{gpu}" if gpu is not None and len(lanes_for) > 1 else stamp
        records = profile_op_shapes(op, works, path.parent, ncu_path, device, say, tracker, tag, worker,
                                    [it.payload for it in upcoming or []])
        with lock:      # lanes finish shapes of the same op in any order; each write is whole and atomic
            for w, record in zip(works, records):
                doc["environment"].update({k: v for k, v in (w.env or {}).items() if k not in PER_GPU})
                results.merge_shape(doc, record)
            doc["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            results.save(path, doc)
            prune(path.parent, doc)

    if len(lanes_for) > 1:
        say(f"{len(pending)} shape(s) over {len(lanes_for)} GPUs: {', '.join(lanes_for)}")
        try:
            shard.ThreadLanes().run(shard.plan(pending, lanes_for), work)
        except BaseException:
            kill_all()
            raise
    else:
        groups = shard.batches(pending)
        for batch, upcoming in zip(groups, [*groups[1:], None]):
            work(None, batch, upcoming)
    return [path for path, _ in docs.values() if path.exists()]
