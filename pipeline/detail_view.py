"""The detail pass as the op page shows it: the "why the winner wins" section (pipeline/detail.py records it),
its tables, sentences and two charts (stall breakdown, bytes moved per memory level)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
from markupsafe import Markup
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullFormatter

from pipeline import analysis, chartstyle, detail, display as fmt
from pipeline.records import ShapeRecord, VariantRecord
from pipeline.viewmodel import WhyKernel, WhyView


STALL_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22"]


def stall_chart(kernels: list[tuple[str, dict[str, float]]], reasons: list[str], salt: str) -> str:
    """One stacked bar per kernel of the detail pass: its warp cycles per issued instruction split by stall
    reason (`reasons`, the largest first; the rest summed as "other")."""
    with matplotlib.rc_context(chartstyle.RC):
        fig = Figure(figsize=(7.5, 0.55 * len(kernels) + 1.2))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        ys = list(range(len(kernels)))[::-1]
        left = [0.0] * len(kernels)
        for i, r in enumerate([*reasons, "other"]):
            vals = [(sum(v for k, v in st.items() if k not in reasons and k != "selected") if r == "other"
                     else st.get(r, 0.0)) for _, st in kernels]
            ax.barh(ys, vals, left=left, color=STALL_COLORS[i] if i < len(STALL_COLORS) else "#bbbbbb",
                    label=r.replace("_", " "), height=0.6)
            left = [a + b for a, b in zip(left, vals)]
        ax.set_yticks(ys)
        ax.set_yticklabels([chartstyle.literal(chartstyle.wrap(label)) for label, _ in kernels])
        ax.set_xlabel("warp cycles per issued instruction, by stall reason (ncu WarpStateStats)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=7.5)
        return chartstyle.svg(fig, salt)


def memory_chart(kernels: list[str], levels: list[tuple[str, list[float | None]]], salt: str) -> str:
    """Grouped bars: the bytes each kernel of the detail pass moved at each memory level (sectors × 32 B at L1
    and L2, bytes at DRAM), on a log axis; `levels`: (level, one value per kernel)."""
    with matplotlib.rc_context(chartstyle.RC):
        fig = Figure(figsize=(7.5, 3.2))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        width = 0.8 / max(1, len(kernels))
        for i, label in enumerate(kernels):
            xs = [j + (i - (len(kernels) - 1) / 2) * width for j in range(len(levels))]
            vals = [vs[i] or 0 for _, vs in levels]
            ax.bar(xs, vals, width=width, color=STALL_COLORS[i % len(STALL_COLORS)],
                   label=chartstyle.literal(chartstyle.wrap(label)))
        ax.set_xticks(range(len(levels)))
        ax.set_xticklabels([lvl for lvl, _ in levels])
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda x, _: analysis.fmt_bytes(x)))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_ylabel("bytes moved (ncu)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=7.5)
        return chartstyle.svg(fig, salt)


def amount(row: dict[str, Any] | None) -> str:
    if row is None:
        return "—"
    if row["unit"] == "%":
        return f"{row['value']:.1f} %"
    value = fmt.bytes(row["value"]) if row["unit"] == "byte" else f"{row['value']:,.0f} {row['unit']}".rstrip()
    return value + (f" ({row['per_request']:.1f} per request)" if row.get("per_request") else "")


def view(shape: dict[str, Any], results_dir: Path, reports_dir: Path) -> WhyView | None:
    """The detail pass's kernels side by side, the recommended one first; None where the pass did not run."""
    run = ShapeRecord.of(shape).detail
    picked = sorted((VariantRecord.of(v) for v in shape["variants"] if v.get("detail")),
                    key=lambda v: v["detail"]["role"] != "recommended")
    if not run or not picked:
        return None
    dominant = [max(v["detail"]["kernels"], key=lambda k: k.get("duration_ns") or 0, default={}) for v in picked]
    reasons = sorted({r for k in dominant for r in k.get("stalls", {}) if r != "selected"},
                     key=lambda r: -max(k.get("stalls", {}).get(r, 0) for k in dominant))[:8]
    rows = [what for what, *_ in (*detail.MEMORY, *detail.HIT_RATES)]
    rep = run.get("report")
    kept = bool(rep) and (results_dir / rep).is_file()
    kernels = [WhyKernel(
        role=v["detail"]["role"], name=v["name"], median_ms=fmt.ms(v.median_ms),
        kernels=", ".join(k["name"] for k in v["detail"]["kernels"]) or "none profiled",
        lines=[(f"{Path(ln['file']).name}:{ln['line']}", f"{ln['share']:.0%}",
                ", ".join(r.replace("_", " ") for r in ln["reasons"]), ln["text"]) for ln in k.get("lines", [])],
        command=fmt.ncu_open(results_dir, rep, v["detail"]["range"]) if rep else "")
        for v, k in zip(picked, dominant)]
    labels = [f"{v['detail']['role'].split(' (')[0]}: {v['name']}" for v in picked]   # chart legends
    said = [(s.text, s.metric) for other, v in zip(dominant[1:], picked[1:])
            for s in detail.sentences(dominant[0], other, v["name"])]
    return WhyView(
        kernels=kernels,
        stalls=[(r.replace("_", " "), [f"{k['stalls'][r]:.2f}" if r in k.get("stalls", {}) else "—" for k in dominant])
                for r in reasons],
        memory=[(what, [amount(detail.memory_row(k, what)) for k in dominant])
                for what in rows if any(detail.memory_row(k, what) for k in dominant)],
        sentences=said, status=run.get("status", "—") + (f": {run['message']}" if run.get("message") else ""),
        # the detail reports are large (rmsnorm's: 30 MB) and may be left out of a copy of the results
        report_href=fmt.href(results_dir, reports_dir, rep) if kept else "",
        report_note="" if kept or not rep else f"{rep} is not kept beside the results: the commands above open it "
                                               "where it is, and profile --detail records a variant's again",
        wall=f"{run.get('wall_s', 0):.1f} s for {run.get('kernels')} kernel(s)",
        chart=Markup(stall_chart([(label, k.get("stalls", {})) for label, k in zip(labels, dominant)], reasons,
                                        f"{shape['id']}/stalls")),
        memory_chart=Markup(memory_chart(
            labels,
            [(level, [dict(detail.bytes_by_level(k))[level] for k in dominant]) for level, _ in detail.LEVELS],
            f"{shape['id']}/memory")))
