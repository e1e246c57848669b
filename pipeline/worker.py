"""The child process that touches the GPU: `python -m pipeline.worker JOB.json` runs one job and exits
(as ncu runs it); `python -m pipeline.worker --serve` runs job after job, each named by a JSON line
{"job": JOB.json, "log": LOG} on its standard input, until the input ends (supervise.Worker).

The parent (profiling.py) writes a job and follows the JSON lines the worker appends to the job's
events file. A variant that kills the process (illegal address, hang) is named by the last `begin`
event, so the parent can mark it and restart a worker on the rest.

mode "measure": for each shape of one op in turn, build each variant and check it against the reference
on every seed (verify.verify_variants), then time the verified variants, the reference (torch eager) and a
device copy, interleaved (timing.time_variants); then capture the lane's next op's kernels to compile ahead.
mode "ncu": run each selected variant of each shape once inside its own NVTX start/end range, after
compiling and warming it outside any range, for the ncu process that wraps this one.
mode "ceilings": the device's copy bandwidth and matmul rate.
"""
from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from pipeline import precompile, timing, verify
from pipeline.build import build, load_reference, reference_model
from pipeline.config import TimingConfig
from pipeline.host import query_gpu
from pipeline.ncu import OUTER_RANGE, range_name
from pipeline.supervise import Events


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
    # facts are best effort: what nvidia-smi cannot say stays null
    driver, uuid = query_gpu(os.environ.get("CUDA_VISIBLE_DEVICES"), ["driver_version", "uuid"], timeout=30) \
        or [None, None]
    facts.update(driver=driver, gpu_uuid=uuid)
    return facts


def measure_shapes(job: dict[str, Any], ev: Events) -> None:
    """Verify, then time, each shape of one op in turn, in this one process (one start-up for all)."""
    facts = gpu_facts(job["device"])
    ev.emit("env", facts=facts)
    for shape in job["shapes"]:
        ref_mod = load_reference({**job, "params": shape["params"]})
        ref_model = reference_model(ref_mod, job["device"])     # one per shape, for checking and timing
        models = verify.verify_variants(job, shape, ref_mod, ref_model, ev)
        if not job.get("verify_only"):      # a solo retry (measure.measure_op) only checks its one variant
            timing.time_variants(job, shape, ref_mod, ref_model, models, facts["l2_bytes"], ev)
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
        built = []
        with torch.no_grad():
            inputs = verify.make_inputs(ref_mod, shape["dtype"], ahead["seeds"][0], device)
            for v in shape["verify"]:
                try:
                    built.append((v["name"], *build(v, init_inputs, device, ahead["op"])))
                except BaseException:  # noqa: BLE001 - the next op's own job builds it again and reports it
                    continue
            calls = precompile.calls(built, inputs)
            kernels += precompile.capture(calls, before=lambda name: ev.emit(
                "begin", variant=f"{ahead['op']} {shape['id']} {name}", phase="ahead", shape=None))
        del built, calls, inputs
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
    """Run each selected variant of each shape once inside NVTX range s<shape>.v<variant>, compiled and warmed
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
