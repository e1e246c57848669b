"""The metric catalogue: every ncu metric the project knows, one entry each.

An entry gives the ncu name, the label and unit the pages show, how a value is written, the optimisation
stages whose prompts check it (pipeline/stages.py) and whether every run collects it. The default metric set
(`ncu.metrics`), the stage metric sets, the variants table's metric columns and the chart labels are all read
from here: a metric with `column` set appears on the op pages from its entry alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# names the analysis reads (pipeline/analysis.py re-exports them)
DUR = "gpu__time_duration.sum"
SM = "sm__throughput.avg.pct_of_peak_sustained_elapsed"
WARPS = "sm__warps_active.avg.pct_of_peak_sustained_active"
THEORETICAL = "sm__maximum_warps_per_active_cycle_pct"
MEM = "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed"
DRAM = "dram__throughput.avg.pct_of_peak_sustained_elapsed"
READ, WRITE = "dram__bytes_read.sum", "dram__bytes_write.sum"
L2_HIT = "lts__t_sector_hit_rate.pct"
WAVES = "launch__waves_per_multiprocessor"

PCT = ".1f"

# ncu's FLOP counters and the operations each event counts, as ncu's roofline sections weigh them: a fused
# multiply-add is two. The tensor-core path's counters count operations already: on the H100 (ncu 2025.3.1)
# sm__ops_path_tensor_src_fp16.sum read exactly 2·M·N·K for a 4096³ matmul. Names ncu does not list for a GPU
# are skipped there (ncu.available); TENSOR_INST then tells whether the tensor path ran uncounted.
FLOP_WEIGHTS: dict[str, int] = {
    **{f"smsp__sass_thread_inst_executed_op_{p}{op}_pred_on.sum": w
       for p in "fhd" for op, w in (("fma", 2), ("add", 1), ("mul", 1))},
    **{f"sm__ops_path_tensor_src_{src}.sum": 1 for src in ("fp16", "bf16_dst_fp32", "tf32_dst_fp32", "fp8", "fp64")},
}
TENSOR_INST = "sm__inst_executed_pipe_tensor.sum"


@dataclass(frozen=True)
class Metric:
    name: str                   # the ncu metric name
    label: str                  # short label: column header, legend
    unit: str                   # ncu's unit, as the results file stores it
    fmt: str = ",.0f"           # format spec of a value on a page ("bytes": decimal byte units)
    what: str = ""              # a chart axis's words for it
    note: str = ""              # appended to the name in the column's tooltip
    default: bool = True        # collected for every kernel (the default of ncu.metrics)
    column: bool = False        # a column of its own in the variants table
    core: bool = False          # collected by every optimisation stage
    stages: dict[str, str] = field(default_factory=dict)    # stage -> what its prompt says the metric tells

    @property
    def title(self) -> str:
        """The column's tooltip: the metric, and what to read it as."""
        return self.name + self.note

    @property
    def axis(self) -> str:
        """A chart axis label: the words, then the metric's base name."""
        return f"{self.what} ({self.name.split('.')[0]})"


METRICS: list[Metric] = [
    Metric(DUR, "ncu µs", "ns", what="kernel duration under ncu (base clocks)"),
    Metric(SM, "SM %", "%", PCT, "SM throughput, % of peak", column=True, core=True,
           stages={"grid_and_parallel": "Overall SM utilization (target: >60%)"}),
    Metric(WARPS, "achieved occupancy %", "%", PCT, "achieved occupancy, % of peak warps", core=True),
    Metric(THEORETICAL, "theoretical occupancy %", "%", PCT, "theoretical occupancy, % of peak warps"),
    Metric(MEM, "L1/L2/DRAM (memory system) %", "%", PCT, "memory system throughput, % of peak",
           ": the busiest of L1/shared, L2 and DRAM", column=True),
    Metric(DRAM, "DRAM %", "%", PCT, "DRAM throughput, % of peak",
           " (ncu, base clocks): the DRAM % the terminal summary prints", column=True, core=True),
    Metric(READ, "DRAM read", "byte", "bytes", "DRAM bytes read"),
    Metric(WRITE, "DRAM written", "byte", "bytes", "DRAM bytes written"),
    Metric(L2_HIT, "L2 hit %", "%", PCT, "L2 hit rate, %", column=True, core=True),
    Metric("launch__grid_size", "grid size", "", what="blocks in the grid",
           stages={"grid_and_parallel": "Total number of blocks (controlled by BLOCK_M/N)"}),
    *(Metric(f"launch__grid_dim_{a}", f"grid {a}", "", what=f"grid blocks along {a}") for a in "xyz"),
    Metric("launch__block_size", "block size", "", what="threads per block",
           stages={"grid_and_parallel": "Threads per block"}),
    *(Metric(f"launch__block_dim_{a}", f"block {a}", "block", what=f"block threads along {a}") for a in "xyz"),
    Metric(WAVES, "waves", "", ".2f", "waves per SM", column=True,
           stages={"grid_and_parallel": "Waves of blocks per SM (tail effects below ~2)"}),
    Metric("launch__registers_per_thread", "registers / thread", "register/thread", ".0f", "registers per thread",
           stages={"block_tiling": "Registers per thread (spills above the budget)"}),
    Metric("launch__shared_mem_per_block", "smem / block", "byte/block", "bytes", "shared memory per block"),
    Metric("launch__occupancy_limit_registers", "blocks/SM by registers", "block",
           what="blocks per SM the registers allow", stages={"block_tiling": "Occupancy limit from registers"}),
    Metric("launch__occupancy_limit_shared_mem", "blocks/SM by shared memory", "block",
           what="blocks per SM the shared memory allows",
           stages={"block_tiling": "Occupancy limit from shared memory"}),
    Metric("launch__occupancy_limit_warps", "blocks/SM by warps", "block", what="blocks per SM the warp slots allow"),
    Metric("launch__occupancy_limit_blocks", "blocks/SM by blocks", "block", what="blocks per SM the block slots allow",
           stages={"block_tiling": "Occupancy limit from blocks per SM"}),
    # thread-block clusters (sm_90): 0 x 0 x 0 for a launch without clusters
    *(Metric(f"launch__cluster_dim_{a}", f"cluster {a}", "", what=f"cluster blocks along {a}") for a in "xyz"),
    # how many clusters fit on the GPU at once (a cluster must sit within one GPC)
    Metric("launch__cluster_max_active", "active clusters", "cluster", what="clusters resident at once"),
    *(Metric(name, name.split("__", 1)[1].removesuffix(".sum"), "inst" if "sass" in name else "",
             what=f"FLOP counter (× {w} per event)") for name, w in FLOP_WEIGHTS.items()),
    Metric(TENSOR_INST, "tensor instructions", "inst", what="instructions issued to the tensor pipe"),
    # collected only by an optimisation stage (profile --stage)
    Metric("smsp__sass_average_data_bytes_per_sector_mem_global_op_ld.pct", "load bytes / sector %", "%", PCT,
           "useful bytes per sector of global loads, %", default=False, core=True),
    Metric("launch__shared_mem_per_block_static", "static smem / block", "byte/block", "bytes",
           "static shared memory per block", default=False,
           stages={"block_tiling": "Static shared memory per block"}),
    Metric("l1tex__t_sector_hit_rate.pct", "L1 hit %", "%", PCT, "L1 hit rate, %", default=False,
           stages={"memory_access": "L1 hit rate"}),
    Metric("smsp__sass_average_data_bytes_per_sector_mem_global_op_st.pct", "store bytes / sector %", "%", PCT,
           "useful bytes per sector of global stores, %", default=False,
           stages={"memory_access": "Useful bytes per sector for global stores (100 % = fully coalesced)"}),
    Metric("smsp__warp_issue_stalled_short_scoreboard_per_warp_active.pct", "short scoreboard stalls %", "%", PCT,
           "warps stalled on shared memory / MIO, %", default=False,
           stages={"advanced_memory": "Stalls on shared memory / MIO"}),
    Metric("smsp__warp_issue_stalled_barrier_per_warp_active.pct", "barrier stalls %", "%", PCT,
           "warps stalled at barriers, %", default=False, stages={"advanced_memory": "Stalls at barriers"}),
    Metric("sm__inst_executed_pipe_tensor.avg.pct_of_peak_sustained_active", "tensor pipe %", "%", PCT,
           "tensor pipe utilisation, % of peak", default=False,
           stages={"advanced_memory": "Tensor pipe utilisation"}),
]

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}


def defaults() -> list[str]:
    """The metrics every run collects: the default of ncu.metrics."""
    return [m.name for m in METRICS if m.default]


def core() -> list[str]:
    """The metrics every optimisation stage collects."""
    return [m.name for m in METRICS if m.core]


def checks(stage: str) -> list[tuple[str, str]]:
    """(metric, what it tells) that a stage's prompt lists, in catalogue order."""
    return [(m.name, m.stages[stage]) for m in METRICS if stage in m.stages]


def columns() -> list[Metric]:
    """The metrics with a column of their own in the variants table."""
    return [m for m in METRICS if m.column]
