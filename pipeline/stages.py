"""The optimisation stages of an LLM kernel loop: each a named metric set plus the text its prompt carries.

The core set is always collected; a stage adds its own metrics (`profile --stage NAME`). Names a GPU does
not report are found with `ncu --query-metrics` and skipped, and the skip is recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

CORE = [
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "lts__t_sector_hit_rate.pct",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "smsp__sass_average_data_bytes_per_sector_mem_global_op_ld.pct",
]


@dataclass(frozen=True)
class Stage:
    name: str
    focus: str
    checks: list[tuple[str, str]]          # (metric, what it tells / its target) shown in the prompt
    guidelines: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)   # collected, not described

    def metrics(self) -> list[str]:
        return list(dict.fromkeys([*CORE, *(m for m, _ in self.checks), *self.extra]))


STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("grid_and_parallel", "Optimize grid layout and parallel work distribution.",
          [("sm__throughput.avg.pct_of_peak_sustained_elapsed", "Overall SM utilization (target: >60%)"),
           ("launch__grid_size", "Total number of blocks (controlled by BLOCK_M/N)"),
           ("launch__block_size", "Threads per block"),
           ("launch__waves_per_multiprocessor", "Waves of blocks per SM (tail effects below ~2)")],
          ["2D outputs → 2D grid `(cdiv(M, BLOCK_M), cdiv(N, BLOCK_N))`; 1D ops → 1D grid",
           "3D outputs (e.g., batch×M×N) → 3D grid `(batch, cdiv(M, BLOCK_M), cdiv(N, BLOCK_N))`",
           "4D+ outputs → **flatten** to 3D: `(batch*dim1, dim2, dim3)` or `(cdiv(batch*dim1, BLOCK), dim2, dim3)`",
           "Prefer adding parallelism via batch/head/expert dims before reducing BLOCK sizes",
           "Only change grid if SM utilization is clearly low; otherwise keep original",
           "Always verify `grid = (...)` matches kernel indexing logic",
           "Never use more than 3 grid dimensions",
           "A memory-bound kernel at the bandwidth limit has low SM utilization by nature: judge it by its "
           "fraction of device-copy bandwidth, not by SM %"]),
    Stage("block_tiling", "Tune block sizes, warps and tiling for occupancy.",
          [("launch__occupancy_limit_blocks", "Occupancy limit from blocks per SM"),
           ("launch__occupancy_limit_registers", "Occupancy limit from registers"),
           ("launch__occupancy_limit_shared_mem", "Occupancy limit from shared memory"),
           ("launch__registers_per_thread", "Registers per thread (spills above the budget)"),
           ("launch__shared_mem_per_block_static", "Static shared memory per block")],
          ["Target: warps active > 50 % where the kernel is latency-bound",
           "Keep per-thread tiles small enough not to spill registers"]),
    Stage("memory_access", "Make global memory accesses coalesced and cache-friendly.",
          [("l1tex__t_sector_hit_rate.pct", "L1 hit rate"),
           ("smsp__sass_average_data_bytes_per_sector_mem_global_op_st.pct",
            "Useful bytes per sector for global stores (100 % = fully coalesced)")],
          ["Contiguous, vectorised loads along the fastest-varying dimension",
           "Read each input byte once where the working set allows"]),
    Stage("advanced_memory", "Hide latency: pipelining, barriers, tensor cores.",
          [("smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct", "Stalls on shared memory / MIO"),
           ("smsp__warp_issue_stalled_barrier_per_warp_active.pct", "Stalls at barriers"),
           ("sm__inst_executed_pipe_tensor.avg.pct_of_peak_sustained_active", "Tensor pipe utilisation")],
          ["Use num_stages to pipeline loads for loops over K", "Use tl.dot for matrix products"]),
]}
