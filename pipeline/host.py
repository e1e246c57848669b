"""This host's GPUs, tools and code, read without importing torch, and the environment that puts a child
process on one GPU. The only place nvidia-smi is asked anything: whether there is a GPU, which GPUs a lane
can be pinned to, and a GPU's name, driver, UUID and memory.

nvidia-smi ignores CUDA_VISIBLE_DEVICES: a GPU is asked about by the first index a lane's variable names.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.machinery
import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline import ncu
from pipeline.config import NcuConfig

PACKAGE = Path(__file__).resolve().parent     # the `pipeline` package this process runs


def _list_gpus() -> tuple[str | None, str]:
    """(output of `nvidia-smi -L`, or None where it could not run; why not)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None, "nvidia-smi not found"
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"nvidia-smi failed: {exc}"
    if out.returncode != 0 or "GPU" not in out.stdout:
        return None, f"nvidia-smi lists no GPU ({(out.stderr or out.stdout).strip()[:200]})"
    return out.stdout, ""


def gpu_present() -> tuple[bool, str]:
    """(present, why): nvidia-smi must list at least one GPU."""
    listing, why = _list_gpus()
    return (True, listing.strip().splitlines()[0]) if listing is not None else (False, why)


def visible_gpus() -> list[str]:
    """GPU ids a lane can be pinned to: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    return listed_gpus(_list_gpus()[0] or "")


def listed_gpus(smi_list: str) -> list[str]:
    """Indices of the GPUs in `nvidia-smi -L` output (one `GPU <i>: <name> (UUID: ...)` line each)."""
    return [str(i) for i, _ in enumerate(ln for ln in smi_list.splitlines() if ln.startswith("GPU"))]


def query_gpu(gpu: str | None, fields: list[str], timeout: float = 60) -> list[str] | None:
    """The `fields` (nvidia-smi --query-gpu names) of the first GPU `gpu` names (a CUDA_VISIBLE_DEVICES value;
    empty: GPU 0), or None where nvidia-smi cannot say."""
    index = (gpu or "0").split(",")[0]
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits",
                              "-i", index], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:         # its message ("No devices were found") is on stdout, not a row
        return None
    row = [x.strip() for x in (out.stdout.strip().splitlines() or [""])[0].split(",")]
    return row if len(row) == len(fields) else None


def gpu_memory(gpu: str | None) -> int | None:
    """Bytes of memory of the lane's GPU (a shape too big for it is not sent there), or None."""
    row = query_gpu(gpu, ["memory.total"])
    try:
        return int(float(row[0])) * 2**20 if row else None
    except ValueError:
        return None


def key_facts(device: str, ncu_path: str) -> dict[str, Any]:
    """What the cache key needs: GPU, driver, ncu and library versions."""
    facts: dict[str, Any] = {"device": device, "ncu_version": ncu.version(ncu_path) if ncu_path else None}
    for pkg in ("torch", "triton"):
        try:
            facts[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            facts[pkg] = None
    if device == "cpu":
        facts.update(gpu_name="cpu (Triton interpreter)", driver=None)
        return facts
    # the UUID keys results to one card: two cards of a model differ in clocks and memory
    name, driver, uuid = (query_gpu(os.environ.get("CUDA_VISIBLE_DEVICES"), ["name", "driver_version", "uuid"])
                          or ["unknown"] * 3)
    facts.update(gpu_name=name, driver=driver, gpu_uuid=uuid)
    return facts


@functools.lru_cache(maxsize=None)
def ncu_here(path: str) -> tuple[str, tuple[str, ...]]:
    """ncu on this machine and the metric bases its GPUs report: found once per process, for all its lanes."""
    found = ncu.locate(NcuConfig(path=path))
    return found, tuple(sorted(ncu.query_bases(found)))


@functools.lru_cache(maxsize=None)
def package_digest() -> str:
    """Hash of this pipeline package's code: every lane of a run, on any machine, must run the very same."""
    h = hashlib.sha256()
    for p in sorted(PACKAGE.rglob("*.py")):
        h.update(p.relative_to(PACKAGE).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def _found_without_help() -> bool:
    """Whether `python -m pipeline.worker` imports this very package as it is (installed, editable, or on
    PYTHONPATH). sys.path[0] is left out: it is where this process was started from, not the child's."""
    path = sys.path if getattr(sys.flags, "safe_path", False) else sys.path[1:]
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder:
            spec = finder.find_spec("pipeline", path)
        elif hasattr(finder, "find_spec"):
            try:
                spec = finder.find_spec("pipeline", None)
            except Exception:  # noqa: BLE001 - a third-party finder's failure means: not found by it
                spec = None
        else:
            continue
        if spec is not None:
            return spec.origin is not None and Path(spec.origin).resolve().parent == PACKAGE
    return False


def child_env(gpu: str | None = None, device: str = "cuda") -> dict[str, str]:
    """The environment of a worker (and of the ncu that runs one): its GPU, the Triton interpreter for the
    CPU, and the same `pipeline` package as this process."""
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
    else:
        env.pop("TRITON_INTERPRET", None)     # a GPU run under the interpreter would measure the CPU
    # a source checkout run without installing (`python -m pipeline` in it) is found through the package's folder
    if not _found_without_help():
        env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE.parent), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONSAFEPATH"] = "1"      # the worker's working directory (the project) cannot shadow a module
    env["PYTHONUNBUFFERED"] = "1"
    return env
