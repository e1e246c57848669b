"""Find Nsight Compute, build its command line, run it over the worker, and read its log.

One ncu process per op over all its shapes, kernel replay, an NVTX start/end range per variant inside one
outer range (the include filter), and a kernel-name guard. ncu exits 0 even when it profiled
nothing, so the log is always read.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pipeline.config import NcuConfig
from pipeline.errors import ToolError


# The worker opens this NVTX start/end range around all profiled launches (the include filter) and one
# range `s<shape>.v<variant>` per variant inside it (how metrics.py attributes kernels).
OUTER_RANGE = "pipeline"


def range_name(shape_index: int, variant_index: int) -> str:
    """The NVTX range one variant's call runs in: ncu attributes its kernels by it (metrics.RANGE)."""
    return f"s{shape_index}.v{variant_index}"


def candidate_paths() -> list[str]:
    """Where ncu is looked for, in order (named in the error when it is nowhere)."""
    places = []
    if shutil.which("ncu"):
        places.append(shutil.which("ncu"))
    if os.environ.get("CUDA_HOME"):
        places.append(os.path.join(os.environ["CUDA_HOME"], "bin", "ncu"))
    places += sorted(glob.glob("/usr/local/cuda*/bin/ncu"), reverse=True)
    places += sorted(glob.glob("/opt/nvidia/nsight-compute/*/ncu"), reverse=True)
    return places


SEARCHED = "PATH, $CUDA_HOME/bin, /usr/local/cuda*/bin, /opt/nvidia/nsight-compute/*"


def locate(cfg: NcuConfig) -> str:
    if cfg.path:
        if not os.access(cfg.path, os.X_OK):
            raise ToolError(f"ncu.path = {cfg.path} is not an executable file")
        return cfg.path
    for p in candidate_paths():
        if os.access(p, os.X_OK):
            return p
    raise ToolError(f"Nsight Compute (ncu) not found; looked in {SEARCHED}. Install Nsight Compute or set "
                    "ncu.path in pipeline.yaml.")


def version(ncu: str) -> str:
    out = subprocess.run([ncu, "--version"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"Version\s+([\w.\-() ]+)", out)
    return m.group(1).strip() if m else out.strip().splitlines()[-1] if out.strip() else "unknown"


def install_dir(ncu: str) -> Path:
    """The Nsight Compute install folder (ncu in /usr/local/cuda/bin is often a wrapper script or link)."""
    real = Path(os.path.realpath(ncu))
    for parent in [real.parent, *real.parents]:
        if (parent / "extras" / "python").is_dir():
            return parent
    for d in sorted(glob.glob("/opt/nvidia/nsight-compute/*"), reverse=True):
        if (Path(d) / "extras" / "python").is_dir():
            return Path(d)
    return real.parent


def function_name(demangled: str) -> str:
    """ncu's default kernel name base ("function") from a demangled signature as the CUDA profiler gives it:
    `void at::native::vectorized_elementwise_kernel<4, F>(int, F)` -> `vectorized_elementwise_kernel`."""
    depth, plain = 0, []
    for ch in demangled:
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif depth == 0:
            if ch == "(":
                break
            plain.append(ch)
    return "".join(plain).split()[-1].split("::")[-1] if "".join(plain).split() else demangled


def command(ncu: str, cfg: NcuConfig, report: Path, kernel_names: list[str], worker_cmd: list[str]) -> list[str]:
    cmd = [ncu, "--replay-mode", cfg.replay_mode, "--clock-control", cfg.clock_control,
           "--cache-control", cfg.cache_control, "--nvtx", "--nvtx-include", OUTER_RANGE,
           "--metrics", ",".join(cfg.metrics)]
    if kernel_names:
        cmd += ["-k", "regex:^(" + "|".join(re.escape(n) for n in sorted(set(kernel_names))) + ")$"]
    return cmd + ["-f", "-o", str(report.with_suffix("")), *worker_cmd]


@dataclass
class LogFindings:
    errors: list[str]
    warnings: list[str]
    no_kernels: bool
    permission: bool


def read_log(text: str) -> LogFindings:
    errors = [ln.strip() for ln in text.splitlines() if ln.startswith("==ERROR==")]
    warnings = [ln.strip() for ln in text.splitlines() if ln.startswith("==WARNING==")]
    return LogFindings(errors=errors, warnings=warnings,
                       no_kernels="No kernels were profiled" in text,
                       permission="ERR_NVGPUCTRPERM" in text)


PERMISSION_FIX = ("ncu has no permission for the GPU performance counters (ERR_NVGPUCTRPERM). Run as root, or "
                  "load the driver with NVreg_RestrictProfilingToAdminUsers=0 "
                  "(see https://developer.nvidia.com/ERR_NVGPUCTRPERM).")


def run(cmd: list[str], log: Path, timeout_s: float, env: dict[str, str],
        track: Callable[[subprocess.Popen, bool], None] = lambda proc, alive: None) -> tuple[int | None, LogFindings]:
    """Run ncu with its output to `log`; returns (exit code or None on timeout, what the log says)."""
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        # a session of its own, so a timeout kills ncu and the worker it started together
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        track(proc, True)
        try:
            rc: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
        finally:   # also on Ctrl-C: ncu and its worker run in their own session and would outlive us
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            track(proc, False)
    return rc, read_log(log.read_text(errors="replace"))


def query_bases(ncu: str) -> set[str]:
    """Base metric names this GPU reports (`ncu --query-metrics`); empty when the query fails."""
    try:
        out = subprocess.run([ncu, "--query-metrics"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {ln.split()[0] for ln in out.splitlines() if ln.strip() and "__" in ln.split()[0]}


def available(bases: set[str], names: list[str]) -> tuple[list[str], list[str]]:
    """(kept, skipped): metrics this GPU reports, judged by their base name in `bases` (query_bases).

    launch__ and profiler__ metrics are properties of the launch, not counters, and are always kept."""
    if not bases:
        return names, []
    # names without a rollup suffix (sm__maximum_warps_per_active_cycle_pct) are derived ratios that the
    # query does not list (seen on the H100): only suffixed counters are judged by their base name
    kept = [n for n in names if n.startswith(("launch__", "profiler__")) or "." not in n or n.split(".")[0] in bases]
    return kept, [n for n in names if n not in kept]
