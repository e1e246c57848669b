"""One read of x at any C, with full-line rows: a channel column split over cooperating programs.

A whole column tile must fit one program's registers for a one-pass kernel, which caps the strip
width as C grows: at C = 4096 fp32 flat_1d holds 8 columns, a 32-byte piece of each channel row.
Here a group of SPLIT programs shares each [C, BLOCK_HW] tile of a wide strip (BLOCK_HW = 32 fp32 is
one 128-byte line per channel row). Program s of the group holds rows [s * CHUNK_C, (s + 1) * CHUNK_C)
in registers and publishes its BLOCK_HW partial sums of squares; once it has read all SPLIT partials
of the tile, every program normalizes its own rows from registers and stores them. x is read once
and written once.

The meeting point is the partials themselves: each is one 64-bit word, flag << 32 | fp32 bits. A
64-bit store is single-copy atomic, so a reader that sees the flag it waits for also sees the value:
no fence, no counter, no reset, and one L2 round trip after the last program arrives (an atomic
counter took about three: on the H200 at C4096 this ran at 0.78 of device copy against 0.73). The
flag is launch number << 16 | the group's tile iteration; slots are double-buffered by iteration
parity (a program cannot pass the next wait before all of its group have written that tile's words,
which they do only after reading this one). When the launch number wraps, the workspace is zeroed
(flag 0 never matches), so a stale word from an older launch never passes as fresh.

Every program of a group must be resident at once: the grid is persistent (groups walk the tiles with
a stride) and sized from the compiled kernel's registers and shared memory, and the launch is
cooperative where this Triton offers it, so a grid that could not all be resident fails at launch
instead of waiting forever. The Triton CPU interpreter runs programs one at a time, so there SPLIT is
1 (the flags, slots and wrap are exercised alone); the split itself is tested on the GPU.
"""
import dataclasses

import torch
import torch.nn as nn
import triton
import triton.language as tl

LAYOUT = ("1D persistent (groups·SPLIT,), SPLIT = C_PAD/CHUNK_C programs share each [C_PAD, BLOCK_HW] tile "
          "(one [CHUNK_C, BLOCK_HW] chunk each), partial sums of squares exchanged as flagged 64-bit words; "
          "one pass over x")

# Per-thread chunk = CHUNK_C * BLOCK_HW / (32 * num_warps) fp32 values (64); PREFETCH keeps two chunks live
# (the next tile's reads are issued before the wait). PROGRAMS_PER_SM is an upper bound: the launcher lowers
# it to what the compiled kernel's registers and shared memory let be resident. H200, C4096 fp32, of device
# copy: 0.776 (168 registers, 3 resident per SM), 0.778 with PREFETCH (252 registers, 2 resident), 0.69 for
# 128x32 with PREFETCH (154 registers). Tried and dropped there: 128x32 at 4 warps 0.65, 512x32 at 8 warps 0.67,
# polling one word per program before reading the slot 0.68, and an inline-PTX spin that lets Triton pipeline
# the tile loop through shared memory 0.11-0.39; the atomic-counter barrier this replaced 0.73; flat_1d's
# 8-column strip 0.68.
CONFIGS = [
    dict(CHUNK_C=256, BLOCK_HW=32, num_warps=4, PROGRAMS_PER_SM=4),
    dict(CHUNK_C=256, BLOCK_HW=32, num_warps=4, PROGRAMS_PER_SM=4, PREFETCH=True),
    dict(CHUNK_C=128, BLOCK_HW=32, num_warps=4, PROGRAMS_PER_SM=4, PREFETCH=True),
]
# SM count where x is not on a CUDA device (the Triton CPU interpreter).
FALLBACK_SM_COUNT = 4
# Registers are allocated per warp in units of this many (sm_70 and later).
REG_ALLOC_UNIT = 256
# Shared memory the driver reserves per resident program (sm_80 and later).
RESERVED_SHARED_PER_PROGRAM = 1024
# Launch numbers run 1..SEQ_MAX (the flag's high 16 bits stay positive); then the workspace is zeroed.
SEQ_MAX = 32767


# n_groups and seq unspecialized: the launcher compiles (warmup) before it knows the grid, and the kernel it
# gets must be the one it then launches, whatever the launch number
@triton.jit(do_not_specialize=["n_groups", "seq"])
def _rmsnorm_coop_c_kernel(
    x_ptr,
    y_ptr,
    ws_ptr,
    C,
    HW,
    n_hw_blocks,
    num_tiles,
    n_groups,
    seq,
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
    slot_offs = tl.arange(0, SPLIT)[:, None] * BLOCK_HW + arange_hw[None, :]
    flag_base = seq.to(tl.int64) * 65536
    k = 0
    if PREFETCH:
        # the group's first tile (a group past the last tile gets an empty, fully masked one)
        b = g // n_hw_blocks
        offs_hw = (g - b * n_hw_blocks) * BLOCK_HW + arange_hw
        x = tl.load(x_ptr + b.to(tl.int64) * C * HW + c_offs[:, None] + offs_hw[None, :],
                    mask=c_mask[:, None] & (offs_hw[None, :] < tl.where(g < num_tiles, HW, 0)), other=0.0)
    for tile in range(g, num_tiles, n_groups):
        b = tile // n_hw_blocks
        offs_hw = (tile - b * n_hw_blocks) * BLOCK_HW + arange_hw
        mask = c_mask[:, None] & (offs_hw[None, :] < HW)
        offs = c_offs[:, None] + offs_hw[None, :]
        base = b.to(tl.int64) * C * HW
        if not PREFETCH:
            x = tl.load(x_ptr + base + offs, mask=mask, other=0.0)
        xf = x.to(tl.float32)
        part = tl.sum(xf * xf, axis=0)
        flag = flag_base + (k & 0xFFFF)
        word = (flag << 32) | part.to(tl.uint32, bitcast=True).to(tl.int64)
        slot = ws_ptr + (g * 2 + (k & 1)).to(tl.int64) * (SPLIT * BLOCK_HW)
        tl.store(slot + s * BLOCK_HW + arange_hw, word)
        if PREFETCH:
            # the next tile's reads are in flight while the group's other programs arrive
            nxt = tile + n_groups
            nb = nxt // n_hw_blocks
            n_offs_hw = (nxt - nb * n_hw_blocks) * BLOCK_HW + arange_hw
            x = tl.load(x_ptr + nb.to(tl.int64) * C * HW + c_offs[:, None] + n_offs_hw[None, :],
                        mask=c_mask[:, None] & (n_offs_hw[None, :] < tl.where(nxt < num_tiles, HW, 0)), other=0.0)
        # volatile: served by L2, where the other SMs' words land; the last poll already holds every partial
        w = tl.load(slot + slot_offs, volatile=True)
        while tl.min(tl.min(((w >> 32) == flag).to(tl.int32), axis=1), axis=0) == 0:
            w = tl.load(slot + slot_offs, volatile=True)
        # every thread is done reading this slot before any stores the words of iteration k + 2 into it
        tl.debug_barrier()
        parts = (w & 0xFFFFFFFF).to(tl.uint32).to(tl.float32, bitcast=True)
        inv_rms = 1.0 / tl.sqrt(tl.sum(parts, axis=0) / C + eps)
        y = xf * inv_rms[None, :]
        tl.store(y_ptr + base + offs, y.to(y_ptr.dtype.element_ty), mask=mask)
        k += 1


def _cooperative_option() -> dict:
    """{'launch_cooperative_grid': True} where this Triton's CUDA backend has the option, else {}."""
    try:
        from triton.backends.nvidia.compiler import CUDAOptions
    except ImportError:
        return {}
    fields = {f.name for f in dataclasses.fields(CUDAOptions)}
    return {"launch_cooperative_grid": True} if "launch_cooperative_grid" in fields else {}


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


def _workspace(workspaces: dict, device, words: int) -> tuple[torch.Tensor, int]:
    """(flagged-word workspace of at least `words`, this launch's number) for `device`."""
    ws, seq = workspaces.get(device, (None, 0))
    seq += 1
    if ws is None or ws.numel() < words:
        ws, seq = torch.zeros(words, dtype=torch.int64, device=device), 1
    elif seq > SEQ_MAX:
        ws.zero_()
        seq = 1
    workspaces[device] = (ws, seq)
    return ws, seq


def rmsnorm_coop_c(x: torch.Tensor, eps: float, CHUNK_C: int, BLOCK_HW: int, num_warps: int, PROGRAMS_PER_SM: int,
                   PREFETCH: bool, residency: dict, workspaces: dict) -> torch.Tensor:
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
    meta = dict(SPLIT=split, CHUNK_C=chunk, BLOCK_HW=BLOCK_HW, PREFETCH=PREFETCH, num_warps=num_warps,
                **(_cooperative_option() if x.is_cuda else {}))
    per_sm, sm_count = PROGRAMS_PER_SM, FALLBACK_SM_COUNT
    if x.is_cuda:
        props = torch.cuda.get_device_properties(x.device)
        sm_count = props.multi_processor_count
        key = (x.device, x.dtype, HW % 16 == 0, C % 16 == 0, split, chunk, BLOCK_HW, num_warps, PREFETCH)
        if key not in residency:
            kernel = _rmsnorm_coop_c_kernel.warmup(
                x, out, torch.empty(1, dtype=torch.int64, device=x.device), C, HW, n_hw_blocks, num_tiles, 2, 1,
                eps, grid=(1,), **meta)
            # None while the pipeline records launches without compiling (and nothing runs then either)
            if kernel is None:
                return out
            residency[key] = _resident_per_sm(kernel, num_warps, props)
        per_sm = min(per_sm, residency[key])
    max_groups = per_sm * sm_count // split
    if max_groups < 1:
        raise NotImplementedError(
            f"SPLIT = C_PAD/CHUNK_C = {split} programs per tile exceed the {per_sm * sm_count} that can be "
            f"resident at once: C={C} is too large for this config")
    # Balance the rounds (every group gets the same tile count +-1), as stream_1d does.
    rounds = triton.cdiv(num_tiles, max_groups)
    n_groups = triton.cdiv(num_tiles, rounds)
    if num_tiles + n_groups >= 2**31:
        raise NotImplementedError(f"{num_tiles} tiles (+ one grid stride) >= 2^31 exceeds int32 tile indices")
    ws, seq = _workspace(workspaces, x.device, n_groups * 2 * split * BLOCK_HW)
    _rmsnorm_coop_c_kernel[(n_groups * split,)](x, out, ws, C, HW, n_hw_blocks, num_tiles, n_groups, seq, eps,
                                                **meta)
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
        self.residency = {}     # (device, dtype, alignment, tile) -> programs per SM of the compiled kernel
        self.workspaces = {}    # device -> (flagged partial-sum words, last launch number)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rmsnorm_coop_c(x, self.eps, self.CHUNK_C, self.BLOCK_HW, self.num_warps, self.PROGRAMS_PER_SM,
                              self.PREFETCH, self.residency, self.workspaces)
