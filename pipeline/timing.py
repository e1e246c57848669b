"""Event timing outside ncu: warm-up, L2 flushed before every repeat, rounds interleaved across
candidates, median and quartiles; time_variants is a shape's timing phase in the worker. Ranking uses
these numbers, never ncu's duration (ncu locks clocks to base, flushes and replays)."""
from __future__ import annotations

import math
import random
import statistics
import time
from types import ModuleType
from typing import Any, Callable

import torch

from pipeline import verify
from pipeline.build import build
from pipeline.config import TimingConfig
from pipeline.supervise import Events


def _stats(samples: list[float]) -> dict[str, Any]:
    q = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else samples * 3
    # the repeats themselves, in the order taken, for the gate's rank statistics (pipeline/compare.py)
    return {"median_ms": statistics.median(samples), "p25_ms": q[0], "p75_ms": q[2],
            "min_ms": min(samples), "max_ms": max(samples), "reps": len(samples),
            "samples": [float(f"{x:.6g}") for x in samples]}


def time_once(fn: Callable[[], Any], device: str) -> float:
    """One call, in ms, for sizing the repeat count."""
    if device == "cpu":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    fn()
    e.record()
    torch.cuda.synchronize()
    return s.elapsed_time(e)


def _cycles_per_ms() -> float:
    """GPU clock cycles per ms of torch.cuda._sleep's spin, read once per process at load clocks.

    An idle GPU clocks at a fraction of its load clock (H200: 345 against 1980 MHz), and a spin sized at
    the idle rate ends early once the clocks rise; so the reading follows a spin that brings them up, and
    the highest of a few readings is kept."""
    global _max_cycles_per_ms
    if _max_cycles_per_ms:
        return _max_cycles_per_ms
    torch.cuda._sleep(WARM_CYCLES)
    for _ in range(CALIBRATIONS):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        torch.cuda._sleep(CALIBRATION_CYCLES)
        e.record()
        torch.cuda.synchronize()
        _max_cycles_per_ms = max(_max_cycles_per_ms, CALIBRATION_CYCLES / max(s.elapsed_time(e), 1e-3))
    return _max_cycles_per_ms


_max_cycles_per_ms = 0.0
WARM_CYCLES = 20_000_000
CALIBRATION_CYCLES = 1_000_000
CALIBRATIONS = 3
QUEUE_MARGIN_MS = 0.02     # the start event's own enqueue, on top of the call's


def measure(candidates: dict[str, Callable[[], Any]], estimates_ms: dict[str, float],
            cfg: TimingConfig, l2_bytes: int, device: str,
            controls: frozenset[str] = frozenset()) -> dict[str, dict[str, Any]]:
    """Time every candidate; returns {name: stats}. On the CPU (interpreter) host timers stand in.

    Racing (cfg.race): after the first round, a candidate whose median is above race x the fastest
    candidate's gets no repeats beyond min_reps (or what round one gave it). `controls` (reference, copy) always get their full count."""
    cuda = device != "cpu"
    flush = torch.empty(max(2 * l2_bytes, 1), dtype=torch.uint8, device=device) if cfg.flush_l2 else None
    reps = {n: int(min(cfg.max_reps, max(cfg.min_reps, cfg.budget_ms / max(estimates_ms.get(n, 1.0), 1e-3))))
            for n in candidates}
    samples: dict[str, list[float]] = {n: [] for n in candidates}
    # host time to enqueue one call (the slowest warm-up call after the first)
    host_ms: dict[str, float] = {}
    for name, fn in candidates.items():
        spent = []
        for _ in range(cfg.warmup):
            t0 = time.perf_counter()
            fn()
            spent.append((time.perf_counter() - t0) * 1e3)
            if cuda:
                torch.cuda.synchronize()
        host_ms[name] = max(spent[1:] or spent or [0.0])
    # Without a spin the GPU finishes the flush and records the start event while Python is still in the
    # call, and the events time the host's launch path too (H200, RMSNorm batch1: 0.050 ms against 0.038 ms
    # with it). With queue_ahead the GPU spins that many times the call's enqueue time after the flush,
    # so the whole call is queued before the start event runs.
    spin: dict[str, int] = {}
    if cuda and cfg.queue_ahead > 0:
        per_ms = _cycles_per_ms()
        spin = {n: int(per_ms * (cfg.queue_ahead * h + QUEUE_MARGIN_MS)) for n, h in host_ms.items()}
    for r in range(cfg.rounds):
        if r == 1 and cfg.race > 0:
            raced = {n: statistics.median(s) for n, s in samples.items() if n not in controls and s}
            if raced:
                best = min(raced.values())
                for name, med in raced.items():
                    if med > cfg.race * best:
                        reps[name] = min(reps[name], cfg.min_reps)
        # a fresh order every round (seeded, so a rerun repeats it): a slot that drifts, such as the first
        # after the spin or the last before a sync, falls on every candidate alike
        order = list(candidates.items())
        random.Random(r).shuffle(order)
        for name, fn in order:
            n = min(math.ceil(reps[name] / cfg.rounds), reps[name] - len(samples[name]))
            if n <= 0:
                continue
            if cuda:
                pairs = []
                for _ in range(n):
                    if flush is not None:
                        flush.zero_()
                    if spin:
                        torch.cuda._sleep(spin[name])
                    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    s.record()
                    fn()
                    e.record()
                    pairs.append((s, e))
                torch.cuda.synchronize()
                samples[name] += [s.elapsed_time(e) for s, e in pairs]
            else:
                for _ in range(n):
                    if flush is not None:
                        flush.zero_()
                    t0 = time.perf_counter()
                    fn()
                    samples[name].append((time.perf_counter() - t0) * 1e3)
    return {n: {**_stats(s), "host_ms": host_ms[n]} for n, s in samples.items()}


CONTROLS = ("__reference__", "__copy__", "__matmul__")
MATMUL_N = 2048     # fp16 N×N×N: ~0.03 ms on an H100, compute-bound, small beside any shape's timing


def time_variants(job: dict[str, Any], shape: dict[str, Any], ref_mod: ModuleType, ref_model: Any,
                  models: dict[str, Any], l2_bytes: int, ev: Events) -> None:
    """Time the verified variants, torch eager and a device copy of the op's minimal bytes, interleaved."""
    device, sid = job["device"], shape["id"]
    init_inputs = ref_mod.get_init_inputs()
    ev.emit("begin", variant=None, phase="timing", shape=sid)
    with torch.no_grad():
        inputs = verify.make_inputs(ref_mod, shape["dtype"], job["seeds"][0], device)
        out = ref_model(*inputs)
        input_bytes = sum(t.numel() * t.element_size() for t in inputs if isinstance(t, torch.Tensor))
        min_bytes = input_bytes \
            + out.numel() * out.element_size()
        del out
        # a device-to-device copy reading and writing min_bytes in total: the bandwidth ceiling
        src = torch.empty(min_bytes // 2, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        # a compute-bound control beside the memory-bound copy: a runner with other SM clocks moves it
        a = torch.randn(MATMUL_N if device != "cpu" else 64, MATMUL_N if device != "cpu" else 64,
                        device=device, dtype=torch.float16 if device != "cpu" else torch.float32)
        candidates = {"__reference__": lambda: ref_model(*inputs), "__copy__": lambda: dst.copy_(src),
                      "__matmul__": lambda: a @ a}
        for v in shape["time"]:      # verified in an earlier worker, or cached and re-timed as a control
            models[v["name"]] = build(v, init_inputs, device, job["op"])[0]
        for name, model in models.items():
            candidates[name] = (lambda m: lambda: m(*inputs))(model)
        estimates = {}
        for name, fn in candidates.items():
            fn()   # compile / warm before sizing the repeat count
            estimates[name] = time_once(fn, device)
        stats = measure(candidates, estimates, TimingConfig(**job["timing"]), l2_bytes, device,
                               controls=frozenset(CONTROLS))
        del src, dst, a, candidates
        after = recheck(models, inputs, ref_mod, ref_model, shape, device)
    ev.emit("timing", stats=stats, min_bytes=min_bytes, input_bytes=input_bytes, after=after, shape=sid)


def recheck(models: dict[str, Any], inputs: list[Any], ref_mod: ModuleType, ref_model: Any,
            shape: dict[str, Any], device: str) -> dict[str, dict[str, Any]]:
    """Each timed variant called once more on the timed inputs, after its repeats: its output checked as
    in verify (memory the call wrote, every element in tolerance) and, on the GPU, its kernels traced, so
    a variant that behaves differently once its inputs repeat (a cached output, work left on another
    stream) is caught where it was timed."""
    from pipeline.build import kernel_trace
    from pipeline.config import Tolerance
    ref_out = verify.reference_output(ref_model, inputs, shape["dtype"])
    tol = Tolerance(**shape["tolerance"])
    after = {}
    for name, model in models.items():
        out, check = verify.guarded_check(model, inputs, ref_out, tol, device, verify.SENTINELS[0])
        del out
        after[name] = {k: check[k] for k in ("ok", "reason", "poisoned", "mismatched") if k in check}
        after[name]["suspect"] = bool(check.get("suspect"))
        if device != "cpu":
            after[name].update(kernel_trace(lambda: model(*inputs)))
    return after
