"""The parent's side of the GPU worker processes: start, pin to a GPU, follow, time out, kill.

A Worker is one long-lived process (pipeline.worker --serve) that runs the jobs handed to it one after
another, so the CUDA context, the CUDA profiler and the imports (about 11 s on an H200 host) are paid
once per lane rather than once per op. Each job writes JSON-line events to a file of its own; WorkerRun
follows them and kills the worker's process group when a phase outlives its limit; the next job then
starts a fresh process. Every worker and ncu process is tracked so that an interrupt, or a failing lane
on a multi-GPU host, can end all of them.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from pipeline.host import child_env


LIVE: set[subprocess.Popen] = set()   # worker and ncu processes now running, for a clean stop of all lanes
LIVE_LOCK = threading.Lock()


def track(proc: subprocess.Popen, alive: bool) -> None:
    with LIVE_LOCK:
        (LIVE.add if alive else LIVE.discard)(proc)


def kill_all() -> None:
    """End every tracked process group: lanes in threads cannot run their own clean-up on Ctrl-C."""
    with LIVE_LOCK:
        procs = list(LIVE)
    for proc in procs:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _tail(path: Path, n: int = 6) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])


class Events:
    """The worker's side of a job's events file: one JSON line per event, on disk before the next begins
    (the parent names a variant that took the process down by the last `begin` it read)."""

    def __init__(self, path: str):
        # a kept job run again by hand (its recorded ncu command) names a scratch folder that is gone by then
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(path, "a", buffering=1)

    def emit(self, event: str, **data: Any) -> None:
        self.fh.write(json.dumps({"event": event, "t": time.time(), **data}, default=str) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())


def read_events(path: Path, offset: int) -> tuple[list[dict[str, Any]], int]:
    try:
        with open(path) as fh:
            fh.seek(offset)
            chunk = fh.read()
    except FileNotFoundError:
        return [], offset
    complete = chunk[:chunk.rfind("\n") + 1]
    return [json.loads(ln) for ln in complete.splitlines() if ln.strip()], offset + len(complete)


class Worker:
    """One `pipeline.worker --serve` process, started on first use and again after it died or was killed.

    Jobs go to it one at a time (WorkerRun); between them it is idle, with nothing on the GPU."""

    def __init__(self, gpu: str | None = None, device: str = "cuda", cwd: Path | None = None):
        self.gpu, self.device, self.cwd = gpu, device, cwd
        self.proc: subprocess.Popen | None = None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def submit(self, job_file: Path, log: Path) -> subprocess.Popen:
        """Hand the worker a job; it runs with stdout and stderr in `log`. Returns the process running it."""
        if not self.alive():
            # what it prints before it reads its first job (an import error, say) goes to that job's log
            with open(log, "a") as out:
                self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.worker", "--serve"],
                                             stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                             env=child_env(self.gpu, self.device), cwd=self.cwd, text=True,
                                             start_new_session=True)
            track(self.proc, True)
        try:
            self.proc.stdin.write(json.dumps({"job": str(job_file), "log": str(log)}) + "\n")
            self.proc.stdin.flush()
        except OSError:     # it died already: WorkerRun sees it exit, and its log says why
            pass
        return self.proc

    def stop(self) -> None:
        """End the process: at once, as a job's limit or an interrupt needs (its GPU work is lost anyway)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        track(self.proc, False)
        self.proc = None

    def close(self) -> None:
        """End an idle worker: no more jobs (end of input) lets it exit by itself."""
        if self.proc is None:
            return
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.stop()


class WorkerRun:
    """One job on a Worker, followed through its events file, the worker killed if a phase outlives its limit."""

    def __init__(self, worker: Worker, job: dict[str, Any], workdir: Path, tag: str, log: Path,
                 limits: dict[str, float]):
        self.events_path = workdir / f"events-{tag}.jsonl"
        job = {**job, "events": str(self.events_path)}
        job_file = workdir / f"job-{tag}.json"
        job_file.write_text(json.dumps(job))
        self.worker, self.log, self.limits = worker, log, limits
        with open(log, "a") as fh:
            shapes = job.get("shapes", [])
            fh.write(f"--- worker {tag}: {job['mode']} {', '.join(s['id'] for s in shapes) or job['op'] or ''}\n")
        self.proc = worker.submit(job_file, log)
        self.started = time.time()
        self.current: str | None = None     # the variant (or None for a whole-shape phase) now running
        self.shape: str | None = None       # ... of this shape
        self.phase: str | None = None
        self.ended = False
        self.killed = ""

    def events(self):
        """Yield events as they arrive until the job's `end`, or until the process exits or is killed.

        The worker runs in a session of its own (a hung kernel must not take the parent down), so an
        interrupt does not reach it: any exit from here before the job's end ends its group."""
        offset, since = 0, time.time()
        try:
            while True:
                exited = self.proc.poll() is not None
                evs, offset = read_events(self.events_path, offset)
                for e in evs:
                    if e["event"] == "begin":
                        self.current, self.phase, since = e["variant"], e["phase"], time.time()
                        self.shape = e.get("shape")
                    elif e["event"] == "end":
                        self.ended = True
                    yield e
                if exited or self.ended:
                    return
                limit = self.limits.get(self.phase or "", self.limits["default"])
                if time.time() - since > limit:
                    self.kill()
                    self.killed = f"killed after {limit:.0f} s in phase {self.phase}"
                    return
                time.sleep(0.1)
        finally:
            if not self.ended:
                self.kill()

    def kill(self) -> None:
        # a process that is no longer the worker's has been stopped already (Worker.stop)
        if self.worker.proc is self.proc:
            self.worker.stop()

    def why(self) -> str:
        return self.killed or f"worker exited with code {self.proc.returncode}: {_tail(self.log)}"
