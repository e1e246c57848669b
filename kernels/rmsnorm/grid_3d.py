"""One pass, 3D grid (batch, H tiles, W tiles).

Each program owns one batch index and a BLOCK_H x BLOCK_W spatial tile, flattened
to BLOCK_H*BLOCK_W columns (BLOCK_W contiguous elements per row segment), and
loads the [C_PAD, BLOCK_H*BLOCK_W] channel tile once: x is read once and
written once.
"""
import torch
import torch.nn as nn
import triton
import triton.language as tl

LAYOUT = ("3D (B, cdiv(H, BLOCK_H), cdiv(W, BLOCK_W)), one [C_PAD, BLOCK_H·BLOCK_W] tile "
          "per program, one pass over C")

# Per-thread tile = C_PAD * BLOCK_H * BLOCK_W / (32 * num_warps) fp32 values: <= 64 at C = 64.
CONFIGS = [
    dict(BLOCK_H=1, BLOCK_W=128, num_warps=4),
    dict(BLOCK_H=2, BLOCK_W=64, num_warps=4),
    dict(BLOCK_H=4, BLOCK_W=32, num_warps=4),
    dict(BLOCK_H=2, BLOCK_W=128, num_warps=8),
    dict(BLOCK_H=8, BLOCK_W=16, num_warps=4),
]
# Hard limit used to refuse a shape: min(128, 65536 // (64 * num_warps)) fp32 values per thread,
# i.e. at most half of the registers a thread can get (255, or 65536 / threads per program).
MAX_TILE_PER_THREAD = 128
MAX_GRID_YZ = 65535


@triton.jit
def _rmsnorm_grid_3d_kernel(
    x_ptr,
    y_ptr,
    C,
    H,
    W,
    eps,
    C_PAD: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_W: tl.constexpr,
):
    b = tl.program_id(0)
    pid_h = tl.program_id(1)
    pid_w = tl.program_id(2)
    HW = H * W
    base = b.to(tl.int64) * C * HW
    offs_s = tl.arange(0, BLOCK_H * BLOCK_W)
    offs_h = pid_h * BLOCK_H + offs_s // BLOCK_W
    offs_w = pid_w * BLOCK_W + offs_s % BLOCK_W
    s_mask = (offs_h < H) & (offs_w < W)
    offs_c = tl.arange(0, C_PAD)
    mask = (offs_c[:, None] < C) & s_mask[None, :]
    offs = offs_c[:, None] * HW + (offs_h * W + offs_w)[None, :]
    x = tl.load(x_ptr + base + offs, mask=mask, other=0.0).to(tl.float32)
    mean_sq = tl.sum(x * x, axis=0) / C
    inv_rms = 1.0 / tl.sqrt(mean_sq + eps)
    y = x * inv_rms[None, :]
    tl.store(y_ptr + base + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def rmsnorm_grid_3d(x: torch.Tensor, eps: float, BLOCK_H: int, BLOCK_W: int, num_warps: int) -> torch.Tensor:
    if x.dim() < 2:
        raise NotImplementedError("rmsnorm over dim 1 needs an input of at least 2 dims")
    x = x.contiguous()
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    B, C = x.shape[0], x.shape[1]
    # (B, C, H, W); other ranks: H = dim 2 (1 if absent), W = product of the rest.
    H = x.shape[2] if x.dim() >= 3 else 1
    W = x.numel() // (B * C * H)
    C_PAD = triton.next_power_of_2(C)
    per_thread = C_PAD * BLOCK_H * BLOCK_W // (32 * num_warps)
    max_tile = min(MAX_TILE_PER_THREAD, 65536 // (64 * num_warps))
    if per_thread > max_tile:
        raise NotImplementedError(
            f"one-pass tile C_PAD*BLOCK_H*BLOCK_W/(32*num_warps) = {C_PAD}*{BLOCK_H}*{BLOCK_W}/(32*{num_warps}) = "
            f"{per_thread} fp32 values per thread exceeds {max_tile} (register spill); "
            f"C={C} is too large for this config"
        )
    if C_PAD * H * W >= 2**31:
        raise NotImplementedError(f"C_PAD*H*W = {C_PAD * H * W} >= 2^31 elements per sample exceeds int32 offsets")
    grid = (B, triton.cdiv(H, BLOCK_H), triton.cdiv(W, BLOCK_W))
    if grid[1] > MAX_GRID_YZ or grid[2] > MAX_GRID_YZ:
        raise NotImplementedError(f"grid {grid} exceeds the y/z grid limit {MAX_GRID_YZ}")
    _rmsnorm_grid_3d_kernel[grid](
        x, out, C, H, W, eps,
        C_PAD=C_PAD, BLOCK_H=BLOCK_H, BLOCK_W=BLOCK_W, num_warps=num_warps,
    )
    return out


class ModelNew(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, BLOCK_H: int = 1, BLOCK_W: int = 128,
                 num_warps: int = 4):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.BLOCK_H = BLOCK_H
        self.BLOCK_W = BLOCK_W
        self.num_warps = num_warps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmsnorm_grid_3d(x, self.eps, self.BLOCK_H, self.BLOCK_W, self.num_warps)
