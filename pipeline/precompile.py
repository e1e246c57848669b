"""Compile every Triton kernel a shape's variants will launch, on a thread pool, before any of them runs.

Runs inside the GPU worker. Left alone, Triton compiles each kernel at its first launch, one after
another: on the H100 that was the largest part of a cold run (44 RMSNorm variants at one shape:
22.6 s). Here each variant is called once with Triton's `jit_cache_hook` answering "skip": the
kernel's exact specialization (argument types, divisibility, constexprs, options) is recorded and
nothing is compiled or launched. The recorded kernels are then compiled concurrently through
Triton's own `AsyncCompileMode` + `JITFunction.preload`, which put each compiled kernel in the
in-memory cache the real launch looks up (measured: 22.6 s -> 9.7 s for those 44 variants).

The lane's worker also compiles ahead: at the end of an op's measuring job, while the GPU is still its
own, it captures the kernels the lane's next op will launch (`ahead`), then compiles them on a
background thread while it waits for its next job, that is while ncu profiles the op just measured.
That compile is CPU work only (nothing launches, no module is loaded); the next job waits for it
to finish before it touches the GPU, and finds every kernel it captured already compiled.

Best effort by design: a variant whose capture or compile fails is left to compile at its first real
call, where verify reports the error as before. A variant that keeps what a launch returns (a
`warmup()` handle, say) would keep None from the skipped launch: `worker.precompile: false` in the
op's config turns this stage off. Variants with autotuned kernels are not captured,
because the autotuner would benchmark launches that never ran and cache a config chosen on nothing.
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, Callable

import torch

MAX_THREADS = 16


def autotuned(module: ModuleType) -> bool:
    try:
        from triton.runtime.autotuner import Autotuner
    except ImportError:
        return False
    return any(isinstance(obj, Autotuner) for obj in vars(module).values())


Call = tuple[str, Callable[[], Any]]    # (variant name, one forward call)


def calls(built: list[tuple[str, Any, ModuleType]], inputs: list[Any]) -> list[Call]:
    """One forward call on `inputs` per built (name, model, module), leaving out autotuned modules."""
    return [(name, (lambda m: lambda: m(*inputs))(model)) for name, model, module in built
            if not autotuned(module)]


def capture(calls: list[Call], before: Callable[[str], None]) -> list[tuple[Any, str]]:
    """(jitted function, specialization data) of each kernel the calls would compile; nothing runs on
    the GPU from Triton. torch ops inside the calls still run (allocations, views). `before(name)` is
    called ahead of each call, so that a variant that hangs or crashes here is named."""
    from triton import knobs

    found: dict[tuple[int, str], tuple[Any, str]] = {}

    def hook(**kw: Any) -> bool:
        fn, spec = kw["fn"].jit_function, kw["compile"]["specialization_data"]
        found.setdefault((id(fn), spec), (fn, spec))
        return True     # skip: no compile, no launch

    previous = knobs.runtime.jit_cache_hook
    knobs.runtime.jit_cache_hook = hook
    try:
        for name, call in calls:
            before(name)
            try:
                with torch.no_grad():
                    call()
            except BaseException:  # noqa: BLE001 - an unsupported shape or a variant bug: verify will say
                pass
    finally:
        knobs.runtime.jit_cache_hook = previous
    return list(found.values())


def compile_kernels(kernels: list[tuple[Any, str]]) -> int:
    """Compile captured kernels concurrently into the caches their launches look up; returns the threads used."""
    import triton

    threads = max(1, min(MAX_THREADS, os.cpu_count() or 1, len(kernels)))
    if kernels:
        with ThreadPoolExecutor(threads) as pool, triton.AsyncCompileMode(pool, ignore_errors=True):
            for fn, spec in kernels:
                try:
                    fn.preload(spec)
                except Exception:  # noqa: BLE001 - compiled again, and reported, at its first real call
                    pass
    return threads


def precompile(calls: list[Call], device: str, before: Callable[[str], None],
               compiling: Callable[[], None]) -> dict[str, Any]:
    """Compile what `calls` would compile, concurrently. Returns {"seconds", "kernels", "threads"}."""
    t0 = time.perf_counter()
    if device == "cpu":     # the interpreter compiles nothing
        return {"seconds": 0.0, "kernels": 0, "threads": 0}
    kernels = capture(calls, before)
    compiling()
    threads = compile_kernels(kernels)
    return {"seconds": round(time.perf_counter() - t0, 3), "kernels": len(kernels), "threads": threads}


class Ahead:
    """Kernels compiled on a background thread between two jobs (see the module's doc)."""

    def __init__(self, kernels: list[tuple[Any, str]]):
        self.kernels = len(kernels)
        self.seconds = 0.0
        self.thread = threading.Thread(target=self._compile, args=(kernels,), daemon=True)
        self.thread.start()

    def _compile(self, kernels: list[tuple[Any, str]]) -> None:
        t0 = time.perf_counter()
        compile_kernels(kernels)
        self.seconds = time.perf_counter() - t0

    def wait(self) -> dict[str, Any]:
        """Block until the compile is done; returns {"seconds", "kernels", "waited_s"} (waited: blocked here)."""
        t0 = time.perf_counter()
        self.thread.join()
        return {"seconds": round(self.seconds, 3), "kernels": self.kernels,
                "waited_s": round(time.perf_counter() - t0, 3)}
