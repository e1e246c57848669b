"""The optimisation stages of an LLM kernel loop: each a named metric set plus the text its prompt carries.

Which metrics a stage collects and checks, and what its prompt says of each, are catalogue entries
(pipeline/catalogue.py): the core set is always collected; a stage adds its own metrics (`profile --stage NAME`).
Names a GPU does not report are found with `ncu --query-metrics` and skipped, and the skip is recorded.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline import catalogue


@dataclass(frozen=True)
class Stage:
    name: str
    focus: str
    guidelines: list[str] = field(default_factory=list)

    @property
    def checks(self) -> list[tuple[str, str]]:
        """(metric, what it tells / its target) shown in the prompt."""
        return catalogue.checks(self.name)

    def metrics(self) -> list[str]:
        return list(dict.fromkeys([*catalogue.core(), *(m for m, _ in self.checks)]))


STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("grid_and_parallel", "Optimize grid layout and parallel work distribution.",
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
          ["Target: warps active > 50 % where the kernel is latency-bound",
           "Keep per-thread tiles small enough not to spill registers"]),
    Stage("memory_access", "Make global memory accesses coalesced and cache-friendly.",
          ["Contiguous, vectorised loads along the fastest-varying dimension",
           "Read each input byte once where the working set allows"]),
    Stage("advanced_memory", "Hide latency: pipelining, barriers, tensor cores.",
          ["Use num_stages to pipeline loads for loops over K", "Use tl.dot for matrix products"]),
]}
