"""Render stored results as HTML: reports/index.html and one self-contained page per op.

The templates receive only the plain dataclasses of pipeline.viewmodel and do no computing of their own: every
number is formatted here and in pipeline/shapeview.py (each shape's headline and variants table), from the
results file, and traceable to a measurement in it (the page names the metric or timing behind each). Charts are
SVG text from pipeline.charts, inlined. Pages beside the op pages: one per op recorded on several GPUs
(`<op>.gpus.html`), and, given a baseline results set, one diff page per op.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2

from pipeline import (analysis, charts, chartstyle, display as fmt, optimize_page, results, shapeanalysis, shapeview,
                      varianttable)
from pipeline.comparison import baseline_docs, baseline_for, compare_name, compare_page, diff_name, diff_page
from pipeline.records import ShapeRecord
from pipeline.shapeanalysis import ShapeAnalysis
from pipeline.shapeview import BENCH_FILE
from pipeline.viewmodel import Chart, IndexPage, Link, OpPage



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


def _styles(doc: dict[str, Any]) -> dict[str, chartstyle.Style]:
    return chartstyle.styles([v.get("stem", v["name"]) for s in doc["shapes"] for v in s["variants"]])


def _draw(job: tuple[charts.ShapeChartData, dict[str, chartstyle.Style]]) -> list[Chart]:
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
    shapes = [shapeview.shape_view(sa.shape, env, path.parent, reports_dir, c, bench, sa)
              for sa, c in zip(analyses, drawn)]
    return OpPage(
        op=doc["op"], replay_note=fmt.replay_note(doc) if replayed else "", gpu=str(env.get("gpu_name", "?")),
        created=str(doc.get("created", "—")), environment=_environment(doc),
        commands=[(s.id, c) for s in shapes for c in s.commands],
        thresholds=[(k, f"{v:g}", d) for k, (v, d) in analysis.THRESHOLDS.items()],
        glossary=varianttable.glossary(),
        results_href=fmt.href(path.parent, reports_dir, path.name),
        results_name=fmt.results_file(path.parent, path.name),
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
    code = [here / f for f in ("report.py", "viewmodel.py", "charts.py", "chartstyle.py", "analysis.py",
                               "recommend.py", "shapeanalysis.py", "compare.py", "comparison.py", "display.py",
                               "catalogue.py", "detail.py", "detail_view.py", "optimize_page.py", "records.py",
                               "shapeview.py", "varianttable.py")]
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
    shapes = [shapeview.shape_view(sa.shape, doc["environment"], path.parent, reports_dir, bench=bench, sa=sa)
              for sa in shapeanalysis.analyze_doc(doc)]
    return OpPage(op=doc["op"], replay_note=fmt.replay_note(doc) if replayed else "",
                  gpu=str(doc["environment"].get("gpu_name", "?")), created=str(doc.get("created", "—")),
                  environment=[], commands=[], thresholds=[], glossary=[],
                  results_href=fmt.href(path.parent, reports_dir, path.name),
        results_name=fmt.results_file(path.parent, path.name),
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
