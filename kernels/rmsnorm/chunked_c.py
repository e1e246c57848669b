"""Two passes over C in chunks, 1D grid over (batch, spatial strip): any C.

Each program owns one batch index and a BLOCK_HW-wide strip of spatial
positions. Pass 1 walks C in BLOCK_C-row chunks and accumulates x*x in a
[BLOCK_C, BLOCK_HW] fp32 accumulator (reduced over C once, after the loop, so
the loop needs no cross-warp reduction); pass 2 walks C again, normalizes and
stores. x is read twice (pass 1 loads ask L2 to keep the lines, pass 2 loads
evict them first, so for moderate C the second read mostly hits L2) and
written once, with streaming stores. Register use does not grow with C, so every C is supported.
"""
import torch
import torch.nn as nn
import triton
import triton.language as tl

LAYOUT = ("1D (B·cdiv(HW, BLOCK_HW),), loop over C in [BLOCK_C, BLOCK_HW] chunks twice "
          "(sum of squares, then normalize)")

# Per-thread chunk = min(BLOCK_C, C_PAD) * BLOCK_HW / (32 * num_warps) fp32 values; the loop
# holds the chunk plus an accumulator of the same size, so the configs keep the chunk <= 32.
CONFIGS = [
    dict(BLOCK_C=16, BLOCK_HW=256, num_warps=4),
    dict(BLOCK_C=32, BLOCK_HW=128, num_warps=4),
    dict(BLOCK_C=8, BLOCK_HW=512, num_warps=4),
    dict(BLOCK_C=64, BLOCK_HW=128, num_warps=8),
    dict(BLOCK_C=16, BLOCK_HW=128, num_warps=4),
    dict(BLOCK_C=32, BLOCK_HW=256, num_warps=8),
]


@triton.jit
def _rmsnorm_chunked_c_kernel(
    x_ptr,
    y_ptr,
    C,
    HW,
    n_hw_blocks,
    eps,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    pid = tl.program_id(0)
    b = pid // n_hw_blocks
    blk = pid - b * n_hw_blocks
    base = b.to(tl.int64) * C * HW
    x_base = x_ptr + base
    y_base = y_ptr + base
    offs_hw = blk * BLOCK_HW + tl.arange(0, BLOCK_HW)
    hw_mask = offs_hw < HW
    offs_c = tl.arange(0, BLOCK_C)

    acc = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        cc = c0 + offs_c
        mask = (cc[:, None] < C) & hw_mask[None, :]
        offs = cc[:, None] * HW + offs_hw[None, :]
        x = tl.load(x_base + offs, mask=mask, other=0.0, eviction_policy="evict_last").to(tl.float32)
        acc += x * x
    mean_sq = tl.sum(acc, axis=0) / C
    inv_rms = 1.0 / tl.sqrt(mean_sq + eps)

    for c0 in range(0, C, BLOCK_C):
        cc = c0 + offs_c
        mask = (cc[:, None] < C) & hw_mask[None, :]
        offs = cc[:, None] * HW + offs_hw[None, :]
        x = tl.load(x_base + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
        y = x * inv_rms[None, :]
        # y is never read back here: streaming stores (.cs) keep it from displacing x's lines in L2
        tl.store(y_base + offs, y.to(y_ptr.dtype.element_ty), mask=mask, cache_modifier=".cs")


def rmsnorm_chunked_c(x: torch.Tensor, eps: float, BLOCK_C: int, BLOCK_HW: int, num_warps: int) -> torch.Tensor:
    if x.dim() < 2:
        raise NotImplementedError("rmsnorm over dim 1 needs an input of at least 2 dims")
    x = x.contiguous()
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    B, C = x.shape[0], x.shape[1]
    HW = x.numel() // (B * C)
    if (C + BLOCK_C) * HW >= 2**31:
        raise NotImplementedError(f"C*H*W = {C * HW} (+ one chunk) >= 2^31 elements per sample exceeds int32 offsets")
    # A chunk taller than the padded channel count would only load masked rows.
    block_c = min(BLOCK_C, triton.next_power_of_2(C))
    n_hw_blocks = triton.cdiv(HW, BLOCK_HW)
    grid = (B * n_hw_blocks,)
    _rmsnorm_chunked_c_kernel[grid](
        x, out, C, HW, n_hw_blocks, eps,
        BLOCK_C=block_c, BLOCK_HW=BLOCK_HW, num_warps=num_warps,
    )
    return out


class ModelNew(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, BLOCK_C: int = 16, BLOCK_HW: int = 256,
                 num_warps: int = 4):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.BLOCK_C = BLOCK_C
        self.BLOCK_HW = BLOCK_HW
        self.num_warps = num_warps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmsnorm_chunked_c(x, self.eps, self.BLOCK_C, self.BLOCK_HW, self.num_warps)
