"""The variants table of one shape on the op page: its declared columns (led by the shape's ceiling: GB/s, device
copy and DRAM % for memory-led shapes, TFLOP/s and the compute roofline for compute-led ones), and each variant's
row with its trace into ncu (range, kernels, the command that opens it, the one that profiles it again), built
from the shape's analysis. pipeline/shapeview.py places it under the shape's headline.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pipeline import analysis, catalogue, display as fmt, recommend
from pipeline.records import VariantRecord
from pipeline.shapeanalysis import ShapeAnalysis, VariantAnalysis
from pipeline.viewmodel import Cell, Column, Trace, VariantRow


# ---------------------------------------------------------------- ncu trace of a variant

def trace(v: dict[str, Any], shape_id: str, results_dir: Path, reports_dir: Path) -> Trace:
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
    again = shlex.join(("kernel-pipeline", "profile", "--op", Path(v["file"]).parent.name, "--shape", shape_id,
                        "--variant", v["name"], "--detail"))
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


def row(va: VariantAnalysis, sa: ShapeAnalysis, base_ms: float | None, results_dir: Path,
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
        place=fmt.standing(vs_best, is_rec, tied, bool(rec.ties)) if vs_best else "—", vs_best=vs_best,
        vs_base=base_ms / med if med and base_ms else None, gbs=fmt.gbs(shape, med),
        frac=va.fraction_of_copy if tm else None, tflops=fmt.tflops(shape, med),
        comp_frac=va.compute_fraction if tm else None, moved=moved,
        excess=moved / mb if moved is not None and mb else None,
        spills=sum(c.get("n_spills") or 0 for c in compiled) if compiled else None,
        trace=trace(v, sa.shape["id"], results_dir, reports_dir))
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


def glossary() -> list[Column]:
    """Every column the pages may show, for the environment section's glossary (print has no tooltips)."""
    return columns("memory") + [s.column for s in _LEAD["compute"][:2]] + [Column("findings", FINDINGS_NOTE)]
