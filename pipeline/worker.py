"""The child process that touches the GPU: `python -m pipeline.worker JOB.json` runs one job and exits
(as ncu runs it); `python -m pipeline.worker --serve` runs job after job, each named by a JSON line
{"job": JOB.json, "log": LOG} on its standard input, until the input ends (supervise.Worker).

The parent (profiling.py) writes a job and follows the JSON lines the worker appends to the job's
events file. A variant that kills the process (illegal address, hang) is named by the last `begin`
event, so the parent can mark it and restart a worker on the rest.

mode "measure": for each shape of one op in turn, build each variant and check it against the reference
on every seed, then time the verified variants, the reference (torch eager) and a device copy, interleaved.
mode "ncu": run each selected variant of each shape once inside its own NVTX start/end range, after
compiling and warming it outside any range, for the ncu process that wraps this one.
mode "ceilings": the device's copy bandwidth and matmul rate.
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from pipeline import precompile, timing, verify
from pipeline.config import TimingConfig, Tolerance
from pipeline.ncu import OUTER_RANGE, range_name


class Events:
    def __init__(self, path: str):
        self.fh = open(path, "a", buffering=1)

    def emit(self, event: str, **data: Any) -> None:
        self.fh.write(json.dumps({"event": event, "t": time.time(), **data}, default=str) + "\n")
        self.fh.flush()
        os.fsync(self.fh.fileno())


def load_module(path: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # Triton resolves globals of jitted functions through the module
    spec.loader.exec_module(module)
    return module


def load_reference(job: dict[str, Any]) -> ModuleType:
    ref = load_module(job["reference"], f"_reference_{job['op']}")
    for key, value in job["params"].items():
        setattr(ref, key, value)
    return ref


def gpu_facts(device: str) -> dict[str, Any]:
    facts: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(),
                             "host": platform.node()}
    try:
        import triton
        facts["triton"] = triton.__version__
    except ImportError:
        facts["triton"] = None
    facts["triton_interpret"] = os.environ.get("TRITON_INTERPRET", "0") == "1"
    facts["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")   # the lane this worker serves
    if device == "cpu":
        facts.update(gpu_name="cpu (Triton interpreter)", sm_count=0, l2_bytes=0)
        return facts
    props = torch.cuda.get_device_properties(0)
    facts.update(gpu_name=props.name, sm_count=props.multi_processor_count,
                 l2_bytes=int(getattr(props, "L2_cache_size", 0)), memory_bytes=props.total_memory,
                 compute_capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    # the device's limits, for the LLM export's GPU block (read, not hard-coded)
    for key in ("warp_size", "max_threads_per_multi_processor", "max_threads_per_block", "regs_per_multiprocessor",
                "shared_memory_per_block", "shared_memory_per_block_optin", "shared_memory_per_multiprocessor"):
        facts[key] = getattr(props, key, None)
    # nvidia-smi ignores CUDA_VISIBLE_DEVICES: ask it about the first visible GPU by its index
    index = (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,uuid", "--format=csv,noheader", "-i", index],
                             capture_output=True, text=True, timeout=30)
        driver, uuid = [s.strip() for s in out.stdout.strip().splitlines()[0].split(",")]
        facts.update(driver=driver, gpu_uuid=uuid)
    except Exception:  # noqa: BLE001 - facts are best effort; missing ones stay null
        facts.update(driver=None, gpu_uuid=None)
    return facts


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


def launched_kernels(call: Any) -> list[str]:
    """Names of the GPU kernels one call launches, read with the CUDA profiler (CUPTI)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    names = []
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.startswith(("Memcpy", "Memset")):
            names.append(e.name)
    return names


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


class Seeds:
    """Each seed's reference output, computed once per shape and shared by every variant while the
    outputs fit in SEED_CACHE_FRACTION of the device's memory (computed again past that). Inputs are
    drawn afresh from the seed for every variant, so one that writes into its input harms no other."""

    def __init__(self, job: dict[str, Any], shape: dict[str, Any], ref_mod: ModuleType, ref_model: Any):
        self.job, self.shape, self.ref_mod, self.ref_model = job, shape, ref_mod, ref_model
        self.refs: dict[int, torch.Tensor] = {}
        self.budget = (SEED_CACHE_FRACTION * torch.cuda.get_device_properties(0).total_memory
                       if job["device"] != "cpu" else SEED_CACHE_CPU_BYTES)

    def get(self, seed: int) -> tuple[list[Any], torch.Tensor]:
        inputs = verify.make_inputs(self.ref_mod, self.shape["dtype"], seed, self.job["device"])
        if seed in self.refs:
            return inputs, self.refs[seed]
        half = self.shape["dtype"] != "float32"
        ref_out = self.ref_model(*(verify.upcast(inputs) if half else inputs))
        held = sum(r.numel() * r.element_size() for r in self.refs.values())
        if isinstance(ref_out, torch.Tensor) and held + ref_out.numel() * ref_out.element_size() <= self.budget:
            self.refs[seed] = ref_out
        return inputs, ref_out


SEED_CACHE_FRACTION = 0.4   # of device memory: leaves room for inputs, a variant's output and workspace
SEED_CACHE_CPU_BYTES = 1 << 28  # the interpreter's small shapes


def verify_variants(job: dict[str, Any], shape: dict[str, Any], ref_mod: ModuleType, ref_model: Any,
                    ev: Events) -> dict[str, Any]:
    """Build each variant of one shape, compile their kernels together, and check each on every seed;
    one `variant` event each. Returns the models that passed, for timing in this same process."""
    device, sid = job["device"], shape["id"]
    init_inputs = ref_mod.get_init_inputs()
    tol = Tolerance(**shape["tolerance"])
    seeds = Seeds(job, shape, ref_mod, ref_model)
    built: list[tuple[dict[str, Any], Any, ModuleType, float]] = []
    for v in shape["verify"]:
        ev.emit("begin", variant=v["name"], phase="verify", shape=sid)
        t_build = time.perf_counter()
        try:
            model, module = build(v, init_inputs, device, job["op"])
        except BaseException as exc:  # noqa: BLE001 - user code can raise anything
            ev.emit("variant", result={"name": v["name"], "status": "import-error",
                                       "error": verify.classify(exc)[1]}, shape=sid)
            continue
        built.append((v, model, module, time.perf_counter() - t_build))
    if job.get("precompile", True) and built:
        with torch.no_grad():
            inputs = seeds.get(job["seeds"][0])[0]
        calls = [(v["name"], (lambda m: lambda: m(*inputs))(model)) for v, model, module, _ in built
                 if not precompile.autotuned(module)]
        stats = precompile.precompile(
            calls, device, before=lambda name: ev.emit("begin", variant=name, phase="verify", shape=sid),
            compiling=lambda: ev.emit("begin", variant=None, phase="compile", shape=sid))
        ev.emit("compiled", shape=sid, **stats)
        del calls, inputs
    passed: dict[str, Any] = {}
    for v, model, module, build_s in built:
        ev.emit("begin", variant=v["name"], phase="verify", shape=sid)
        result: dict[str, Any] = {"name": v["name"]}
        t_start = time.perf_counter() - build_s     # build_s reported below covers building and checking
        checks, status, error, first_call = [], "ok", "", None
        try:
            with torch.no_grad():
                for i, seed in enumerate(job["seeds"]):
                    inputs, ref_out = seeds.get(seed)
                    ptr = verify.poison_like(ref_out.to(verify.DTYPE[shape["dtype"]]))
                    t0 = time.perf_counter()
                    out = model(*inputs)
                    if device != "cpu":
                        torch.cuda.synchronize()
                    if i == 0:
                        first_call = time.perf_counter() - t0
                    check = verify.compare(out, ref_out, tol)
                    check.update(seed=seed, poisoned=isinstance(out, torch.Tensor) and out.data_ptr() == ptr)
                    checks.append(check)
                    del out, ref_out
                    if not check["ok"]:
                        status, error = "incorrect", f"seed {seed}: {check['reason']}"
                        break
        except BaseException as exc:  # noqa: BLE001
            status, error = verify.classify(exc)
        result.update(status=status, error=error, checks=checks,
                      build_s=round(time.perf_counter() - t_start, 3),
                      first_call_s=None if first_call is None else round(first_call, 3))
        if status == "crashed":
            ev.emit("variant", result=result, shape=sid)
            sys.exit(3)   # the context is gone; the parent restarts a worker on the remaining variants
        if status == "ok":
            result["compiled"] = compiled_kernels(module)
            if device != "cpu":
                try:
                    with torch.no_grad():
                        result["launched"] = launched_kernels(lambda: model(*inputs))
                except Exception as exc:  # noqa: BLE001 - the count check is then skipped, and says why
                    result["launched_error"] = str(exc)
            passed[v["name"]] = model
        ev.emit("variant", result=result, shape=sid)
    return passed


def time_variants(job: dict[str, Any], shape: dict[str, Any], ref_mod: ModuleType, ref_model: Any,
                  models: dict[str, Any], l2_bytes: int, ev: Events) -> None:
    """Time the verified variants, torch eager and a device copy of the op's minimal bytes, interleaved."""
    device, sid = job["device"], shape["id"]
    init_inputs = ref_mod.get_init_inputs()
    ev.emit("begin", variant=None, phase="timing", shape=sid)
    with torch.no_grad():
        inputs = verify.make_inputs(ref_mod, shape["dtype"], job["seeds"][0], device)
        out = ref_model(*inputs)
        min_bytes = sum(t.numel() * t.element_size() for t in inputs if isinstance(t, torch.Tensor)) \
            + out.numel() * out.element_size()
        del out
        # a device-to-device copy reading and writing min_bytes in total: the bandwidth ceiling
        src = torch.empty(min_bytes // 2, dtype=torch.uint8, device=device)
        dst = torch.empty_like(src)
        candidates = {"__reference__": lambda: ref_model(*inputs), "__copy__": lambda: dst.copy_(src)}
        for v in shape["time"]:      # verified in an earlier worker, or cached and re-timed as a control
            models[v["name"]] = build(v, init_inputs, device, job["op"])[0]
        for name, model in models.items():
            candidates[name] = (lambda m: lambda: m(*inputs))(model)
        estimates = {}
        for name, fn in candidates.items():
            fn()   # compile / warm before sizing the repeat count
            estimates[name] = timing.time_once(fn, device)
        stats = timing.measure(candidates, estimates, TimingConfig(**job["timing"]), l2_bytes, device,
                               controls=frozenset({"__reference__", "__copy__"}))
    ev.emit("timing", stats=stats, min_bytes=min_bytes, shape=sid)


def measure_shapes(job: dict[str, Any], ev: Events) -> None:
    """Verify, then time, each shape of one op in turn, in this one process (one start-up for all)."""
    facts = gpu_facts(job["device"])
    ev.emit("env", facts=facts)
    for shape in job["shapes"]:
        ref_mod = load_reference({**job, "params": shape["params"]})
        ref_model = reference_model(ref_mod, job["device"])     # one per shape, for checking and timing
        models = verify_variants(job, shape, ref_mod, ref_model, ev)
        time_variants(job, shape, ref_mod, ref_model, models, facts["l2_bytes"], ev)
        ev.emit("shape-end", shape=shape["id"])
        del models, ref_model
        if job["device"] != "cpu":
            torch.cuda.empty_cache()
    if job.get("ahead") and job["device"] != "cpu":
        AHEAD.append(precompile.Ahead(capture_ahead(job["ahead"], job["device"], ev)))
    ev.emit("end")


AHEAD: list[precompile.Ahead] = []   # the compile running between this worker's jobs (precompile.Ahead)


def capture_ahead(ahead: dict[str, Any], device: str, ev: Events) -> list[tuple[Any, str]]:
    """The kernels the lane's next op (`ahead`: its op, reference, seeds and shape jobs) will compile,
    captured while the GPU is still this job's: its op is timed and ncu has not started."""
    kernels: list[tuple[Any, str]] = []
    for shape in ahead["shapes"]:
        ref_mod = load_reference({**ahead, "params": shape["params"]})
        init_inputs = ref_mod.get_init_inputs()
        calls = []
        with torch.no_grad():
            inputs = verify.make_inputs(ref_mod, shape["dtype"], ahead["seeds"][0], device)
            for v in shape["verify"]:
                try:
                    model, module = build(v, init_inputs, device, ahead["op"])
                except BaseException:  # noqa: BLE001 - the next op's own job builds it again and reports it
                    continue
                if not precompile.autotuned(module):
                    calls.append((v["name"], (lambda m: lambda: m(*inputs))(model)))
            kernels += precompile.capture(calls, before=lambda name: ev.emit(
                "begin", variant=f"{ahead['op']} {shape['id']} {name}", phase="ahead", shape=None))
        del calls, inputs
        torch.cuda.empty_cache()
    return kernels


CEILING_COPY_BYTES = 1 << 31     # 2 GiB read + 2 GiB written: far beyond L2, as long as a large op
CEILING_MATMUL_N = 8192          # N×N×N products: large enough to reach the tensor cores' sustained rate


def measure_ceilings(job: dict[str, Any], ev: Events) -> None:
    """The device's two roofline ceilings, measured: copy bandwidth and matmul rate per dtype."""
    device = job["device"]
    facts = gpu_facts(device)
    cfg = TimingConfig(**job["timing"])
    n = CEILING_MATMUL_N if device != "cpu" else 256
    nbytes = CEILING_COPY_BYTES if device != "cpu" else 1 << 20
    src = torch.empty(nbytes, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    candidates = {"copy": lambda: dst.copy_(src)}
    mats = {}
    for name in ("bfloat16", "float16", "float32"):
        torch.manual_seed(0)
        a = torch.randn(n, n, device=device, dtype=verify.DTYPE[name])
        b = torch.randn(n, n, device=device, dtype=verify.DTYPE[name])
        mats[name] = (a, b)
        candidates[f"matmul_{name}"] = (lambda a, b: lambda: torch.matmul(a, b))(a, b)
    for fn in candidates.values():   # library handles and kernels load on first use, not in the estimate
        fn()
    estimates = {k: timing.time_once(fn, device) for k, fn in candidates.items()}
    stats = timing.measure(candidates, estimates, cfg, facts["l2_bytes"], device, controls=frozenset(candidates))
    # a ceiling is the best the device reaches: rates from the fastest repeat (analysis.ceilings)
    ev.emit("ceilings", ceilings={
        "copy_gbs": 2 * nbytes / stats["copy"]["min_ms"] / 1e6, "copy_bytes": 2 * nbytes,
        "matmul_tflops": {k: 2 * n ** 3 / stats[f"matmul_{k}"]["min_ms"] / 1e9 for k in mats},
        "matmul_n": n, "float32_matmul_precision": torch.get_float32_matmul_precision(), "timing": stats})
    ev.emit("end")


def run_under_ncu(job: dict[str, Any], ev: Events) -> None:
    """Run each selected variant of each shape once inside NVTX range s<shape>.v<index>, compiled and warmed
    outside every range, for the ncu process that wraps this one."""
    device = job["device"]
    for shape in job["shapes"]:
        ref_mod = load_reference({**job, "params": shape["params"]})
        init_inputs = ref_mod.get_init_inputs()
        models = []
        with torch.no_grad():
            inputs = verify.make_inputs(ref_mod, shape["dtype"], job["seeds"][0], device)
            for v in shape["variants"]:
                try:
                    model, _ = build(v, init_inputs, device, job["op"])
                    for _ in range(2):        # compile and warm outside every profiled range
                        model(*inputs)
                    torch.cuda.synchronize()
                    models.append((v, model))
                except BaseException as exc:  # noqa: BLE001
                    status, error = verify.classify(exc)
                    ev.emit("variant", result={"name": v["name"], "status": status, "error": error},
                            shape=shape["id"])
            outer = torch.cuda.nvtx.range_start(OUTER_RANGE)
            for v, model in models:
                ev.emit("begin", variant=v["name"], phase="ncu", shape=shape["id"])
                rid = torch.cuda.nvtx.range_start(range_name(shape["index"], v["index"]))
                try:
                    model(*inputs)
                    torch.cuda.synchronize()
                except BaseException as exc:  # noqa: BLE001
                    ev.emit("variant", result={"name": v["name"], "status": "profile-error",
                                               "error": verify.classify(exc)[1]}, shape=shape["id"])
                torch.cuda.nvtx.range_end(rid)
            torch.cuda.nvtx.range_end(outer)
        del models, inputs
        torch.cuda.empty_cache()
    ev.emit("end")


MODES = {"measure": measure_shapes, "ceilings": measure_ceilings, "ncu": run_under_ncu}


def run_job(path: str) -> None:
    job = json.loads(Path(path).read_text())
    ev = Events(job["events"])
    try:
        while AHEAD:     # the compile begun after the last job: done before this one touches the GPU
            ev.emit("ahead", **AHEAD.pop().wait())
        MODES[job["mode"]](job, ev)
    finally:
        ev.fh.close()


def serve() -> None:
    """Jobs from standard input, one at a time, in this one process: each with its output in its own log."""
    for line in sys.stdin:
        if not line.strip():
            continue
        order = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        with open(order["log"], "a") as log:      # the job's log gets what the process prints meanwhile
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        run_job(order["job"])


def main(argv: list[str]) -> int:
    if argv == ["--serve"]:
        serve()
    else:
        run_job(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
