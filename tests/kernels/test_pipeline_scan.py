"""pipeline/scan.py, the pipeline's correctness check: the one-pass scan kernel (its GPU path) agrees with the
chunked comparison. Here among the kernels' tests because, like them, it runs through the Triton interpreter
where there is no GPU (this folder's conftest sets it up before Triton is imported)."""
import pytest
import torch

from opkit import DEVICE
from pipeline import verify
from pipeline.scan import SCAN_BLOCK
from pipeline.config import Tolerance


def _both(o, r, tol):
    n_bad, max_abs, max_rel = verify.scan(o.reshape(-1), r.reshape(-1), tol)
    full = verify.detailed(o.reshape(-1), r.reshape(-1), tol, r.shape)
    return (n_bad, max_abs, max_rel), full


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_scan_agrees_with_the_chunked_comparison(dtype):
    tol = Tolerance(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else Tolerance(rtol=1e-2, atol=1e-2)
    torch.manual_seed(0)
    r = torch.randn(3 * SCAN_BLOCK + 17, device=DEVICE)     # several programs and a ragged tail
    o = (r + torch.randn_like(r) * 1e-4).to(dtype)
    (n_bad, max_abs, max_rel), full = _both(o, r, tol)
    # the GPU's fp32 division may differ from torch's in the last bit
    assert n_bad == full["mismatched"] == 0
    assert max_abs == full["max_abs_err"] and max_rel == pytest.approx(full["max_rel_err"], rel=1e-6)
    o[7] = float("nan")
    o[SCAN_BLOCK + 3] += 5
    o[-1] = float("inf")
    (n_bad, max_abs, max_rel), full = _both(o, r, tol)
    assert n_bad == full["mismatched"] == 3 and not full["ok"]
    assert max_abs == pytest.approx(full["max_abs_err"]) and max_abs > 4    # NaN/Inf never the largest error
    assert max_rel == pytest.approx(full["max_rel_err"])


def test_a_passing_gpu_compare_takes_the_scan_numbers():
    if not torch.cuda.is_available():
        pytest.skip("compare() scans only CUDA tensors")
    tol = Tolerance(rtol=1e-4, atol=1e-4)
    r = torch.randn(1 << 20, device="cuda")
    got = verify.compare(r + 1e-6, r, tol)
    want = verify.detailed((r + 1e-6).reshape(-1), r.reshape(-1), tol, r.shape)
    assert got["ok"] and want["ok"]
    assert got["max_abs_err"] == pytest.approx(want["max_abs_err"])
