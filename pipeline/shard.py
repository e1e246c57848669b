"""Spread (op, shape) work over lanes, one lane per GPU, each lane running its shapes in turn, the shapes of
one op together (one worker process per lane, one ncu process per op and lane).

A Backend runs the lanes: ThreadLanes (the default) as threads of this process over the GPUs of this host,
pipeline.raybackend as Ray actors anywhere in a cluster. The stages never see this module: every lane
object is made by the caller (`make_lane`, lane.Lane), and every batch runs the same per-op function
(`work`), which returns the batch's result; the backend hands each result to `done` on the caller's
thread, which alone writes results. A backend may report a batch as `Lost` (its lane died or hung, and the
retry did too); the caller records why.
"""
from __future__ import annotations

import importlib
import math
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from pipeline.errors import ConfigError
from pipeline.host import visible_gpus


@dataclass(frozen=True)
class Item:
    key: tuple[str, str]          # (op, shape id): each is measured exactly once per GPU model
    cost: float                   # expected seconds (last run's wall time), for balancing the lanes
    payload: Any = None
    limit: float = math.inf       # seconds its work may take on a lane before the lane counts as stuck


@dataclass(frozen=True)
class LaneInfo:
    name: str                     # unique within the run; tags the files the lane's work writes
    label: str                    # how messages name it ("gpu 1", "node7 gpu 3"); "" for a run's only lane
    model: str                    # its GPU model: lanes of one model are interchangeable
    facts: dict[str, Any]         # what `probe` returned on the lane


@dataclass(frozen=True)
class Lost:
    """A batch no lane finished: its lane died or hung, and so did the retry on another one."""
    reason: str


@dataclass(frozen=True)
class Options:
    """What a backend is asked for; each refuses what it cannot honour, naming the flag or key."""
    device: str
    say: Callable[[str], None]
    tracker: Any                  # measure.Tracker
    gpus: list[str] | None = None          # --gpus: GPUs of this host
    address: str = "auto"                  # ray_address
    job_timeout: float | None = None       # --job-timeout: seconds one op may take on one lane


# make_lane(name=, label=, gpu=, say=, tracker=, remote=, where=) -> a lane (lane.Lane), where it runs
MakeLane = Callable[..., Any]
Probe = Callable[[Any], dict]          # probe(lane) -> facts; facts["gpu_name"] is its model
# work(lane, batch, upcoming): one op's items on one lane; `upcoming` is the batch that lane takes next
# (None for its last), so its worker can prepare it while this one finishes
Work = Callable[[Any, "list[Item]", "list[Item] | None"], Any]
Done = Callable[["list[Item]", Any], None]     # done(batch, result or Lost), on the caller's thread


class Backend(Protocol):
    def open(self, make_lane: MakeLane, probe: Probe, keep: Callable[[LaneInfo], bool]) -> list[LaneInfo]:
        """Start one lane per GPU and probe each; lanes `keep` refuses are ended at once."""
        ...

    def call(self, lane: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(lane object, *args) on that lane, waited for."""
        ...

    def run(self, plan: dict[str, list[Item]], work: Work, done: Done) -> None:
        """Every batch of every lane's plan through `work`, each result to `done`; on an interrupt or an
        error, every lane is stopped before it is raised."""
        ...

    def close(self) -> None: ...


BACKENDS = {"threads": "pipeline.shard:ThreadLanes", "ray": "pipeline.raybackend:RayLanes"}


def backend(name: str, options: Options) -> Backend:
    """The backend a name stands for: one of BACKENDS, or any `module:Class` importable here that implements
    Backend (so another backend needs no change outside its own module)."""
    target = BACKENDS.get(name, name)
    module, _, cls = target.partition(":")
    if not module or not cls:
        raise ConfigError(f"unknown backend '{name}'; backends: {', '.join(BACKENDS)}, or MODULE:CLASS")
    try:
        made = getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"backend '{name}': cannot load {target} ({type(exc).__name__}: {exc})") from None
    return made(options)


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


class ThreadLanes:
    """One thread per GPU of this host (one lane, unpinned unless --gpus names its GPU, when there is one).
    The first exception of any lane is raised after every lane has stopped; results finished before it
    are handed to `done` all the same."""

    def __init__(self, options: Options):
        if options.job_timeout is not None:
            raise ConfigError("--job-timeout applies to --backend ray; a local lane is bounded by worker.* and "
                              "ncu.timeout_s")
        self.options = options
        self.lanes: dict[str, Any] = {}

    def open(self, make_lane: MakeLane, probe: Probe, keep: Callable[[LaneInfo], bool]) -> list[LaneInfo]:
        o = self.options
        gpus = o.gpus if o.gpus is not None else (visible_gpus() if o.device == "cuda" else [])
        pins = gpus if len(gpus) > 1 else [gpus[0] if gpus and o.gpus is not None else None]
        infos = []
        for pin in pins:
            name, label = (f"gpu{pin}", f"gpu {pin}") if len(pins) > 1 else ("", "")
            lane = make_lane(name=name, label=label, gpu=pin, say=o.say, tracker=o.tracker, remote=False)
            self.lanes[name] = lane
            facts = probe(lane)
            info = LaneInfo(name, label, facts["gpu_name"], facts)
            if keep(info):
                infos.append(info)
            else:
                self.lanes.pop(name).close()
        return infos

    def call(self, lane: str, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(self.lanes[lane], *args)

    def run(self, plan: dict[str, list[Item]], work: Work, done: Done) -> None:
        finished: queue.Queue = queue.Queue()
        stop = threading.Event()

        def lane(name: str, items: list[Item]) -> None:
            groups = batches(items)
            try:
                for batch, upcoming in zip(groups, [*groups[1:], None]):
                    if stop.is_set():
                        return
                    try:
                        finished.put((batch, work(self.lanes[name], batch, upcoming), None))
                    except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                        finished.put((batch, None, exc))
                        stop.set()
                        return
            finally:
                finished.put(None)

        threads = [threading.Thread(target=lane, args=(n, items), daemon=True) for n, items in plan.items() if items]
        for t in threads:
            t.start()
        running, errors = len(threads), []
        try:
            while running:
                try:
                    got = finished.get(timeout=0.2)     # short waits keep Ctrl-C deliverable to this thread
                except queue.Empty:
                    continue
                if got is None:
                    running -= 1
                elif got[2] is not None:
                    errors.append(got[2])
                else:
                    done(got[0], got[1])
        except BaseException:
            stop.set()
            for lane_obj in self.lanes.values():
                lane_obj.abort()
            for t in threads:       # a stopped lane ends at its next process start: then closing it is safe
                t.join(timeout=10)
            raise
        if errors:
            raise errors[0]

    def close(self) -> None:
        for lane in self.lanes.values():
            lane.close()
