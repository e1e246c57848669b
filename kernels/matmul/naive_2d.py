"""Baseline: plain 2D tile grid with small tiles.

One program per BLOCK_M x BLOCK_N tile of C, grid (cdiv(M, BLOCK_M),
cdiv(N, BLOCK_N)); each walks K in BLOCK_K steps with tl.dot, accumulating in
fp32, and stores the tile in the input dtype. Small tiles mean low data reuse
per program: each A/B element is loaded from L2 N/BLOCK_N resp. M/BLOCK_M times
and 64x64 tiles give the tensor cores little work per byte of shared memory.
"""
import torch
import torch.nn as nn
import triton
import triton.language as tl

LAYOUT = "2D (cdiv(M,BM), cdiv(N,BN)), one C tile per program, small tiles, K loop"

# Shared memory per config: num_stages * (BM*BK + BK*BN) * 2 bytes = 48 KB, 16 KB.
CONFIGS = [
    dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=3),
    dict(BLOCK_M=32, BLOCK_N=64, BLOCK_K=32, num_warps=4, num_stages=2),
]


@triton.jit
def _matmul_naive_2d_kernel(
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


def matmul_naive_2d(a: torch.Tensor, b: torch.Tensor, BLOCK_M: int, BLOCK_N: int, BLOCK_K: int,
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
    _matmul_naive_2d_kernel[grid](
        a, b, c, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, EVEN_K=(K % BLOCK_K == 0),
        num_warps=num_warps, num_stages=num_stages,
    )
    return c


class ModelNew(nn.Module):
    def __init__(self, BLOCK_M: int = 64, BLOCK_N: int = 64, BLOCK_K: int = 32, num_warps: int = 4,
                 num_stages: int = 3):
        super().__init__()
        self.BLOCK_M = BLOCK_M
        self.BLOCK_N = BLOCK_N
        self.BLOCK_K = BLOCK_K
        self.num_warps = num_warps
        self.num_stages = num_stages

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return matmul_naive_2d(A, B, self.BLOCK_M, self.BLOCK_N, self.BLOCK_K, self.num_warps, self.num_stages)
