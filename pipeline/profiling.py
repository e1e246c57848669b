"""The `profile` command: for each op, measure its shapes on the lane's GPU worker, then profile them under one ncu.

Data flows one way: ops → worker (verify, time) → ncu → metrics → results file. Each (variant, shape) result
carries a cache key (variant_key); a rerun measures only variants whose key changed, re-timing the shape's
fastest and baseline variants beside them so the comparisons it reports come from one run. Each shape's
record is written atomically as soon as its op is complete, so an interrupted run keeps finished ops.
Measuring is pipeline.measure, the ncu pass pipeline.ncupass, what may be skipped pipeline.cache, the host's
GPUs and tools pipeline.host, one GPU's share of the work and the records it assembles pipeline.lane; this
module plans the run over lanes, run by the backend that shard.backend names (threads here, or Ray actors
anywhere), every op × shape once per GPU model, and writes what they return into the results files.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import functools
import json
import math
from pathlib import Path
from typing import Any

from rich.markup import escape

from pipeline import host, ncupass, results, shard
from pipeline.cache import ShapeWork, plan_shape, prune, shape_key
from pipeline.config import Config, Shape
from pipeline.errors import ConfigError, NoGpuError, ResultsError, SelectionError
from pipeline.lane import Job, Lane, OpResult, assemble
from pipeline.measure import Quiet, Say, Tracker
from pipeline.ops import Op
from pipeline.supervise import kill_all


# the lane facts of a shape's measured_on (lane.PER_GPU) that are left out of the results file's environment
LANE_ONLY = ("gpu_uuid", "cuda_visible_devices", "node_id")
STACK = ("driver", "torch", "triton", "ncu_version")      # what lanes of one GPU model must agree on


@dataclasses.dataclass(frozen=True)
class Request:
    """What one `profile` run was asked for, as its planning and the writing of its results read it."""
    ops: list[Op]
    cfg: Config
    shape_filter: list[str] | None      # shape ids to run; None: every shape of the suite
    suite: str | None
    force: bool                         # re-measure what the cache would skip
    device: str                         # cuda, or cpu (the Triton interpreter)
    say: Say
    tracker: Tracker
    root: Path                          # the project root: profiles_dir and results' file names are under it


def run(ops: list[Op], cfg: Config, shape_filter: list[str] | None, require_gpu: bool, say: Say,
        device: str = "cuda", suite: str | None = None, force: bool = False,
        gpus: list[str] | None = None, tracker: Tracker | None = None, root: Path | None = None,
        backend: str | None = None, ray_address: str | None = None, gpu_model: str | None = None,
        job_timeout: float | None = None) -> list[Path] | None:
    """Profile every op × shape; returns the results files written, or None when there is no GPU.

    `root`: the project root; a relative profiles_dir lies under it, and results name source files relative
    to it (default: the working directory).

    Variants whose cache key (variant_key) matches their stored record are not measured again unless
    `force`. The backend (`backend`, else cfg.backend) starts one lane per GPU: with `threads`, the GPUs of
    this host (`gpus`, default: every visible one); with `ray`, every GPU of the cluster at `ray_address`.
    Every op × shape is measured once per GPU model (only on `gpu_model` when given), spread over that
    model's lanes; each lane has one worker process for the whole run and one ncu process per op."""
    tracker = tracker or Quiet()
    root = (root or Path.cwd()).resolve()
    lanes = shard.backend(backend or cfg.backend, shard.Options(
        device=device, say=say, tracker=tracker, gpus=gpus, address=ray_address or cfg.ray_address,
        job_timeout=job_timeout))
    seen: list[shard.LaneInfo] = []

    def keep(info: shard.LaneInfo) -> bool:
        seen.append(info)
        return gpu_model is None or gpu_model.lower() in (info.model.lower(), results.slug(info.model))

    try:
        try:
            infos = lanes.open(functools.partial(Lane, device=device, root=root),
                               functools.partial(Lane.facts, ncu_cfg=cfg.ncu), keep)
        except NoGpuError as exc:
            if require_gpu:
                raise NoGpuError(f"no NVIDIA GPU: {exc} (--require-gpu)") from exc
            say(f"[bold yellow]No NVIDIA GPU found[/] ({escape(str(exc))}).")
            return None
        if not infos:
            models = collections.Counter(i.model for i in seen)
            raise SelectionError(f"no GPU of model '{gpu_model}' (--gpu-model) among the lanes; models: "
                                 + ", ".join(f"{m} ({n} GPU(s); --gpu-model {results.slug(m)})"
                                             for m, n in sorted(models.items())))
        return _run_lanes(Request(ops, cfg, shape_filter, suite, force, device, say, tracker, root), lanes, infos)
    except BaseException:
        kill_all()      # an interrupt or a failure: end every worker and ncu now, not after their jobs
        raise
    finally:
        lanes.close()


def _stand_in(model: str, group: list[shard.LaneInfo]) -> shard.LaneInfo:
    """The lane whose facts key a model's results: the lowest GPU UUID, so that a rerun keys them alike. Lanes
    of one model must run this very pipeline and one software stack."""
    for i in group:
        if i.facts.get("package") != host.package_digest():
            raise ConfigError(f"{i.label or i.name} ({i.facts.get('host')}) runs other pipeline code than this "
                              f"machine ({host.PACKAGE}); install this checkout on every node")
    stacks: dict[tuple, list[str]] = {}
    for i in group:
        stacks.setdefault(tuple(i.facts["key"].get(k) for k in STACK), []).append(i.label or i.name)
    if len(stacks) > 1:
        raise ConfigError(f"the GPUs of model {model} differ in their software; one model's results are keyed by "
                          "one " + ", ".join(STACK) + ": " + "; ".join(
                              f"{', '.join(names)}: " + ", ".join(f"{k} {v}" for k, v in zip(STACK, stack))
                              for stack, names in stacks.items()))
    return min(group, key=lambda i: (i.facts["key"].get("gpu_uuid") or "", i.name))


def _known_min_bytes(profiles: Path, op: str) -> dict[str, int]:
    """min_bytes of this op's shapes as any GPU's stored results give them (bytes do not depend on the GPU),
    by the shape's id, params and dtype."""
    known: dict[str, int] = {}
    for path in sorted(profiles.glob(f"*/{results.slug(op)}/results.json")):
        try:
            shapes = results.load(path)["shapes"]
        except ResultsError:
            continue
        for s in shapes:
            if s.get("min_bytes"):
                known.setdefault(json.dumps([s["id"], s.get("params"), s.get("dtype")], sort_keys=True),
                                 int(s["min_bytes"]))
    return known


def too_big(min_bytes: int | None, memory_bytes: int | None) -> str | None:
    """Why a shape cannot run on a GPU of this much memory, or None where it may (or either is unknown)."""
    if not min_bytes or not memory_bytes or min_bytes <= memory_bytes:
        return None
    return (f"its inputs and output alone take {_size(min_bytes)} (min_bytes, as stored), more than the GPU's "
            f"{_size(memory_bytes)}")


def _size(n: float) -> str:
    exp = min(3, int(math.log(max(n, 1), 1024)))
    return f"{n:.0f} B" if exp == 0 else f"{n / 1024**exp:.1f} {('KiB', 'MiB', 'GiB')[exp - 1]}"


def _job_limit(w: ShapeWork) -> float:
    """The longest a shape's work takes on a lane that is not stuck: every variant up to its limit three times
    (the compile, the check and a solo retry), the timing phase, ncu, and 5 minutes to start and read back."""
    c = w.op.config
    return 3 * len(w.measure) * c.worker.variant_timeout_s + c.worker.timing_timeout_s + c.ncu.timeout_s + 300


def _sources(op: Op) -> dict[str, bytes]:
    """The op folder's files (helpers of its variants included), its reference and variants wherever they are."""
    files = [p for p in sorted(Path(op.dir).rglob("*")) if p.is_file()
             and not any(part.startswith(".") or part == "__pycache__" for part in p.relative_to(op.dir).parts)]
    found: dict[str, bytes] = {}
    for p in [*files, Path(op.reference), *(Path(v.file) for v in op.variants)]:
        try:
            found.setdefault(str(p), p.read_bytes())
        except OSError:
            pass        # a variant that cannot be read is marked import-error at discovery
    return found


def _lost(batch: list[shard.Item], reason: str) -> OpResult:
    """The records of shapes no lane could finish: each variant to measure fails with the reason."""
    records = []
    for it in batch:
        w = it.payload.work
        w.errors.append(reason)
        for _, v in w.measure:
            w.done.setdefault(v.name, {"name": v.name, "status": "import-error", "error": v.problem} if v.problem
                              else {"name": v.name, "status": "worker-error", "error": reason})
        records.append(assemble(w, None, set(), w.op.config.ncu.select, ""))
    return OpResult(batch[0].key[0], records, [None] * len(records), {})


def _run_lanes(req: Request, lanes: shard.Backend, infos: list[shard.LaneInfo]) -> list[Path]:
    profiles = req.root / req.cfg.profiles_dir
    docs: dict[tuple[str, str], tuple[Path, dict[str, Any]]] = {}
    plan: dict[str, list[shard.Item]] = {}
    shipped: dict[str, dict[str, bytes]] = {}
    models: dict[str, list[shard.LaneInfo]] = {}
    for info in infos:
        models.setdefault(info.model, []).append(info)
    for model, group in models.items():
        lead = _stand_in(model, group)
        facts = lead.facts["key"]
        memory = min((i.facts.get("memory_bytes") or 0 for i in group), default=0) or None
        pending: list[shard.Item] = []
        ceilings: list[dict[str, Any] | None] = []    # measured at most once per model, shared by its ops' files
        for op in req.ops:
            if req.device == "cuda":
                op = ncupass.only_available(op, set(lead.facts["bases"]), req.say)
            listed = op.config.op.shape_list(req.suite) or ([] if req.suite else [Shape()])
            path = results.path_for(profiles, facts["gpu_name"], op.name)
            doc = results.load(path) if path.exists() else results.new(op.name, {})
            docs[(model, op.name)] = (path, doc)
            stored = {s["id"]: s for s in doc["shapes"]}
            sizes = _known_min_bytes(profiles, op.name) if memory else {}
            for shape in (s for s in listed if not req.shape_filter or s.id in req.shape_filter):
                key = shape_key(op, shape, facts)
                work = plan_shape(op, shape, stored.get(shape.id), key, req.force)
                work.root = req.root
                if not work.measure:
                    req.say(f"[bold]{escape(op.name)}[/] {escape(shape.id)}: unchanged since "
                        f"{stored[shape.id].get('measured_at')}, cached (--force re-measures)")
                    continue
                why = too_big(sizes.get(json.dumps([shape.id, shape.params, shape.dtype], sort_keys=True)), memory)
                if why:
                    req.say(f"[yellow]{escape(op.name)} {escape(shape.id)}: skipped on {escape(model)}: {why}[/]")
                    continue
                if work.cached:
                    req.say(f"[bold]{escape(op.name)}[/] {escape(shape.id)}: {len(work.measure)} variant(s) changed, "
                        f"{len(work.cached)} cached; re-timing {', '.join(v.name for _, v in work.controls) or 'none'} "
                        "beside them")
                cost = ((stored.get(shape.id) or {}).get("wall_s") or {}).get("total") or 60.0
                if op.name not in shipped:
                    shipped[op.name] = _sources(op)
                pending.append(shard.Item((op.name, shape.id), cost * len(work.measure) / max(1, len(op.variants)),
                                          Job(work, model, shipped[op.name]), _job_limit(work)))
            env = doc["environment"]
            if any(it.key[0] == op.name for it in pending):
                if (env.get("gpu_name"), env.get("driver")) != (facts["gpu_name"], facts["driver"]) \
                        or not env.get("ceilings"):
                    if not ceilings:
                        ceilings.append(lanes.call(lead.name, Lane.ceilings, req.cfg))
                    env.clear()
                    env.update(gpu_name=facts["gpu_name"], driver=facts["driver"], ceilings=ceilings[0])
                env.update(ncu_path=lead.facts["ncu_path"], ncu_version=facts["ncu_version"],
                           skipped_metrics=op.skipped_metrics,
                           ncu_settings={"replay_mode": op.config.ncu.replay_mode,
                                         "clock_control": op.config.ncu.clock_control,
                                         "cache_control": op.config.ncu.cache_control, "select": op.config.ncu.select,
                                         "metrics": op.config.ncu.metrics})
        if pending and len(infos) > 1:
            req.say(f"{len(pending)} shape(s) over {len(group)} GPUs" + (f" of {model}" if len(models) > 1 else "")
                + f": {', '.join(i.label.removeprefix('gpu ') for i in group)}")
        if pending:
            plan.update(shard.plan(pending, [i.name for i in group]))
    req.tracker.add(sum(len(it.payload.work.measure) + 1 for items in plan.values() for it in items)
                + sum(len(shard.batches(items)) for items in plan.values()))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")

    def done(batch: list[shard.Item], result: OpResult | shard.Lost) -> None:
        """One op's shapes from one lane into their results file: the files they name first, then the file,
        each replaced whole; lanes finish shapes of one op in any order, and only this thread writes."""
        path, doc = docs[(batch[0].payload.model, batch[0].key[0])]
        if isinstance(result, shard.Lost):
            req.say(f"  [red]✗[/] {escape(batch[0].key[0])} {', '.join(escape(it.key[1]) for it in batch)}: "
                f"{escape(result.reason)}")
            result = _lost(batch, result.reason)
        for name, data in result.files.items():
            results.write_atomic(path.parent / Path(name).name, data)
        for env, record in zip(result.envs, result.records):
            doc["environment"].update({k: v for k, v in (env or {}).items() if k not in LANE_ONLY})
            results.merge_shape(doc, record)
        doc["created"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        results.save(path, doc)
        prune(path.parent, doc)

    if plan:
        lanes.run(plan, functools.partial(Lane.work, stamp=stamp), done)
    return [path for path, _ in docs.values() if path.exists()]
