"""Render stored results as HTML: reports/index.html and one page per op.

The templates receive only the plain view models defined here (documented field by field) and do
no computing of their own: every number is formatted here, from the results file, and traceable to
a measurement in it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from pipeline import analysis, recommend, results


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}" if x < 10 else f"{x:.2f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def _ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def _frac(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}" if x < 10 else f"{x:.1f}×"


def _dims(d: tuple[int, int, int] | None) -> str:
    return "—" if d is None else "(" + ", ".join(str(v) for v in d) + ")"


@dataclass
class VariantRow:
    """One variant at one shape: every cell already formatted; `*_raw` fields are for sorting."""
    name: str
    layout: str
    status: str
    error: str
    baseline: bool
    recommended: bool
    tied: bool
    median_ms: str
    spread_ms: str            # interquartile range p25–p75
    median_raw: float | None
    frac_copy: str
    vs_baseline: str
    sm_pct: str
    warps_pct: str
    dram_pct: str
    grid_size: str
    grid: str
    block: str
    regs: str
    spills: str
    bound: str
    bound_rule: str
    ncu_status: str
    findings: list[analysis.Finding] = field(default_factory=list)


@dataclass
class ShapeView:
    """One shape of an op: the headline (recommendation) first, then every variant."""
    id: str
    params: str
    dtype: str
    min_bytes: str
    copy_ms: str
    copy_gbs: str
    reference_ms: str
    headline: dict[str, str] | None        # None when no variant is correct
    ties: list[str]
    rows: list[VariantRow]
    ncu_status: str
    ncu_message: str
    ncu_command: str
    ncu_passes: str
    report_href: str
    log_href: str
    worker_log_href: str
    errors: list[str]


@dataclass
class OpPage:
    op: str
    description: str
    replay_note: str                       # empty when the data was measured in this run
    environment: list[tuple[str, str]]
    results_href: str
    shapes: list[ShapeView]
    filename: str


@dataclass
class IndexPage:
    replay_note: str
    ops: list[dict[str, str]]


def _row(v: dict[str, Any], shape: dict[str, Any], rec: recommend.Recommendation | None,
         base_ms: float | None) -> VariantRow:
    k = analysis.dominant_kernel(v)
    t = v.get("timing")
    bound = analysis.classify(v) if k else None
    compiled = v.get("compiled") or []
    regs = analysis.m(k, "launch__registers_per_thread")
    return VariantRow(
        name=v["name"], layout=v.get("layout", ""), status=v["status"], error=v.get("error", "") or "",
        baseline=bool(v.get("baseline")), recommended=bool(rec and rec.variant["name"] == v["name"]),
        tied=bool(rec and v["name"] in rec.ties),
        median_ms=_ms(t and t["median_ms"]), spread_ms=f"{_ms(t['p25_ms'])}–{_ms(t['p75_ms'])}" if t else "—",
        median_raw=t and t["median_ms"], frac_copy=_frac(analysis.fraction_of_copy(v, shape)),
        vs_baseline=_ratio(base_ms / t["median_ms"]) if t and base_ms else "—",
        sm_pct=_pct(analysis.m(k, analysis.SM)), warps_pct=_pct(analysis.m(k, analysis.WARPS)),
        dram_pct=_pct(analysis.m(k, analysis.DRAM)),
        grid_size="—" if analysis.m(k, "launch__grid_size") is None else f"{analysis.m(k, 'launch__grid_size'):,}",
        grid=_dims(recommend.launch_dims(v, "grid")), block=_dims(recommend.launch_dims(v, "block")),
        regs="—" if regs is None else str(int(regs)),
        spills="—" if not compiled else str(sum(c.get("n_spills") or 0 for c in compiled)),
        bound=bound.kind if bound else "—", bound_rule=bound.rule if bound else "",
        ncu_status=(v.get("ncu") or {}).get("status", "—"),
        findings=analysis.findings(v, shape, {}) if k else [])


def shape_view(shape: dict[str, Any], env: dict[str, Any], results_dir: Path, reports_dir: Path) -> ShapeView:
    rec = recommend.recommend(shape)
    base = [v for v in recommend.ranked(shape) if v.get("baseline")]
    base_ms = base[0]["timing"]["median_ms"] if base else None
    rows = [_row(v, shape, rec, base_ms) for v in shape["variants"]]
    for r in rows:
        r.findings = analysis.findings(next(v for v in shape["variants"] if v["name"] == r.name), shape, env)
    rows.sort(key=lambda r: (r.median_raw is None, r.median_raw or 0, r.name))
    copy = (shape.get("copy") or {}).get("timing")
    ref = (shape.get("reference") or {}).get("timing")
    mb = shape.get("min_bytes")
    headline = None
    if rec:
        v = rec.variant
        headline = {
            "name": v["name"], "layout": v.get("layout", ""), "grid": _dims(rec.grid), "block": _dims(rec.block),
            "median_ms": _ms(rec.median_ms),
            "spread_ms": f"{_ms(v['timing']['p25_ms'])}–{_ms(v['timing']['p75_ms'])}",
            "vs_baseline": _ratio(rec.speedup_vs_baseline), "baseline": rec.baseline or "—",
            "vs_reference": _ratio(rec.speedup_vs_reference), "frac_copy": _frac(rec.fraction_of_copy),
            "bound": analysis.classify(v).kind}
    ncu_rec = shape.get("ncu") or {}
    rel = os.path.relpath(results_dir, reports_dir)
    return ShapeView(
        id=shape["id"], params=", ".join(f"{k}={v}" for k, v in (shape.get("params") or {}).items()) or "default",
        dtype=shape.get("dtype", ""), min_bytes="—" if not mb else f"{mb / 1e9:.3f} GB",
        copy_ms=_ms(copy and copy["median_ms"]),
        copy_gbs="—" if not (copy and mb) else f"{mb / copy['median_ms'] / 1e6:,.0f} GB/s",
        reference_ms=_ms(ref and ref["median_ms"]), headline=headline, ties=rec.ties if rec else [],
        rows=rows, ncu_status=ncu_rec.get("status", "—"), ncu_message=ncu_rec.get("message", ""),
        ncu_command=" ".join(ncu_rec.get("command", [])), ncu_passes=str(ncu_rec.get("passes") or "—"),
        report_href=f"{rel}/{ncu_rec['report']}" if ncu_rec.get("report") else "",
        log_href=f"{rel}/{ncu_rec['log']}" if ncu_rec.get("log") else "",
        worker_log_href=f"{rel}/{shape['worker_log']}" if shape.get("worker_log") else "",
        errors=shape.get("errors", []))


ENV_KEYS = [("GPU", "gpu_name"), ("SMs", "sm_count"), ("L2 bytes", "l2_bytes"), ("compute capability",
            "compute_capability"), ("driver", "driver"), ("CUDA", "cuda"), ("ncu", "ncu_version"),
            ("torch", "torch"), ("triton", "triton"), ("python", "python"), ("host", "host")]


def replay_note(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    return (f"Replayed data: recorded on {env.get('gpu_name', '?')} on {doc.get('created', '?')[:10]}, "
            "not measured on this machine.")


def op_page(doc: dict[str, Any], path: Path, reports_dir: Path, replayed: bool) -> OpPage:
    env = doc["environment"]
    settings = env.get("ncu_settings") or {}
    env_rows = [(label, str(env.get(key, "—"))) for label, key in ENV_KEYS]
    env_rows += [(f"ncu {k.replace('_', ' ')}", str(v)) for k, v in settings.items() if k != "metrics"]
    env_rows.append(("recorded", doc.get("created", "—")))
    return OpPage(op=doc["op"], description="", replay_note=replay_note(doc) if replayed else "",
                  environment=env_rows, results_href=os.path.relpath(path, reports_dir),
                  shapes=[shape_view(s, env, path.parent, reports_dir) for s in doc["shapes"]],
                  filename=f"{results.slug(doc['op'])}.html")


def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("pipeline", "templates"),
                             autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    return env


def render(paths: list[Path], reports_dir: Path, replayed: bool) -> list[Path]:
    """Write one page per results file plus the index; returns the files written."""
    env = environment()
    pages = [op_page(results.load(p), p, reports_dir, replayed) for p in paths]
    written = []
    for page in pages:
        out = reports_dir / page.filename
        results.write_atomic(out, env.get_template("op.html").render(page=page))
        written.append(out)
    index = IndexPage(
        replay_note=pages[0].replay_note if pages and replayed else "",
        ops=[{"op": p.op, "href": p.filename, "gpu": dict(p.environment).get("GPU", "?"),
              "shapes": str(len(p.shapes)),
              "best": "; ".join(f"{s.id}: {s.headline['name']} {s.headline['median_ms']} ms "
                                f"({s.headline['frac_copy']} of copy)" for s in p.shapes if s.headline)}
             for p in pages])
    out = reports_dir / "index.html"
    results.write_atomic(out, env.get_template("index.html").render(page=index))
    return [out, *written]
