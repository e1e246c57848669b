"""Two passes over C per column block, persistent grid sized so the blocks in flight stay in L2.

For large C (4096 channels at 64x64) a [C, BLOCK_HW] column does not fit in
registers, and chunked_c's two passes read x twice from DRAM because the
blocks resident at once (all programs x C x BLOCK_HW x bytes) overflow L2.
Here a persistent grid of n_programs <= PROGRAMS_PER_SM x SMs programs walks
the (batch, column block) pairs with a grid stride; for each block
  pass 1 walks C in [BLOCK_C, BLOCK_HW] chunks, loads with evict_last (keep the
    lines in L2) and accumulates x*x in an fp32 [BLOCK_C, BLOCK_HW] accumulator
    (reduced over C once, after the loop: no cross-warp reduction in the loop);
  pass 2 walks C again, last chunk first (the most recently loaded lines are the
    likeliest to still be in L1/L2), loads with evict_first, multiplies by
    1/rms and stores (.cs, streaming).
The L2 working set is n_programs x C x BLOCK_HW' x element size. At launch
PROGRAMS_PER_SM is first lowered where the programs could not all be resident
at once (register estimate), then the column block is narrowed (BLOCK_HW'
halves while BLOCK_C' doubles, so registers per thread stay the same; never
below one 32-byte sector per row segment, i.e. 8 fp32 / 16 fp16 columns) and
then PROGRAMS_PER_SM lowered until the working set fits L2_FRACTION of the
device's L2 (torch.cuda.get_device_properties(dev).L2_cache_size). If it still
does not fit, the kernel runs anyway (correct, but pass 2 then re-reads part of
x from DRAM).

For C <= BLOCK_C the whole column is one chunk and the strip is widened to
BLOCK_C·BLOCK_HW / C_PAD columns (pass 2 re-reads the tile from L1/L2): every C
works, but for small C the one-pass variants are the better choice.

The grid is balanced: n_programs = cdiv(num_blocks, rounds) with rounds =
cdiv(num_blocks, max programs), so every program handles the same number of
blocks (+-1) and no short last round runs on a few SMs (C4096 fp32: 4096
blocks of 8 columns -> 128 programs x 32 blocks instead of 132 x 31.03).
"""
import torch
import torch.nn as nn
import triton
import triton.language as tl

LAYOUT = ("1D persistent (balanced <= PROGRAMS_PER_SM·SMs,), grid-stride loop over (batch, column block "
          "[C, BLOCK_HW']); per block 2 passes over C in [BLOCK_C', BLOCK_HW'] chunks (evict_last sum of "
          "squares, then evict_first normalize, reversed); BLOCK_HW'/PROGRAMS_PER_SM' shrunk at launch so "
          "programs·C·BLOCK_HW'·bytes <= L2_FRACTION·L2")

# Chunk = BLOCK_C * BLOCK_HW elements, kept constant at launch (BLOCK_HW' * BLOCK_C'); halved
# when H*W % 16 != 0 (scalar accesses need ~2x the registers). Per thread: chunk / (32 * num_warps)
# fp32 values plus an accumulator of the same size. sm_90, ptxas 12.9, fp32, no spills:
# 1024x8 (8 warps) 108 registers, 2048x8 (8 warps) 251, 512x16 (8 warps) 108, 512x8 (4 warps) 114.
# Bytes in flight per SM in pass 1 (one chunk per program): 32 KB, 64 KB, 2 x 32 KB, 32 KB, 2 x 16 KB.
# C4096 fp32 on an H100 (132 SMs, 50 MB L2): 4096 column blocks of 8 columns (128 KB each):
# 0.5 -> 128 programs x 32 blocks, 16 MiB in L2; 0.75 with 2 programs/SM -> 256 x 16, 32 MiB;
# 512x16 at 0.75 -> 128 programs x 16 blocks of 16 columns, 32 MiB.
CONFIGS = [
    dict(BLOCK_C=1024, BLOCK_HW=8, PROGRAMS_PER_SM=1, num_warps=8, L2_FRACTION=0.5),
    dict(BLOCK_C=2048, BLOCK_HW=8, PROGRAMS_PER_SM=1, num_warps=8, L2_FRACTION=0.5),
    dict(BLOCK_C=1024, BLOCK_HW=8, PROGRAMS_PER_SM=2, num_warps=8, L2_FRACTION=0.75),
    dict(BLOCK_C=512, BLOCK_HW=16, PROGRAMS_PER_SM=1, num_warps=8, L2_FRACTION=0.75),
    dict(BLOCK_C=512, BLOCK_HW=8, PROGRAMS_PER_SM=2, num_warps=4, L2_FRACTION=0.75),
]
# SM count and L2 size used when x is not on a CUDA device (the Triton CPU interpreter).
FALLBACK_SM_COUNT = 4
FALLBACK_L2_BYTES = 50 * 2**20
# Narrowest row segment, in bytes: one 32-byte DRAM/L2 sector.
MIN_SEGMENT_BYTES = 32


@triton.jit
def _rmsnorm_l2_twopass_kernel(
    x_ptr,
    y_ptr,
    C,
    HW,
    n_hw_blocks,
    num_blocks,
    eps,
    BLOCK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    offs_c = tl.arange(0, BLOCK_C)
    arange_hw = tl.arange(0, BLOCK_HW)
    n_chunks = tl.cdiv(C, BLOCK_C)
    for blk_id in range(pid, num_blocks, nprog):
        b = blk_id // n_hw_blocks
        offs_hw = (blk_id - b * n_hw_blocks) * BLOCK_HW + arange_hw
        hw_mask = offs_hw < HW
        base = b.to(tl.int64) * C * HW
        x_base = x_ptr + base
        y_base = y_ptr + base

        acc = tl.zeros([BLOCK_C, BLOCK_HW], dtype=tl.float32)
        for c0 in range(0, C, BLOCK_C):
            cc = c0 + offs_c
            mask = (cc[:, None] < C) & hw_mask[None, :]
            offs = cc[:, None] * HW + offs_hw[None, :]
            x = tl.load(x_base + offs, mask=mask, other=0.0, eviction_policy="evict_last").to(tl.float32)
            acc += x * x
        inv_rms = 1.0 / tl.sqrt(tl.sum(acc, axis=0) / C + eps)

        for i in range(0, n_chunks):
            cc = (n_chunks - 1 - i) * BLOCK_C + offs_c
            mask = (cc[:, None] < C) & hw_mask[None, :]
            offs = cc[:, None] * HW + offs_hw[None, :]
            x = tl.load(x_base + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
            y = x * inv_rms[None, :]
            tl.store(y_base + offs, y.to(y_ptr.dtype.element_ty), mask=mask, cache_modifier=".cs")


def _plan(B: int, C: int, HW: int, elem_bytes: int, BLOCK_C: int, BLOCK_HW: int, PROGRAMS_PER_SM: int,
          num_warps: int, sm_count: int, l2_bytes: int, L2_FRACTION: float) -> dict:
    """Launch parameters: chunk shape, programs, and the resulting L2 working set in bytes."""
    c_pad = triton.next_power_of_2(C)
    aligned = HW % 16 == 0  # Triton specializes H*W % 16 == 0: 16-byte vector accesses
    chunk = BLOCK_C * BLOCK_HW if aligned else max(1, BLOCK_C * BLOCK_HW // 2)
    block_c = min(BLOCK_C, c_pad, chunk)
    # Small C: the column is one chunk; widen the strip to keep the chunk size (not past HW).
    block_hw = max(1, min(chunk // block_c, max(BLOCK_HW, triton.next_power_of_2(HW))))
    min_hw = max(1, MIN_SEGMENT_BYTES // elem_bytes)
    # Row segments of at least one sector (fp16/bf16: 16 columns), where HW allows.
    while block_hw < min(min_hw, triton.next_power_of_2(HW)) and block_c > 1:
        block_hw *= 2
        block_c //= 2
    # All programs must be resident at once. Registers per thread from sm_90 compiles: ~2 per
    # live fp32 value (chunk + accumulator) with vector accesses, ~4 with scalar ones.
    live = 2 * max(1, block_c * block_hw // (32 * num_warps))
    regs = min(256, (2 if aligned else 4) * live)
    pps = max(1, min(PROGRAMS_PER_SM, 65536 // (32 * num_warps * regs)))
    budget = L2_FRACTION * l2_bytes

    def n_programs(bhw, p):
        num_blocks = B * triton.cdiv(HW, bhw)
        rounds = triton.cdiv(num_blocks, max(1, p * sm_count))
        return triton.cdiv(num_blocks, rounds)

    def working_set(bhw, p):
        return n_programs(bhw, p) * C * bhw * elem_bytes

    while working_set(block_hw, pps) > budget and block_hw // 2 >= min_hw and block_c < c_pad:
        block_hw //= 2
        block_c *= 2
    while working_set(block_hw, pps) > budget and pps > 1:
        pps -= 1
    return dict(block_c=block_c, block_hw=block_hw, programs_per_sm=pps,
                n_programs=n_programs(block_hw, pps), n_hw_blocks=triton.cdiv(HW, block_hw),
                working_set=working_set(block_hw, pps), fits=working_set(block_hw, pps) <= budget)


def rmsnorm_l2_twopass(x: torch.Tensor, eps: float, BLOCK_C: int, BLOCK_HW: int, PROGRAMS_PER_SM: int,
                       num_warps: int, L2_FRACTION: float) -> torch.Tensor:
    if x.dim() < 2:
        raise NotImplementedError("rmsnorm over dim 1 needs an input of at least 2 dims")
    x = x.contiguous()
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    B, C = x.shape[0], x.shape[1]
    HW = x.numel() // (B * C)
    if x.is_cuda:
        props = torch.cuda.get_device_properties(x.device)
        sm_count, l2_bytes = props.multi_processor_count, props.L2_cache_size
    else:
        sm_count, l2_bytes = FALLBACK_SM_COUNT, FALLBACK_L2_BYTES
    plan = _plan(B, C, HW, x.element_size(), BLOCK_C, BLOCK_HW, PROGRAMS_PER_SM, num_warps, sm_count,
                 l2_bytes, L2_FRACTION)
    block_c, block_hw = plan["block_c"], plan["block_hw"]
    if (C + block_c) * HW >= 2**31:
        raise NotImplementedError(f"C*H*W = {C * HW} (+ one chunk) >= 2^31 elements per sample exceeds int32 offsets")
    num_blocks = B * plan["n_hw_blocks"]
    if num_blocks + plan["n_programs"] >= 2**31:
        raise NotImplementedError(f"{num_blocks} column blocks >= 2^31 exceeds int32 block indices")
    _rmsnorm_l2_twopass_kernel[(plan["n_programs"],)](
        x, out, C, HW, plan["n_hw_blocks"], num_blocks, eps,
        BLOCK_C=block_c, BLOCK_HW=block_hw, num_warps=num_warps,
    )
    return out


class ModelNew(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, BLOCK_C: int = 1024, BLOCK_HW: int = 8,
                 PROGRAMS_PER_SM: int = 1, num_warps: int = 8, L2_FRACTION: float = 0.5):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.BLOCK_C = BLOCK_C
        self.BLOCK_HW = BLOCK_HW
        self.PROGRAMS_PER_SM = PROGRAMS_PER_SM
        self.num_warps = num_warps
        self.L2_FRACTION = L2_FRACTION

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmsnorm_l2_twopass(x, self.eps, self.BLOCK_C, self.BLOCK_HW, self.PROGRAMS_PER_SM,
                                  self.num_warps, self.L2_FRACTION)
