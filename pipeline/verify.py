"""Correctness: fresh seeded inputs, NaN-poisoned outputs, comparison by dtype tolerance, and the
verify phase of a shape (verify_variants: build, compile together, check on every seed).

Runs inside the GPU worker. The reference runs in float32 when inputs are float16/bfloat16, so the
variant is judged against the op's meaning rather than against half-precision rounding.
"""
from __future__ import annotations

import sys
import threading
import time
import traceback
from types import ModuleType
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pipeline import precompile
from pipeline.build import build, compiled_kernels, kernel_trace
from pipeline.config import Tolerance
from pipeline.supervise import Events

LEFT_THREADS = "the call left"     # the start of the reason a check gives for threads left running

DTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CHUNK = 1 << 26  # elements compared at once: bounds the comparison's extra memory at full shapes


def make_inputs(ref: ModuleType, dtype: str, seed: int, device: str, wide: float = 0.0) -> list[Any]:
    """The reference's get_inputs() under `seed`, floating tensors cast to `dtype`; with `wide`, floating
    inputs are mapped to (2x - 1) · wide first (signed, beyond [0, 1))."""
    torch.manual_seed(seed)
    with torch.device(device):
        inputs = ref.get_inputs()
    out = []
    for t in inputs:
        if isinstance(t, torch.Tensor):
            t = t.to(device)
            if t.is_floating_point():
                t = ((2 * t - 1) * wide if wide else t).to(DTYPE[dtype])
        out.append(t)
    return out


def reference_output(ref_model: Any, inputs: list[Any], dtype: str) -> Any:
    """The reference's output for `inputs`, run in float32 when they are half precision (see the module doc)."""
    if dtype != "float32":
        inputs = [t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs]
    return ref_model(*inputs)


class OutputGuard(TorchDispatchMode):
    """Watches one variant call through torch's dispatcher: every tensor allocated uninitialised
    (empty*) is filled with a sentinel, and the storage of every tensor a torch op creates is recorded.

    The output is then confirmed, not assumed, to be memory that was poisoned or written by torch during
    the call (`fresh`). Sentinel fills per allocation do not depend on which block the caching allocator
    hands out (poisoning a block beforehand did not reach half-precision outputs: a freed temporary of the
    same size, holding the rounded reference, was handed to the output instead)."""

    def __init__(self, sentinel: str = "nan"):
        super().__init__()
        self.sentinel = sentinel
        # storages an op created during the call (not an argument's): "sentinel" where torch left them
        # uninitialised and the guard filled them, "torch" where the op itself wrote them
        self.allocated: dict[int, str] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs))}
        for t in _tensors(out):
            ptr = t.untyped_storage().data_ptr()
            if ptr in given:        # a view of, or an in-place op on, an argument
                continue
            # an address freed and handed out again within the call belongs to its newest tensor
            self.allocated[ptr] = "torch"
            if func.overloadpacket in UNINITIALISED:
                fill_sentinel(t, self.sentinel)
                self.allocated[ptr] = "sentinel"
        return out

    def verdict(self, out: Any, inputs: list[Any]) -> tuple[bool, str]:
        """(fresh, why not): is `out` memory that this call allocated?"""
        if not isinstance(out, torch.Tensor):
            return True, ""
        ptr = out.untyped_storage().data_ptr()
        for k, t in enumerate(inputs):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() == ptr:
                return False, f"the output shares memory with input {k}"
        if ptr not in self.allocated:
            return False, ("the output is memory held from before the call (a cached or preallocated tensor), "
                           "not written by this call")
        return True, ""


def _tensors(tree: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


UNINITIALISED = {torch.ops.aten.empty, torch.ops.aten.empty_like, torch.ops.aten.empty_strided,
                 torch.ops.aten.new_empty, torch.ops.aten.new_empty_strided, torch.ops.aten.empty_permuted}

# Sentinels, alternated over a variant's seeds: NaN never passes the comparison; the finite one catches code
# that only masks NaN (nan_to_num, isnan checks) over elements it never wrote.
SENTINELS = ("nan", "finite")


def fill_sentinel(t: torch.Tensor, sentinel: str) -> None:
    if t.is_floating_point():
        big = torch.finfo(t.dtype).max
        t.fill_(float("nan") if sentinel == "nan" else -big)
    elif t.dtype == torch.bool:
        t.fill_(sentinel == "nan")
    elif not t.is_complex():
        info = torch.iinfo(t.dtype)
        t.fill_(info.max if sentinel == "nan" else info.min)


def scan(o: torch.Tensor, r: torch.Tensor, tol: Tolerance) -> tuple[int, float, float]:
    """(elements outside tolerance, max finite |out - ref|, max relative error) in one read of each tensor.

    On the GPU this replaces ~20 elementwise passes of the chunked comparison: at 15 GB shapes the
    check would otherwise cost more than the variant it checks."""
    from pipeline.scan import SCAN_BLOCK, scan_kernel   # imports Triton: only once a comparison runs
    n = o.numel()
    blocks = -(-n // SCAN_BLOCK)
    bad = torch.empty(blocks, dtype=torch.int32, device=o.device)
    worst_abs = torch.empty(blocks, dtype=torch.float32, device=o.device)
    worst_rel = torch.empty_like(worst_abs)
    scan_kernel[(blocks,)](o, r, n, tol.atol, tol.rtol, bad, worst_abs, worst_rel, BLOCK=SCAN_BLOCK)
    n_bad, max_abs, max_rel = torch.stack([bad.sum(dtype=torch.int64).double(), worst_abs.max().double(),
                                           worst_rel.max().double()]).tolist()
    return int(n_bad), max_abs, max_rel


def compare(out: Any, ref: torch.Tensor, tol: Tolerance) -> dict[str, Any]:
    """Elementwise |out - ref| <= atol + rtol·|ref|, NaN/Inf never passing. Worst element named."""
    if not isinstance(out, torch.Tensor):
        return {"ok": False, "reason": f"returned {type(out).__name__}, expected a tensor"}
    if tuple(out.shape) != tuple(ref.shape):
        return {"ok": False, "reason": f"output shape {tuple(out.shape)} != reference {tuple(ref.shape)}"}
    o, r = out.reshape(-1), ref.reshape(-1)
    if o.is_cuda and o.numel():
        n_bad, max_abs, max_rel = scan(o.contiguous(), r.contiguous(), tol)
        if n_bad == 0:   # every element passed: nothing to locate, the one-pass numbers are the result
            return {"ok": True, "max_abs_err": max_abs, "max_rel_err": max_rel, "mismatched": 0,
                    "nonfinite": 0, "numel": o.numel(), "tolerance": {"rtol": tol.rtol, "atol": tol.atol}}
    return detailed(o, r, tol, ref.shape)


def detailed(o: torch.Tensor, r: torch.Tensor, tol: Tolerance, shape: Any) -> dict[str, Any]:
    """The chunked comparison, on flat tensors: on the CPU, or to name the first/worst failing element."""
    n_bad = n_nonfinite = 0
    max_abs = max_rel = 0.0
    worst = first_bad = -1
    for s in range(0, o.numel(), CHUNK):
        oc, rc = o[s:s + CHUNK].float(), r[s:s + CHUNK].float()
        diff = (oc - rc).abs()
        bad = ~(diff <= tol.atol + tol.rtol * rc.abs())
        nonfinite = ~torch.isfinite(oc)
        n_nonfinite += int(nonfinite.sum())
        k = int(bad.sum())
        if k and first_bad < 0:
            first_bad = s + int(bad.nonzero()[0, 0])
        n_bad += k
        finite_diff = torch.where(nonfinite, torch.zeros_like(diff), diff)
        if finite_diff.numel():
            i = int(finite_diff.argmax())
            if float(finite_diff[i]) > max_abs:
                max_abs, worst = float(finite_diff[i]), s + i
            rel = finite_diff / rc.abs().clamp_min(tol.atol)
            max_rel = max(max_rel, float(rel.max()))
    result = {"ok": n_bad == 0, "max_abs_err": max_abs, "max_rel_err": max_rel,
              "mismatched": n_bad, "nonfinite": n_nonfinite, "numel": o.numel(),
              "tolerance": {"rtol": tol.rtol, "atol": tol.atol}}
    if n_bad:
        at = first_bad if n_nonfinite else worst
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(at), shape))
        result["reason"] = (f"{n_bad} of {o.numel()} elements outside tolerance"
                            + (f" ({n_nonfinite} NaN/Inf: unwritten or invalid)" if n_nonfinite else "")
                            + f"; e.g. at {index}: got {float(o[at]):.6g}, expected {float(r[at]):.6g}")
        result["where"] = list(index)
    return result


def guarded_check(model: Any, inputs: list[Any], ref_out: torch.Tensor, tol: Tolerance, device: str,
                  sentinel: str) -> tuple[Any, dict[str, Any]]:
    """One call of the variant under OutputGuard, compared with the reference. A check passes only when
    the output is memory the call allocated (poisoned or written by torch) and every element is in
    tolerance; an output that aliases an input or outlives the call is marked suspect."""
    guard = OutputGuard(sentinel)
    before = set(threading.enumerate())
    with guard:
        out = model(*inputs)
    if device != "cpu":
        torch.cuda.synchronize()
    fresh, why = guard.verdict(out, inputs)
    left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
    if left and fresh:      # work still going on after the call returned escapes the timed events
        fresh, why = False, f"{LEFT_THREADS} {len(left)} thread(s) running ({', '.join(left)})"
    check = compare(out, ref_out, tol)
    memory = guard.allocated.get(out.untyped_storage().data_ptr()) if isinstance(out, torch.Tensor) else None
    check.update(sentinel=sentinel, poisoned=fresh and memory is not None, output_memory=memory)
    if not fresh:
        check.update(ok=False, suspect=True, reason=why)
    return out, check


def context_alive() -> bool:
    """False when a CUDA error has poisoned this process's context (e.g. an illegal memory access)."""
    if not torch.cuda.is_available():
        return True
    try:
        torch.cuda.synchronize()
        torch.zeros(1, device="cuda").add_(1).item()
        return True
    except Exception:  # noqa: BLE001 - any failure here means the context is unusable
        return False


def classify(exc: BaseException) -> tuple[str, str]:
    """(status, one-line message) for an exception raised while building or running a variant."""
    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    kind = type(exc)
    names = {c.__name__ for c in kind.__mro__}
    module = kind.__module__ or ""
    if isinstance(exc, NotImplementedError):
        return "unsupported", str(exc) or last
    if module.startswith("triton") and names & {"CompilationError", "CompileTimeAssertionFailure",
                                                "OutOfResources", "PTXASError", "MLIRCompilationError"}:
        return "compile-error", last
    if not context_alive():
        return "crashed", last
    return "launch-error", last


class Seeds:
    """Each seed's reference output, computed once per shape and shared by every variant while the
    outputs fit in SEED_CACHE_FRACTION of the device's memory (computed again past that). Inputs are
    drawn afresh from the seed for every variant, so one that writes into its input harms no other."""

    def __init__(self, job: dict[str, Any], shape: dict[str, Any], ref_mod: ModuleType, ref_model: Any):
        self.job, self.shape, self.ref_mod, self.ref_model = job, shape, ref_mod, ref_model
        self.refs: dict[tuple[int, float], torch.Tensor] = {}
        self.budget = (SEED_CACHE_FRACTION * torch.cuda.get_device_properties(0).total_memory
                       if job["device"] != "cpu" else SEED_CACHE_CPU_BYTES)

    def get(self, seed: int, wide: float = 0.0) -> tuple[list[Any], torch.Tensor]:
        inputs = make_inputs(self.ref_mod, self.shape["dtype"], seed, self.job["device"], wide)
        key = (seed, wide)
        if key in self.refs:
            return inputs, self.refs[key]
        ref_out = reference_output(self.ref_model, inputs, self.shape["dtype"])
        held = sum(r.numel() * r.element_size() for r in self.refs.values())
        if isinstance(ref_out, torch.Tensor) and held + ref_out.numel() * ref_out.element_size() <= self.budget:
            self.refs[key] = ref_out
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
                                       "error": classify(exc)[1]}, shape=sid)
            continue
        built.append((v, model, module, time.perf_counter() - t_build))
    if job.get("precompile", True) and built:
        with torch.no_grad():
            inputs = seeds.get(job["seeds"][0])[0]
        calls = precompile.calls([(v["name"], model, module) for v, model, module, _ in built], inputs)
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
                wide = job.get("wide_inputs", 0.0)
                plan = [(seed, 0.0) for seed in job["seeds"]] + ([(job["seeds"][0], wide)] if wide else [])
                for i, (seed, scale) in enumerate(plan):
                    inputs, ref_out = seeds.get(seed, scale)
                    t0 = time.perf_counter()
                    out, check = guarded_check(model, inputs, ref_out, tol, device, SENTINELS[i % len(SENTINELS)])
                    if i == 0:
                        first_call = time.perf_counter() - t0
                    check["seed"] = seed
                    if scale:
                        check["wide_inputs"] = scale
                    checks.append(check)
                    del out, ref_out
                    if not check["ok"]:
                        status = "suspect" if check.get("suspect") else "incorrect"
                        error = f"seed {seed}{f' (inputs signed, x{scale:g})' if scale else ''}: {check['reason']}"
                        break
        except BaseException as exc:  # noqa: BLE001
            status, error = classify(exc)
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
                        result.update(kernel_trace(lambda: model(*inputs)))
                except Exception as exc:  # noqa: BLE001 - the count check is then skipped, and says why
                    result["launched_error"] = str(exc)
            passed[v["name"]] = model
        ev.emit("variant", result=result, shape=sid)
        if any((c.get("reason") or "").startswith(LEFT_THREADS) for c in checks):
            # its threads run on in this process and would act during the next variants' checks (under the
            # interpreter they broke the next variant's launch): the parent restarts a worker on the rest
            sys.exit(3)
    return passed
