"""2D tile grid, row-major launch order; H100-sized tiles, and the small-tile baseline.

One program per C tile, grid (cdiv(M, BLOCK_M), cdiv(N, BLOCK_N)), fp32
accumulation over a pipelined K loop. The 128x256 / 128x128 / 256x128 tiles
with BLOCK_K = 64 and 3-4 stages carry 4x-8x more FLOPs per loaded byte than
64x64 and enough tensor-core work per stage. The last two configs are the op's
baseline (op.yaml): 64x64 / 32x64 tiles, BLOCK_K = 32, where each A/B element is
loaded from L2 N/BLOCK_N resp. M/BLOCK_M times and the tensor cores get little
work per byte of shared memory. Programs launch x-fastest: one wave (132 programs) covers ~all M tiles
of 4-8 N columns, so a wave streams the whole of A through L2 (grouped_1d
reorders tiles to cut that).
"""
import torch
import torch.nn as nn
import triton
import triton.language as tl

LAYOUT = "2D (cdiv(M,BM), cdiv(N,BN)), one C tile per program, H100 tiles, pipelined K loop"

# Shared memory per config: num_stages * (BM*BK + BK*BN) * 2 bytes = 144 KB, 128 KB, 144 KB,
# 96 KB, then 48 KB and 16 KB for the small baseline tiles (H100: 227 KB per block). fp32 accumulator per thread: BM*BN / (32*num_warps) = 128, 64,
# 128, 128 registers (wgmma reads A and B from shared memory, so the rest fits in 255).
CONFIGS = [
    dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=4),
    dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=4, num_stages=3),
    dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3),
    dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=2),
]


@triton.jit
def _matmul_grid_2d_kernel(
    a_ptr, b_ptr, c_ptr,
    M, N, K,
    stride_am, stride_ak,
    stride_bk, stride_bn,
    stride_cm, stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    # Rows/columns past M/N wrap around (always in bounds); the store masks them.
    offs_am = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_bn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = K - k * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    offs_cm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_cn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    c_ptrs = c_ptr + offs_cm[:, None] * stride_cm + offs_cn[None, :] * stride_cn
    c_mask = (offs_cm[:, None] < M) & (offs_cn[None, :] < N)
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=c_mask)


def matmul_grid_2d(a: torch.Tensor, b: torch.Tensor, BLOCK_M: int, BLOCK_N: int, BLOCK_K: int,
                    num_warps: int, num_stages: int) -> torch.Tensor:
    if a.dim() != 2 or b.dim() != 2:
        raise NotImplementedError(f"only 2D A @ B (got {a.dim()}D @ {b.dim()}D)")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dims differ: A {tuple(a.shape)} @ B {tuple(b.shape)}")
    if a.dtype != b.dtype or a.dtype not in (torch.float16, torch.bfloat16):
        raise NotImplementedError(f"fp16/bf16 tensor-core kernel; got {a.dtype} @ {b.dtype}")
    M, K = a.shape
    N = b.shape[1]
    if max(M * K, K * N, M * N) >= 2**31:
        raise NotImplementedError("an operand of >= 2^31 elements exceeds int32 offsets")
    c = torch.empty((M, N), dtype=a.dtype, device=a.device)
    if M == 0 or N == 0:
        return c
    if K == 0:
        return c.zero_()
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(N, BLOCK_N))
    if grid[1] > 65535:
        raise NotImplementedError(f"cdiv(N, BLOCK_N) = {grid[1]} exceeds the grid's y limit 65535")
    _matmul_grid_2d_kernel[grid](
        a, b, c, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, EVEN_K=(K % BLOCK_K == 0),
        num_warps=num_warps, num_stages=num_stages,
    )
    return c


class ModelNew(nn.Module):
    def __init__(self, BLOCK_M: int = 128, BLOCK_N: int = 256, BLOCK_K: int = 64, num_warps: int = 8,
                 num_stages: int = 3):
        super().__init__()
        self.BLOCK_M = BLOCK_M
        self.BLOCK_N = BLOCK_N
        self.BLOCK_K = BLOCK_K
        self.num_warps = num_warps
        self.num_stages = num_stages

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return matmul_grid_2d(A, B, self.BLOCK_M, self.BLOCK_N, self.BLOCK_K, self.num_warps, self.num_stages)
