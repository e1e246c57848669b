"""One shape's view on the op page: its facts, its headline (the verdict, rivals and the recommendation's ncu
trace), the ncu passes that measured it, and under them its variants table (pipeline/varianttable.py), built from
the shape's analysis. The page around it, its charts and the files it is written to are pipeline/report.py's.

Each shape is presented against the ceiling that limits it (`lead`): compute-led shapes with TFLOP/s and the
compute roofline, memory-led ones with GB/s, device copy and DRAM %.
"""
from __future__ import annotations

import shlex
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline import analysis, detail_view, display as fmt, recommend, results, shapeanalysis, varianttable
from pipeline.records import ShapeRecord
from pipeline.shapeanalysis import ShapeAnalysis
from pipeline.viewmodel import Alert, Chart, FamilyRank, Headline, PassCommand, ShapeView, Stat, Trace

BENCH_FILE = "bench.json"       # bench/rmsnorm.py --json output beside a results file: torch.compile times


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


def _rivals(shape: ShapeRecord, rec: recommend.Recommendation, bench: dict[str, Any] | None) -> list[_Rival]:
    out = []
    ref = shape.reference_timing
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
    copy = shape.copy_timing
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
                               "recommended" if is_rec else fmt.standing(ratio, False, tie, True),
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
    rows = [varianttable.row(va, sa, sa.baseline_ms, results_dir, reports_dir) for va in sa.variants]
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
        columns=varianttable.columns(lead_), rows=rows, shown_rows=[r for r in rows if not r.folded], folded_rows=folded,
        folded_summary=(f"{len(folded)} variant{'s' if len(folded) > 1 else ''} failed or do not support this shape: "
                        + ", ".join(f"{n} {s}" for s, n in fold_counts.items())) if folded else "",
        counts=f"{len(shape['variants'])} variants: " + ", ".join(f"{n} {s}" for s, n in statuses.items()),
        families=list({v.get("stem", v["name"]): v.get("layout", "") for v in shape["variants"]}.items()),
        ncu_status=ncu_rec.get("status", "—"), ncu_message=ncu_rec.get("message", ""),
        commands=_commands(shape, results_dir, reports_dir), ncu_passes=str(ncu_rec.get("passes") or "—"),
        report_href=fmt.href(results_dir, reports_dir, ncu_rec.get("report")),
        cached_report_hrefs=[fmt.href(results_dir, reports_dir, r) for r in sorted(
            {v.ncu.get("report") for v in shape.variants} - {None, ncu_rec.get("report")})],
        log_href=fmt.href(results_dir, reports_dir, ncu_rec.get("log")),
        worker_log_href=fmt.href(results_dir, reports_dir, shape.get("worker_log")),
        errors=list(shape.get("errors", [])), why=detail_view.view(shape, results_dir, reports_dir))


def _commands(shape: ShapeRecord, results_dir: Path, reports_dir: Path) -> list[PassCommand]:
    passes = [("main pass", shape.ncu), ("detail pass", shape.detail)]
    return [PassCommand(label, shlex.join(rec["command"]), fmt.ncu_again(results_dir, rec),
                        fmt.href(results_dir, reports_dir, rec.get("job")), rec.get("job") or "")
            for label, rec in passes if rec.get("command")]
