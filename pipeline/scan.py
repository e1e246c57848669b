"""The verify stage's one-pass comparison kernel (pipeline.verify.scan).

Apart from verify.py so that importing the pipeline never imports Triton: Triton must be imported
after TRITON_INTERPRET is settled (the CPU interpreter), which the worker's caller decides.
"""
import triton
import triton.language as tl

SCAN_BLOCK = 4096  # elements per program; the per-program partials stay ~0.1% of the input


@triton.jit
def scan_kernel(out_ptr, ref_ptr, n, atol, rtol, bad_ptr, abs_ptr, rel_ptr, BLOCK: tl.constexpr):
    """Per program: elements outside tolerance (NaN/Inf included) and the largest finite errors."""
    pid = tl.program_id(0)
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    o = tl.load(out_ptr + offs, mask=m, other=0.0).to(tl.float32)
    r = tl.load(ref_ptr + offs, mask=m, other=0.0).to(tl.float32)
    diff = tl.abs(o - r)
    bad = m & ~(diff <= atol + rtol * tl.abs(r))          # a NaN comparison is False, so NaN is bad
    diff = tl.where(diff < float("inf"), diff, 0.0)       # NaN and Inf never make the largest error
    tl.store(bad_ptr + pid, tl.sum(bad.to(tl.int32), axis=0))
    tl.store(abs_ptr + pid, tl.max(diff, axis=0))
    tl.store(rel_ptr + pid, tl.max(diff / tl.maximum(tl.abs(r), atol), axis=0))
