"""1D grid with grouped (L2-friendly) tile ordering.

One program per C tile, grid (cdiv(M,BM)·cdiv(N,BN),). Program ids walk the tiles
in groups of GROUP_M tile-rows: inside a group the id runs down the GROUP_M
rows first, then across N. A wave of 132 programs then touches ~GROUP_M
A row-panels and ~132/GROUP_M B column-panels (4096³ at 128x256, GROUP_M=8:
8 + 16.5 panels, ~25 MB) instead of all 32 A panels plus 4 B panels (~40 MB) in
row-major order, so more of each wave's loads hit L2.
"""
import torch
import torch.nn as nn
import triton
import triton.language as tl

LAYOUT = "1D (cdiv(M,BM)·cdiv(N,BN),), grouped tile order (GROUP_M tile-rows per group), pipelined K loop"

# Shared memory per config: num_stages * (BM*BK + BK*BN) * 2 bytes = 144 KB, 128 KB, 192 KB,
# 144 KB (H100: 227 KB per block). fp32 accumulator: 128, 64, 128, 128 registers per thread.
CONFIGS = [
    dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4),
    dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=4),
    dict(BLOCK_M=256, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8, num_stages=3),
]


@triton.jit
def _matmul_grouped_1d_kernel(
    a_ptr, b_ptr, c_ptr,
    M, N, K,
    stride_am, stride_ak,
    stride_bk, stride_bn,
    stride_cm, stride_cn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    pid = tl.program_id(0)
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)  # the last group may be short
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
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


def matmul_grouped_1d(a: torch.Tensor, b: torch.Tensor, BLOCK_M: int, BLOCK_N: int, BLOCK_K: int,
                      GROUP_M: int, num_warps: int, num_stages: int) -> torch.Tensor:
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
    grid = (triton.cdiv(M, BLOCK_M) * triton.cdiv(N, BLOCK_N),)
    _matmul_grouped_1d_kernel[grid](
        a, b, c, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), c.stride(0), c.stride(1),
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, GROUP_M=GROUP_M, EVEN_K=(K % BLOCK_K == 0),
        num_warps=num_warps, num_stages=num_stages,
    )
    return c


class ModelNew(nn.Module):
    def __init__(self, BLOCK_M: int = 128, BLOCK_N: int = 256, BLOCK_K: int = 64, GROUP_M: int = 8,
                 num_warps: int = 8, num_stages: int = 3):
        super().__init__()
        self.BLOCK_M = BLOCK_M
        self.BLOCK_N = BLOCK_N
        self.BLOCK_K = BLOCK_K
        self.GROUP_M = GROUP_M
        self.num_warps = num_warps
        self.num_stages = num_stages

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return matmul_grouped_1d(A, B, self.BLOCK_M, self.BLOCK_N, self.BLOCK_K, self.GROUP_M,
                                 self.num_warps, self.num_stages)
