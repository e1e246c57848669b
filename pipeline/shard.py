"""Spread (op, shape) work over the GPUs of one host: one lane per GPU, each lane running its shapes in turn,
the shapes of one op together (one worker process per lane, one ncu process per op and lane).

The stages never see this module: a lane calls the same per-op function as a single-GPU run, with
CUDA_VISIBLE_DEVICES set to its GPU for the worker and ncu processes it starts. The caller merges each
finished op into its results file under a lock. A cluster backend (Ray actors holding one GPU each,
as Kernel Tuner does) would implement `Backend.run` with the same arguments.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol


@dataclass(frozen=True)
class Item:
    key: tuple[str, str]          # (op, shape id): each is measured exactly once
    cost: float                   # expected seconds (last run's wall time), for balancing the lanes
    payload: Any = None


def visible_gpus() -> list[str]:
    """GPU ids a lane can be pinned to: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [d.strip() for d in env.split(",") if d.strip()]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    return listed_gpus(subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60).stdout)


def listed_gpus(smi_list: str) -> list[str]:
    """Indices of the GPUs in `nvidia-smi -L` output (one `GPU <i>: <name> (UUID: ...)` line each)."""
    return [str(i) for i, _ in enumerate(ln for ln in smi_list.splitlines() if ln.startswith("GPU"))]


def plan(items: list[Item], devices: list[str]) -> dict[str, list[Item]]:
    """Longest expected work first, each to the lane that frees up first; ties keep the given order."""
    if not devices:
        raise ValueError("no devices to plan for")
    lanes: dict[str, list[Item]] = {d: [] for d in devices}
    load = {d: 0.0 for d in devices}
    for item in sorted(items, key=lambda it: -it.cost):
        device = min(devices, key=lambda d: (load[d], devices.index(d)))
        lanes[device].append(item)
        load[device] += item.cost
    return lanes


def batches(items: list[Item]) -> list[list[Item]]:
    """The items grouped by op (key[0]), in order of each op's first item: one batch per process pair."""
    groups: dict[str, list[Item]] = {}
    for item in items:
        groups.setdefault(item.key[0], []).append(item)
    return list(groups.values())


# work(device, batch, upcoming): one op's items on one device; `upcoming` is the batch that device takes
# next (None for its last), so its worker can prepare it while this one finishes
Work = Callable[[str, list[Item], "list[Item] | None"], None]


class Backend(Protocol):
    def run(self, lanes: dict[str, list[Item]], work: Work) -> None: ...


class ThreadLanes:
    """One thread per GPU on this host; the first exception of any lane is raised after all have stopped."""

    def run(self, lanes: dict[str, list[Item]], work: Work) -> None:
        errors: list[BaseException] = []
        stop = threading.Event()

        def lane(device: str, items: list[Item]) -> None:
            groups = batches(items)
            for batch, upcoming in zip(groups, [*groups[1:], None]):
                if stop.is_set():
                    return
                try:
                    work(device, batch, upcoming)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                    errors.append(exc)
                    stop.set()
                    return

        threads = [threading.Thread(target=lane, args=(d, items), daemon=True) for d, items in lanes.items() if items]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(timeout=0.2)     # short joins keep Ctrl-C deliverable to the main thread
        except KeyboardInterrupt:
            stop.set()
            raise
        if errors:
            raise errors[0]
