"""One read of x at any C, with full-line rows: a channel column split over cooperating programs.

A whole column tile must fit one program's registers for a one-pass kernel, which caps the strip
width as C grows: at C = 4096 fp32 flat_1d holds 8 columns, a 32-byte piece of each channel row (H100:
0.77 of device copy). Here a group of SPLIT programs shares each [C, BLOCK_HW] tile of a wide strip
(BLOCK_HW = 32 fp32 is one 128-byte line per channel row). Program s of the group holds rows
[s * CHUNK_C, (s + 1) * CHUNK_C) in registers, writes its partial sum of squares (BLOCK_HW values) to
a workspace and waits at the group's barrier (an atomic counter in global memory) for the other
SPLIT - 1 partials; then every program normalizes its own rows from registers and stores them. x is
read once and written once.

The grid is persistent (groups walk the tiles with a stride) and sized so that all programs are
resident at once, from the compiled kernel's registers and shared memory: a barrier among programs
that are not all running would never open. The partials are double-buffered (a program that runs
ahead writes the other slot), and the last program of a group to finish resets its counter to 0, so
no launch needs a memset. The Triton CPU interpreter runs programs one at a time, so there SPLIT is 1
(the barrier is passed alone); the split itself is tested on the GPU.
"""
import torch
import torch.nn as nn
import triton
import triton.language as tl

LAYOUT = ("1D persistent (groups·SPLIT,), SPLIT = C_PAD/CHUNK_C programs share each [C_PAD, BLOCK_HW] tile "
          "(one [CHUNK_C, BLOCK_HW] chunk each), partial sums of squares meet at an atomic-counter "
          "barrier per tile; one pass over x")

# Per-thread chunk = CHUNK_C * BLOCK_HW / (32 * num_warps) fp32 values (64, 64, 32); PREFETCH keeps two
# chunks live (the next tile's reads are issued before the barrier wait). PROGRAMS_PER_SM is an upper
# bound: the launcher lowers it to what the compiled kernel's registers and shared memory let be
# resident. H200, C4096 fp32, of device copy: 0.73 (164 registers, 3 resident per SM), 0.69 (247
# registers), 0.66; tried and dropped: 512x32 at 8 warps 0.64, 256x64 at 8 warps 0.59, 128x32 at 4
# warps with PREFETCH 0.65, 512x32 at 16 warps with PREFETCH 0.62; flat_1d's 8-column strip 0.68.
# 128x64: rows of 256 bytes; a plain copy of x in [128, 64] tiles ran at 0.96 of device copy on an H200, in
# [256, 32] tiles at 0.88-0.90 (C4096 fp32).
CONFIGS = [
    dict(CHUNK_C=256, BLOCK_HW=32, num_warps=4, PROGRAMS_PER_SM=4),
    dict(CHUNK_C=128, BLOCK_HW=64, num_warps=4, PROGRAMS_PER_SM=4),
    dict(CHUNK_C=256, BLOCK_HW=32, num_warps=4, PROGRAMS_PER_SM=4, PREFETCH=True),
    dict(CHUNK_C=256, BLOCK_HW=32, num_warps=8, PROGRAMS_PER_SM=2, PREFETCH=True),
]
# SM count where x is not on a CUDA device (the Triton CPU interpreter).
FALLBACK_SM_COUNT = 4
# Barrier counters (one per group) allocated once per device; groups are at most SMs * 32 / SPLIT.
MAX_GROUPS = 8192
# Registers are allocated per warp in units of this many (sm_70 and later).
REG_ALLOC_UNIT = 256
# Shared memory the driver reserves per resident program (sm_80 and later).
RESERVED_SHARED_PER_PROGRAM = 1024


# n_groups unspecialized: the launcher compiles (warmup) before it knows the grid, and the kernel it gets
# must be the one it then launches
@triton.jit(do_not_specialize=["n_groups"])
def _rmsnorm_coop_c_kernel(
    x_ptr,
    y_ptr,
    ws_ptr,
    cnt_ptr,
    C,
    HW,
    n_hw_blocks,
    num_tiles,
    n_groups,
    eps,
    SPLIT: tl.constexpr,
    CHUNK_C: tl.constexpr,
    BLOCK_HW: tl.constexpr,
    PREFETCH: tl.constexpr,
):
    pid = tl.program_id(0)
    g = pid // SPLIT
    s = pid - g * SPLIT
    offs_c = s * CHUNK_C + tl.arange(0, CHUNK_C)
    c_mask = offs_c < C
    c_offs = offs_c * HW
    arange_hw = tl.arange(0, BLOCK_HW)
    arange_s = tl.arange(0, SPLIT)
    cnt = cnt_ptr + g
    k = 0
    if PREFETCH:
        # the group's first tile (a group past the last tile gets an empty, fully masked one)
        b = g // n_hw_blocks
        offs_hw = (g - b * n_hw_blocks) * BLOCK_HW + arange_hw
        x = tl.load(x_ptr + b.to(tl.int64) * C * HW + c_offs[:, None] + offs_hw[None, :],
                    mask=c_mask[:, None] & (offs_hw[None, :] < tl.where(g < num_tiles, HW, 0)), other=0.0,
                    eviction_policy="evict_first")
    for tile in range(g, num_tiles, n_groups):
        b = tile // n_hw_blocks
        offs_hw = (tile - b * n_hw_blocks) * BLOCK_HW + arange_hw
        mask = c_mask[:, None] & (offs_hw[None, :] < HW)
        offs = c_offs[:, None] + offs_hw[None, :]
        base = b.to(tl.int64) * C * HW
        if not PREFETCH:
            x = tl.load(x_ptr + base + offs, mask=mask, other=0.0, eviction_policy="evict_first")
        xf = x.to(tl.float32)
        slot = ws_ptr + (g * 2 + k % 2) * SPLIT * BLOCK_HW
        tl.store(slot + s * BLOCK_HW + arange_hw, tl.sum(xf * xf, axis=0))
        # every thread's partial is written before the arrival is announced (release after a CTA barrier)
        tl.debug_barrier()
        k += 1
        tl.atomic_add(cnt, 1, sem="release")
        if PREFETCH:
            # the next tile's reads are in flight while the group's other programs arrive
            nxt = tile + n_groups
            nb = nxt // n_hw_blocks
            n_offs_hw = (nxt - nb * n_hw_blocks) * BLOCK_HW + arange_hw
            x = tl.load(x_ptr + nb.to(tl.int64) * C * HW + c_offs[:, None] + n_offs_hw[None, :],
                        mask=c_mask[:, None] & (n_offs_hw[None, :] < tl.where(nxt < num_tiles, HW, 0)),
                        other=0.0, eviction_policy="evict_first")
        seen = tl.atomic_add(cnt, 0, sem="acquire")
        while seen < k * SPLIT:
            seen = tl.atomic_add(cnt, 0, sem="acquire")
        # .cg: the partials were written by other SMs; an L1 line from two tiles ago would be stale
        parts = tl.load(slot + arange_s[:, None] * BLOCK_HW + arange_hw[None, :], cache_modifier=".cg")
        inv_rms = 1.0 / tl.sqrt(tl.sum(parts, axis=0) / C + eps)
        y = xf * inv_rms[None, :]
        tl.store(y_ptr + base + offs, y.to(y_ptr.dtype.element_ty), mask=mask, cache_modifier=".cs")
    # Every program of the group adds one more on leaving; the last one out (all others are past their
    # last wait) puts the counter back to 0 for the next launch.
    left = tl.atomic_add(cnt, 1, sem="acq_rel")
    tl.atomic_xchg(cnt, 0, mask=left == k * SPLIT + SPLIT - 1)


def _resident_per_sm(kernel, num_warps: int, props) -> int:
    """Programs of this compiled kernel that one SM holds at once (registers, shared memory, warps)."""
    regs = getattr(kernel, "n_regs", None)
    if not regs:
        kernel._init_handles()      # Triton reads registers and spills when it loads the binary
        regs = kernel.n_regs
    per_warp = -(-regs * 32 // REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    by_regs = (props.regs_per_multiprocessor // per_warp) // num_warps
    by_warps = props.max_threads_per_multi_processor // (32 * num_warps)
    shared = kernel.metadata.shared + RESERVED_SHARED_PER_PROGRAM
    by_shared = props.shared_memory_per_multiprocessor // shared
    return max(0, min(by_regs, by_warps, by_shared, 32))


def rmsnorm_coop_c(x: torch.Tensor, eps: float, CHUNK_C: int, BLOCK_HW: int, num_warps: int, PROGRAMS_PER_SM: int,
                   PREFETCH: bool, state: dict) -> torch.Tensor:
    if x.dim() < 2:
        raise NotImplementedError("rmsnorm over dim 1 needs an input of at least 2 dims")
    x = x.contiguous()
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    B, C = x.shape[0], x.shape[1]
    HW = x.numel() // (B * C)
    C_PAD = triton.next_power_of_2(C)
    # Programs of a group wait for each other, so they must run concurrently: the interpreter runs one at
    # a time, hence one program per tile there.
    chunk = C_PAD if not x.is_cuda else min(CHUNK_C, C_PAD)
    split = C_PAD // chunk
    if (C_PAD + chunk) * HW >= 2**31:
        raise NotImplementedError(f"C_PAD*H*W = {C_PAD * HW} (+ one chunk) >= 2^31 elements per sample exceeds "
                                  f"int32 offsets")
    n_hw_blocks = triton.cdiv(HW, BLOCK_HW)
    num_tiles = B * n_hw_blocks
    if x.is_cuda:
        props = torch.cuda.get_device_properties(x.device)
        sm_count = props.multi_processor_count
    else:
        props, sm_count = None, FALLBACK_SM_COUNT
    cnt = state.get(x.device)
    if cnt is None:
        # zeroed once; every launch leaves it at 0
        cnt = state[x.device] = torch.zeros(MAX_GROUPS, dtype=torch.int32, device=x.device)
    per_sm = PROGRAMS_PER_SM
    if props is not None:
        key = (x.device, x.dtype, split, chunk, BLOCK_HW, num_warps, PREFETCH)
        if key not in state:
            kernel = _rmsnorm_coop_c_kernel.warmup(
                x, out, torch.empty(1, dtype=torch.float32, device=x.device), cnt, C, HW, n_hw_blocks,
                num_tiles, 2, eps,
                SPLIT=split, CHUNK_C=chunk, BLOCK_HW=BLOCK_HW, PREFETCH=PREFETCH, num_warps=num_warps, grid=(1,))
            # None while the pipeline records launches without compiling (and nothing runs then either)
            if kernel is None:
                return out
            state[key] = _resident_per_sm(kernel, num_warps, props)
        per_sm = min(per_sm, state[key])
    max_groups = min(MAX_GROUPS, per_sm * sm_count // split)
    if max_groups < 1:
        raise NotImplementedError(
            f"SPLIT = C_PAD/CHUNK_C = {split} programs per tile exceed the {per_sm * sm_count} that can be "
            f"resident at once: C={C} is too large for this config")
    # Balance the rounds (every group gets the same tile count +-1), as stream_1d does.
    rounds = triton.cdiv(num_tiles, max_groups)
    n_groups = triton.cdiv(num_tiles, rounds)
    if num_tiles + n_groups >= 2**31:
        raise NotImplementedError(f"{num_tiles} tiles (+ one grid stride) >= 2^31 exceeds int32 tile indices")
    ws = torch.empty(n_groups * 2 * split * BLOCK_HW, dtype=torch.float32, device=x.device)
    _rmsnorm_coop_c_kernel[(n_groups * split,)](
        x, out, ws, cnt, C, HW, n_hw_blocks, num_tiles, n_groups, eps,
        SPLIT=split, CHUNK_C=chunk, BLOCK_HW=BLOCK_HW, PREFETCH=PREFETCH, num_warps=num_warps,
    )
    return out


class ModelNew(nn.Module):
    def __init__(self, num_features: int, eps: float = 1e-5, CHUNK_C: int = 256, BLOCK_HW: int = 32,
                 num_warps: int = 4, PROGRAMS_PER_SM: int = 4, PREFETCH: bool = False):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.CHUNK_C = CHUNK_C
        self.BLOCK_HW = BLOCK_HW
        self.num_warps = num_warps
        self.PROGRAMS_PER_SM = PROGRAMS_PER_SM
        self.PREFETCH = PREFETCH
        # device -> barrier counters (kept at 0 between launches); (device, dtype, tile) -> programs per SM
        self.state = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmsnorm_coop_c(x, self.eps, self.CHUNK_C, self.BLOCK_HW, self.num_warps, self.PROGRAMS_PER_SM,
                              self.PREFETCH, self.state)
