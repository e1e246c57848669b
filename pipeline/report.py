"""Render stored results as HTML: reports/index.html and one self-contained page per op.

The templates receive only the plain dataclasses of pipeline.viewmodel and do no computing of their own: every
number is formatted here, from the results file, and traceable to a measurement in it (the page names
the metric or timing behind each). Charts are SVG text from pipeline.charts, inlined.
"""
from __future__ import annotations

import hashlib
import multiprocessing
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup, escape

from pipeline import analysis, charts, recommend, results
from pipeline.analysis import fmt_bytes
from pipeline.viewmodel import (Cell, Chart, Column, FamilyRank, Headline, IndexPage, OpPage, ShapeView, Stat,
                                VariantRow)


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def _num(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def _bytes(x: float | None) -> str:
    return "—" if not x else fmt_bytes(x)


def _pct(x: float | None) -> str:
    return _num(x, ".1f")


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def _frac(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def _dims(d: tuple[int, int, int] | None) -> str:
    return "—" if d is None else "(" + ", ".join(str(v) for v in d) + ")"


def _sort(x: Any) -> str:
    return "" if x is None else str(x)


def _breakable(name: str) -> str:
    """A variant name that may wrap after its commas (<wbr> adds no text); escaped here, so Markup."""
    return Markup(str(escape(name)).replace(",", ",<wbr>"))


def _faster(ratio: float | None, what: str) -> str:
    if ratio is None:
        return f"no {what} time"
    return f"{ratio:.2f}× faster than {what}" if ratio >= 1 else f"{1 / ratio:.2f}× slower than {what}"


COLUMNS = [
    Column("variant", "name from the kernel file (stem and CONFIGS entry)", True),
    Column("status", "verification result; the reason when not ok", True),
    Column("median ms", "CUDA-event median per call, L2 flushed before each repeat"),
    Column("IQR ms", "p25–p75 of the timed repeats"),
    Column("vs fastest", "median ÷ the fastest correct variant's median, as % slower"),
    Column("of copy", "device copy time of the minimal bytes ÷ median"),
    Column("vs baseline", "baseline median ÷ median"),
    Column("SM %", analysis.SM), Column("mem %", f"max of {analysis.MEM} and {analysis.DRAM}"),
    Column("occupancy %", f"achieved / theoretical: {analysis.WARPS} / {analysis.THEORETICAL}"),
    Column("L2 hit %", analysis.L2_HIT),
    Column("DRAM ÷ min", f"({analysis.READ} + {analysis.WRITE}, all kernels) ÷ min_bytes"),
    Column("grid", "launch__grid_dim_{x,y,z}"), Column("block", "launch__block_dim_{x,y,z}"),
    Column("waves", analysis.WAVES),
    Column("regs / spills", "launch__registers_per_thread / Triton n_spills summed over the variant's kernels"),
    Column("bound", "classification; hover for the rule that decided", True),
]
FINDINGS_NOTE = "findings (under each variant) name the metric and value that triggered them"


def _row(v: dict[str, Any], shape: dict[str, Any], env: dict[str, Any], rec: recommend.Recommendation | None,
         base_ms: float | None, best_ms: float | None) -> VariantRow:
    k = analysis.dominant_kernel(v)
    tm = v.get("timing")
    med = tm["median_ms"] if tm else None
    bound = analysis.classify(v, shape, env) if k else None
    compiled = v.get("compiled") or []
    spills = sum(c.get("n_spills") or 0 for c in compiled) if compiled else None
    met = {n: analysis.m(k, n) for n in (analysis.SM, analysis.DRAM, analysis.WARPS, analysis.THEORETICAL,
                                         analysis.L2_HIT, analysis.WAVES, "launch__grid_size", "launch__block_size",
                                         "launch__registers_per_thread")}
    mem = analysis.memory_pct(k)
    moved, mb = analysis.dram_bytes(v), shape.get("min_bytes")
    excess = moved / mb if moved is not None and mb else None
    grid, block = analysis.launch_dims(v, "grid"), analysis.launch_dims(v, "block")
    ncu_rec = v.get("ncu") or {}
    ncu_status = ncu_rec.get("status", "")
    status = v["status"] + ("" if v["status"] != "ok" or ncu_status in ("ok", "") else
                            " · not profiled" if ncu_status == "not-selected" else f" · ncu {ncu_status}")
    # a cached result says when it was measured (and re-timed, when it served as a control)
    status += " · cached" if v.get("cached") else ""
    when = "; ".join(x for x in (
        ncu_rec.get("error", "") if ncu_status == "not-selected" else "",
        f"measured {v['measured_at']}" if v.get("measured_at") else "",
        f"re-timed {v['retimed_at']} beside the variants measured then" if v.get("retimed_at") else "") if x)
    is_rec = bool(rec and rec.variant["name"] == v["name"])
    tied = bool(rec and v["name"] in rec.ties)
    vs_base = base_ms / med if med and base_ms else None
    vs_best = med / best_ms if med and best_ms else None
    frac = analysis.fraction_of_copy(v, shape)
    name = v["name"] + (" (baseline)" if v.get("baseline") else "")
    cells = [
        Cell(_breakable(name), v["name"], "l", v.get("layout", "")),
        Cell(status, v["status"], "l", when),
        Cell(_ms(med), _sort(med)),
        Cell(f"{_ms(tm['p25_ms'])}–{_ms(tm['p75_ms'])}" if tm else "—", _sort(tm and tm["p75_ms"] - tm["p25_ms"]),
             title=f"{tm['reps']} repeats" if tm else ""),
        Cell(charts.behind(vs_best) if vs_best else "—", _sort(vs_best)),
        Cell(_frac(frac), _sort(frac)), Cell(_ratio(vs_base), _sort(vs_base)),
        Cell(_pct(met[analysis.SM]), _sort(met[analysis.SM])), Cell(_pct(mem), _sort(mem)),
        Cell(f"{_pct(met[analysis.WARPS])} / {_pct(met[analysis.THEORETICAL])}", _sort(met[analysis.WARPS])),
        Cell(_pct(met[analysis.L2_HIT]), _sort(met[analysis.L2_HIT])),
        Cell(_ratio(excess), _sort(excess), title="" if moved is None else fmt_bytes(moved)),
        Cell(_dims(grid).replace(" ", ""), _sort(met["launch__grid_size"]), "nw"),
        Cell(_dims(block).replace(" ", ""), _sort(met["launch__block_size"]), "nw"),
        Cell(_num(met[analysis.WAVES], ".2f"), _sort(met[analysis.WAVES])),
        Cell(f"{_num(met['launch__registers_per_thread'], '.0f')} / {_num(spills, 'd')}",
             _sort(met["launch__registers_per_thread"])),
        Cell(bound.label if bound else "—", bound.kind if bound else "", "l", bound.rule if bound else ""),
    ]
    css = ("rec" if is_rec else "tie" if tied else "unsupported" if v["status"] == "unsupported"
           else "bad" if v["status"] != "ok" else "")
    return VariantRow(
        name=v["name"], layout=v.get("layout", ""), family=v.get("stem", v["name"]), status=v["status"],
        error=v.get("error") or "", baseline=bool(v.get("baseline")), recommended=is_rec, tied=tied,
        median_ms=_ms(med), spread_ms=cells[3].text, median_raw=med, frac_copy=_frac(frac),
        vs_baseline=_ratio(vs_base), sm_pct=_pct(met[analysis.SM]), warps_pct=_pct(met[analysis.WARPS]),
        dram_pct=_pct(met[analysis.DRAM]), grid_size=_num(met["launch__grid_size"], ",.0f"), grid=_dims(grid),
        block=_dims(block), regs=_num(met["launch__registers_per_thread"], ".0f"), spills=_num(spills, "d"),
        bound=cells[-1].text, bound_rule=cells[-1].title, ncu_status=ncu_status or "—", css=css, cells=cells,
        findings=analysis.findings(v, shape, env))


def _headline(shape: dict[str, Any], env: dict[str, Any], rec: recommend.Recommendation) -> Headline:
    v, tm = rec.variant, rec.variant["timing"]
    roof = analysis.roofline(shape, env)
    mem_frac, comp_frac = analysis.roofline_fractions(v, shape, env)
    copy = (shape.get("copy") or {}).get("timing")
    ref = (shape.get("reference") or {}).get("timing")
    base = next((x for x in recommend.ranked(shape) if x.get("baseline")), None)
    bound = analysis.classify(v, shape, env)
    med = _ms(rec.median_ms)
    stats = [
        Stat("time", f"{med} ms", f"median of {tm['reps']} CUDA-event repeats, IQR "
                                  f"{_ms(tm['p25_ms'])}–{_ms(tm['p75_ms'])} ms"),
        Stat("vs baseline", _ratio(rec.speedup_vs_baseline),
             f"{rec.baseline}: {_ms(base['timing']['median_ms'])} ms ÷ {med} ms" if base else "no correct baseline"),
        Stat("vs torch eager", _ratio(rec.speedup_vs_reference),
             f"reference {_ms(ref['median_ms'])} ms ÷ {med} ms" if ref else "reference not timed"),
        Stat("memory roofline", _frac(mem_frac), f"{roof.memory_basis} = {_ms(roof.memory_ms)} ms; ÷ {med} ms"
             if roof.memory_ms else roof.memory_basis),
        Stat("of device copy", _frac(rec.fraction_of_copy),
             f"copy of the minimal bytes at this shape: {_ms(copy['median_ms'])} ms ÷ {med} ms" if copy
             else "copy not timed"),
        Stat("compute roofline", _frac(comp_frac) if comp_frac is not None else "n/a",
             f"{roof.compute_basis} = {_ms(roof.compute_ms)} ms; ÷ {med} ms" if roof.compute_ms
             else roof.compute_basis.removeprefix("n/a (").removesuffix(")")),
    ]
    best: dict[str, dict[str, Any]] = {}
    for x in recommend.ranked(shape):
        best.setdefault(x.get("stem", x["name"]), x)
    fams = [FamilyRank(f, x["name"], _ms(x["timing"]["median_ms"]),
                       "winner" if x is v else charts.behind(x["timing"]["median_ms"] / rec.median_ms))
            for f, x in best.items()]
    roof_txt = f"at {_frac(mem_frac)} of the memory roofline" if mem_frac is not None else "memory roofline unknown"
    summary = (f"{med} ms: {_faster(rec.speedup_vs_baseline, f'the baseline {rec.baseline}')}, "
               f"{_faster(rec.speedup_vs_reference, 'torch eager')}, {roof_txt} "
               f"({_frac(rec.fraction_of_copy)} of device copy); {bound.label}")
    return Headline(
        name=v["name"], name_wrap=_breakable(v["name"]), family=v.get("stem", v["name"]),
        layout=v.get("layout", ""), grid=_dims(rec.grid), block=_dims(rec.block),
        cluster=_dims(rec.cluster) if rec.cluster else "", median_ms=med, spread_ms=f"{_ms(tm['p25_ms'])}–{_ms(tm['p75_ms'])}",
        vs_baseline=_ratio(rec.speedup_vs_baseline), baseline=rec.baseline or "—",
        vs_reference=_ratio(rec.speedup_vs_reference), frac_copy=_frac(rec.fraction_of_copy),
        frac_roofline=_frac(mem_frac), summary=summary, stats=stats, bound=bound.label, bound_rule=bound.rule,
        ties=list(rec.ties), families=fams, findings=analysis.findings(v, shape, env),
        runner_up=f"{fams[1].family} {fams[1].vs_winner}" if len(fams) > 1 else "—")


def _href(base: Path, reports_dir: Path, name: str | None) -> str:
    return os.path.relpath(base / name, reports_dir).replace(os.sep, "/") if name else ""


def shape_view(shape: dict[str, Any], env: dict[str, Any], results_dir: Path, reports_dir: Path,
               shape_charts: list[Chart] | None = None) -> ShapeView:
    rec = recommend.recommend(shape)
    order = recommend.ranked(shape)
    base_ms = next((v["timing"]["median_ms"] for v in order if v.get("baseline")), None)
    best_ms = order[0]["timing"]["median_ms"] if order else None
    rows = [_row(v, shape, env, rec, base_ms, best_ms) for v in shape["variants"]]
    rows.sort(key=lambda r: (r.median_raw is None, r.median_raw or 0, r.name))
    copy = (shape.get("copy") or {}).get("timing")
    ref = (shape.get("reference") or {}).get("timing")
    mb = shape.get("min_bytes")
    roof = analysis.roofline(shape, env)
    facts = [("minimal bytes", _bytes(mb)),
             ("device copy", "—" if not copy else f"{_ms(copy['median_ms'])} ms"
              + (f" ({mb / copy['median_ms'] / 1e6:,.0f} GB/s)" if mb else "")),
             ("torch eager", f"{_ms(ref['median_ms'])} ms" if ref else "—"),
             ("memory roofline", f"{_ms(roof.memory_ms)} ms = {roof.memory_basis}" if roof.memory_ms
              else roof.memory_basis),
             ("compute roofline", f"{_ms(roof.compute_ms)} ms = {roof.compute_basis}" if roof.compute_ms
              else roof.compute_basis)]
    statuses = Counter(v["status"] for v in shape["variants"])
    ncu_rec = shape.get("ncu") or {}
    return ShapeView(
        id=shape["id"], anchor="shape-" + results.slug(shape["id"]),
        params=", ".join(f"{k}={v}" for k, v in (shape.get("params") or {}).items()) or "default",
        dtype=shape.get("dtype", ""), facts=facts, headline=_headline(shape, env, rec) if rec else None,
        ties=list(rec.ties) if rec else [], charts=shape_charts or [],
        columns=COLUMNS, rows=rows,
        counts=f"{len(shape['variants'])} variants: " + ", ".join(f"{n} {s}" for s, n in statuses.items()),
        families=list({v.get("stem", v["name"]): v.get("layout", "") for v in shape["variants"]}.items()),
        ncu_status=ncu_rec.get("status", "—"), ncu_message=ncu_rec.get("message", ""),
        ncu_command=" ".join(ncu_rec.get("command", [])), ncu_passes=str(ncu_rec.get("passes") or "—"),
        report_href=_href(results_dir, reports_dir, ncu_rec.get("report")),
        cached_report_hrefs=[_href(results_dir, reports_dir, r) for r in sorted(
            {(v.get("ncu") or {}).get("report") for v in shape["variants"]} - {None, ncu_rec.get("report")})],
        log_href=_href(results_dir, reports_dir, ncu_rec.get("log")),
        worker_log_href=_href(results_dir, reports_dir, shape.get("worker_log")),
        errors=list(shape.get("errors", [])))


def replay_note(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    return (f"Replayed data: recorded on {env.get('gpu_name', '?')} on {doc.get('created', '?')[:10]}, "
            "not measured on this machine.")


def _environment(doc: dict[str, Any]) -> list[tuple[str, str]]:
    env, shapes = doc["environment"], doc["shapes"]
    ncu = env.get("ncu_settings") or {}
    ceil = analysis.ceilings(env)
    copy = (ceil.get("timing") or {}).get("copy") or {}
    rates = ", ".join(f"{k} {v:,.1f} TFLOP/s" for k, v in (ceil.get("matmul_tflops") or {}).items())
    g = lambda key, d=env: "—" if d.get(key) in (None, "") else str(d[key])  # noqa: E731
    return [
        ("GPU", g("gpu_name")), ("SMs", g("sm_count")), ("L2", _bytes(env.get("l2_bytes"))),
        ("memory", _bytes(env.get("memory_bytes"))), ("compute capability", g("compute_capability")),
        ("driver", g("driver")), ("CUDA", g("cuda")), ("ncu", f"{g('ncu_version')} ({g('ncu_path')})"),
        ("ncu replay mode", g("replay_mode", ncu)), ("ncu clock control", g("clock_control", ncu)),
        ("ncu cache control", g("cache_control", ncu)),
        ("ncu replay passes", ", ".join(f"{x['id']}: {(x.get('ncu') or {}).get('passes') or '—'}" for x in shapes)),
        ("ncu metrics", ", ".join(ncu.get("metrics") or []) or "—"),
        ("measured copy bandwidth", f"{ceil['copy_gbs']:,.0f} GB/s (copy of {_bytes(ceil.get('copy_bytes'))}, fastest "
         f"{_ms(copy.get('min_ms'))} ms of {copy.get('reps', '?')} repeats; median {_ms(copy.get('median_ms'))} ms)" if ceil.get("copy_gbs") else "—"),
        ("measured matmul rate", (rates + f" (N = {ceil.get('matmul_n', '?')}, float32 precision "
                                  f"{ceil.get('float32_matmul_precision', '?')})") if rates else "—"),
        ("torch", g("torch")), ("triton", g("triton")), ("python", g("python")), ("host", g("host")),
        ("results written", g("created", doc)),
        ("shapes measured", ", ".join(f"{x['id']}: {x.get('measured_at', '—')}" for x in shapes))]


MAX_DRAW_PROCESSES = 16


def _colors(doc: dict[str, Any]) -> dict[str, str]:
    return charts.colors([v.get("stem", v["name"]) for s in doc["shapes"] for v in s["variants"]])


def _draw(job: tuple[str, dict[str, Any], dict[str, str]]) -> list[Chart]:
    op, shape, col = job
    return charts.shape_charts(op, shape, recommend.recommend(shape), col)


def draw_all(docs: list[dict[str, Any]]) -> list[list[list[Chart]]]:
    """Every shape's charts, per doc. Drawing SVGs is most of a render (0.2 s a chart, 3 per shape), so
    the shapes are drawn in parallel processes (matplotlib is not thread-safe); the output is the same."""
    jobs = [(d["op"], s, _colors(d)) for d in docs for s in d["shapes"]]
    workers = min(len(jobs), os.cpu_count() or 1, MAX_DRAW_PROCESSES)
    if workers > 1:
        # a Pool, not an executor: leaving it (an interrupt, SIGTERM) terminates its processes at once
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            drawn = iter(pool.map(_draw, jobs))
    else:
        drawn = iter([_draw(j) for j in jobs])
    return [[next(drawn) for _ in d["shapes"]] for d in docs]


def op_page(doc: dict[str, Any], path: Path, reports_dir: Path, replayed: bool,
            drawn: list[list[Chart]] | None = None, filename: str | None = None) -> OpPage:
    env = doc["environment"]
    col = _colors(doc)
    drawn = drawn if drawn is not None else [_draw((doc["op"], s, col)) for s in doc["shapes"]]
    shapes = [shape_view(s, env, path.parent, reports_dir, c) for s, c in zip(doc["shapes"], drawn)]
    return OpPage(
        op=doc["op"], replay_note=replay_note(doc) if replayed else "", gpu=str(env.get("gpu_name", "?")),
        created=str(doc.get("created", "—")), environment=_environment(doc),
        commands=[(s.id, s.ncu_command) for s in shapes if s.ncu_command],
        thresholds=[(k, f"{v:g}", d) for k, (v, d) in analysis.THRESHOLDS.items()],
        glossary=COLUMNS + [Column("findings", FINDINGS_NOTE)],
        results_href=_href(path.parent, reports_dir, path.name), results_name="/".join(path.parts[-4:]),
        sweep_chart=charts.sweep(doc, col), shapes=shapes, filename=filename or page_names([doc])[0])


def environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("pipeline", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


def digest(paths: list[Path], replayed: bool) -> str:
    """Hash of everything a set of pages is rendered from: results files, the replay flag, and this
    package's rendering code and templates."""
    h = hashlib.sha256(f"{replayed}\n".encode())
    here = Path(__file__).parent
    code = [here / f for f in ("report.py", "viewmodel.py", "charts.py", "analysis.py", "recommend.py")]
    for f in [*paths, *code, *sorted((here / "templates").iterdir())]:
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
    shapes = [shape_view(s, doc["environment"], path.parent, reports_dir) for s in doc["shapes"]]
    return OpPage(op=doc["op"], replay_note=replay_note(doc) if replayed else "",
                  gpu=str(doc["environment"].get("gpu_name", "?")), created=str(doc.get("created", "—")),
                  environment=[], commands=[], thresholds=[], glossary=[],
                  results_href=_href(path.parent, reports_dir, path.name), results_name="/".join(path.parts[-4:]),
                  sweep_chart=None, shapes=shapes, filename=filename)


_INDEX_LINK = re.compile(r'<h2><a href="([a-z0-9._-]+\.html)">')


def _listed(index: Path) -> set[str]:
    """The op pages an index written by render() links to."""
    try:
        return set(_INDEX_LINK.findall(index.read_text()))
    except OSError:
        return set()


def render(paths: list[Path], reports_dir: Path, replayed: bool, index: list[Path] | None = None) -> list[Path]:
    """Write one page per results file of `paths` and the index over `index` (default: `paths`; the files in
    `paths` are always listed); returns the files written (index first).

    The index lists every results file it is given, so rendering one op keeps the others on it; their pages
    are rendered only where missing. Pages the previous index listed and this one does not (their results
    are gone) are deleted. Nothing is written when the pages on disk were rendered from the same inputs (a
    rerun that measured nothing re-renders in no time)."""
    paths = [p.resolve() for p in paths]
    listed = list(dict.fromkeys([*(p.resolve() for p in index or []), *paths]))
    docs = {p: results.load(p) for p in listed}      # each file read once
    names = dict(zip(listed, page_names([docs[p] for p in listed])))
    inputs = digest(listed, replayed)
    if _current(inputs, [reports_dir / n for n in names.values()], reports_dir):
        return [reports_dir / "index.html", *(reports_dir / names[p] for p in listed)]
    todo = [p for p in listed if p in paths or not (reports_dir / names[p]).exists()]
    env = environment()
    pages = {p: op_page(docs[p], p, reports_dir, replayed, drawn, names[p])
             for p, drawn in zip(todo, draw_all([docs[p] for p in todo]))}
    written = []
    for page in pages.values():
        out = reports_dir / page.filename
        results.write_atomic(out, env.get_template("op.html").render(page=page))
        written.append(out)
    entries = [pages.get(p) or index_entry(docs[p], p, reports_dir, replayed, names[p]) for p in listed]
    # one note per recording (GPU and date) among the pages
    page = IndexPage(replay_note=" ".join(dict.fromkeys(e.replay_note for e in entries)) if replayed else "",
                     ops=entries, digest=inputs)
    out = reports_dir / "index.html"
    stale = _listed(out) - set(names.values())
    results.write_atomic(out, env.get_template("index.html").render(page=page))
    for name in stale:
        (reports_dir / name).unlink(missing_ok=True)
    return [out, *written]
