"""Render stored results as HTML: reports/index.html and one self-contained page per op.

The templates receive only the plain dataclasses of pipeline.viewmodel and do no computing of their own: every
number is formatted here, from the results file, and traceable to a measurement in it (the page names
the metric or timing behind each). Charts are SVG text from pipeline.charts, inlined.

Each shape is presented against the ceiling that limits it (`lead`): compute-led shapes with TFLOP/s and the
compute roofline, memory-led ones with GB/s, device copy and DRAM %. Pages beside the op pages: one per op
recorded on several GPUs (`<op>.gpus.html`), and, given a baseline results set, one diff page per op.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2

from pipeline import (analysis, catalogue, charts, detail_view, display as fmt, optimize_page, recommend, results,
                      shapeanalysis)
from pipeline.comparison import baseline_docs, baseline_for, compare_name, compare_page, diff_name, diff_page
from pipeline.records import ShapeRecord, VariantRecord
from pipeline.shapeanalysis import ShapeAnalysis, VariantAnalysis
from pipeline.viewmodel import (Alert, Cell, Chart, Column, FamilyRank, Headline, IndexPage, Link, OpPage, ShapeView,
                                Stat, Trace, VariantRow)

BENCH_FILE = "bench.json"       # bench/rmsnorm.py --json output beside a results file: torch.compile times


# ---------------------------------------------------------------- which ceiling a shape is presented against

def op_lead(analyses: list[ShapeAnalysis]) -> str:
    """The op's presentation where one is needed for all shapes (the sweep chart): most shapes decide."""
    leads = Counter(sa.lead for sa in analyses)
    return "compute" if leads["compute"] and leads["compute"] >= leads["memory"] else "memory"


# ---------------------------------------------------------------- torch.compile from bench.json

def bench_rows(results_dir: Path, env: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """bench.json's rows per shape id, when it lies beside the results and was measured on the same GPU."""
    try:
        doc = json.loads((results_dir / BENCH_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict) or (doc.get("gpu") or {}).get("gpu_name") != env.get("gpu_name"):
        return {}
    return {r["shape"]: r for r in doc.get("rows") or []
            if isinstance(r, dict) and "shape" in r and "torch.compile" in (r.get("median_ms") or {})}


def _bench_timing(row: dict[str, Any], key: str) -> dict[str, float]:
    iqr = (row.get("iqr_ms") or {}).get(key) or [row["median_ms"][key]] * 2
    return {"median_ms": row["median_ms"][key], "p25_ms": iqr[0], "p75_ms": iqr[1]}


class _Rival:
    """torch eager or torch.compile against the recommended variant, timed side by side with it."""

    def __init__(self, what: str, rival: dict[str, float], ours: dict[str, float], source: str):
        self.what, self.source = what, source
        self.rival_ms, self.ours_ms = rival["median_ms"], ours["median_ms"]
        self.speedup = self.rival_ms / self.ours_ms           # > 1: the recommendation is faster
        self.tied = recommend.tied(rival, ours)
        self.beats = self.speedup < 1 and not self.tied

    def phrase(self) -> str:
        if self.tied:
            return f"as fast as {self.what} within noise ({self.speedup:.2f}×)"
        return fmt.faster(self.speedup, self.what)


def _rivals(shape: dict[str, Any], rec: recommend.Recommendation, bench: dict[str, Any] | None) -> list[_Rival]:
    out = []
    ref = ShapeRecord.of(shape).reference_timing
    if ref:
        out.append(_Rival("torch eager", ref, rec.variant["timing"], "the reference, timed beside the variants"))
    if bench:
        out.append(_Rival("torch.compile", _bench_timing(bench, "torch.compile"), _bench_timing(bench, "recommended"),
                          f"{BENCH_FILE}: bench/rmsnorm.py, side by side with {bench.get('recommended', '?')}"))
    return out


def _alerts(rivals: list[_Rival], rec: recommend.Recommendation) -> list[Alert]:
    out = []
    for r in rivals:
        times = f"{fmt.ms(r.rival_ms)} ms against {fmt.ms(r.ours_ms)} ms for {rec.variant['name']}"
        if r.beats:
            out.append(Alert("bad", f"{r.what} is faster than every Triton variant at this shape: {times}, which runs "
                                    f"at {r.speedup:.2f}× {r.what}'s speed ({r.source}). Use {r.what} here; the "
                                    "recommendation below only ranks the Triton variants among themselves.",
                             f"{r.what} is faster than every Triton variant: {fmt.ms(r.rival_ms)} ms against "
                             f"{fmt.ms(r.ours_ms)} ms ({r.speedup:.2f}×)."))
        elif r.tied and r.speedup < 1:
            out.append(Alert("warn", f"{r.what} is as fast within noise: {times} ({r.speedup:.2f}×; {r.source}).",
                             f"{r.what} is as fast within noise ({r.speedup:.2f}×)."))
    return out


# ---------------------------------------------------------------- ncu trace of a variant

def _trace(v: dict[str, Any], shape_id: str, results_dir: Path, reports_dir: Path) -> Trace:
    v = VariantRecord.of(v)
    rec, kernels = v.ncu, v.kernels
    names = list(dict.fromkeys(k["name"] for k in kernels)) or list(dict.fromkeys(v.get("launched") or []))
    rng, report = rec.get("range") or "", rec.get("report")
    profiled = bool(rng and report and kernels)
    cmd = fmt.ncu_open(results_dir, report, rng) if profiled else ""
    status = rec.get("status", "")
    note = ("" if profiled else rec.get("error") or {
        "not-selected": "not profiled: a faster config of its layout family was",
        "not-profiled": "not profiled: not correct"}.get(status, f"no ncu range ({status or 'not profiled'})"))
    k = analysis.dominant_kernel(v)
    ncu_smem = analysis.m(k, "launch__shared_mem_per_block")
    triton = sorted({c["shared_bytes"] for c in v.get("compiled") or [] if c.get("shared_bytes") is not None})
    tri_txt = ("" if not triton else f"Triton compiled {triton[0]:,} B" if len(triton) == 1
               else f"Triton compiled {triton[0]:,}–{triton[-1]:,} B (its specialisations)")
    shared = "; ".join(x for x in (f"ncu {ncu_smem:,.0f} B" if ncu_smem is not None else "", tri_txt) if x) or "—"
    durs = [analysis.duration_us(x) for x in kernels]
    ncu_time = "—" if not durs or None in durs else f"{sum(durs):,.1f} µs"
    # the op is the folder its variant file lies in (ops.discover)
    again = " ".join(shlex.quote(a) for a in ("kernel-pipeline", "profile", "--op", Path(v["file"]).parent.name,
                                                 "--shape", shape_id, "--variant", v["name"], "--detail"))
    return Trace(range=rng, kernels=", ".join(names) or "—", command=cmd, reprofile=again,
                 report_href=fmt.href(results_dir, reports_dir, report) if profiled else "",
                 shared=shared, ncu_time=ncu_time, note=note)


# ---------------------------------------------------------------- the variants table

FINDINGS_NOTE = "findings (under each variant) name the metric and value that triggered them"
SHOWN = ("ok", "incorrect", "suspect")      # statuses in the main table; failed and unsupported are folded


@dataclass
class _Facts:
    """One variant's values at one shape, as its row's cells and named fields write them."""
    va: VariantAnalysis
    name: str                   # marked "(baseline)" where it is
    status: str                 # with the ncu and cache notes
    when: str                   # when it was measured and re-timed
    tm: dict[str, Any] | None   # its timing, when correct
    place: str                  # its standing against the recommended one
    vs_best: float | None
    vs_base: float | None
    gbs: float | None
    frac: float | None          # of device copy
    tflops: float | None
    comp_frac: float | None     # of the compute roofline
    moved: float | None         # DRAM bytes, all kernels
    excess: float | None        # moved ÷ min_bytes
    spills: int | None
    trace: Trace

    @property
    def med(self) -> float | None:
        return self.tm["median_ms"] if self.tm else None

    @property
    def spread(self) -> str:
        return f"{fmt.ms(self.tm['p25_ms'])}–{fmt.ms(self.tm['p75_ms'])}" if self.tm else "—"

    @property
    def bound(self) -> analysis.Bound | None:
        return self.va.bound if self.va.kernel else None

    def value(self, metric: str) -> float | None:
        """A metric of the variant's dominant kernel."""
        return analysis.m(self.va.kernel, metric)

    def text(self, metric: str) -> str:
        """That value as the catalogue formats it."""
        return fmt.metric(self.value(metric), catalogue.BY_NAME[metric])


@dataclass(frozen=True)
class _Spec:
    """A column of the variants table: its header, and how a row's cell is written."""
    column: Column
    cell: Callable[[_Facts], Cell]
    metric: str = ""            # the catalogue metric it shows alone, if one


def _metric(name: str) -> _Spec:
    """A catalogue metric's own column: its label, its name (and note) as the tooltip, its format."""
    m = catalogue.BY_NAME[name]
    return _Spec(Column(m.label, m.title), lambda f: Cell(f.text(name), fmt.sort(f.value(name))), name)


def _ncu_us(f: _Facts) -> Cell:
    us = f.trace.ncu_time.removesuffix(" µs")
    return Cell(us, fmt.sort(us.replace(",", "") if f.trace.ncu_time != "—" else None))


_HEAD = [
    _Spec(Column("variant", "name from the kernel file (stem and CONFIGS entry)", True),
          lambda f: Cell(fmt.breakable(f.name), f.va.variant["name"], "l name", f.va.variant.get("layout", ""))),
    _Spec(Column("status", "verification result; the reason when not ok", True),
          lambda f: Cell(f.status, f.va.variant["status"], "l", f.when)),
    _Spec(Column("median ms", "CUDA-event median per call, L2 flushed before each repeat"),
          lambda f: Cell(fmt.ms(f.med), fmt.sort(f.med))),
    _Spec(Column("IQR ms", "p25–p75 of the timed repeats"),
          lambda f: Cell(f.spread, fmt.sort(f.tm and f.tm["p75_ms"] - f.tm["p25_ms"]), "nw",
                         title=f"{f.tm['reps']} repeats" if f.tm else "")),
    _Spec(Column("vs fastest", "median ÷ the recommended variant's median, as % slower; \"tied\": within noise of "
                               f"it (overlapping p25–p75 or medians within {recommend.TIE_MARGIN:.0%})"),
          lambda f: Cell(f.place, fmt.sort(f.vs_best), "nw")),
]
_LEAD = {
    "memory": [_Spec(Column("GB/s", "min_bytes ÷ median: the op's minimal bytes moved per second"),
                     lambda f: Cell(fmt.rate(f.gbs, "GB/s").removesuffix(" GB/s"), fmt.sort(f.gbs))),
               _Spec(Column("of copy", "device copy time of the minimal bytes ÷ median"),
                     lambda f: Cell(fmt.frac(f.frac), fmt.sort(f.frac))),
               _metric(analysis.DRAM), _metric(analysis.MEM), _metric(analysis.SM)],
    "compute": [_Spec(Column("TFLOP/s", "shape.flops ÷ median"),
                      lambda f: Cell(fmt.rate(f.tflops, "TFLOP/s").removesuffix(" TFLOP/s"), fmt.sort(f.tflops))),
                _Spec(Column("of compute roofline", "(flops ÷ measured matmul rate of the dtype) ÷ median"),
                      lambda f: Cell(fmt.frac(f.comp_frac), fmt.sort(f.comp_frac))),
                _metric(analysis.SM), _metric(analysis.DRAM), _metric(analysis.MEM)],
}
_SMEM = catalogue.BY_NAME["launch__shared_mem_per_block"]
_TAIL = [
    _Spec(Column("vs baseline", "baseline median ÷ median"),
          lambda f: Cell(fmt.ratio(f.vs_base), fmt.sort(f.vs_base))),
    _Spec(Column("occupancy %", f"achieved / theoretical: {analysis.WARPS} / {analysis.THEORETICAL}"),
          lambda f: Cell(f"{f.text(analysis.WARPS)} / {f.text(analysis.THEORETICAL)}",
                         fmt.sort(f.value(analysis.WARPS)), "nw")),
    _metric(analysis.L2_HIT),
    _Spec(Column("DRAM ÷ min", f"({analysis.READ} + {analysis.WRITE}, all kernels) ÷ min_bytes"),
          lambda f: Cell(fmt.ratio(f.excess), fmt.sort(f.excess),
                         title="" if f.moved is None else analysis.fmt_bytes(f.moved))),
    _Spec(Column("grid", "launch__grid_dim_{x,y,z}"),
          lambda f: Cell(fmt.dims(f.va.grid).replace(" ", ""), fmt.sort(f.value("launch__grid_size")), "nw")),
    _Spec(Column("block", "launch__block_dim_{x,y,z}"),
          lambda f: Cell(fmt.dims(f.va.block).replace(" ", ""), fmt.sort(f.value("launch__block_size")), "nw")),
    _metric(analysis.WAVES),
    _Spec(Column("regs / spills", "launch__registers_per_thread / Triton n_spills summed over the variant's kernels"),
          lambda f: Cell(f"{f.text('launch__registers_per_thread')} / {fmt.num(f.spills, 'd')}",
                         fmt.sort(f.value("launch__registers_per_thread")), "nw")),
    _Spec(Column(_SMEM.label, f"{_SMEM.name} (ncu; Triton's compiled shared_bytes in the tooltip)"),
          lambda f: Cell(f.text(_SMEM.name), fmt.sort(f.value(_SMEM.name)), "nw", f.trace.shared)),
    _Spec(Column(catalogue.BY_NAME[analysis.DUR].label,
                 f"{analysis.DUR}, all the variant's kernels, under ncu's base clocks (events run at boost)"), _ncu_us),
]
_END = [
    _Spec(Column("ncu range", "the NVTX range holding the variant's kernels in its .ncu-rep", True),
          lambda f: Cell(f.trace.range or "—", f.trace.range, "l nw", f.trace.kernels)),
    _Spec(Column("bound", "classification; hover for the rule that decided", True),
          lambda f: Cell(f.bound.label if f.bound else "—", f.bound.kind if f.bound else "", "l",
                         f.bound.rule if f.bound else "")),
]


def _specs(lead_: str) -> list[_Spec]:
    """The table's columns for a memory- or compute-led shape; catalogue metrics with a column that no spec
    above places come after the fixed ones."""
    fixed = [*_HEAD, *_LEAD[lead_], *_TAIL, *_END]
    placed = {s.metric for s in fixed}
    more = [_metric(m.name) for m in catalogue.columns() if m.name not in placed]
    return [*_HEAD, *_LEAD[lead_], *_TAIL, *more, *_END]


def columns(lead_: str) -> list[Column]:
    return [s.column for s in _specs(lead_)]


def _row(va: VariantAnalysis, sa: ShapeAnalysis, base_ms: float | None, results_dir: Path,
         reports_dir: Path) -> VariantRow:
    v, shape, rec = va.variant, sa.shape, sa.recommendation
    tm = v.get("timing") if v["status"] == "ok" else None
    med = tm["median_ms"] if tm else None
    compiled = v.get("compiled") or []
    moved, mb = analysis.dram_bytes(v), shape.get("min_bytes")
    ncu_rec = v.ncu
    ncu_status = v.ncu_status or ""
    status = v["status"] + ("" if v["status"] != "ok" or ncu_status in ("ok", "") else
                            " · not profiled" if ncu_status == "not-selected" else f" · ncu {ncu_status}")
    # a cached result says when it was measured (and re-timed, when it served as a control)
    status += " · cached" if v.get("cached") else ""
    when = "; ".join(x for x in (
        ncu_rec.get("error", "") if ncu_status == "not-selected" else "",
        f"measured {v['measured_at']}" if v.get("measured_at") else "",
        f"re-timed {v['retimed_at']} beside the variants measured then" if v.get("retimed_at") else "") if x)
    is_rec, tied = va.recommended, va.tied
    vs_best = med / rec.median_ms if med and rec else None
    f = _Facts(
        va=va, name=v["name"] + (" (baseline)" if v.get("baseline") else ""), status=status, when=when, tm=tm,
        place=charts.standing(vs_best, is_rec, tied, bool(rec.ties)) if vs_best else "—", vs_best=vs_best,
        vs_base=base_ms / med if med and base_ms else None, gbs=fmt.gbs(shape, med),
        frac=va.fraction_of_copy if tm else None, tflops=fmt.tflops(shape, med),
        comp_frac=va.compute_fraction if tm else None, moved=moved,
        excess=moved / mb if moved is not None and mb else None,
        spills=sum(c.get("n_spills") or 0 for c in compiled) if compiled else None,
        trace=_trace(v, sa.shape["id"], results_dir, reports_dir))
    css = ("rec" if is_rec else "tie" if tied else "unsupported" if v["status"] == "unsupported"
           else "bad" if v["status"] != "ok" else "")
    return VariantRow(
        name=v["name"], layout=v.get("layout", ""), family=v.get("stem", v["name"]), status=v["status"],
        error=v.get("error") or "", baseline=bool(v.get("baseline")), recommended=is_rec, tied=tied,
        median_ms=fmt.ms(med), spread_ms=f.spread, median_raw=med, frac_copy=fmt.frac(f.frac),
        vs_baseline=fmt.ratio(f.vs_base), sm_pct=f.text(analysis.SM), warps_pct=f.text(analysis.WARPS),
        dram_pct=f.text(analysis.DRAM), memsys_pct=f.text(analysis.MEM), grid_size=f.text("launch__grid_size"),
        grid=fmt.dims(va.grid), block=fmt.dims(va.block), regs=f.text("launch__registers_per_thread"),
        spills=fmt.num(f.spills, "d"), bound=f.bound.label if f.bound else "—",
        bound_rule=f.bound.rule if f.bound else "",
        ncu_status=ncu_status or "—", standing=f.place, css=css, folded=v["status"] not in SHOWN,
        cells=[s.cell(f) for s in _specs(sa.lead)], trace=f.trace, findings=list(va.findings))


# ---------------------------------------------------------------- the headline of a shape

def _baseline_state(sa: ShapeAnalysis, rec: recommend.Recommendation) -> tuple[str, str, str]:
    """(card value, verdict phrase, card detail) for the speedup over the op's baseline variant."""
    shape = sa.shape
    if rec.speedup_vs_baseline is not None:
        base = next(v for v in sa.ranking if v["name"] == rec.baseline)
        detail = f"{rec.baseline}: {fmt.ms(base['timing']['median_ms'])} ms ÷ {fmt.ms(rec.median_ms)} ms"
        if rec.variant["name"] == rec.baseline:
            return fmt.ratio(1.0), f"it is the baseline {rec.baseline}", detail
        return fmt.ratio(rec.speedup_vs_baseline), fmt.faster(rec.speedup_vs_baseline, f"the baseline {rec.baseline}"), detail
    bases = [v for v in shape["variants"] if v.get("baseline")]
    if not bases:
        return "no baseline", "no baseline variant declared", "op.yaml names no baseline variant"
    b = bases[0]
    why = f"{b['name']} {b['status']}" + (f": {b['error']}" if b.get("error") else "")
    if b["status"] == "unsupported":
        return "unsupported", f"the baseline {b['name']} does not support this shape (unsupported)", why
    if b["status"] in ("incorrect", "suspect"):
        return (f"baseline {b['status']}", f"the baseline {b['name']} is {b['status']} at this shape, so there is no "
                                           "speedup over it to report", why)
    return (f"baseline {b['status']}", f"the baseline {b['name']} failed at this shape ({b['status']}), so there is "
                                       "no speedup over it to report", why)


def _tie_note(rec: recommend.Recommendation, timings: dict[str, float]) -> str:
    if not rec.ties:
        return ("No other variant is within noise of it (p25–p75 overlapping, or medians within "
                f"{recommend.TIE_MARGIN:.0%}): the ranking is outside the noise.")
    exact = [n for n in rec.ties if timings[n] == rec.median_ms]
    near = [n for n in rec.ties if n not in exact]
    parts = []
    if exact:
        parts.append(f"Tied exactly with {', '.join(exact)}: the same median, {fmt.ms(rec.median_ms)} ms, so which of "
                     "them is named first is arbitrary.")
    if near:
        parts.append(f"Tied within noise (p25–p75 overlapping, or medians within {recommend.TIE_MARGIN:.0%}) with "
                     f"{len(near)}: {', '.join(near)}.")
    return " ".join(parts) + " Any of these is as good at this shape."


def _headline(sa: ShapeAnalysis, rivals: list[_Rival], trace: Trace) -> Headline:
    shape, env, rec, lead_, va = sa.shape, sa.environment, sa.recommendation, sa.lead, sa.recommended
    assert rec is not None and va is not None
    v, tm = rec.variant, rec.variant["timing"]
    roof = analysis.roofline(shape, env)
    mem_frac, comp_frac = va.memory_fraction, va.compute_fraction
    copy = ShapeRecord.of(shape).copy_timing
    bound = va.bound
    med = fmt.ms(rec.median_ms)
    timings = {x["name"]: x["timing"]["median_ms"] for x in sa.ranking}
    n_ties = len(rec.ties)
    tied_txt = f" (tied with {n_ties})" if n_ties else ""
    base_value, base_phrase, base_detail = _baseline_state(sa, rec)
    k = va.kernel
    dram = analysis.m(k, analysis.DRAM)
    tflops, gbs = fmt.tflops(shape, rec.median_ms), fmt.gbs(shape, rec.median_ms)
    by = {r.what: r for r in rivals}
    eager, comp = by.get("torch eager"), by.get("torch.compile")

    def rival_stat(r: _Rival | None, what: str) -> Stat:
        if r is None:
            return Stat(f"vs {what}", "—", "not measured" if what == "torch.compile" else "reference not timed")
        detail = f"{what} {fmt.ms(r.rival_ms)} ms ÷ {fmt.ms(r.ours_ms)} ms" + (" (tied within noise)" if r.tied else "")
        if what == "torch.compile":
            detail += f"; {r.source}"
        return Stat(f"vs {what}", fmt.ratio(r.speedup), detail, "bad" if r.beats else "")

    time = Stat(f"time{tied_txt}", f"{med} ms", f"median of {tm['reps']} CUDA-event repeats, IQR "
                                               f"{fmt.ms(tm['p25_ms'])}–{fmt.ms(tm['p75_ms'])} ms"
                + (f"; tied within noise with {n_ties} other variant{'s' if n_ties > 1 else ''}" if n_ties else ""))
    mem_roof = Stat("memory roofline", fmt.frac(mem_frac), f"{roof.memory_basis} = {fmt.ms(roof.memory_ms)} ms; ÷ {med} ms"
                    if roof.memory_ms else roof.memory_basis)
    copy_stat = Stat("of device copy", fmt.frac(rec.fraction_of_copy),
                     f"copy of the minimal bytes at this shape: {fmt.ms(copy['median_ms'])} ms ÷ {med} ms" if copy
                     else "copy not timed")
    comp_roof = Stat("compute roofline", fmt.frac(comp_frac) if comp_frac is not None else "n/a",
                     f"{roof.compute_basis} = {fmt.ms(roof.compute_ms)} ms; ÷ {med} ms" if roof.compute_ms
                     else roof.compute_basis.removeprefix("n/a (").removesuffix(")"))
    vs = [Stat("vs baseline", base_value, base_detail),
          rival_stat(eager, "torch eager")] + ([rival_stat(comp, "torch.compile")] if comp else [])
    if lead_ == "compute":
        rate = Stat("TFLOP/s", fmt.rate(tflops, ""), f"{shape['flops'] / 1e9:,.4g} GFLOP ÷ {med} ms")
        stats = [time, comp_roof, rate, *vs, mem_roof, copy_stat]
        lead_txt = (f"{fmt.rate(tflops, 'TFLOP/s')}, " + (f"{fmt.frac(comp_frac)} of the compute roofline" if comp_frac
                                                      is not None else "compute roofline unknown"))
        frac_lead = f"{fmt.frac(comp_frac)} compute" if comp_frac is not None else "—"
        throughput = fmt.rate(tflops, "TFLOP/s")
    else:
        rate = Stat("GB/s", fmt.rate(gbs, ""), (f"{analysis.fmt_bytes(shape['min_bytes'])} minimal ÷ {med} ms" if gbs else
                                            "no minimal bytes") + (f"; DRAM {dram:.1f} % of peak (ncu)"
                                                                   if dram is not None else ""))
        stats = [time, mem_roof, rate, copy_stat, *vs, comp_roof]
        lead_txt = (f"{fmt.rate(gbs, 'GB/s')}, " + (f"{fmt.frac(mem_frac)} of the memory roofline" if mem_frac is not None
                                                else "memory roofline unknown")
                    + f" ({fmt.frac(rec.fraction_of_copy)} of device copy"
                    + (f", DRAM {dram:.1f} %)" if dram is not None else ")"))
        frac_lead = f"{fmt.frac(mem_frac)} memory" if mem_frac is not None else "—"
        throughput = fmt.rate(gbs, "GB/s")
    fams = []
    for f, x in sa.family_best.items():
        ratio = x["timing"]["median_ms"] / rec.median_ms
        tie, is_rec = x["name"] in rec.ties, sa.is_recommended(x)
        fams.append(FamilyRank(f, fmt.breakable(x["name"]), fmt.ms(x["timing"]["median_ms"]),
                               "recommended" if is_rec else charts.standing(ratio, False, tie, True),
                               "rec" if is_rec else "tie" if tie else ""))
    beaten = [r for r in rivals if r.beats]
    rival_phrases = [r.phrase() for r in rivals] or ["torch eager not timed"]
    summary = (f"{med} ms{' (tied with ' + str(n_ties) + ' within noise)' if n_ties else ''}: {base_phrase}, "
               f"{', '.join(rival_phrases)}; {lead_txt}; {bound.label}")
    title = (f"Recommended for {shape['id']}" if not beaten else f"Best Triton variant for {shape['id']} ("
             + " and ".join(r.what for r in beaten) + " is faster)")
    return Headline(
        title=title, css="beaten" if beaten else "",
        name=v["name"], name_wrap=fmt.breakable(v["name"]), family=v.get("stem", v["name"]),
        layout=v.get("layout", ""), grid=fmt.dims(rec.grid), block=fmt.dims(rec.block),
        cluster=fmt.dims(rec.cluster) if rec.cluster else "", median_ms=med, spread_ms=f"{fmt.ms(tm['p25_ms'])}–{fmt.ms(tm['p75_ms'])}",
        vs_baseline=base_value if rec.speedup_vs_baseline is None else fmt.ratio(rec.speedup_vs_baseline),
        baseline=rec.baseline or base_detail, vs_reference=fmt.ratio(eager.speedup) if eager else "—",
        vs_compile=fmt.ratio(comp.speedup) if comp else "—", frac_copy=fmt.frac(rec.fraction_of_copy),
        frac_roofline=fmt.frac(mem_frac), lead=lead_, throughput=throughput, frac_lead=frac_lead, summary=summary,
        tie_note=_tie_note(rec, timings),
        warning="; ".join(f"{r.what} faster ({r.speedup:.2f}×)" for r in beaten),
        stats=stats, bound=bound.label, bound_rule=bound.rule, ties=list(rec.ties), families=fams,
        runner_up=f"{fams[1].family} {fams[1].vs_winner}" if len(fams) > 1 else "—", trace=trace,
        findings=list(va.findings))


def shape_view(shape: dict[str, Any], env: dict[str, Any], results_dir: Path, reports_dir: Path,
               shape_charts: list[Chart] | None = None, bench: dict[str, dict[str, Any]] | None = None,
               sa: ShapeAnalysis | None = None) -> ShapeView:
    """One shape's view; `bench`: bench.json rows per shape id (torch.compile), when measured; `sa`: the
    shape's analysis when the caller has it."""
    sa = sa or shapeanalysis.analyze_shape(shape, env)
    shape = sa.shape
    rec, lead_ = sa.recommendation, sa.lead
    base_ms = next((v["timing"]["median_ms"] for v in sa.ranking if v.get("baseline")), None)
    rows = [_row(va, sa, base_ms, results_dir, reports_dir) for va in sa.variants]
    rows.sort(key=lambda r: (r.median_raw is None, r.median_raw or 0, r.name))
    folded = [r for r in rows if r.folded]
    copy, ref, mb = shape.copy_timing, shape.reference_timing, shape.min_bytes
    roof = analysis.roofline(shape, env)
    brow = (bench or {}).get(shape["id"])
    rivals = _rivals(shape, rec, brow) if rec else []
    facts = [("minimal bytes", fmt.bytes(mb)),
             ("FLOPs", f"{shape['flops'] / 1e9:,.4g} GFLOP" if shape.get("flops") else "none declared"),
             ("device copy", "—" if not copy else f"{fmt.ms(copy['median_ms'])} ms"
              + (f" ({mb / copy['median_ms'] / 1e6:,.0f} GB/s)" if mb else "")),
             ("torch eager", f"{fmt.ms(ref['median_ms'])} ms" if ref else "—")]
    if brow:
        facts.append(("torch.compile", f"{fmt.ms(brow['median_ms']['torch.compile'])} ms ({BENCH_FILE})"))
    roofs = [("memory roofline", f"{fmt.ms(roof.memory_ms)} ms = {roof.memory_basis}" if roof.memory_ms
              else roof.memory_basis),
             ("compute roofline", f"{fmt.ms(roof.compute_ms)} ms = {roof.compute_basis}" if roof.compute_ms
              else roof.compute_basis)]
    facts += roofs[::-1] if lead_ == "compute" else roofs
    statuses = Counter(v["status"] for v in shape["variants"])
    fold_counts = Counter(r.status for r in folded)
    ncu_rec = shape.ncu
    rec_row = next((r for r in rows if r.recommended), None)
    return ShapeView(
        id=shape["id"], anchor="shape-" + results.slug(shape["id"]),
        params=", ".join(f"{k}={v}" for k, v in shape.params.items()) or "default",
        dtype=shape.get("dtype", ""), lead=lead_, facts=facts, alerts=_alerts(rivals, rec) if rec else [],
        headline=_headline(sa, rivals, rec_row.trace) if rec else None,
        ties=list(rec.ties) if rec else [], charts=shape_charts or [],
        columns=columns(lead_), rows=rows, shown_rows=[r for r in rows if not r.folded], folded_rows=folded,
        folded_summary=(f"{len(folded)} variant{'s' if len(folded) > 1 else ''} failed or do not support this shape: "
                        + ", ".join(f"{n} {s}" for s, n in fold_counts.items())) if folded else "",
        counts=f"{len(shape['variants'])} variants: " + ", ".join(f"{n} {s}" for s, n in statuses.items()),
        families=list({v.get("stem", v["name"]): v.get("layout", "") for v in shape["variants"]}.items()),
        ncu_status=ncu_rec.get("status", "—"), ncu_message=ncu_rec.get("message", ""),
        ncu_command=" ".join(ncu_rec.get("command", [])), ncu_passes=str(ncu_rec.get("passes") or "—"),
        report_href=fmt.href(results_dir, reports_dir, ncu_rec.get("report")),
        cached_report_hrefs=[fmt.href(results_dir, reports_dir, r) for r in sorted(
            {v.ncu.get("report") for v in shape.variants} - {None, ncu_rec.get("report")})],
        log_href=fmt.href(results_dir, reports_dir, ncu_rec.get("log")),
        worker_log_href=fmt.href(results_dir, reports_dir, shape.get("worker_log")),
        errors=list(shape.get("errors", [])), why=detail_view.view(shape, results_dir, reports_dir))


def _environment(doc: dict[str, Any]) -> list[tuple[str, str]]:
    env, shapes = doc["environment"], doc["shapes"]
    ncu = env.get("ncu_settings") or {}
    ceil = analysis.ceilings(env)
    copy = (ceil.get("timing") or {}).get("copy") or {}
    rates = ", ".join(f"{k} {v:,.1f} TFLOP/s" for k, v in (ceil.get("matmul_tflops") or {}).items())
    g = lambda key, d=env: "—" if d.get(key) in (None, "") else str(d[key])  # noqa: E731
    return [
        ("GPU", g("gpu_name")), ("SMs", g("sm_count")), ("L2", fmt.bytes(env.get("l2_bytes"))),
        ("memory", fmt.bytes(env.get("memory_bytes"))), ("compute capability", g("compute_capability")),
        ("driver", g("driver")), ("CUDA", g("cuda")), ("ncu", f"{g('ncu_version')} ({g('ncu_path')})"),
        ("ncu replay mode", g("replay_mode", ncu)), ("ncu clock control", g("clock_control", ncu)),
        ("ncu cache control", g("cache_control", ncu)),
        ("ncu replay passes", ", ".join(f"{x.id}: {x.ncu.get('passes') or '—'}" for x in map(ShapeRecord.of, shapes))),
        ("ncu metrics", ", ".join(ncu.get("metrics") or []) or "—"),
        ("measured copy bandwidth", f"{ceil['copy_gbs']:,.0f} GB/s (copy of {fmt.bytes(ceil.get('copy_bytes'))}, fastest "
         f"{fmt.ms(copy.get('min_ms'))} ms of {copy.get('reps', '?')} repeats; median {fmt.ms(copy.get('median_ms'))} ms)" if ceil.get("copy_gbs") else "—"),
        ("measured matmul rate", (rates + f" (N = {ceil.get('matmul_n', '?')}, float32 precision "
                                  f"{ceil.get('float32_matmul_precision', '?')})") if rates else "—"),
        ("torch", g("torch")), ("triton", g("triton")), ("python", g("python")), ("host", g("host")),
        ("results written", g("created", doc)),
        ("shapes measured", ", ".join(f"{x['id']}: {x.get('measured_at', '—')}" for x in shapes))]


MAX_DRAW_PROCESSES = 16


def _styles(doc: dict[str, Any]) -> dict[str, charts.Style]:
    return charts.styles([v.get("stem", v["name"]) for s in doc["shapes"] for v in s["variants"]])


def _draw(job: tuple[charts.ShapeChartData, dict[str, charts.Style]]) -> list[Chart]:
    return charts.shape_charts(*job)


def draw_all(docs: list[dict[str, Any]], analyses: list[list[ShapeAnalysis]] | None = None) -> list[list[list[Chart]]]:
    """Every shape's charts, per doc (`analyses`: each doc's shape analyses, when the caller has them). Drawing
    SVGs is most of a render (0.2 s a chart, 3 per shape), so the shapes are drawn in parallel processes
    (matplotlib is not thread-safe); the output is the same."""
    analyses = analyses if analyses is not None else [shapeanalysis.analyze_doc(d) for d in docs]
    jobs = [(charts.chart_data(d["op"], sa), _styles(d)) for d, sas in zip(docs, analyses) for sa in sas]
    workers = min(len(jobs), os.cpu_count() or 1, MAX_DRAW_PROCESSES)
    if workers > 1:
        # a Pool, not an executor: leaving it (an interrupt, SIGTERM) terminates its processes at once
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            drawn = iter(pool.map(_draw, jobs))
    else:
        drawn = iter([_draw(j) for j in jobs])
    return [[next(drawn) for _ in d["shapes"]] for d in docs]


def _bench_note(bench: dict[str, dict[str, Any]]) -> str:
    if not bench:
        return ""
    return (f"torch.compile times come from {BENCH_FILE} beside the results (bench/rmsnorm.py: the recommended "
            "variant, torch eager and torch.compile timed side by side in one process), for shapes "
            + ", ".join(bench) + "; the vs torch.compile ratio compares the two times of that run.")


def op_page(doc: dict[str, Any], path: Path, reports_dir: Path, replayed: bool,
            drawn: list[list[Chart]] | None = None, filename: str | None = None,
            related: list[Link] | None = None, analyses: list[ShapeAnalysis] | None = None) -> OpPage:
    env = doc["environment"]
    sty = _styles(doc)
    analyses = analyses if analyses is not None else shapeanalysis.analyze_doc(doc)
    drawn = drawn if drawn is not None else [_draw((charts.chart_data(doc["op"], sa), sty)) for sa in analyses]
    bench = bench_rows(path.parent, env)
    shapes = [shape_view(sa.shape, env, path.parent, reports_dir, c, bench, sa) for sa, c in zip(analyses, drawn)]
    return OpPage(
        op=doc["op"], replay_note=fmt.replay_note(doc) if replayed else "", gpu=str(env.get("gpu_name", "?")),
        created=str(doc.get("created", "—")), environment=_environment(doc),
        commands=[(s.id, s.ncu_command) for s in shapes if s.ncu_command],
        thresholds=[(k, f"{v:g}", d) for k, (v, d) in analysis.THRESHOLDS.items()],
        glossary=columns("memory") + [s.column for s in _LEAD["compute"][:2]] + [Column("findings", FINDINGS_NOTE)],
        results_href=fmt.href(path.parent, reports_dir, path.name), results_name="/".join(path.parts[-4:]),
        sweep_chart=charts.sweep(doc, analyses, sty, op_lead(analyses)), shapes=shapes,
        filename=filename or page_names([doc])[0],
        bench_note=_bench_note(bench), related=related or [])


def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("pipeline", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def digest(paths: list[Path], replayed: bool) -> str:
    """Hash of everything a set of pages is rendered from: results files (and the bench.json beside each),
    the replay flag, and this package's rendering code and templates."""
    h = hashlib.sha256(f"{replayed}\n".encode())
    here = Path(__file__).parent
    code = [here / f for f in ("report.py", "viewmodel.py", "charts.py", "analysis.py", "recommend.py",
                               "shapeanalysis.py", "compare.py", "comparison.py", "display.py", "catalogue.py", "detail.py",
                               "detail_view.py", "optimize_page.py", "records.py")]
    benches = [p.parent / BENCH_FILE for p in paths if (p.parent / BENCH_FILE).is_file()]
    for f in [*paths, *benches, *code, *sorted((here / "templates").iterdir())]:
        h.update(f"{f.name}\n".encode() + f.read_bytes())
    return h.hexdigest()


def page_names(docs: list[dict[str, Any]]) -> list[str]:
    """One page per results file: `<op>.html`, or `<op>.<gpu>.html` where the op was recorded on more than one
    GPU (profiles/<gpu>/<op>/), so that no GPU's page overwrites another's."""
    ops = [results.slug(d["op"]) for d in docs]
    return [f"{op}.{results.slug(str(d['environment'].get('gpu_name', 'unknown-gpu')))}.html"
            if ops.count(op) > 1 else f"{op}.html" for op, d in zip(ops, docs)]


def up_to_date(paths: list[Path], reports_dir: Path, replayed: bool) -> bool:
    """True when every page exists and the index was rendered from exactly these inputs."""
    return _current(digest(paths, replayed), [reports_dir / n for n in page_names([results.load(p) for p in paths])],
                    reports_dir)


def _current(inputs: str, pages: list[Path], reports_dir: Path) -> bool:
    index = reports_dir / "index.html"
    if not index.exists() or not all(p.exists() for p in pages):
        return False
    return f'<meta name="pipeline-digest" content="{inputs}">' in index.read_text()


def index_entry(doc: dict[str, Any], path: Path, reports_dir: Path, replayed: bool, filename: str) -> OpPage:
    """What the index shows of an op whose page is not rendered now: its shapes' headlines, no charts."""
    bench = bench_rows(path.parent, doc["environment"])
    shapes = [shape_view(sa.shape, doc["environment"], path.parent, reports_dir, bench=bench, sa=sa)
              for sa in shapeanalysis.analyze_doc(doc)]
    return OpPage(op=doc["op"], replay_note=fmt.replay_note(doc) if replayed else "",
                  gpu=str(doc["environment"].get("gpu_name", "?")), created=str(doc.get("created", "—")),
                  environment=[], commands=[], thresholds=[], glossary=[],
                  results_href=fmt.href(path.parent, reports_dir, path.name), results_name="/".join(path.parts[-4:]),
                  sweep_chart=None, shapes=shapes, filename=filename)


# ---------------------------------------------------------------- one op across GPUs

_INDEX_LINK = re.compile(r'<h2><a href="([a-z0-9._-]+\.html)">|<a class="page" href="([a-z0-9._-]+\.html)">')


def _listed(index: Path) -> set[str]:
    """The pages an index written by render() links to (op pages, cross-GPU and diff pages)."""
    try:
        return {a or b for a, b in _INDEX_LINK.findall(index.read_text())}
    except OSError:
        return set()


def render(paths: list[Path], reports_dir: Path, replayed: bool, index: list[Path] | None = None,
           baseline: Path | None = None) -> list[Path]:
    """Write one page per results file of `paths` and the index over `index` (default: `paths`; the files in
    `paths` are always listed); returns the files written (index first).

    The index lists every results file it is given, so rendering one op keeps the others on it; their pages
    are rendered only where missing. An op recorded on several GPUs also gets a page comparing them, and with
    `baseline` (a results file or a profiles folder) each listed op that has a baseline on its GPU gets a diff
    page. Pages the previous index listed and this one does not (their results are gone) are deleted. Nothing
    is written when the pages on disk were rendered from the same inputs (a rerun that measured nothing
    re-renders in no time)."""
    paths = [p.resolve() for p in paths]
    listed = list(dict.fromkeys([*(p.resolve() for p in index or []), *paths]))
    docs = {p: results.load(p) for p in listed}      # each file read once
    names = dict(zip(listed, page_names([docs[p] for p in listed])))
    base = baseline_docs(baseline) if baseline else []
    diffs = {p: found for p in listed if (found := baseline_for(docs[p], base))}
    by_op: dict[str, list[Path]] = {}
    for p in listed:
        by_op.setdefault(docs[p]["op"], []).append(p)
    multi = {op: ps for op, ps in by_op.items() if len(ps) > 1}
    # each `optimize` run beside a results file: its history page (optimize_page)
    optimized = {p: [(log, optimize_page.page_name(names[p], log.parent.name)) for log in optimize_page.runs(p.parent)]
                 for p in listed}
    inputs = digest(listed + [bp for bp, _ in diffs.values()] + [log for runs in optimized.values() for log, _ in runs],
                    replayed)
    extra = [reports_dir / compare_name(op) for op in multi] + [reports_dir / diff_name(names[p]) for p in diffs] \
        + [reports_dir / name for runs in optimized.values() for _, name in runs]
    if _current(inputs, [reports_dir / n for n in names.values()] + extra, reports_dir):
        return [reports_dir / "index.html", *(reports_dir / names[p] for p in listed), *extra]
    todo = [p for p in listed if p in paths or not (reports_dir / names[p]).exists()]
    env = environment()

    def related(p: Path) -> list[Link]:
        out = [Link(compare_name(docs[p]["op"]), "this op on every GPU")] if docs[p]["op"] in multi else []
        out += [Link(name, f"optimisation run {log.parent.name}") for log, name in optimized[p]]
        return out + ([Link(diff_name(names[p]), "against the baseline")] if p in diffs else [])

    analyses = {p: shapeanalysis.analyze_doc(docs[p]) for p in todo}
    pages = {p: op_page(docs[p], p, reports_dir, replayed, drawn, names[p], related(p), analyses[p])
             for p, drawn in zip(todo, draw_all([docs[p] for p in todo], [analyses[p] for p in todo]))}
    written = []
    for page in pages.values():
        out = reports_dir / page.filename
        results.write_atomic(out, env.get_template("op.html").render(page=page))
        written.append(out)
    for p, runs in optimized.items():
        for log, name in runs:
            view = optimize_page.run_view(log, name, names[p])
            results.write_atomic(reports_dir / name, env.get_template("optimize.html").render(page=view))
            written.append(reports_dir / name)
    compares = []
    for op, ps in multi.items():
        cp = compare_page(op, [(docs[p], names[p]) for p in ps], replayed)
        results.write_atomic(reports_dir / cp.filename, env.get_template("compare.html").render(page=cp))
        written.append(reports_dir / cp.filename)
        compares.append(Link(cp.filename, f"{op} on {len(ps)} GPUs", cp.summary))
    diff_links = []
    for p, (bp, bdoc) in diffs.items():
        dp = diff_page(docs[p], p, bp, bdoc, replayed, diff_name(names[p]))
        results.write_atomic(reports_dir / dp.filename, env.get_template("diff.html").render(page=dp))
        written.append(reports_dir / dp.filename)
        diff_links.append(Link(dp.filename, f"{dp.op} on {dp.gpu}", f"against {bp}"))
    entries = [pages.get(p) or index_entry(docs[p], p, reports_dir, replayed, names[p]) for p in listed]
    for p, e in zip(listed, entries):
        e.related = related(p)
    # one note per recording (GPU and date) among the pages
    page = IndexPage(replay_note=" ".join(dict.fromkeys(e.replay_note for e in entries)) if replayed else "",
                     ops=entries, compares=compares, diffs=diff_links, digest=inputs)
    out = reports_dir / "index.html"
    stale = _listed(out) - set(names.values()) - {x.name for x in extra}
    results.write_atomic(out, env.get_template("index.html").render(page=page))
    for name in stale:
        (reports_dir / name).unlink(missing_ok=True)
    return [out, *written]
