"""The `profile` command: for each op × shape, measure in a GPU worker, then profile under ncu.

Data flows one way: ops → worker (verify, time) → ncu → metrics → results file. Each shape's record
is written atomically as soon as it is complete, so an interrupted run keeps finished shapes.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
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
from typing import Any, Callable

from rich.markup import escape

from pipeline import metrics, ncu, results, shard
from pipeline.supervise import REPO, WorkerRun, child_env, kill_all, read_events, track
from pipeline.config import Config, Shape
from pipeline.errors import NoGpuError
from pipeline.ops import Op, Variant

Say = Callable[[str], None]


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


def _job(op: Op, shape: Shape, cfg: Config, variants: list[tuple[int, Variant]], mode: str,
         device: str) -> dict[str, Any]:
    tol = cfg.verify.tolerance_for(shape.dtype)
    return {"mode": mode, "op": op.name, "reference": str(op.reference), "params": shape.params,
            "dtype": shape.dtype, "seeds": cfg.verify.seeds, "tolerance": {"rtol": tol.rtol, "atol": tol.atol},
            "timing": vars(cfg.timing).copy(), "device": device,
            "variants": [{"index": i, "name": v.name, "file": v.file, "config": v.config} for i, v in variants]}


def measure_shape(op: Op, shape: Shape, cfg: Config, workdir: Path, log: Path, device: str,
                  say: Say, gpu: str | None = None) -> dict[str, Any]:
    """Verify every variant (a crash or hang costs that variant only: the worker restarts on the rest),
    then time the verified ones with the reference and a device copy in one more worker."""
    indexed = list(enumerate(op.variants))
    done: dict[str, dict[str, Any]] = {}
    record: dict[str, Any] = {"env": None, "timing": None, "min_bytes": None, "errors": []}

    def note(r: dict[str, Any]) -> None:
        done[r["name"]] = r
        mark = {"ok": "[green]✓[/]", "unsupported": "[yellow]–[/]"}.get(r["status"], "[red]✗[/]")
        say(f"  {mark} {escape(r['name'])}: {r['status']}" + (f": {escape(r['error'])}" if r.get("error") else ""))

    for _, v in indexed:
        if v.problem:
            note({"name": v.name, "status": "import-error", "error": v.problem})
    limits = {"default": cfg.worker.variant_timeout_s, "timing": cfg.worker.timing_timeout_s}
    attempt, t0 = 0, time.time()
    while todo := [(i, v) for i, v in indexed if v.name not in done]:
        attempt += 1
        run = WorkerRun(_job(op, shape, cfg, todo, "verify", device), workdir, f"verify-{attempt}", log, limits, gpu)
        for e in run.events():
            if e["event"] == "env":
                record["env"] = e["facts"]
            elif e["event"] == "variant":
                note(e["result"])
        if run.ended:
            break
        if run.current is not None and run.current not in done:
            note({"name": run.current, "status": "timeout" if run.killed else "crashed", "error": run.why()})
            continue    # restart on the variants still to do
        if run.current is not None and done[run.current]["status"] == "crashed":
            continue    # the worker reported the crash itself, then exited: its context was gone
        record["errors"].append(f"worker failed before any variant: {run.why()}")
        say(f"  [red]✗[/] {escape(record['errors'][-1])}")
        for _, v in todo:
            done.setdefault(v.name, {"name": v.name, "status": "worker-error", "error": run.why()})
        break
    record["verify_s"], t0 = round(time.time() - t0, 2), time.time()
    ok = [(i, v) for i, v in indexed if done.get(v.name, {}).get("status") == "ok"]
    if record["env"] is not None or ok:
        run = WorkerRun(_job(op, shape, cfg, ok, "time", device), workdir, "time", log, limits, gpu)
        for e in run.events():
            if e["event"] == "timing":
                record["timing"], record["min_bytes"] = e["stats"], e["min_bytes"]
        if not run.ended:
            record["errors"].append(f"timing phase failed: {run.why()}")
            say(f"  [red]✗[/] {escape(record['errors'][-1])}")
    record["time_s"] = round(time.time() - t0, 2)
    record["variants"] = done
    return record


def measure_ceilings(cfg: Config, device: str, say: Say, gpu: str | None = None) -> dict[str, Any] | None:
    """Copy bandwidth and matmul rate of this GPU, measured once per run (the roofline's two ceilings)."""
    job = {"mode": "ceilings", "op": "", "variants": [], "device": device, "timing": vars(cfg.timing).copy()}
    with tempfile.TemporaryDirectory(prefix="pipeline-") as tmp:
        run = WorkerRun(job, Path(tmp), "ceilings", Path(tmp) / "worker.log",
                        {"default": cfg.worker.timing_timeout_s}, gpu)
        found = [e["ceilings"] for e in run.events() if e["event"] == "ceilings"]
        if not found:
            say(f"  [red]✗[/] ceilings not measured: {escape(run.why())}")
            return None
    c = found[0]
    say(f"GPU ceilings: copy {c['copy_gbs']:,.0f} GB/s; matmul " +
        ", ".join(f"{k} {v:,.0f} TFLOP/s" for k, v in c["matmul_tflops"].items()))
    return c


def profile_shape(op: Op, shape: Shape, cfg: Config, ok: list[tuple[int, Variant]], launched: dict[str, list[str]],
                  ncu_path: str, rep: Path, log: Path, workdir: Path, device: str,
                  gpu: str | None = None) -> dict[str, Any]:
    """One ncu process over every verified variant; returns the shape's ncu record with per-index kernels."""
    events = workdir / "events-ncu.jsonl"
    job_file = workdir / "job-ncu.json"
    job_file.write_text(json.dumps({**_job(op, shape, cfg, ok, "ncu", device), "events": str(events)}))
    names = [ncu.function_name(n) for _, v in ok for n in launched.get(v.name, [])]
    guard = names if all(launched.get(v.name) for _, v in ok) else []
    tmp_rep = rep.with_name(f".{rep.name}")   # ncu writes here; renamed into place when complete
    cmd = ncu.command(ncu_path, cfg.ncu, tmp_rep, guard, [sys.executable, "-m", "pipeline.worker", str(job_file)])
    t0 = time.time()
    rc, found = ncu.run(cmd, log, cfg.ncu.timeout_s, child_env(gpu), track)
    record: dict[str, Any] = {
        "command": cmd, "report": rep.name, "log": log.name, "exit_code": rc, "wall_s": round(time.time() - t0, 2),
        "errors": found.errors, "warnings": found.warnings, "kernel_guard": bool(guard), "by_index": {}}
    if rc is None:
        record.update(status="timeout", message=f"ncu killed after {cfg.ncu.timeout_s:.0f} s")
    elif found.permission:
        record.update(status="permission-denied", message=ncu.PERMISSION_FIX)
    elif found.no_kernels:
        record.update(status="no-kernels", message="ncu: No kernels were profiled (see log)")
    elif not tmp_rep.exists():
        record.update(status="failed", message=(found.errors or [f"ncu exited {rc}, no report"])[0])
    else:
        os.replace(tmp_rep, rep)
        read = metrics.read_report_isolated(rep, cfg.ncu.metrics, ncu.install_dir(ncu_path))
        record.update(status="ok", by_index=read["by_index"], unattributed=read["unattributed"])
        passes = [k["metrics"].get("profiler__replayer_passes", {}).get("value")
                  for ks in read["by_index"].values() for k in ks]
        record["passes"] = max([p for p in passes if p is not None], default=None)
    record["worker_events"] = [e for e in read_events(events, 0)[0] if e["event"] == "variant"]
    return record


def _variant_record(i: int, v: Variant, measured: dict[str, Any], timing: dict[str, Any] | None,
                    prof: dict[str, Any] | None) -> dict[str, Any]:
    rec = {"name": v.name, "file": os.path.relpath(v.file, REPO), "stem": v.stem, "layout": v.layout,
           "config": v.config, "baseline": v.baseline, "index": i, "source_sha256": results.source_sha256(v.file)}
    rec.update({k: val for k, val in measured.items() if k != "name"})
    rec["timing"] = (timing or {}).get(v.name)
    if rec["status"] == "ok" and rec["timing"] is None:
        rec.update(status="worker-error", error="not timed: the timing phase failed")
    if prof is None or rec["status"] != "ok":
        rec["ncu"] = {"status": "skipped" if prof is None else "not-profiled", "kernels": []}
        return rec
    kernels = prof["by_index"].get(i, [])
    expected = len(measured["launched"]) if "launched" in measured else None
    failed = next((e["result"] for e in prof.get("worker_events", []) if e["result"]["name"] == v.name), None)
    if prof["status"] != "ok":
        status, error = prof["status"], prof.get("message", "")
    elif failed:
        status, error = "failed", failed.get("error", "")
    elif not kernels:
        status, error = "no-kernels", f"no kernel profiled in NVTX range v{i}"
    elif expected is not None and len(kernels) != expected:
        status, error = "count-mismatch", f"{len(kernels)} kernels profiled, {expected} launched outside ncu"
    else:
        status, error = "ok", ""
    rec["ncu"] = {"status": status, "error": error, "expected_kernels": expected, "kernels": kernels}
    return rec


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
    out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader", "-i", index],
                         capture_output=True, text=True, timeout=60)
    name, driver = [x.strip() for x in (out.stdout.strip().splitlines() or ["unknown, unknown"])[0].split(",")]
    facts.update(gpu_name=name, driver=driver)
    return facts


def cache_key(op: Op, shape: Shape, facts: dict[str, Any]) -> str:
    """Hash of everything that can change a shape's results: sources, configs, shape, GPU, tools, settings."""
    cfg = op.config
    parts = {"variants": [(v.name, results.source_sha256(v.file), v.config, v.problem) for v in op.variants],
             "reference": results.source_sha256(op.reference), "shape": [shape.params, shape.dtype],
             "facts": facts, "settings": [vars(cfg.verify), vars(cfg.timing), vars(cfg.ncu), vars(cfg.worker)]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


PER_GPU = ("gpu_uuid", "cuda_visible_devices")


def profile_shape_all(op: Op, shape: Shape, out_dir: Path, ncu_path: str, device: str,
                      say: Say, gpu: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Measure and profile one shape; returns its record and the worker's facts about the GPU it ran on."""
    with tempfile.TemporaryDirectory(prefix="pipeline-") as tmp:
        workdir = Path(tmp)
        wlog = workdir / "worker.log"
        t0 = time.time()
        measured = measure_shape(op, shape, op.config, workdir, wlog, device, say, gpu)
        sid = results.slug(shape.id)
        shutil.copyfile(wlog, out_dir / f"{sid}.worker.log")
        vs = measured["variants"]
        ok = [(i, v) for i, v in enumerate(op.variants) if vs.get(v.name, {}).get("status") == "ok"]
        prof = None
        if device == "cuda" and ok:
            say(f"[bold]{op.name}[/] {shape.id}: ncu over {len(ok)} verified variants")
            prof = profile_shape(op, shape, op.config, ok, {n: r.get("launched", []) for n, r in vs.items()},
                                 ncu_path, out_dir / f"{sid}.ncu-rep", out_dir / f"{sid}.ncu.log", workdir, device,
                                 gpu)
            if prof["status"] != "ok":
                say(f"  [red]ncu {prof['status']}[/]: {escape(prof.get('message', ''))}")
    timing = measured["timing"] or {}
    facts = measured["env"] or {}
    return {
        "id": shape.id, "params": shape.params, "dtype": shape.dtype, "min_bytes": measured["min_bytes"],
        "flops": op.flops(shape.params), "reference_sha256": results.source_sha256(op.reference),
        "reference": {"timing": timing.get("__reference__")}, "copy": {"timing": timing.get("__copy__")},
        "errors": measured["errors"], "worker_log": f"{sid}.worker.log",
        # which GPU measured this shape: lanes of one host may differ in their unit, never in their model
        "measured_on": {k: facts.get(k) for k in PER_GPU},
        "ncu": {k: v for k, v in (prof or {"status": "skipped"}).items() if k not in ("by_index", "worker_events")},
        # where the pipeline's own time went; compile_s is inside verify_s (first calls compile)
        "wall_s": {"verify": measured["verify_s"], "time": measured["time_s"], "ncu": (prof or {}).get("wall_s"),
                   "compile": round(sum(r.get("first_call_s") or 0 for r in vs.values()), 2),
                   "total": round(time.time() - t0, 2)},
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "variants": [_variant_record(i, v, vs[v.name], timing, prof) for i, v in enumerate(op.variants)],
    }, facts


def _only_available(op: Op, bases: set[str], say: Say) -> Op:
    kept, skipped = ncu.available(bases, op.config.ncu.metrics)
    if skipped:
        say(f"[yellow]{op.name}: this GPU does not report {', '.join(skipped)}: skipped[/]")
    cfg = dataclasses.replace(op.config, ncu=dataclasses.replace(op.config.ncu, metrics=kept))
    return dataclasses.replace(op, config=cfg, skipped_metrics=skipped)


def run(ops: list[Op], cfg: Config, shape_filter: list[str] | None, require_gpu: bool, say: Say,
        device: str = "cuda", suite: str | None = None, force: bool = False,
        gpus: list[str] | None = None) -> list[Path] | None:
    """Profile every op × shape; returns the results files written, or None when there is no GPU.

    A shape whose cache key (cache_key) matches its stored record is not measured again unless `force`.
    With several GPUs (`gpus`, default: every visible one) shapes are spread over one lane per GPU."""
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
    facts = host_facts(device, ncu_path)
    profiles = REPO / cfg.profiles_dir if not Path(cfg.profiles_dir).is_absolute() else Path(cfg.profiles_dir)
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
            key = cache_key(op, shape, facts)
            if not force and stored.get(shape.id, {}).get("cache_key") == key:
                say(f"[bold]{op.name}[/] {shape.id}: unchanged since {stored[shape.id].get('measured_at')}, "
                    "cached (--force re-measures)")
                continue
            cost = ((stored.get(shape.id) or {}).get("wall_s") or {}).get("total") or 60.0
            pending.append(shard.Item((op.name, shape.id), cost, (op, shape, key)))
        env = doc["environment"]
        if any(it.key[0] == op.name for it in pending):
            if (env.get("gpu_name"), env.get("driver")) != (facts["gpu_name"], facts["driver"]) \
                    or not env.get("ceilings"):
                if not ceilings:
                    ceilings.append(measure_ceilings(cfg, device, say, lanes_for[0] if lanes_for else None))
                env.clear()
                env.update(gpu_name=facts["gpu_name"], driver=facts["driver"], ceilings=ceilings[0])
            env.update(ncu_path=ncu_path, ncu_version=facts["ncu_version"], skipped_metrics=op.skipped_metrics,
                       ncu_settings={"replay_mode": op.config.ncu.replay_mode,
                                     "clock_control": op.config.ncu.clock_control,
                                     "cache_control": op.config.ncu.cache_control, "metrics": op.config.ncu.metrics})
    lock = threading.Lock()

    def work(gpu: str | None, item: shard.Item) -> None:
        op, shape, key = item.payload
        path, doc = docs[op.name]
        lane = f"[dim]gpu {gpu}[/] " if gpu is not None and len(lanes_for) > 1 else ""
        say(f"{lane}[bold]{op.name}[/] {shape.id}: verifying and timing {len(op.variants)} variants")
        path.parent.mkdir(parents=True, exist_ok=True)
        record, gpu_facts = profile_shape_all(op, shape, path.parent, ncu_path, device, say, gpu)
        record["cache_key"] = key
        with lock:      # lanes finish shapes of the same op in any order; each write is whole and atomic
            doc["environment"].update({k: v for k, v in gpu_facts.items() if k not in PER_GPU})
            results.merge_shape(doc, record)
            doc["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            results.save(path, doc)

    if len(lanes_for) > 1:
        say(f"{len(pending)} shape(s) over {len(lanes_for)} GPUs: {', '.join(lanes_for)}")
        try:
            shard.ThreadLanes().run(shard.plan(pending, lanes_for), work)
        except BaseException:
            kill_all()
            raise
    else:
        for item in pending:
            work(lanes_for[0] if lanes_for and gpus is not None else None, item)
    return [path for path, _ in docs.values() if path.exists()]
