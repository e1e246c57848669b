"""What the measurements say about each variant: bound classification and findings.

Every rule names the metric and value that triggered it. All thresholds live in THRESHOLDS, the one
documented table (README "Analysis thresholds"); nothing else in the code holds a cut-off.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

THRESHOLDS: dict[str, tuple[float, str]] = {
    "busy_pct": (60.0, "a unit at or above this % of peak is the limiter (memory- or compute-bound)"),
    "launch_bound_us": (10.0, "kernels shorter than this (ncu duration) are dominated by launch cost"),
    "excess_bytes_ratio": (1.25, "DRAM bytes moved over the op's minimal bytes at or above this is a finding"),
    "low_waves": (1.0, "fewer waves per SM than this leaves SMs idle (grid smaller than the GPU)"),
    "tail_fraction": (0.5, "a last partial wave filled below this (with < 4 waves) is a tail effect"),
    "low_l2_hit_pct": (50.0, "L2 hit rate below this on a kernel that re-reads data is a finding"),
    "near_copy_fraction": (0.9, "at or above this fraction of copy bandwidth the kernel is at the memory limit"),
    "low_warps_active_pct": (25.0, "achieved occupancy below this is reported"),
}

SM = "sm__throughput.avg.pct_of_peak_sustained_elapsed"
MEM = "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed"
DRAM = "dram__throughput.avg.pct_of_peak_sustained_elapsed"
WARPS = "sm__warps_active.avg.pct_of_peak_sustained_active"
DUR = "gpu__time_duration.sum"


def t(name: str) -> float:
    return THRESHOLDS[name][0]


@dataclass(frozen=True)
class Finding:
    metric: str
    value: str
    text: str


@dataclass(frozen=True)
class Bound:
    kind: str       # memory-bound | compute-bound | latency-bound | launch-bound | unknown
    rule: str       # the rule that decided, with the values


def dominant_kernel(variant: dict[str, Any]) -> dict[str, Any] | None:
    """The profiled kernel that took longest: its metrics describe the variant."""
    kernels = variant.get("ncu", {}).get("kernels") or []
    if not kernels:
        return None
    return max(kernels, key=lambda k: (k["metrics"].get(DUR) or {}).get("value") or 0)


def m(kernel: dict[str, Any] | None, name: str) -> float | None:
    if kernel is None:
        return None
    entry = kernel["metrics"].get(name)
    return None if entry is None else entry["value"]


def duration_us(kernel: dict[str, Any]) -> float | None:
    entry = kernel["metrics"].get(DUR)
    if entry is None:
        return None
    scale = {"nsecond": 1e-3, "usecond": 1.0, "msecond": 1e3, "second": 1e6}.get(entry["unit"], 1e-3)
    return entry["value"] * scale


def classify(variant: dict[str, Any]) -> Bound:
    k = dominant_kernel(variant)
    sm, mem, dram = m(k, SM), m(k, MEM), m(k, DRAM)
    if k is None or sm is None or (mem is None and dram is None):
        return Bound("unknown", "no ncu metrics for this variant")
    memory = max(x for x in (mem, dram) if x is not None)
    dur = duration_us(k)
    busy = t("busy_pct")
    if dur is not None and dur < t("launch_bound_us") and max(sm, memory) < busy:
        return Bound("launch-bound", f"duration {dur:.1f} µs < {t('launch_bound_us'):g} µs and no unit ≥ {busy:g} %")
    if memory >= busy and memory >= sm:
        return Bound("memory-bound", f"memory {memory:.1f} % ≥ {busy:g} % and ≥ SM {sm:.1f} %")
    if sm >= busy:
        return Bound("compute-bound", f"SM {sm:.1f} % ≥ {busy:g} % and > memory {memory:.1f} %")
    return Bound("latency-bound", f"SM {sm:.1f} % and memory {memory:.1f} % both < {busy:g} %: "
                                  "neither unit is busy (too little work in flight, or stalls)")


def findings(variant: dict[str, Any], shape: dict[str, Any], env: dict[str, Any]) -> list[Finding]:
    k = dominant_kernel(variant)
    out: list[Finding] = []
    if k is None:
        return out
    read, write = m(k, "dram__bytes_read.sum"), m(k, "dram__bytes_write.sum")
    min_bytes = shape.get("min_bytes")
    if read is not None and write is not None and min_bytes:
        moved = sum((m(kk, "dram__bytes_read.sum") or 0) + (m(kk, "dram__bytes_write.sum") or 0)
                    for kk in variant["ncu"]["kernels"])
        ratio = moved / min_bytes
        if ratio >= t("excess_bytes_ratio"):
            out.append(Finding("dram__bytes_read.sum + dram__bytes_write.sum", f"{moved / 1e9:.2f} GB",
                               f"moves {ratio:.2f}× the minimal {min_bytes / 1e9:.2f} GB (re-reads or spills)"))
    waves = m(k, "launch__waves_per_multiprocessor")
    grid = m(k, "launch__grid_size")
    sms = env.get("sm_count") or 0
    if waves is not None and waves < t("low_waves"):
        out.append(Finding("launch__waves_per_multiprocessor", f"{waves:.2f}",
                           f"grid of {grid} blocks fills less than one wave on {sms} SMs: SMs sit idle"))
    elif waves is not None and waves < 4 and 0 < waves % 1 < t("tail_fraction"):
        out.append(Finding("launch__waves_per_multiprocessor", f"{waves:.2f}",
                           f"tail effect: the last wave is {waves % 1:.0%} full"))
    limits = {n: m(k, f"launch__occupancy_limit_{n}") for n in ("registers", "shared_mem", "warps", "blocks")}
    known = {n: v for n, v in limits.items() if v is not None}
    if known:
        lowest = min(known.values())
        limiting = [n for n, v in known.items() if v == lowest and n != "warps"]
        if limiting and lowest < known.get("warps", lowest + 1):
            out.append(Finding(f"launch__occupancy_limit_{limiting[0]}", f"{lowest:g} blocks/SM",
                               f"occupancy limited by {', '.join(limiting).replace('_', ' ')}"))
    spills = [c for c in variant.get("compiled", []) if c.get("n_spills")]
    for c in spills:
        out.append(Finding("n_spills (Triton)", str(c["n_spills"]), f"{c['name']} spills registers to local memory"))
    hit = m(k, "lts__t_sector_hit_rate.pct")
    if hit is not None and hit < t("low_l2_hit_pct") and read is not None and min_bytes and read > 0.75 * min_bytes:
        out.append(Finding("lts__t_sector_hit_rate.pct", f"{hit:.1f} %", "low L2 hit rate on re-read data"))
    warps = m(k, WARPS)
    if warps is not None and warps < t("low_warps_active_pct"):
        out.append(Finding(WARPS, f"{warps:.1f} %", "low achieved occupancy"))
    sm = m(k, SM)
    frac = fraction_of_copy(variant, shape)
    if sm is not None and sm < t("busy_pct") and frac is not None and frac >= t("near_copy_fraction"):
        out.append(Finding(SM, f"{sm:.1f} %", f"SM utilisation under {t('busy_pct'):g} %, but the kernel runs at "
                                              f"{frac:.0%} of copy bandwidth: it is at the memory limit"))
    return out


def fraction_of_copy(variant: dict[str, Any], shape: dict[str, Any]) -> float | None:
    """Device-copy time of the op's minimal bytes over the variant's time (1.0 = copy speed)."""
    copy = (shape.get("copy") or {}).get("timing")
    timing = variant.get("timing")
    if not copy or not timing:
        return None
    return copy["median_ms"] / timing["median_ms"]
