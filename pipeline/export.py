"""Stored results in every output format (`export --format`, as_format): the formats LLM kernel-optimisation
loops read, the seed's NCU-metrics JSON block (ncu-json) and a whole stage prompt (`prompt`, rendered from
templates/prompt.txt), and beside them the flat csv / json tables, the terminal tables and the op's HTML page.

Everything comes from a results file: the GPU block from the measured device, the metrics from ncu,
the time, roofline fraction and bound from this pipeline's own analysis.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import analysis, report, results, shapeanalysis, shapeview
from pipeline.errors import ResultsError, SelectionError
from pipeline.records import VariantRecord
from pipeline.stages import STAGES, Stage

ARCHITECTURES = {"7.0": "Volta", "7.5": "Turing", "8.0": "Ampere", "8.6": "Ampere", "8.7": "Ampere",
                 "8.9": "Ada Lovelace", "9.0": "Hopper", "10.0": "Blackwell", "12.0": "Blackwell"}


def find(doc: dict[str, Any], variant: str, shape_id: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (shape, variant) records named; errors list what exists."""
    shapes = doc["shapes"]
    if shape_id:
        shapes = [s for s in shapes if s["id"] == shape_id]
        if not shapes:
            raise SelectionError(f"op {doc['op']} has no shape '{shape_id}'; shapes: "
                                 + ", ".join(s["id"] for s in doc["shapes"]))
    shape = shapes[0]
    for v in shape["variants"]:
        if v["name"] == variant:
            return shape, v
    raise SelectionError(f"op {doc['op']} shape {shape['id']} has no variant '{variant}'; variants: "
                         + ", ".join(v["name"] for v in shape["variants"]))


def ncu_json(variant: dict[str, Any], metrics: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """{kernel_name: {metric: value}} exactly as the seed prompt carries it; repeated names get '#2', '#3'."""
    v = VariantRecord.of(variant)
    kernels = v.kernels
    if not kernels:
        raise SelectionError(f"variant {v.name} has no ncu metrics (status {v.status}, ncu {v.ncu_status})")
    out: dict[str, dict[str, Any]] = {}
    for k in kernels:
        name, n = k["name"], 2
        while name in out:
            name, n = f"{k['name']}#{n}", n + 1
        out[name] = {m: e["value"] for m, e in k["metrics"].items() if metrics is None or m in metrics}
    return out


@dataclass
class PromptView:
    """What templates/prompt.txt receives: every value already a string or a list of strings."""
    gpu: list[tuple[str, str]]
    stage: Stage
    code: str
    metrics_json: str
    evidence: list[tuple[str, str]]


def _gpu_block(env: dict[str, Any]) -> list[tuple[str, str]]:
    cc = env.get("compute_capability") or "?"
    ceilings = analysis.ceilings(env)
    rows = [("GPU Name", env.get("gpu_name", "?")), ("Architecture", ARCHITECTURES.get(cc, f"compute {cc}")),
            ("Compute Capability", cc), ("Number of SMs", str(env.get("sm_count", "?")))]
    if ceilings.get("copy_gbs"):
        rows.append(("Memory Bandwidth (measured device copy, read + write)", f"{ceilings['copy_gbs']:,.0f} GB/s"))
    for dtype, rate in (ceilings.get("matmul_tflops") or {}).items():
        rows.append((f"{dtype} matmul (measured, torch)", f"{rate:,.0f} TFLOP/s"))
    limits = [("Maximum threads per block", "max_threads_per_block"), ("Maximum threads per SM",
              "max_threads_per_multi_processor"), ("Registers per SM", "regs_per_multiprocessor"),
              ("Warp size", "warp_size")]
    rows += [(label, str(env[key])) for label, key in limits if env.get(key)]
    if env.get("max_threads_per_multi_processor") and env.get("warp_size"):
        rows.append(("Maximum concurrent warps per SM", str(env["max_threads_per_multi_processor"] // env["warp_size"])))
    if env.get("shared_memory_per_multiprocessor"):
        rows.append(("Shared memory capacity per SM", f"{env['shared_memory_per_multiprocessor'] // 1024} KB"))
    if env.get("shared_memory_per_block_optin"):
        rows.append(("Maximum shared memory per thread block", f"{env['shared_memory_per_block_optin'] // 1024} KB"))
    if env.get("l2_bytes"):
        rows.append(("L2 cache (global, all SM shared)", f"{env['l2_bytes'] / 2**20:.0f} MB"))
    return rows


def _roofline_text(va: shapeanalysis.VariantAnalysis) -> str:
    mem, comp = va.memory_fraction, va.compute_fraction
    parts = [f"{mem:.0%} of the memory roofline" if mem is not None else "memory roofline unknown"]
    parts.append(f"{comp:.0%} of the compute roofline" if comp is not None else "no FLOPs declared")
    return ", ".join(parts)


def prompt_view(doc: dict[str, Any], shape: dict[str, Any], variant: dict[str, Any], stage: Stage,
                repo: Path, kernels_dir: Path | None = None) -> PromptView:
    """The prompt's values; the variant's code is read from the project at `repo` (results.source_path)."""
    metrics = stage.metrics()
    sa = shapeanalysis.analyze_shape(shape, doc["environment"])
    view = shapeview.shape_view(shape, doc["environment"], repo, repo, sa=sa)
    row = next(r for r in view.rows if r.name == variant["name"])
    best = view.headline
    evidence = [("this variant's time (CUDA events, median, L2 flushed)", f"{row.median_ms} ms (IQR {row.spread_ms})"),
                ("fraction of device-copy bandwidth", row.frac_copy),
                ("bound", f"{row.bound} ({row.bound_rule})"),
                ("fraction of the roofline", _roofline_text(sa.of(variant))),
                ("best layout found so far", f"{best.name}: {best.layout}, {best.median_ms} ms, "
                                             f"{best.frac_copy} of copy" if best else "none correct yet")]
    evidence += [(f"finding [{f.metric} = {f.value}]", f.text) for f in row.findings]
    source = results.source_path(variant["file"], repo, kernels_dir or repo / "kernels", doc["op"])
    try:
        code = source.read_text()
    except OSError as exc:
        raise ResultsError(f"{source}: cannot read the source of {variant['name']} ({exc.strerror}); the "
                           f"results name {variant['file']} (relative to the project root {repo})") from exc
    return PromptView(gpu=_gpu_block(doc["environment"]), stage=stage, code=code,
                      metrics_json=json.dumps(ncu_json(variant, metrics), indent=2), evidence=evidence)


def render_prompt(view: PromptView) -> str:
    return report.environment().get_template("prompt.txt").render(p=view)


def stage_named(name: str) -> Stage:
    if name not in STAGES:
        raise SelectionError(f"unknown stage '{name}'; stages: {', '.join(STAGES)}")
    return STAGES[name]


def best_name(shape: dict[str, Any], environment: dict[str, Any]) -> str | None:
    rec = shapeanalysis.analyze_shape(shape, environment).recommendation
    return rec.variant["name"] if rec else None


def as_format(fmt: str, path: Path, *, variant: str | None = None, shape: str | None = None, stage: str | None = None,
              root: Path | None = None, kernels: Path | None = None, reports_dir: Path | None = None) -> str:
    """One results file written in one output format (`export --format`), each read from shapeanalysis:
    ncu-json (a variant's metrics, the seed prompt's block), csv / json (pipeline/flat.py: every variant × shape),
    prompt (a whole stage prompt), terminal (the tables `profile` prints) and html (the op's page; its links
    relative to `reports_dir`, default the current folder)."""
    doc = results.load(path)
    if fmt in ("csv", "json"):
        from pipeline import flat
        table = [r for r in flat.rows(doc) if (not shape or r["shape"] == shape)
                 and (not variant or variant in (r["variant"], r["stem"]))]
        return flat.to_csv(table) if fmt == "csv" else flat.to_json(table) + "\n"
    if fmt == "terminal":
        import io

        from rich.console import Console

        from pipeline import terminal
        buf = io.StringIO()
        terminal.summary(Console(file=buf, width=160, color_system=None), [path])
        return buf.getvalue()
    if fmt == "html":       # the page `report` would write into reports_dir, its links relative to that folder
        return report.environment().get_template("op.html").render(
            page=report.op_page(doc, path, reports_dir or Path.cwd(), replayed=True))
    if fmt not in ("ncu-json", "prompt"):
        raise SelectionError(f"unknown format '{fmt}' (export --help lists them)")
    name = variant or best_name(doc["shapes"][0], doc["environment"]) or ""
    s, v = find(doc, name, shape)
    if fmt == "prompt":
        if not stage:
            raise SelectionError(f"--format prompt needs --stage ({', '.join(STAGES)})")
        return render_prompt(prompt_view(doc, s, v, stage_named(stage), root or Path.cwd(),
                                         kernels or Path.cwd() / "kernels")) + "\n"
    return json.dumps(ncu_json(v, stage_named(stage).metrics() if stage else None), indent=2) + "\n"
