"""Lanes on a Ray cluster (`profile --backend ray`): one actor per GPU (num_gpus=1), placed by Ray on any node,
each running the same per-op work as a local lane (lane.Lane: its worker process, ncu, the compile ahead)
on its GPU.

Nothing is assumed shared between the nodes but the installed pipeline: each op's files travel with its
work, and an actor returns its records with the bytes of the files they name, which the caller writes.
Faults: a lane still on one op after the job's limit is stopped; a lane that died or was stopped is replaced,
and its op retried once on another lane of the same GPU model (on the replacement only where there is no
other), then given up as shard.Lost with both reasons. An interrupt stops every actor's processes and kills
the actors. With `--device cpu` an actor takes one unit of the custom resource CPU_LANE instead of a GPU,
so that the whole path runs on machines without one.
"""
from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from rich.markup import escape

from pipeline import shard, supervise
from pipeline.errors import ConfigError, NoGpuError, PipelineError

try:
    import ray
    from ray.exceptions import RayError, RayTaskError
except ImportError as exc:
    raise ConfigError("--backend ray (backend: ray) needs Ray, which is not installed for this Python: run "
                      "`pip install '.[ray]'` in the pipeline's checkout (or `pip install ray`), here and on every "
                      "node of the cluster") from exc

CPU_LANE = "pipeline_cpu_lane"   # what a node declares, one unit per lane, to run --device cpu lanes
START_S = 120.0                  # a lane not up by then is given up: another job may hold its GPU
POLL_S = 0.25

# Run beside each actor: the worker and ncu processes a lane starts run in sessions of their own (a hung kernel
# must not take the lane down), so a lane that dies cannot end them; this does, once the actor's end closes
# its standard input: it ends the process groups the actor last listed, and removes the lane's files.
WATCHDOG = """
import os, shutil, signal, sys
sys.stdin.buffer.read()
try:
    groups = open(sys.argv[1]).read().split()
except OSError:
    groups = []
for g in groups:
    try:
        os.killpg(int(g), signal.SIGKILL)
    except (OSError, ValueError):
        pass
for path in sys.argv[1:]:
    shutil.rmtree(path, ignore_errors=True) if os.path.isdir(path) else os.path.exists(path) and os.unlink(path)
"""


class Relay:
    """say() and measure.Tracker for a lane in an actor: kept until the driver drains them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kept: list[tuple[str, Any]] = []

    def _keep(self, kind: str, value: Any) -> None:
        with self.lock:
            self.kept.append((kind, value))

    def say(self, text: str) -> None:
        self._keep("say", text)

    def add(self, units: int) -> None:
        self._keep("add", units)

    def doing(self, text: str) -> None:
        self._keep("doing", text)

    def done(self, units: int = 1) -> None:
        self._keep("done", units)

    def drain(self) -> list[tuple[str, Any]]:
        with self.lock:
            kept, self.kept = self.kept, []
        return kept


@ray.remote
class LaneActor:
    """One lane in a process of its own on some node; calls run in threads, so that drain and abort are
    answered while a job runs."""

    def __init__(self, make_lane: shard.MakeLane, name: str):
        gpus = [str(g) for g in ray.get_gpu_ids()]     # Ray has set CUDA_VISIBLE_DEVICES to them
        self.label = f"{platform.node()} gpu {','.join(gpus)}" if gpus else f"{platform.node()} {name}"
        self.relay = Relay()
        self.lane = make_lane(name=name, label=self.label, gpu=None, say=self.relay.say, tracker=self.relay,
                              remote=True, where={"node_id": ray.get_runtime_context().get_node_id()})
        fd, self.groups = tempfile.mkstemp(prefix="pipeline-lane-groups-")
        os.close(fd)
        files = [str(self.lane.mirror)] if self.lane.mirror else []
        self.watchdog = subprocess.Popen([sys.executable, "-c", WATCHDOG, self.groups, *files],
                                         stdin=subprocess.PIPE, start_new_session=True)
        self.closing = threading.Event()
        self.lister = threading.Thread(target=self._list_groups, daemon=True)
        self.lister.start()

    def _list_groups(self) -> None:
        listed: list[int] = []
        while not self.closing.wait(0.05):
            with supervise.LIVE_LOCK:
                live = sorted(p.pid for p in supervise.LIVE)
            if live != listed:
                with open(self.groups + ".new", "w") as fh:
                    fh.write(" ".join(map(str, live)))
                os.replace(self.groups + ".new", self.groups)
                listed = live

    def hello(self, probe: shard.Probe) -> tuple[str, dict[str, Any]]:
        return self.label, self.call(probe, ())

    def call(self, fn: Callable[..., Any], args: tuple) -> Any:
        try:
            return fn(self.lane, *args)
        except PipelineError as exc:      # ncu missing on this node, say: the message names the lane
            raise type(exc)(f"{self.label}: {exc}") from None

    def drain(self) -> list[tuple[str, Any]]:
        return self.relay.drain()

    def abort(self) -> None:
        self.lane.abort()

    def close(self) -> None:
        try:
            self.lane.close()
        finally:
            self.closing.set()
            self.lister.join()
            self.watchdog.stdin.close()
            self.watchdog.wait(timeout=30)


@dataclass
class _Busy:
    ref: Any
    batch: list[shard.Item]
    started: float
    limit: float
    why: tuple[str, ...]          # what happened to the lanes this batch was lost on before


@dataclass
class _Slot:
    """The driver's view of one actor."""
    name: str
    actor: Any
    asked: float                  # when it was started
    hello: Any                    # its hello() while it starts
    model: str = ""               # a replacement is expected to be of the model of the lane it replaces
    stands_for: str = ""          # the lane it replaces
    label: str = ""
    state: str = "starting"       # starting, live, dead
    queue: list[list[shard.Item]] = field(default_factory=list)    # batches planned for it, in order
    busy: _Busy | None = None


@dataclass
class _Retry:
    batch: list[shard.Item]
    model: str
    tried: tuple[str, ...]        # the lanes it was lost on
    why: tuple[str, ...]


def _short(exc: BaseException) -> str:
    """Ray's errors in one line: the first sentence, and the worker's exit detail where it gives one."""
    text = " ".join(str(exc).split())
    first = text.split(". ")[0]
    detail = text.split("Worker exit detail: ", 1)[1].split(". ")[0] if "Worker exit detail: " in text else ""
    return f"{first} ({detail})" if detail else first[:300]


def _cause(exc: RayTaskError) -> BaseException:
    """What a lane raised: the pipeline's own errors as they are (exit code and message), others as Ray has them."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, PipelineError) else exc


class RayLanes:
    """shard.Backend over the GPUs of a Ray cluster: every free GPU (or CPU_LANE unit) at open is a lane."""

    def __init__(self, options: shard.Options):
        if options.gpus is not None:
            raise ConfigError("--gpus picks GPUs of this host; with --backend ray every free GPU of the cluster is "
                              "a lane (--gpu-model picks a model)")
        self.o = options
        self.slots: dict[str, _Slot] = {}
        self.joined = False
        self.started = 0
        self.make_lane: shard.MakeLane | None = None
        self.probe: shard.Probe | None = None

    # ------------------------------------------------------------------ lanes

    def open(self, make_lane: shard.MakeLane, probe: shard.Probe,
             keep: Callable[[shard.LaneInfo], bool]) -> list[shard.LaneInfo]:
        self._join()
        self.make_lane, self.probe = make_lane, probe
        cuda = self.o.device == "cuda"
        resource = "GPU" if cuda else CPU_LANE
        total = int(ray.cluster_resources().get(resource, 0))
        free = int(ray.available_resources().get(resource, 0))
        where = f"the Ray cluster at '{self.o.address}'"
        if not free and cuda:
            raise NoGpuError(f"{where} has " + (f"{total} GPU(s), none free" if total else "no GPU"))
        if not free:
            raise PipelineError(f"{where} has no {'free ' if total else ''}{CPU_LANE} resource, which --device cpu "
                                f"lanes take instead of a GPU: start its nodes with `ray start ... --resources "
                                f"'{{\"{CPU_LANE}\": N}}'` for N lanes each")
        for _ in range(free):
            self._start()
        infos = []
        while starting := [s for s in self.slots.values() if s.state == "starting"]:
            ray.wait([s.hello for s in starting], num_returns=len(starting), timeout=POLL_S)
            for s in starting:
                if ray.wait([s.hello], timeout=0)[0]:
                    info = self._started(s, strict=True)
                    if keep(info):
                        infos.append(info)
                    else:
                        self._end([s])
                elif time.time() - s.asked > START_S:
                    self.o.say(f"[yellow]a lane did not start within {START_S:.0f} s (its GPU taken by another job?); "
                               "going on without it[/]")
                    self._end([s])
        if not infos and not any(s.model for s in self.slots.values()):
            raise PipelineError(f"no lane started on {where} within {START_S:.0f} s")
        return sorted(infos, key=lambda i: int(i.name.removeprefix("ray")))

    def _join(self) -> None:
        if ray.is_initialized():
            return
        try:
            ray.init(address=self.o.address, namespace="kernel-pipeline", log_to_driver=False,
                     logging_level=logging.ERROR)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise PipelineError(
                f"cannot join the Ray cluster at '{self.o.address}' (--ray-address, or ray_address in pipeline.yaml): "
                f"{_short(exc)}. Start one with `ray start --head` on one node and `ray start --address HEAD:6379` "
                "on each GPU node (README: Cluster (Ray))") from exc
        self.joined = True

    def _start(self, model: str = "", stands_for: str = "") -> _Slot:
        name = f"ray{self.started}"
        self.started += 1
        need = {"num_gpus": 1} if self.o.device == "cuda" else {"resources": {CPU_LANE: 1}}
        actor = LaneActor.options(num_cpus=0, max_concurrency=4, max_restarts=0, **need).remote(self.make_lane, name)
        slot = _Slot(name, actor, time.time(), actor.hello.remote(self.probe), model=model, stands_for=stands_for)
        self.slots[name] = slot
        return slot

    def _started(self, slot: _Slot, strict: bool) -> shard.LaneInfo | None:
        """A lane's hello: live, or None where it died starting or is not of the model it was to replace."""
        try:
            slot.label, facts = ray.get(slot.hello)
        except RayError as exc:
            why = _cause(exc) if isinstance(exc, RayTaskError) else PipelineError(
                f"a lane could not start on the Ray cluster: {_short(exc)}; is this checkout installed "
                "(pip install '.[ray]') on every node?")
            if strict:
                raise why from None
            self.o.say(f"  [yellow]a replacement lane did not start[/]: {escape(' '.join(str(why).split())[:300])}")
            return None
        if slot.model and facts["gpu_name"] != slot.model:
            return None
        slot.model, slot.state = facts["gpu_name"], "live"
        return shard.LaneInfo(slot.name, slot.label, slot.model, facts)

    def _end(self, slots: list[_Slot]) -> None:
        """Lanes stopped, closed (their copies of the op files removed) and their actors killed."""
        try:
            self._abort(slots)
            refs = [s.actor.close.remote() for s in slots]
            if refs:
                ray.wait(refs, num_returns=len(refs), timeout=30)
        finally:
            for s in slots:
                s.state = "dead"
                ray.kill(s.actor, no_restart=True)

    def _relay(self, slots: list[_Slot]) -> None:
        """What the lanes said and how far they got, passed on here."""
        refs = {s.actor.drain.remote(): s for s in slots}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=10) if refs else ([], [])
        for ref in ready:
            try:
                kept = ray.get(ref)
            except RayError:
                continue            # a dead lane: its job's result says so
            for kind, value in kept:
                if kind == "say":
                    self.o.say(value)
                else:
                    getattr(self.o.tracker, kind)(value)

    def call(self, lane: str, fn: Callable[..., Any], *args: Any) -> Any:
        slot = self.slots[lane]
        ref = slot.actor.call.remote(fn, args)
        while not ray.wait([ref], timeout=POLL_S)[0]:
            self._relay([slot])
        self._relay([slot])
        try:
            return ray.get(ref)
        except RayTaskError as exc:
            raise _cause(exc) from None
        except RayError as exc:
            raise PipelineError(f"{slot.label}: lost: {_short(exc)}") from exc

    # ------------------------------------------------------------------ work

    def run(self, plan: dict[str, list[shard.Item]], work: shard.Work, done: shard.Done) -> None:
        for name, items in plan.items():
            self.slots[name].queue = shard.batches(items)
        retries: list[_Retry] = []
        try:
            while True:
                self._dispatch(work, retries, done)
                if not retries and not any(s.busy or s.queue for s in self.slots.values() if s.state != "dead"):
                    return
                self._step(retries, done)
        except BaseException:
            self._abort_all()
            raise

    def _eligible(self, r: _Retry) -> list[_Slot]:
        """Lanes that may take a retry: of its model, not lost on it, and other than the replacements of those
        while there is any such lane."""
        fit = [s for s in self.slots.values() if s.state != "dead" and s.model == r.model and s.name not in r.tried]
        return [s for s in fit if s.stands_for not in r.tried] or fit

    def _dispatch(self, work: shard.Work, retries: list[_Retry], done: shard.Done) -> None:
        for r in list(retries):
            if not self._eligible(r):
                retries.remove(r)
                done(r.batch, shard.Lost("; ".join(r.why) + f"; no other {r.model} GPU to retry on"))
        for slot in self.slots.values():
            if slot.state != "live" or slot.busy:
                continue
            retry = next((r for r in retries if slot in self._eligible(r)), None)
            if retry is not None:
                retries.remove(retry)
                batch, why = retry.batch, retry.why
                self.o.say(f"  [yellow]retrying[/] {escape(batch[0].key[0])} "
                           f"{', '.join(escape(it.key[1]) for it in batch)} on {escape(slot.label)}")
            elif slot.queue:
                batch, why = slot.queue.pop(0), ()
            else:
                continue
            limit = self.o.job_timeout or sum(it.limit for it in batch)
            ref = slot.actor.call.remote(work, (batch, slot.queue[0] if slot.queue else None))
            slot.busy = _Busy(ref, batch, time.time(), limit, why)

    def _step(self, retries: list[_Retry], done: shard.Done) -> None:
        busy = [s for s in self.slots.values() if s.busy]
        starting = [s for s in self.slots.values() if s.state == "starting"]
        refs = [s.busy.ref for s in busy] + [s.hello for s in starting]
        ray.wait(refs, num_returns=len(refs), timeout=POLL_S)
        self._relay(busy)
        for s in busy:
            b = s.busy
            if ray.wait([b.ref], timeout=0)[0]:
                try:
                    result = ray.get(b.ref)
                except RayTaskError as exc:
                    raise _cause(exc) from None
                except RayError as exc:
                    self._lost(s, f"died: {_short(exc)}", retries, done)
                    continue
                self._relay([s])
                s.busy = None
                done(b.batch, result)
            elif time.time() - b.started > b.limit:
                self._end([s])
                self._lost(s, f"no result after {b.limit:.0f} s (job timeout), stopped", retries, done)
        for s in starting:
            if ray.wait([s.hello], timeout=0)[0]:
                if self._started(s, strict=False) is None:
                    self._end([s])
                    self._hand_over(s, "its replacement did not start", done)
            elif time.time() - s.asked > START_S:
                self._end([s])
                self._hand_over(s, f"its replacement did not start within {START_S:.0f} s", done)

    def _lost(self, slot: _Slot, why: str, retries: list[_Retry], done: shard.Done) -> None:
        """A lane that died or was stopped in a job: the job retried elsewhere (once), the lane replaced."""
        b, slot.busy, slot.state = slot.busy, None, "dead"
        text = f"{slot.label}: {why}"
        self.o.say(f"  [red]✗[/] lane {escape(text)}")
        if b.why:
            done(b.batch, shard.Lost(f"{b.why[0]}; retried on {text}"))
        else:
            retries.append(_Retry(b.batch, slot.model, (slot.name,), (text,)))
        new = self._start(slot.model, slot.name)
        new.queue, slot.queue = slot.queue, []

    def _hand_over(self, slot: _Slot, why: str, done: shard.Done) -> None:
        """A replacement that did not come up: the batches planned for it go to the other lanes of its model."""
        others = [s for s in self.slots.values() if s.state != "dead" and s.model == slot.model]
        for batch in slot.queue:
            if others:
                min(others, key=lambda s: len(s.queue)).queue.append(batch)
            else:
                done(batch, shard.Lost(f"no {slot.model} GPU left to run it ({why})"))
        slot.queue = []

    # ------------------------------------------------------------------ stop

    def _abort(self, slots: list[_Slot]) -> None:
        """Each lane's worker and ncu ended, nothing new started (the actors stay until killed)."""
        refs = [s.actor.abort.remote() for s in slots]
        if refs:
            ray.wait(refs, num_returns=len(refs), timeout=10)

    def _abort_all(self) -> None:
        self._abort([s for s in self.slots.values() if s.state != "dead"])

    def close(self) -> None:
        try:
            self._end([s for s in self.slots.values() if s.state != "dead"])
        finally:
            if self.joined:
                ray.shutdown()
