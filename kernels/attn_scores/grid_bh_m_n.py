"""3D grid (B·H, cdiv(M,BM), cdiv(N,BN)): batch and head merged on x.

The 4D index space (b, h, m-tile, n-tile) needs one merge to fit a 3D grid.
Merging the two outer dims (b, h) onto x keeps m and n as grid axes, so the
program decodes (b, h) with one div/mod and reads pid_m, pid_n directly. x may
hold up to 2^31 - 1 programs; y and z at most 65535 each (cdiv(M,BM) and
cdiv(N,BN): M, N up to ~8M rows at BM = 128, refused beyond).
x varies fastest in launch order: consecutive programs are different heads at
the same (m, n) tile, so each wave touches 132 heads; a head's Q/K tiles are
reused by the next (m, n) round ~B·H programs later, still in L2 (a round
reads B·H·(BM + BN)·D·2 bytes, 8 MB here).
"""
import torch
import torch.nn as nn
import triton
import triton.language as tl

LAYOUT = "3D (B·H, cdiv(M,BM), cdiv(N,BN)), (b, h) merged on x, one [BM, BN] S tile per program"

# Shared memory: (BM + BN) * D_PAD * 2 bytes = 32 KB at D = 64 for 128x128 (64 KB at D = 128).
# fp32 accumulator per thread: BM*BN / (32*num_warps) = 64, 64, 64, 64 registers.
CONFIGS = [
    dict(BLOCK_M=128, BLOCK_N=128, num_warps=8),
    dict(BLOCK_M=64, BLOCK_N=128, num_warps=4),
    dict(BLOCK_M=128, BLOCK_N=64, num_warps=4),
    dict(BLOCK_M=64, BLOCK_N=256, num_warps=8),
]
MAX_HEAD_DIM = 256


@triton.jit
def _attn_scores_grid_bh_m_n_kernel(
    q_ptr, k_ptr, s_ptr,
    H, M, N, D,
    stride_qb, stride_qh, stride_qm, stride_qd,
    stride_kb, stride_kh, stride_kn, stride_kd,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    D_PAD: tl.constexpr,
):
    bh = tl.program_id(0)
    pid_m = tl.program_id(1)
    pid_n = tl.program_id(2)
    b = bh // H
    h = bh - b * H
    q_base = q_ptr + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    k_base = k_ptr + b.to(tl.int64) * stride_kb + h.to(tl.int64) * stride_kh
    s_base = s_ptr + bh.to(tl.int64) * M * N
    # Rows past M/N wrap around (always in bounds); the store masks them.
    offs_qm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_kn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_d = tl.arange(0, D_PAD)
    d_mask = offs_d < D
    q = tl.load(q_base + offs_qm[:, None] * stride_qm + offs_d[None, :] * stride_qd,
                mask=d_mask[None, :], other=0.0)
    k = tl.load(k_base + offs_kn[:, None] * stride_kn + offs_d[None, :] * stride_kd,
                mask=d_mask[None, :], other=0.0)
    s = tl.dot(q, tl.trans(k))
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    s_mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(s_base + offs_m[:, None] * N + offs_n[None, :], s.to(s_ptr.dtype.element_ty), mask=s_mask)


def attn_scores_grid_bh_m_n(q: torch.Tensor, k: torch.Tensor, BLOCK_M: int, BLOCK_N: int,
                        num_warps: int) -> torch.Tensor:
    if q.dim() != 4 or k.dim() != 4:
        raise NotImplementedError(f"Q and K must be [B, H, M, D] and [B, H, N, D] (got {q.dim()}D, {k.dim()}D)")
    B, H, M, D = q.shape
    if k.shape[0] != B or k.shape[1] != H or k.shape[3] != D:
        raise ValueError(f"Q {tuple(q.shape)} and K {tuple(k.shape)} differ in B, H or D")
    if q.dtype != k.dtype or q.dtype not in (torch.float16, torch.bfloat16):
        raise NotImplementedError(f"fp16/bf16 tensor-core kernel; got {q.dtype}, {k.dtype}")
    N = k.shape[2]
    D_PAD = max(16, triton.next_power_of_2(D))
    if D_PAD > MAX_HEAD_DIM:
        raise NotImplementedError(f"head dim D={D} exceeds {MAX_HEAD_DIM} (one [BM, D] and one [BN, D] tile "
                                  "per program, no loop over D)")
    if M * N >= 2**31 or max(M, N) * D >= 2**31:
        raise NotImplementedError("one head's S or Q/K slice of >= 2^31 elements exceeds int32 offsets")
    grid = (B * H, triton.cdiv(M, BLOCK_M), triton.cdiv(N, BLOCK_N))
    if grid[0] >= 2**31 or grid[1] > 65535 or grid[2] > 65535:
        raise NotImplementedError(f"grid {grid} exceeds the limits (x < 2^31, y and z <= 65535)")
    s = torch.empty((B, H, M, N), dtype=q.dtype, device=q.device)
    if s.numel() == 0:
        return s
    if D == 0:
        return s.zero_()
    _attn_scores_grid_bh_m_n_kernel[grid](
        q, k, s, H, M, N, D,
        q.stride(0), q.stride(1), q.stride(2), q.stride(3),
        k.stride(0), k.stride(1), k.stride(2), k.stride(3),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, D_PAD=D_PAD, num_warps=num_warps,
    )
    return s


class ModelNew(nn.Module):
    def __init__(self, BLOCK_M: int = 128, BLOCK_N: int = 128, num_warps: int = 8):
        super().__init__()
        self.BLOCK_M = BLOCK_M
        self.BLOCK_N = BLOCK_N
        self.num_warps = num_warps

    def forward(self, Q: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
        return attn_scores_grid_bh_m_n(Q, K, self.BLOCK_M, self.BLOCK_N, self.num_warps)
