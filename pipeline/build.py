"""Loading a variant or the reference into the worker process, and what a loaded variant compiled and
launches (registers, spills, kernel names): shared by the measuring, ncu and bench paths."""
from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import torch


def load_module(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # Triton resolves globals of jitted functions through the module
    spec.loader.exec_module(module)
    return module


def load_reference(job: dict[str, Any]) -> ModuleType:
    """The reference with the shape's overrides (job["params"]) in place of the values its top level assigns
    them, run as a fresh module: names derived from an overridden one (`input_shape = (num_classes,)`) are
    computed from the override, so the shape that runs is the shape recorded."""
    import ast
    from pipeline import toplevel
    from pipeline.errors import ConfigError
    path, name = job["reference"], f"_reference_{job['op']}"
    with open(path) as f:
        tree = ast.parse(f.read(), filename=path)
    try:
        values = toplevel.check_overrides(toplevel.module_names(tree), job["params"], path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    code = compile(toplevel.override_tree(tree, values), path, "exec")   # the real filename: tracebacks, inspect
    module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path))
    sys.modules[name] = module          # Triton resolves globals of jitted functions through the module
    exec(code, module.__dict__)
    return module


def compiled_kernels(module: ModuleType) -> list[dict[str, Any]]:
    """Registers, spills and shared memory of the Triton kernels this module compiled (no ncu pass)."""
    found = []
    for obj in vars(module).values():
        fn = obj
        while hasattr(fn, "fn") and not hasattr(fn, "device_caches"):   # Autotuner / Heuristics wrappers
            fn = fn.fn
        caches = getattr(fn, "device_caches", None)
        if not isinstance(caches, dict):
            continue
        for entry in caches.values():
            kernel_cache = entry[0] if isinstance(entry, tuple) else entry
            for kernel in getattr(kernel_cache, "values", lambda: [])():
                meta = getattr(kernel, "metadata", None)
                found.append({"name": getattr(meta, "name", getattr(kernel, "name", "?")),
                              "n_regs": getattr(kernel, "n_regs", None),
                              "n_spills": getattr(kernel, "n_spills", None),
                              "shared_bytes": getattr(meta, "shared", None),
                              "num_warps": getattr(meta, "num_warps", None)})
    return found


def kernel_trace(call: Any) -> dict[str, Any]:
    """The GPU kernels one call launches, read with the CUDA profiler (CUPTI): names, total kernel time
    per call, and the kernels that ran on a stream other than the caller's (the one timing events see).

    A marker kernel on the current stream inside the same trace names that stream in CUPTI's numbering."""
    from torch.profiler import ProfilerActivity, profile
    marker = torch.empty(1, device="cuda")
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        marker.fill_(MARKER_VALUE)
        torch.cuda.synchronize()
        call()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA
               and not e.name.startswith(("Memcpy", "Memset"))]
    kernels.sort(key=lambda e: e.time_range.start)
    timed_stream = kernels[0].device_resource_id if kernels else None     # the marker's: first in the trace
    own = kernels[1:]
    return {"launched": [e.name for e in own],
            "kernel_ms": round(sum(e.time_range.elapsed_us() for e in own) / 1e3, 6),
            "other_streams": sorted({e.name for e in own if e.device_resource_id != timed_stream})}


MARKER_VALUE = 1.0


MODULES: dict[tuple[str, int], ModuleType] = {}   # a variant's module is loaded once per worker, for every shape


def build(variant: dict[str, Any], init_inputs: list[Any], device: str, op: str) -> tuple[Any, ModuleType]:
    key = (op, variant["index"])
    if key not in MODULES:      # one module (and one set of jitted kernels) per worker: no re-jit per shape
        MODULES[key] = load_module(variant["file"], f"_variant_{op}_{variant['index']}")
    module = MODULES[key]
    torch.manual_seed(0)   # same parameter init as the reference, KernelBench-style
    model = module.ModelNew(*init_inputs, **variant["config"])
    return model.to(device), module


def reference_model(ref_mod: ModuleType, device: str) -> Any:
    torch.manual_seed(0)   # the parameter init variants are built with too (build)
    return ref_mod.Model(*ref_mod.get_init_inputs()).to(device)
