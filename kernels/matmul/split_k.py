"""Split-K: 3D grid over (M tiles, N tiles, K slices), fp32 workspace, then a reduction.

Kernel 1, grid (cdiv(M,BM), cdiv(N,BN), SPLIT_K): program (m, n, s) accumulates
its C tile over the s-th slice of whole BLOCK_K steps (cdiv(k_tiles, SPLIT_K)
steps each; a slice may be empty and then stores zeros) into an fp32 workspace
W[s, M, N]. Kernel 2, 1D grid over M·N in BLOCK_R chunks: C = sum_s W[s] cast
to the input dtype. Deterministic (fixed summation order); the alternative,
tl.atomic_add of each partial into one zeroed fp32 buffer then a cast, saves the
workspace but its result varies from run to run in the last bits.
Split-K multiplies the programs by SPLIT_K for shapes with few C tiles and a
long K; at 4096³ (512-1024 tiles) and at K = 512 it only adds traffic:
2·SPLIT_K·M·N·4 bytes of workspace (256 MB for 4096² at SPLIT_K = 4, ~85 us at
3 TB/s), so it should lose to grouped_1d on this op's shapes.
"""
import torch
import torch.nn as nn
import triton
import triton.language as tl

LAYOUT = ("3D (cdiv(M,BM), cdiv(N,BN), SPLIT_K) fp32 partial tiles into a workspace, "
          "then 1D (cdiv(M·N, BLOCK_R),) reduction + cast")

# Shared memory per config: num_stages * (BM*BK + BK*BN) * 2 bytes = 128 KB, 96 KB, 96 KB.
CONFIGS = [
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, SPLIT_K=2, num_warps=8, num_stages=4),
    dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, SPLIT_K=4, num_warps=8, num_stages=3),
    dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, SPLIT_K=4, num_warps=4, num_stages=4),
]
# Reduction kernel: elements per program, and its warps.
BLOCK_R = 1024
REDUCE_WARPS = 4


@triton.jit
def _matmul_split_k_partial_kernel(
    a_ptr, b_ptr, ws_ptr,
    M, N, K,
    stride_am, stride_ak,
    stride_bk, stride_bn,
    k_tiles_per_split,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    EVEN_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    s = tl.program_id(2)
    k_tiles = tl.cdiv(K, BLOCK_K)
    kt_start = s * k_tiles_per_split
    kt_end = tl.minimum(kt_start + k_tiles_per_split, k_tiles)
    offs_am = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_bn = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_am[:, None] * stride_am + (kt_start * BLOCK_K + offs_k)[None, :] * stride_ak
    b_ptrs = b_ptr + (kt_start * BLOCK_K + offs_k)[:, None] * stride_bk + offs_bn[None, :] * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kt in range(kt_start, kt_end):
        if EVEN_K:
            a = tl.load(a_ptrs)
            b = tl.load(b_ptrs)
        else:
            k_left = K - kt * BLOCK_K
            a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
            b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        acc = tl.dot(a, b, acc)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    offs_cm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_cn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ws = ws_ptr + s.to(tl.int64) * M * N
    w_ptrs = ws + offs_cm[:, None] * N + offs_cn[None, :]
    w_mask = (offs_cm[:, None] < M) & (offs_cn[None, :] < N)
    tl.store(w_ptrs, acc, mask=w_mask)


@triton.jit
def _matmul_split_k_reduce_kernel(
    ws_ptr, c_ptr,
    MN,
    SPLIT_K: tl.constexpr,
    BLOCK_R: tl.constexpr,
):
    pid = tl.program_id(0)
    offs = pid * BLOCK_R + tl.arange(0, BLOCK_R)
    mask = offs < MN
    acc = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for s in range(0, SPLIT_K):
        acc += tl.load(ws_ptr + s * MN + offs, mask=mask, other=0.0, eviction_policy="evict_first")
    tl.store(c_ptr + offs, acc.to(c_ptr.dtype.element_ty), mask=mask)


def matmul_split_k(a: torch.Tensor, b: torch.Tensor, BLOCK_M: int, BLOCK_N: int, BLOCK_K: int,
                   SPLIT_K: int, num_warps: int, num_stages: int) -> torch.Tensor:
    if a.dim() != 2 or b.dim() != 2:
        raise NotImplementedError(f"only 2D A @ B (got {a.dim()}D @ {b.dim()}D)")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"inner dims differ: A {tuple(a.shape)} @ B {tuple(b.shape)}")
    if a.dtype != b.dtype or a.dtype not in (torch.float16, torch.bfloat16):
        raise NotImplementedError(f"fp16/bf16 tensor-core kernel; got {a.dtype} @ {b.dtype}")
    M, K = a.shape
    N = b.shape[1]
    if max(M * K, K * N, SPLIT_K * M * N) >= 2**31:
        raise NotImplementedError("an operand or the SPLIT_K·M·N workspace of >= 2^31 elements exceeds "
                                  "int32 offsets")
    c = torch.empty((M, N), dtype=a.dtype, device=a.device)
    if M == 0 or N == 0:
        return c
    if K == 0:
        return c.zero_()
    k_tiles = triton.cdiv(K, BLOCK_K)
    k_tiles_per_split = triton.cdiv(k_tiles, SPLIT_K)
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(N, BLOCK_N), SPLIT_K)
    if grid[1] > 65535 or grid[2] > 65535:
        raise NotImplementedError(f"grid {grid} exceeds the y/z limit 65535")
    ws = torch.empty((SPLIT_K, M, N), dtype=torch.float32, device=a.device)
    _matmul_split_k_partial_kernel[grid](
        a, b, ws, M, N, K,
        a.stride(0), a.stride(1), b.stride(0), b.stride(1), k_tiles_per_split,
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, EVEN_K=(K % BLOCK_K == 0),
        num_warps=num_warps, num_stages=num_stages,
    )
    _matmul_split_k_reduce_kernel[(triton.cdiv(M * N, BLOCK_R),)](
        ws, c, M * N, SPLIT_K=SPLIT_K, BLOCK_R=BLOCK_R, num_warps=REDUCE_WARPS,
    )
    return c


class ModelNew(nn.Module):
    def __init__(self, BLOCK_M: int = 128, BLOCK_N: int = 128, BLOCK_K: int = 64, SPLIT_K: int = 2,
                 num_warps: int = 8, num_stages: int = 4):
        super().__init__()
        self.BLOCK_M = BLOCK_M
        self.BLOCK_N = BLOCK_N
        self.BLOCK_K = BLOCK_K
        self.SPLIT_K = SPLIT_K
        self.num_warps = num_warps
        self.num_stages = num_stages

    def forward(self, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return matmul_split_k(A, B, self.BLOCK_M, self.BLOCK_N, self.BLOCK_K, self.SPLIT_K,
                              self.num_warps, self.num_stages)
