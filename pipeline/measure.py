"""The parent's side of the measuring stage: one job per op on the lane's worker verifies and times all
its shapes (pipeline.worker mode "measure"); a crash or hang costs one variant and a fresh worker goes on
with the rest. Also the device's roofline ceilings, measured once per run.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Protocol

from rich.markup import escape

from pipeline.cache import ShapeWork
from pipeline.config import Config
from pipeline.ops import Op, Variant
from pipeline.supervise import Worker, WorkerRun

Say = Callable[[str], None]


class Tracker(Protocol):
    """Progress of a long run: units of work are variant checks, shape timings and ncu passes over an op."""
    def add(self, units: int) -> None: ...
    def doing(self, text: str) -> None: ...
    def done(self, units: int = 1) -> None: ...


class Quiet:
    def add(self, units: int) -> None:
        pass

    def doing(self, text: str) -> None:
        pass

    def done(self, units: int = 1) -> None:
        pass


def measure_ceilings(cfg: Config, device: str, say: Say, worker: Worker) -> dict[str, Any] | None:
    """Copy bandwidth and matmul rate of this GPU, measured once per run (the roofline's two ceilings)."""
    job = {"mode": "ceilings", "op": "", "variants": [], "device": device, "timing": vars(cfg.timing).copy()}
    with tempfile.TemporaryDirectory(prefix="pipeline-") as tmp:
        run = WorkerRun(worker, job, Path(tmp), "ceilings", Path(tmp) / "worker.log",
                        {"default": cfg.worker.timing_timeout_s})
        found = [e["ceilings"] for e in run.events() if e["event"] == "ceilings"]
        if not found:
            say(f"  [red]✗[/] ceilings not measured: {escape(run.why())}")
            return None
    c = found[0]
    say(f"GPU ceilings: copy {c['copy_gbs']:,.0f} GB/s; matmul " +
        ", ".join(f"{k} {v:,.0f} TFLOP/s" for k, v in c["matmul_tflops"].items()))
    return c


def variant_job(i: int, v: Variant) -> dict[str, Any]:
    return {"index": i, "name": v.name, "file": v.file, "config": v.config}


def _note(w: ShapeWork, r: dict[str, Any], say: Say, tracker: Tracker) -> None:
    w.done[r["name"]] = r
    mark = {"ok": "[green]✓[/]", "unsupported": "[yellow]–[/]"}.get(r["status"], "[red]✗[/]")
    say(f"  {mark} {escape(w.op.name)} {escape(w.id)} {escape(r['name'])}: {r['status']}"
        + (f": {escape(r['error'])}" if r.get("error") else ""))
    tracker.done()


def _shape_job(w: ShapeWork, cfg: Config, only: str | None = None, held: frozenset[str] = frozenset()
               ) -> dict[str, Any]:
    """The worker's job for one shape: variants still to verify (just `only`, for a solo retry; never the
    `held` ones waiting for theirs), and the verified ones and controls to time."""
    tol = cfg.verify.tolerance_for(w.shape.dtype)
    verified = [(i, v) for i, v in w.measure if w.done.get(v.name, {}).get("status") == "ok"]
    return {"id": w.id, "index": w.index, "params": w.shape.params, "dtype": w.shape.dtype,
            "tolerance": {"rtol": tol.rtol, "atol": tol.atol},
            "verify": [variant_job(i, v) for i, v in w.measure if v.name not in w.done
                       and (v.name == only if only else v.name not in held)],
            "time": [] if only else [variant_job(i, v) for i, v in verified + w.controls]}


def ahead_job(upcoming: list[ShapeWork]) -> dict[str, Any] | None:
    """What the worker needs to compile the lane's next op ahead (pipeline.precompile): its variants to verify."""
    if not upcoming or not upcoming[0].op.config.worker.precompile:
        return None
    op = upcoming[0].op
    shapes = [{"id": w.id, "params": w.shape.params, "dtype": w.shape.dtype,
               "verify": [variant_job(i, v) for i, v in w.measure if not v.problem]} for w in upcoming]
    return {"op": op.name, "reference": str(op.reference), "seeds": op.config.verify.seeds,
            "shapes": [s for s in shapes if s["verify"]]}


def measure_op(op: Op, works: list[ShapeWork], workdir: Path, log: Path, device: str, say: Say,
               tracker: Tracker, worker: Worker, upcoming: list[ShapeWork] | None = None) -> None:
    """Verify and time every shape of `works` on `worker`. A crash or hang costs that variant only: a fresh
    worker process goes on with what is left. Fills each ShapeWork's done/timing/errors/wall. `upcoming`:
    the shapes the lane measures next, whose kernels the worker compiles while ncu profiles this op."""
    cfg = op.config
    for w in works:
        for i, v in w.measure:
            if v.problem:
                _note(w, {"name": v.name, "status": "import-error", "error": v.problem}, say, tracker)
    by_id = {w.id: w for w in works}
    most = max((len(w.measure) for w in works), default=1)
    limits = {"default": cfg.worker.variant_timeout_s, "timing": cfg.worker.timing_timeout_s,
              "compile": cfg.worker.variant_timeout_s * max(1, most)}
    attempt = 0
    concurrent_compile = cfg.worker.precompile   # and off for restarts after a worker died while compiling
    # A worker lost during a variant's check is not yet that variant's fault: work of another one may have
    # taken it down (a kernel still running, the shared compile). Before it is charged, the variant is
    # checked alone in a fresh worker with nothing compiled beside it; only failing there too blames it.
    solo: tuple[ShapeWork, str] | None = None
    lost: dict[tuple[str, str], str] = {}        # (shape, variant) -> why the shared worker died in it
    while todo := [w for w in works if not w.timed]:
        attempt += 1
        progress = sum(len(w.done) for w in works)
        held = {w.id: frozenset(n for s, n in lost if s == w.id and n not in w.done) for w in todo}
        job = {"mode": "measure", "op": op.name, "reference": str(op.reference), "device": device,
               "seeds": cfg.verify.seeds, "wide_inputs": cfg.verify.wide_inputs,
               "timing": vars(cfg.timing).copy(), "precompile": concurrent_compile,
               "shapes": [_shape_job(w, cfg, held=held[w.id]) for w in todo], "ahead": ahead_job(upcoming or [])}
        if solo is None:
            solo = next(((w, n) for w in todo for n in held[w.id]), None)
        if solo is not None:
            job.update(shapes=[_shape_job(solo[0], cfg, only=solo[1])], verify_only=True, precompile=False,
                       ahead=None)
        run = WorkerRun(worker, job, workdir, f"measure-{attempt}", log, limits)
        since = run.started
        for e in run.events():
            w = by_id.get(e.get("shape") or "")
            if e["event"] == "env":
                for t in todo:
                    t.env = e["facts"]
            elif e["event"] == "ahead":     # compiled for this op while ncu profiled the lane's op before
                todo[0].ahead = {k: e[k] for k in ("seconds", "kernels", "waited_s")}
            elif e["event"] == "begin" and w is not None:
                tracker.doing(f"{op.name} {w.id}: {e['phase']} {e['variant'] or ''}".rstrip())
                if e["phase"] == "timing":
                    w.wall["verify"] += e["t"] - since
                    since = e["t"]
            elif e["event"] == "variant" and w is not None:
                _note(w, e["result"], say, tracker)
            elif e["event"] == "compiled" and w is not None:
                w.compiled = {k: e[k] for k in ("seconds", "kernels", "threads")}
            elif e["event"] == "timing" and w is not None:
                w.timing, w.min_bytes, w.after = e["stats"], e["min_bytes"], e.get("after") or {}
                w.input_bytes = e.get("input_bytes")
            elif e["event"] == "shape-end" and w is not None:
                w.wall["time"] += e["t"] - since
                since, w.timed = e["t"], True
                tracker.done()
        if solo is not None:
            w, name = solo
            solo = None
            if name not in w.done:      # it took a fresh worker down on its own too: now it is charged
                _note(w, {"name": name, "status": "timeout" if run.killed else "crashed",
                          "error": f"{run.why()} (alone in a fresh worker; first: {lost[(w.id, name)]})"},
                      say, tracker)
            continue
        if run.ended or all(w.timed for w in works):     # past the last shape: only the compile ahead was left
            break
        w = by_id.get(run.shape or "")
        moved = sum(len(t.done) for t in works) > progress
        if w is not None and run.phase == "verify" and run.current is not None:
            if run.current not in w.done:
                lost[(w.id, run.current)] = run.why()
            continue    # the variant is retried alone before anything else runs
        if run.phase == "compile":
            # the concurrent compile took the worker down (a compiler crash, or past its limit): say so and
            # go on compiling one kernel at a time, where a failure is charged to its own variant
            say(f"  [yellow]![/] {escape(op.name)} {escape(run.shape or '')}: concurrent compile failed "
                f"({escape(run.why())}); compiling at first call instead")
            concurrent_compile = False
            continue
        if w is not None and run.phase == "timing":
            w.errors.append(f"timing phase failed: {run.why()}")
            say(f"  [red]✗[/] {escape(op.name)} {escape(w.id)}: {escape(w.errors[-1])}")
            w.timed = True
            tracker.done()
            continue
        if moved:
            continue
        # died outside any variant and made no progress: the shapes it had left cannot be measured
        why = f"worker failed before any variant: {run.why()}"
        say(f"  [red]✗[/] {escape(op.name)}: {escape(why)}")
        for t in todo:
            t.errors.append(why)
            for _, v in t.measure:
                if v.name not in t.done:
                    _note(t, {"name": v.name, "status": "worker-error", "error": run.why()}, say, tracker)
            t.timed = True
        break
