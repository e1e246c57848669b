"""What the measurements say about each variant: roofline position, bound classification, findings.

Every rule names the metric and value that triggered it. All thresholds live in THRESHOLDS, the one
documented table (docs/report.md "Analysis thresholds" lists it; a test keeps the two equal); nothing else in the code
holds a cut-off.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# the metric names the rules read: defined in the catalogue, used as analysis.SM etc. across the package
from pipeline.catalogue import DRAM, DUR, L2_HIT, MEM, READ, SM, THEORETICAL, WARPS, WAVES, WRITE  # noqa: F401
from pipeline.catalogue import FLOP_WEIGHTS, TENSOR_INST
from pipeline.records import KernelMetrics, ShapeRecord, VariantRecord

THRESHOLDS: dict[str, tuple[float, str]] = {
    "busy_pct": (60.0, "a unit (SM, or DRAM) at or above this % of its peak is the limiter: memory- or "
                       "compute-bound; below it on both, the kernel is latency/occupancy-bound"),
    "near_roofline_fraction": (0.9, "at or above this fraction of a roofline (minimal bytes at the measured copy "
                                    "bandwidth, or FLOPs at the measured matmul rate) the kernel is at that limit, "
                                    "whatever ncu's % of peak says"),
    "launch_bound_us": (10.0, "kernels shorter than this (ncu gpu__time_duration) with no busy unit are "
                              "dominated by launch and ramp-up cost"),
    "excess_bytes_ratio": (1.25, "DRAM bytes moved (all kernels of the variant) over the op's minimal bytes at "
                                 "or above this is a finding"),
    "low_waves": (1.0, "fewer waves per SM than this: the grid does not fill the GPU once"),
    "tail_fraction": (0.5, "a last partial wave filled below this is a tail effect"),
    "tail_max_waves": (4.0, "tail effects are reported only for grids with fewer waves than this; beyond it "
                            "the tail is a small share of the run"),
    "low_l2_hit_pct": (50.0, "L2 hit rate below this while DRAM traffic is excessive (excess_bytes_ratio): "
                             "re-read data comes from DRAM again"),
    "low_warps_active_pct": (25.0, "achieved occupancy (sm__warps_active) below this is reported"),
    "clock_ratio_tolerance": (0.05, "ncu locks clocks to base while events run at boost: a variant whose ncu "
                                    "duration (all its kernels) differs from its event-timed median by more than "
                                    "this fraction is reported, and its DRAM % is rescaled to the event time "
                                    "before classifying"),
    "l1_pressure_gap_pct": (25.0, "the memory system (L1/shared/L2, gpu__compute_memory_throughput) busier than "
                                  "DRAM by at least this many points is reported as on-chip memory pressure"),
    "launch_overhead_fraction": (0.1, "share of the event-timed median not spent in the call's kernels (CUPTI "
                                      "kernel time of one call after timing) at or above which launch overhead "
                                      "is reported"),
    "cluster_fill": (0.95, "a cluster launch whose resident blocks (launch__cluster_max_active × cluster size) "
                           "fill less than this fraction of the block slots the SMs offer (SMs × blocks/SM) is "
                           "reported: a cluster must fit in one GPC, and the SMs left over stay idle"),
}

OCC_LIMITS = ("registers", "shared_mem", "blocks", "warps")     # launch__occupancy_limit_<x>: blocks/SM


def t(name: str) -> float:
    return THRESHOLDS[name][0]


@dataclass(frozen=True)
class Finding:
    metric: str     # the metric (ncu name, or the Triton compile field) that triggered it
    value: str      # its value, formatted with unit
    text: str       # what it means, with the numbers it was compared against
    severity: str = "warn"   # "info" when it costs no time here (the variant is already at a roofline)


@dataclass(frozen=True)
class Bound:
    kind: str       # memory-bound | compute-bound | latency-bound | launch-bound | unknown
    rule: str       # the rule that decided, with the values

    @property
    def label(self) -> str:
        # "latency-bound" covers both too little work in flight and occupancy limits: say so on the page
        return "latency/occupancy-bound" if self.kind == "latency-bound" else self.kind


@dataclass(frozen=True)
class Roofline:
    """Best possible time for the shape on this GPU, from the measured ceilings (not datasheet peaks)."""
    memory_ms: float | None         # min_bytes / ceilings.copy_gbs
    memory_basis: str               # how memory_ms was computed, or why it is unknown
    compute_ms: float | None        # flops / ceilings.matmul_tflops[dtype]
    compute_basis: str


def fmt_bytes(b: float) -> str:
    """Decimal units (1 GB = 1e9 B), as ncu and bandwidth figures use."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if b >= scale:
            return f"{b / scale:.4g} {unit}"
    return f"{b:.0f} B"


def dominant_kernel(variant: dict[str, Any]) -> KernelMetrics | None:
    """The profiled kernel that took longest: its metrics describe the variant."""
    kernels = VariantRecord.of(variant).kernels
    if not kernels:
        return None
    return max(kernels, key=lambda k: k.metric(DUR) or 0)


def m(kernel: dict[str, Any] | None, name: str) -> float | None:
    return None if kernel is None else KernelMetrics.of(kernel).metric(name)


_TIME_SCALE_US = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3,
                  "s": 1e6, "second": 1e6}


def duration_us(kernel: dict[str, Any]) -> float | None:
    entry = kernel["metrics"].get(DUR)
    if entry is None or entry.get("unit") not in _TIME_SCALE_US:
        return None           # an unknown unit must not be guessed into a launch-bound verdict
    return entry["value"] * _TIME_SCALE_US[entry["unit"]]


def memory_pct(kernel: dict[str, Any] | None) -> float | None:
    """ncu's memory speed-of-light: the busier of DRAM and the whole memory system (L1/L2/DRAM)."""
    vals = [x for x in (m(kernel, MEM), m(kernel, DRAM)) if x is not None]
    return max(vals) if vals else None


def clock_ratio(variant: dict[str, Any]) -> float | None:
    """ncu duration of all the variant's kernels (base clocks, caches flushed) over its event-timed median."""
    v = VariantRecord.of(variant)
    durs = [duration_us(k) for k in v.kernels]
    median = v.median_ms
    if not durs or any(d is None for d in durs) or not median:
        return None
    return sum(durs) / (median * 1e3)


def dram_pct_at_event_time(variant: dict[str, Any], kernel: dict[str, Any] | None) -> tuple[float | None, str]:
    """DRAM throughput % of the dominant kernel, rescaled to the event-timed duration when ncu's base-clock
    duration differs from it by more than clock_ratio_tolerance (the bytes are the same; the time is not)."""
    dram = m(kernel, DRAM)
    ratio = clock_ratio(variant)
    if dram is None or ratio is None or abs(ratio - 1) <= t("clock_ratio_tolerance"):
        return dram, ""
    return min(100.0, dram * ratio), f" (ncu {dram:.1f} % × ncu/event duration {ratio:.2f})"


def dram_bytes(variant: dict[str, Any]) -> float | None:
    """DRAM bytes read + written by all kernels of the variant (split kernels count together)."""
    vals = [(k.metric(READ), k.metric(WRITE)) for k in VariantRecord.of(variant).kernels]
    if not vals or any(r is None or w is None for r, w in vals):
        return None
    return sum(r + w for r, w in vals)


def ncu_flops(variant: dict[str, Any]) -> float | None:
    """Floating-point operations ncu counted over all kernels of the variant (catalogue.FLOP_WEIGHTS); None when
    a kernel has none of the counters, or used the tensor pipe while no tensor-path counter was collected."""
    kernels = VariantRecord.of(variant).kernels
    total = 0.0
    for k in kernels:
        counted = {n: x for n in FLOP_WEIGHTS if (x := k.metric(n)) is not None}
        tensor = [x for n, x in counted.items() if n.startswith("sm__ops_path_tensor")]
        if not counted or ((k.metric(TENSOR_INST) or 0) > 0 and not tensor):
            return None
        total += sum(x * FLOP_WEIGHTS[n] for n, x in counted.items())
    return total if kernels else None


def ceilings(env: dict[str, Any]) -> dict[str, Any]:
    """The device's ceilings from the fastest repeat of each stored ceiling measurement.

    A ceiling is what the device reaches at best; the median drifts with clocks and heat (one H100 run:
    fp16 matmul median 676 TFLOP/s, fastest repeat 754, and a Triton kernel at 704 between them)."""
    ceil = dict(env.get("ceilings") or {})
    timing = ceil.get("timing") or {}
    if timing.get("copy", {}).get("min_ms") and ceil.get("copy_bytes"):
        ceil["copy_gbs"] = ceil["copy_bytes"] / timing["copy"]["min_ms"] / 1e6
    n = ceil.get("matmul_n")
    rates = dict(ceil.get("matmul_tflops") or {})
    for dtype in rates:
        best = timing.get(f"matmul_{dtype}", {}).get("min_ms")
        if best and n:
            rates[dtype] = 2 * n ** 3 / best / 1e9
    ceil["matmul_tflops"] = rates
    return ceil


def roofline(shape: dict[str, Any], env: dict[str, Any]) -> Roofline:
    ceil = ceilings(env)
    gbs, mb = ceil.get("copy_gbs"), shape.get("min_bytes")
    if gbs and mb:
        mem_ms, mem_basis = mb / (gbs * 1e9) * 1e3, f"{fmt_bytes(mb)} minimal ÷ {gbs:,.0f} GB/s measured copy"
    else:
        mem_ms, mem_basis = None, "n/a (no measured copy bandwidth or minimal bytes)"
    flops, dtype = shape.get("flops"), shape.get("dtype", "")
    rate = (ceil.get("matmul_tflops") or {}).get(dtype)
    if not flops:
        comp_ms, comp_basis = None, "n/a (op declares no FLOPs)"
    elif not rate:
        comp_ms, comp_basis = None, f"n/a (no matmul rate measured for {dtype or 'this dtype'})"
    else:
        comp_ms = flops / (rate * 1e12) * 1e3
        comp_basis = f"{flops / 1e9:,.4g} GFLOP ÷ {rate:,.1f} TFLOP/s measured {dtype} matmul"
    return Roofline(mem_ms, mem_basis, comp_ms, comp_basis)


def roofline_fractions(variant: dict[str, Any], shape: dict[str, Any],
                       env: dict[str, Any]) -> tuple[float | None, float | None]:
    """(memory, compute) roofline time over the variant's median time: 1.0 = at the measured ceiling."""
    timing = variant.get("timing")
    if not timing or not timing.get("median_ms"):
        return None, None
    r = roofline(shape, env)
    return (None if r.memory_ms is None else r.memory_ms / timing["median_ms"],
            None if r.compute_ms is None else r.compute_ms / timing["median_ms"])


def classify(variant: dict[str, Any], shape: dict[str, Any] | None = None,
             env: dict[str, Any] | None = None) -> Bound:
    """Roofline position first (measured ceilings), then ncu's speed-of-light percentages."""
    k = dominant_kernel(variant)
    # memory-bound means DRAM-bound: L1/shared traffic (in gpu__compute_memory_throughput) is on-chip
    # pressure, reported as a finding, and never makes a kernel "memory-bound"
    sm, (memory, scaled) = m(k, SM), dram_pct_at_event_time(variant, k)
    if k is None or sm is None or memory is None:
        return Bound("unknown", "no ncu metrics for this variant")
    near, busy = t("near_roofline_fraction"), t("busy_pct")
    mem_frac, comp_frac = roofline_fractions(variant, shape, env) if shape and env else (None, None)
    if mem_frac is not None and mem_frac >= near:
        return Bound("memory-bound", f"at {mem_frac:.0%} of the memory roofline (≥ {near:.0%}); "
                                     f"DRAM {memory:.1f} %{scaled}, SM {sm:.1f} %")
    if comp_frac is not None and comp_frac >= near:
        return Bound("compute-bound", f"at {comp_frac:.0%} of the compute roofline (≥ {near:.0%}); SM {sm:.1f} %")
    dur = duration_us(k)
    if dur is not None and dur < t("launch_bound_us") and max(sm, memory) < busy:
        return Bound("launch-bound", f"ncu duration {dur:.1f} µs < {t('launch_bound_us'):g} µs and no unit ≥ "
                                     f"{busy:g} % (SM {sm:.1f} %, DRAM {memory:.1f} %{scaled})")
    if memory >= busy and memory >= sm:
        return Bound("memory-bound", f"DRAM {memory:.1f} %{scaled} ≥ {busy:g} % and ≥ SM {sm:.1f} %")
    if sm >= busy:
        return Bound("compute-bound", f"SM {sm:.1f} % ≥ {busy:g} % and > DRAM {memory:.1f} %{scaled}")
    warps = m(k, WARPS)
    occ = "" if warps is None else f", achieved occupancy {warps:.1f} %"
    return Bound("latency-bound", f"SM {sm:.1f} % and DRAM {memory:.1f} %{scaled} both < {busy:g} %{occ}: neither "
                                  "unit is busy (too little work in flight, occupancy, or stalls)")


def occupancy_limits(kernel: dict[str, Any] | None) -> dict[str, float | None]:
    """launch__occupancy_limit_<x> per resource x: the blocks per SM it allows."""
    return {n: m(kernel, f"launch__occupancy_limit_{n}") for n in OCC_LIMITS}


def occupancy_limiter(kernel: dict[str, Any] | None) -> tuple[str, float, float] | None:
    """(limiter, blocks/SM it allows, blocks/SM the warp limit allows) when a resource other than the
    warp slots caps resident blocks; None when warps (full occupancy) or nothing is known.

    launch__occupancy_limit_<x> is the number of blocks per SM that resource x allows; the smallest
    wins. The warp limit is what a block of this size gets at full occupancy, so only a limiter strictly
    below it lowers theoretical occupancy."""
    limits = occupancy_limits(kernel)
    warps = limits.pop("warps")
    known = {n: v for n, v in limits.items() if v is not None}
    if warps is None or not known:
        return None
    name = min(known, key=lambda n: (known[n], OCC_LIMITS.index(n)))
    return (name, known[name], warps) if known[name] < warps else None


def launch_dims(variant: dict[str, Any], what: str) -> tuple[int, int, int] | None:
    """launch__<what>_dim_{x,y,z} (grid, block, cluster) of the dominant kernel; None where not collected."""
    k = dominant_kernel(variant)
    dims = [m(k, f"launch__{what}_dim_{a}") for a in "xyz"]
    return None if any(d is None for d in dims) else tuple(int(d) for d in dims)


def cluster_dims(variant: dict[str, Any]) -> tuple[int, int, int] | None:
    """The cluster shape as ncu saw it; None without clusters (ncu reports 0 x 0 x 0) or not collected."""
    dims = launch_dims(variant, "cluster")
    return dims if dims and all(dims) else None


def blocks_per_sm(kernel: dict[str, Any] | None) -> float | None:
    """Resident blocks per SM: the smallest launch__occupancy_limit_<x>."""
    known = [v for v in occupancy_limits(kernel).values() if v is not None]
    return min(known) if known else None


def launch_overhead(variant: dict[str, Any]) -> float | None:
    """Share of the event-timed median outside the call's kernels (CUPTI, one call after timing)."""
    v = VariantRecord.of(variant)
    kernel_ms, median = v.kernel_ms, v.median_ms
    return None if not kernel_ms or not median else max(0.0, 1 - kernel_ms / median)


def findings(variant: dict[str, Any], shape: dict[str, Any], env: dict[str, Any]) -> list[Finding]:
    out: list[Finding] = []
    overhead = launch_overhead(variant)
    if overhead is not None and overhead >= t("launch_overhead_fraction"):
        kernel_ms = variant["after_timing"]["kernel_ms"]
        out.append(Finding("CUPTI kernel time", f"{kernel_ms:.4g} ms",
                           f"launch overhead: the kernels of one call run {kernel_ms:.4g} ms of its "
                           f"{variant['timing']['median_ms']:.4g} ms event-timed median ({overhead:.0%} ≥ "
                           f"{t('launch_overhead_fraction'):.0%} is launch latency and gaps between kernels, "
                           "which ncu does not see)"))
    # Triton's compile record exists even when ncu did not run: spills are reported regardless
    for c in variant.get("compiled") or []:
        if c.get("n_spills"):
            out.append(Finding("n_spills (Triton compile)", f"{c['n_spills']} registers",
                               f"{c['name']} spills {c['n_spills']} registers to local memory "
                               f"({c.get('n_regs', '?')} registers/thread allocated)"))
    k = dominant_kernel(variant)
    if k is None:
        return out
    moved, min_bytes = dram_bytes(variant), shape.get("min_bytes")
    ratio = moved / min_bytes if moved is not None and min_bytes else None
    if ratio is not None and ratio >= t("excess_bytes_ratio"):
        out.append(Finding(f"{READ} + {WRITE}", fmt_bytes(moved),
                           f"moves {ratio:.2f}× the minimal {fmt_bytes(min_bytes)} "
                           f"(≥ {t('excess_bytes_ratio'):g}×): re-reads, spills or workspace traffic"))
    hit = m(k, L2_HIT)
    if hit is not None and hit < t("low_l2_hit_pct") and ratio is not None and ratio >= t("excess_bytes_ratio"):
        out.append(Finding(L2_HIT, f"{hit:.1f} %", f"low L2 hit rate (< {t('low_l2_hit_pct'):g} %) on re-read "
                                                   f"data: DRAM traffic is {ratio:.2f}× minimal"))
    # launch-shape and occupancy findings cost nothing when the variant already sits at a roofline
    mem_frac, comp_frac = roofline_fractions(variant, shape, env)
    at_limit = max(mem_frac or 0, comp_frac or 0) >= t("near_roofline_fraction")
    sev = "info" if at_limit else "warn"
    grid, waves, sms = m(k, "launch__grid_size"), m(k, WAVES), env.get("sm_count")
    if grid is not None and sms and grid < sms:
        out.append(Finding("launch__grid_size", f"{grid:,.0f} blocks",
                           f"grid smaller than the {sms} SMs: {sms - grid:,.0f} SMs get no block", sev))
    elif waves is not None and waves < t("low_waves"):
        out.append(Finding(WAVES, f"{waves:.2f}", f"grid fills {waves:.0%} of one wave: each SM holds fewer "
                                                  "blocks than it could (fewer warps to hide latency)", sev))
    elif waves is not None and waves < t("tail_max_waves") and 0 < waves % 1 < t("tail_fraction"):
        out.append(Finding(WAVES, f"{waves:.2f}", f"tail effect: the last of {int(waves) + 1} waves is "
                                                  f"{waves % 1:.0%} full (< {t('tail_fraction'):.0%})", sev))
    cluster, active, per_sm = cluster_dims(variant), m(k, "launch__cluster_max_active"), blocks_per_sm(k)
    if cluster and active is not None and per_sm and sms:
        size = cluster[0] * cluster[1] * cluster[2]
        slots = sms * per_sm
        if active * size < t("cluster_fill") * slots:
            out.append(Finding("launch__cluster_max_active", f"{active:g} clusters",
                               f"clusters of {size} blocks: at most {active:g} resident at once, {active * size:g} "
                               f"blocks where {sms} SMs × {per_sm:g} blocks/SM offer {slots:g} slots "
                               f"({active * size / slots:.0%} < {t('cluster_fill'):.0%}; a cluster must fit "
                               "in one GPC)", sev))
    warps, lim = m(k, WARPS), occupancy_limiter(k)
    if lim:
        name, blocks, full = lim
        theo = m(k, THEORETICAL)
        theo_txt = "" if theo is None else f"; theoretical occupancy {theo:.1f} %"
        ach_txt = "" if warps is None else f", achieved {warps:.1f} %"
        out.append(Finding(f"launch__occupancy_limit_{name}", f"{blocks:g} blocks/SM",
                           f"occupancy limited by {name.replace('_', ' ')}: {blocks:g} blocks/SM where the warp "
                           f"slots allow {full:g}{theo_txt}{ach_txt}", sev))
    elif warps is not None and warps < t("low_warps_active_pct"):
        # with no resource limiter, low achieved occupancy comes from the grid, tail or stalls
        out.append(Finding(WARPS, f"{warps:.1f} %", f"low achieved occupancy (< {t('low_warps_active_pct'):g} %) "
                                                    "with no resource limiting resident blocks", sev))
    onchip, dram = m(k, MEM), m(k, DRAM)
    if onchip is not None and dram is not None and onchip - dram >= t("l1_pressure_gap_pct"):
        out.append(Finding(MEM, f"{onchip:.1f} %", f"on-chip memory pressure: the L1/shared/L2 system runs at "
                                                   f"{onchip:.1f} % of peak while DRAM runs at {dram:.1f} %: "
                                                   "shared-memory or L1 traffic, not DRAM, is the busy path", sev))
    ratio = clock_ratio(variant)
    if ratio is not None and abs(ratio - 1) > t("clock_ratio_tolerance"):
        out.append(Finding(DUR, f"{ratio:.2f}× the event median",
                           f"ncu's duration (base clocks, caches flushed) is {ratio:.2f}× the event-timed median "
                           f"(off by more than {t('clock_ratio_tolerance'):.0%}): its % of peak describes another "
                           "clock than the timing; ranking uses the events", "info"))
    sm = m(k, SM)
    if sm is not None and sm < t("busy_pct") and mem_frac is not None and mem_frac >= t("near_roofline_fraction"):
        out.append(Finding(SM, f"{sm:.1f} %", f"SM utilisation under {t('busy_pct'):g} %, but the kernel runs at "
                                              f"{mem_frac:.0%} of the memory roofline: it is at the memory "
                                              "limit, more SM work would not help", "info"))
    return out


def fraction_of_copy(variant: dict[str, Any], shape: dict[str, Any]) -> float | None:
    """Device-copy time of the op's minimal bytes over the variant's time (1.0 = copy speed)."""
    copy = ShapeRecord.of(shape).copy_timing
    timing = variant.get("timing")
    if not copy or not timing:
        return None
    return copy["median_ms"] / timing["median_ms"]
