"""Correctness: fresh seeded inputs, NaN-poisoned outputs, comparison by dtype tolerance.

Runs inside the GPU worker. The reference runs in float32 when inputs are float16/bfloat16, so the
variant is judged against the op's meaning rather than against half-precision rounding.
"""
from __future__ import annotations

import traceback
from types import ModuleType
from typing import Any

import torch

from pipeline.config import Tolerance

DTYPE = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
CHUNK = 1 << 26  # elements compared at once: bounds the comparison's extra memory at full shapes


def make_inputs(ref: ModuleType, dtype: str, seed: int, device: str) -> list[Any]:
    torch.manual_seed(seed)
    with torch.device(device):
        inputs = ref.get_inputs()
    out = []
    for t in inputs:
        if isinstance(t, torch.Tensor):
            t = t.to(device)
            if t.is_floating_point():
                t = t.to(DTYPE[dtype])
        out.append(t)
    return out


def upcast(inputs: list[Any]) -> list[Any]:
    return [t.float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs]


def poison_like(ref_out: torch.Tensor) -> int:
    """Fill a block the caching allocator will hand to the variant's next same-size output with NaN.

    Returns the block's address, so the caller can confirm the variant's output landed on it."""
    block = torch.empty_like(ref_out)
    if block.is_floating_point():
        block.fill_(float("nan"))
    else:
        block.fill_(torch.iinfo(block.dtype).max)
    ptr = block.data_ptr()
    del block
    return ptr


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
