"""The report's charts: matplotlib rendered offline to SVG text that the page inlines (no JS, no CDN), drawn
in pipeline/chartstyle.py's style. The drawing functions take plain Point records; shape_charts() and sweep()
build them from a results record.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from markupsafe import Markup

from pipeline import analysis, catalogue, recommend
from pipeline.chartstyle import RC, Style, literal, svg, wrap
from pipeline.display import standing
from pipeline.records import ShapeRecord
from pipeline.shapeanalysis import ShapeAnalysis

LOG_RANGE = 10.0          # slowest/fastest above this: log time axis, else the close ones look equal
ROW_INCHES = 0.17         # time chart: height of a row with a one-line label
@dataclass(frozen=True)
class Floor:
    """The time no variant can beat at this shape: device copy of the minimal bytes (memory-bound ops) or
    the declared FLOPs at the measured matmul rate (compute-bound ones)."""
    ms: float
    label: str


@dataclass(frozen=True)
class Point:
    """One variant at one shape, as the charts need it (times in ms, percentages of peak)."""
    name: str
    family: str
    status: str
    median_ms: float | None
    p25_ms: float | None
    p75_ms: float | None
    sm_pct: float | None
    dram_pct: float | None
    block_elems: float | None       # product of the config's BLOCK* values (block_elems below)
    recommended: bool
    tied: bool = False              # within noise of the recommended one (recommend.tied)
    dram_bytes: float | None = None  # read + written by all its kernels (ncu), for the roofline
    flops: float | None = None       # its FLOPs for the roofline: ncu's count, else the shape's declared FLOPs


@dataclass(frozen=True)
class SweepPoint:
    shape: str
    family: str
    fraction: float                 # of the op's leading ceiling: device copy speed, or the compute roofline
    recommended: bool


def _ms_label(x: float) -> str:
    return f"{x:.4g}"


def _count_label(x: float) -> str:
    """Tile sizes in binary units: 65536 -> 64K."""
    for unit, scale in (("M", 2**20), ("K", 2**10)):
        if x >= scale:
            return f"{x / scale:g}{unit}"
    return f"{x:g}"


def _log_if_wide(ax, values: list[float], axis: str) -> None:
    vals = [v for v in values if v and v > 0]
    if vals and max(vals) / min(vals) > LOG_RANGE:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
        fmt = FuncFormatter(lambda v, _: _ms_label(v))
        target = ax.xaxis if axis == "x" else ax.yaxis
        target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))   # labels at 1-2-5 steps
        target.set_major_formatter(fmt)
        target.set_minor_formatter(NullFormatter())


def _ordered(points: list[Point]) -> list[Point]:
    """Families fastest-first (by their best variant), variants fastest-first, failed last in family."""
    best = {}
    for p in points:
        if p.median_ms is not None:
            best[p.family] = min(best.get(p.family, p.median_ms), p.median_ms)
    fams = sorted({p.family for p in points}, key=lambda f: (f not in best, best.get(f, 0), f))
    return sorted(points, key=lambda p: (fams.index(p.family), p.median_ms is None, p.median_ms or 0, p.name))


def time_chart(points: list[Point], sty: dict[str, Style], floor: Floor | None, eager_ms: float | None,
               salt: str) -> str:
    """Dot plot of the median time per variant, grouped by layout family, p25–p75 whiskers."""
    pts = _ordered(points)
    timed = [p for p in pts if p.median_ms is not None]
    best = min((p.median_ms for p in timed), default=None)
    any_tie = any(p.tied for p in pts)
    labels = [wrap(p.name) for p in pts]
    # rows top-down; a two-line label gets a taller row
    units = [1.85 if "\n" in lbl else 1.0 for lbl in labels]
    tops = [sum(units[:i]) for i in range(len(pts))]
    ys = {p.name: -(top + u / 2) for p, top, u in zip(pts, tops, units)}
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(9.5, ROW_INCHES * sum(units) + 1.3))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for fam in dict.fromkeys(p.family for p in timed):
            fp = [p for p in timed if p.family == fam]
            ax.errorbar([p.median_ms for p in fp], [ys[p.name] for p in fp], fmt=sty[fam].marker, ms=4,
                        color=sty[fam].color, elinewidth=1.2, capsize=2,
                        xerr=[[p.median_ms - p.p25_ms for p in fp], [p.p75_ms - p.median_ms for p in fp]])
        for p in timed:
            if p.recommended:
                ax.plot([p.median_ms], [ys[p.name]], marker="*", ms=13, color=sty[p.family].color, mec="black",
                        mew=0.8, ls="none", zorder=5)
            place = standing(p.median_ms / best, p.recommended, p.tied, any_tie)
            ax.annotate(f"{_ms_label(p.median_ms)} ms  {place}", (1.0, ys[p.name]),
                        xycoords=("axes fraction", "data"),
                        xytext=(4, 0), textcoords="offset points", va="center", fontsize=7,
                        fontweight="bold" if p.recommended or p.tied else "normal", annotation_clip=False)
        for p in pts:
            if p.median_ms is None:
                ax.annotate(p.status, (0.0, ys[p.name]), xycoords=("axes fraction", "data"), xytext=(4, 0),
                            textcoords="offset points", va="center", fontsize=7, color="#a32020")
        fams = [p.family for p in pts]
        for i in range(1, len(pts)):
            if fams[i] != fams[i - 1]:
                ax.axhline(-tops[i], color="#cccccc", lw=0.6)
        handles = [Line2D([], [], marker="*", ms=10, color="#777777", mec="black", ls="none", label="recommended")]
        if floor:
            ax.axvline(floor.ms, color="#333333", ls="--", lw=1)
            handles.append(Line2D([], [], color="#333333", ls="--", label=f"{floor.label} ({_ms_label(floor.ms)} ms)"))
        if eager_ms:
            ax.axvline(eager_ms, color="#888888", ls=":", lw=1.2)
            handles.append(Line2D([], [], color="#888888", ls=":", label=f"torch eager ({_ms_label(eager_ms)} ms)"))
        ax.set_yticks([ys[p.name] for p in pts], [literal(lbl) for lbl in labels], fontsize=7.5)
        for lbl, p in zip(ax.get_yticklabels(), pts):
            lbl.set_color(sty[p.family].color if p.median_ms is not None else "#a32020")
            if p.recommended:
                lbl.set_fontweight("bold")
        ax.set_ylim(-sum(units) - 0.2, 0.2)
        ax.set_xlabel("median time per call, ms (CUDA events; whiskers p25–p75)")
        _log_if_wide(ax, [p.p25_ms for p in timed] + [p.p75_ms for p in timed]
                     + [floor.ms if floor else 0, eager_ms or 0], "x")
        if ax.get_xscale() == "linear":
            ax.set_xlim(left=0)
        ax.grid(axis="x", color="#eeeeee", lw=0.6)
        ax.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=3, frameon=False,
                  fontsize=7.5)
        return svg(fig, salt)


def sol_chart(points: list[Point], sty: dict[str, Style], busy_pct: float, salt: str) -> str:
    """Speed-of-light scatter: DRAM % (what the classification reads) against SM %."""
    pts = [p for p in points if p.sm_pct is not None and p.dram_pct is not None]
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(5.4, 4.0))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        b = busy_pct
        # the classify() regions: memory wins ties with SM, both need busy_pct
        ax.fill([0, b, 100, 0], [b, b, 100, 100], color="#dbe9f6", lw=0)
        ax.fill([b, 100, 100, b], [0, 0, 100, b], color="#f8e3d0", lw=0)
        ax.fill([0, b, b, 0], [0, 0, b, b], color="#eeeeee", lw=0)
        ax.text(40, 97, "memory-bound", va="top", fontsize=8, color="#2b5d8a")
        ax.text(98, 3, "compute-bound", ha="right", fontsize=8, color="#9a5a1c")
        ax.text(b - 2, 3, "latency / occupancy", ha="right", fontsize=8, color="#555555")
        for fam in sorted({p.family for p in pts}):
            fp = [p for p in pts if p.family == fam]
            ax.scatter([p.sm_pct for p in fp], [p.dram_pct for p in fp], s=18, color=sty[fam].color, alpha=0.85,
                       marker=sty[fam].marker, label=literal(fam), lw=0)
        for p in pts:
            if p.recommended:
                ax.scatter([p.sm_pct], [p.dram_pct], s=150, marker="*", color=sty[p.family].color,
                           edgecolors="black", linewidths=0.8, zorder=5, label="recommended")
        ax.set_xlim(0, 100)
        ax.set_ylim(0, 100)
        ax.set_xlabel(catalogue.BY_NAME[analysis.SM].axis)
        ax.set_ylabel(catalogue.BY_NAME[analysis.DRAM].axis)
        if pts:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=7.5)
        return svg(fig, salt)


def block_chart(points: list[Point], sty: dict[str, Style], floor: Floor | None, salt: str) -> str:
    """Time against tile size (product of BLOCK* config values), one line per family through its
    fastest variant at each size; variants sharing a size (num_warps differs) show as stacked dots."""
    pts = [p for p in points if p.block_elems and p.median_ms is not None]
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(5.4, 4.0))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for fam in sorted({p.family for p in pts}):
            fp = [p for p in pts if p.family == fam]
            xs = sorted({p.block_elems for p in fp})
            ax.plot(xs, [min(p.median_ms for p in fp if p.block_elems == x) for x in xs], "-",
                    color=sty[fam].color, lw=1.2, marker=sty[fam].marker, ms=3.5, label=literal(fam))
            ax.plot([p.block_elems for p in fp], [p.median_ms for p in fp], sty[fam].marker, ms=3.5,
                    color=sty[fam].color)
        for p in pts:
            if p.recommended:
                ax.plot([p.block_elems], [p.median_ms], marker="*", ms=13, color=sty[p.family].color, mec="black",
                        mew=0.8, ls="none", zorder=5, label="recommended")
        if floor:
            ax.axhline(floor.ms, color="#333333", ls="--", lw=1, label=floor.label)
        if pts:
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_locator(LogLocator(base=2, numticks=8))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _count_label(v)))
            ax.xaxis.set_minor_formatter(NullFormatter())
        _log_if_wide(ax, [p.median_ms for p in pts] + [floor.ms if floor else 0], "y")
        ax.set_xlabel("tile elements per program (product of BLOCK* config values; K = 1024)")
        ax.set_ylabel("median time, ms")
        ax.grid(color="#eeeeee", lw=0.6)
        if pts or floor:
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=7.5)
        return svg(fig, salt)


def sweep_chart(points: list[SweepPoint], shapes: list[str], sty: dict[str, Style], ylabel: str,
                ceiling: str, salt: str) -> str:
    """Per shape, each family's best variant as a fraction of the op's ceiling; the winner starred."""
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(9.5, 3.6))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        xs = {s: i for i, s in enumerate(shapes)}
        for fam in sorted({p.family for p in points}):
            fp = sorted((p for p in points if p.family == fam), key=lambda p: xs[p.shape])
            ax.plot([xs[p.shape] for p in fp], [p.fraction for p in fp], "-", marker=sty[fam].marker, ms=4,
                    lw=0.8, alpha=0.9, color=sty[fam].color, label=literal(fam))
        for p in points:
            if p.recommended:
                ax.plot([xs[p.shape]], [p.fraction], marker="*", ms=14, color=sty[p.family].color, mec="black",
                        mew=0.8, ls="none", zorder=5)
        ax.axhline(1.0, color="#333333", ls="--", lw=1)
        long = sum(len(s) for s in shapes) > 70
        ax.set_xticks(range(len(shapes)), [literal(s) for s in shapes], fontsize=8,
                      rotation=25 if long else 0, ha="right" if long else "center")
        top = max([p.fraction for p in points] + [1.0])
        ax.set_ylim(0, top * 1.08)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", color="#eeeeee", lw=0.6)
        ax.legend(handles=ax.get_legend_handles_labels()[0] + [
            Line2D([], [], marker="*", ms=10, color="#777777", mec="black", ls="none", label="recommended"),
            Line2D([], [], color="#333333", ls="--", label=ceiling)],
            loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7.5)
        return svg(fig, salt)


# ---------------------------------------------------------------- from a results record to charts

@dataclass
class Chart:
    title: str
    caption: str
    svg: str                    # Markup: matplotlib SVG, text already escaped by matplotlib


def block_elems(config: dict[str, Any]) -> float | None:
    """The tile a config sets: product of its values whose key starts with BLOCK (C_PAD etc. excluded)."""
    vals = [v for k, v in (config or {}).items() if k.upper().startswith("BLOCK") and isinstance(v, (int, float))]
    return float(math.prod(vals)) if vals else None


def _points(sa: ShapeAnalysis) -> list[Point]:
    out = []
    for va in sa.variants:
        v, k = va.variant, va.kernel
        tm = v.get("timing") if v["status"] == "ok" else None
        out.append(Point(
            name=v["name"], family=v.get("stem", v["name"]), status=v["status"],
            median_ms=tm and tm["median_ms"], p25_ms=tm and tm["p25_ms"], p75_ms=tm and tm["p75_ms"],
            sm_pct=analysis.m(k, analysis.SM), dram_pct=analysis.m(k, analysis.DRAM),
            block_elems=block_elems(v.config), recommended=va.recommended, tied=va.tied,
            dram_bytes=analysis.dram_bytes(v), flops=analysis.ncu_flops(v) or sa.shape.get("flops")))
    return out


@dataclass(frozen=True)
class Roof:
    """The measured ceilings of a roofline: copy bandwidth, and the matmul rate of the shape's dtype."""
    gbs: float
    tflops: float
    dtype: str


def roof(shape: dict[str, Any], env: dict[str, Any]) -> Roof | None:
    ceil = analysis.ceilings(env)
    gbs, rate = ceil.get("copy_gbs"), (ceil.get("matmul_tflops") or {}).get(shape.get("dtype", ""))
    return Roof(gbs, rate, shape.get("dtype", "")) if gbs and rate else None


def _placed(points: list[Point]) -> list[Point]:
    """The points a roofline can place: FLOPs, DRAM bytes and an event-timed median."""
    return [p for p in points if p.flops and p.dram_bytes and p.median_ms]


def roofline_chart(points: list[Point], sty: dict[str, Style], rf: Roof, salt: str) -> str:
    """Arithmetic intensity (each variant's FLOPs over the DRAM bytes ncu counted) against achieved TFLOP/s
    (those FLOPs over the event-timed median), under the measured copy-bandwidth slope and matmul-rate roof."""
    pts = _placed(points)

    def xy(p: Point) -> tuple[float, float]:
        return p.flops / p.dram_bytes, p.flops / (p.median_ms * 1e-3) / 1e12
    with matplotlib.rc_context(RC):
        fig = Figure(figsize=(5.4, 4.0))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        xs = [xy(p)[0] for p in pts]
        ridge = rf.tflops * 1e12 / (rf.gbs * 1e9)                 # FLOP/byte where the two ceilings meet
        lo, hi = min([*xs, ridge]) / 4, max([*xs, ridge]) * 4
        grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
        ax.plot(grid, [min(x * rf.gbs * 1e9, rf.tflops * 1e12) / 1e12 for x in grid], color="#444444", lw=1.2,
                label=f"ceiling: copy {rf.gbs:,.0f} GB/s, {rf.dtype} matmul {rf.tflops:,.0f} TFLOP/s")
        for fam in sorted({p.family for p in pts}):
            fx, fy = zip(*(xy(p) for p in pts if p.family == fam))
            ax.scatter(fx, fy, s=18, color=sty[fam].color, marker=sty[fam].marker, alpha=0.85, lw=0, label=literal(fam))
        for p in pts:
            if p.recommended:
                ax.scatter(*xy(p), s=150, marker="*", color=sty[p.family].color, edgecolors="black",
                           linewidths=0.8, zorder=5, label="recommended")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("arithmetic intensity (FLOP per DRAM byte, ncu)")
        ax.set_ylabel("achieved TFLOP/s (CUDA events)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=7.5)
        return svg(fig, salt)


def floor(shape: dict[str, Any], env: dict[str, Any], lead: str) -> Floor | None:
    """The floor the time chart draws: the compute roofline for a compute-led shape, else the device copy."""
    if lead == "compute":
        ms = analysis.roofline(shape, env).compute_ms
        return Floor(ms, "compute roofline: FLOPs at the measured matmul rate") if ms else None
    copy = ShapeRecord.of(shape).copy_ms
    return Floor(copy, "device copy of the minimal bytes") if copy else None


@dataclass(frozen=True)
class ShapeChartData:
    """What a shape's charts draw: small, so that drawing processes are sent only this."""
    salt: str
    points: list[Point]
    floor: Floor | None
    eager_ms: float | None
    lead: str
    roof: Roof | None = None


def chart_data(op: str, sa: ShapeAnalysis) -> ShapeChartData:
    shape = sa.shape
    return ShapeChartData(f"{op}/{shape.id}", _points(sa), floor(shape, sa.environment, sa.lead),
                          shape.reference_ms, sa.lead, roof(shape, sa.environment))


def shape_charts(data: ShapeChartData, sty: dict[str, Style]) -> list[Chart]:
    """The three charts of one shape, with captions saying what each shows."""
    pts, fl, eager, salt, lead = data.points, data.floor, data.eager_ms, data.salt, data.lead
    busy = analysis.t("busy_pct")
    no_block = sorted({p.family for p in pts if p.block_elems is None})
    floor_txt = ("Dashed line: the compute roofline (the shape's FLOPs at the matmul rate measured on this GPU), "
                 "the floor of a compute-bound op" if lead == "compute" else
                 "Dashed line: device copy of the op's minimal bytes at this shape (the memory floor)")
    return [
        Chart("Time per variant, grouped by layout family",
              "Dot: median per call over CUDA-event repeats (L2 flushed); whiskers p25–p75; ★ recommended. "
              f"{floor_txt}; dotted: torch eager. Log axis when the slowest is over {LOG_RANGE:g}× the fastest. "
              "Right: each time and its distance from the fastest; \"tied\" marks variants within noise of the "
              "recommended one (overlapping p25–p75 or medians within "
              f"{recommend.TIE_MARGIN:.0%}). Failed and unsupported variants are listed with their status.",
              Markup(time_chart(pts, sty, fl, eager, salt + "/time"))),
        Chart("Speed of light (ncu)",
              "Each variant's dominant kernel (longest ncu duration), under ncu's base clocks: DRAM % against "
              f"SM %. Regions: the busy_pct = {busy:g} % rule of the bound classification (which rescales DRAM % "
              "to the event-timed duration when the clocks differ, see each bound's rule). Launch-bound is "
              "decided by duration and the roofline position by CUDA-event time, so neither is a region here.",
              Markup(sol_chart(pts, sty, busy, salt + "/sol"))),
        Chart("Time against tile size",
              "x: product of the variant's BLOCK* config values (elements of the tile one program handles per "
              "step; C_PAD, fixed by the shape, is excluded). Line: the family's fastest variant at each size; "
              "other dots at the same size differ in num_warps or split. "
              + (f"Not drawn (no BLOCK* config): {', '.join(no_block)}." if no_block else ""),
              Markup(block_chart(pts, sty, fl, salt + "/block"))),
    ] + ([Chart("Roofline",
                "Each profiled variant: the FLOPs ncu counted in its kernels (sass FMA counted twice, tensor-path "
                "operations as counted, see catalogue.FLOP_WEIGHTS; the shape's declared FLOPs where ncu counted "
                "none) over the DRAM bytes they read and wrote (dram__bytes_read.sum + dram__bytes_write.sum), "
                "against those FLOPs over its event-timed median. Line: the measured ceilings, the device copy's "
                "bandwidth up to the ridge and the fastest matmul repeat of this dtype above it (for float32, "
                "torch's matmul at float32_matmul_precision 'highest', without tensor cores). Variants that ncu "
                "did not profile are not drawn.", Markup(roofline_chart(pts, sty, data.roof, salt + "/roofline")))]
         if data.roof and _placed(pts) else [])


def sweep(doc: dict[str, Any], analyses: list[ShapeAnalysis], sty: dict[str, Style], lead: str) -> Chart | None:
    """How the best of each layout family moves across the op's shapes (None for a single shape), as a
    fraction of the op's leading ceiling: the compute roofline for compute-led ops, else device copy."""
    pts = []
    env = doc["environment"]
    for sa in analyses:
        shape = sa.shape
        if lead == "compute":
            ceiling_ms = analysis.roofline(shape, env).compute_ms
        else:
            ceiling_ms = shape.copy_ms
        for fam, v in sa.family_best.items() if ceiling_ms else ():
            pts.append(SweepPoint(shape["id"], fam, ceiling_ms / v["timing"]["median_ms"], sa.is_recommended(v)))
    if len(doc["shapes"]) < 2 or not pts:
        return None
    if lead == "compute":
        ylabel, ceiling = "fraction of the compute roofline\n(1.0 = measured matmul rate)", "compute roofline"
        caption = ("The shape's FLOPs at the matmul rate measured on this GPU (its dtype) ÷ the family's fastest "
                   "correct variant (1.0 = the compute roofline); ★ the recommended variant of the shape.")
    else:
        ylabel, ceiling = "device copy time ÷ time\n(1.0 = copy speed)", "device copy speed"
        caption = ("Device copy time of the shape's minimal bytes ÷ the family's fastest correct variant "
                   "(1.0 = copy speed); ★ the recommended variant of the shape.")
    svg = sweep_chart(pts, [s["id"] for s in doc["shapes"]], sty, ylabel, ceiling, f"{doc['op']}/sweep")
    return Chart("Best variant of each layout family, per shape", caption, Markup(svg))
