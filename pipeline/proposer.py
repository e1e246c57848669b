"""The `cmd` proposer of `optimize`: the stage prompt for the current best, and the external command that reads it
and writes candidate variant files (the `search` proposer is pipeline/search.py). The candidates it writes are
untrusted: `optimize` checks them statically and only the worker imports them."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from pipeline import supervise
from pipeline.config import read_text
from pipeline.errors import SelectionError
from pipeline.stages import Stage

CANDIDATES_ENV = "KERNEL_PIPELINE_CANDIDATES"


def stage_prompt(doc: dict[str, Any], tuning: list[str], recs: dict[str, dict[str, Any]], code: Path,
                 config: dict[str, Any], stage: Stage, root: Path, kernels_dir: Path, note: str = "") -> str:
    """The stage prompt of export.py for the current best (`recs`: its record per tuning shape in `doc`) where
    it has counters; otherwise the same prompt on timings, saying why there are none (`note`). Either way it
    names the tuning shapes, and only those."""
    from pipeline import export     # matplotlib, through the report: only for the commands that draw
    first = next(s for s in doc["shapes"] if s["id"] == tuning[0])
    try:
        view = export.prompt_view(doc, first, recs[tuning[0]], stage, root, kernels_dir)
    except SelectionError as exc:
        why = note or f"no counters: {exc}"
        view = export.PromptView(gpu=[("Device", str(doc["environment"].get("gpu_name", "?"))), ("Counters", why)],
                                 stage=stage, code=read_text(code), metrics_json=f"(none: {why})", evidence=[])
    shapes = {s["id"]: s for s in doc["shapes"]}
    for sid in tuning:
        t, s = recs[sid].get("timing") or {}, shapes[sid]
        view.evidence.append((f"tuning shape {sid}", f"{json.dumps(s.get('params'))} {s.get('dtype')}: "
                              f"{t.get('median_ms', math.nan):.4g} ms median (IQR {t.get('p25_ms', math.nan):.4g}–"
                              f"{t.get('p75_ms', math.nan):.4g} ms, {recs[sid].get('status')})"))
    if config:
        view.evidence.append(("configuration of the current code (ModelNew keyword arguments)", json.dumps(config)))
    return export.render_prompt(view)


def run_proposer(command: list[str], prompt: str, out: Path, env: dict[str, str], timeout: float, log: Path,
                 cwd: Path) -> tuple[int | None, float]:
    """Run the cmd proposer: prompt on stdin, `out` as its last argument and in $KERNEL_PIPELINE_CANDIDATES,
    output in `log`, in a process group of its own that is killed at `timeout` or on an interrupt.
    Returns (exit code, or None when killed; seconds)."""
    t0 = time.time()
    with open(log, "w") as fh:
        try:
            proc = subprocess.Popen([*command, str(out)], stdin=subprocess.PIPE, stdout=fh, stderr=subprocess.STDOUT,
                                    cwd=cwd, env={**os.environ, **env, CANDIDATES_ENV: str(out)}, text=True,
                                    start_new_session=True)
        except OSError as exc:
            raise SelectionError(f"--proposer-cmd: cannot run {command[0]}: {exc.strerror or exc}") from None
        supervise.track(proc, True)
        try:
            proc.communicate(prompt, timeout=timeout)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            code = None
        except BaseException:
            _kill(proc)
            raise
        finally:
            if proc.poll() is None:
                _kill(proc)
            supervise.track(proc, False)
    return code, round(time.time() - t0, 2)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
