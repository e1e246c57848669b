"""`python -m pipeline {profile,report,gate,list,config}`; the only place exceptions become exit codes."""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import time
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline import config as config_mod
from pipeline import ops as ops_mod
from pipeline import export, gate_output, ingest, profiling, recommend, report, results, stages
from pipeline.errors import ExitCode, PipelineError

REPO = profiling.REPO
START = time.monotonic()
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def _root(args: argparse.Namespace) -> config_mod.Config:
    path = Path(args.config)
    return config_mod.load_root(path if path.is_absolute() else Path.cwd() / path)


def _dir(cfg_value: str) -> Path:
    p = Path(cfg_value)
    return p if p.is_absolute() else REPO / p


def _summary(paths: list[Path]) -> bool:
    """Print each shape's table; True if any variant failed (not ok, not unsupported)."""
    failed = False
    for path in paths:
        doc = results.load(path)
        for shape in doc["shapes"]:
            rec = recommend.recommend(shape)
            table = Table(title=f"{doc['op']} · {shape['id']} · {doc['environment'].get('gpu_name')}")
            for col in ("variant", "status", "median ms", "of copy", "SM %", "warps %", "grid", "DRAM %"):
                table.add_column(col, justify="left" if col in ("variant", "status") else "right")
            view = report.shape_view(shape, doc["environment"], path.parent, path.parent)
            for r in view.rows:
                failed |= r.status not in ("ok", "unsupported")
                name = f"[bold green]{escape(r.name)}[/]" if r.recommended else escape(r.name)
                table.add_row(name, r.status, r.median_ms, r.frac_copy, r.sm_pct, r.warps_pct, r.grid_size, r.dram_pct)
            console.print(table)
            if rec:
                h = view.headline
                console.print(f"Recommended: [bold]{escape(h.name)}[/] {h.median_ms} ms, {h.vs_baseline} vs baseline, "
                              f"{h.vs_reference} vs torch eager, {h.frac_copy} of copy bandwidth, "
                              f"{h.frac_roofline} of the roofline"
                              + (f"; tied: {', '.join(rec.ties)}" if rec.ties else ""))
            else:
                console.print("[red]No correct variant at this shape.[/]")
    return failed


def _time_split(paths: list[Path], report_s: float) -> None:
    """Where this run's time went, from the shapes measured in it (cached shapes cost nothing)."""
    since = time.time() - (time.monotonic() - START)
    split = {"compile": 0.0, "verify": 0.0, "time": 0.0, "ncu": 0.0}
    hidden = 0.0      # compile seconds that ran between an op's measuring and the next op's, under ncu
    for path in paths:
        for shape in results.load(path)["shapes"]:
            measured = dt.datetime.fromisoformat(shape["measured_at"]).timestamp() if shape.get("measured_at") else 0
            if measured + 1 < since:
                continue
            for key in split:
                split[key] += (shape.get("wall_s") or {}).get(key) or 0
            ahead = (shape.get("precompile") or {}).get("ahead") or {}
            hidden += ahead.get("seconds", 0) - ahead.get("waited_s", 0)
    split["verify"] -= split["compile"]
    console.print("Time split: " + ", ".join(f"{k} {v:.1f} s" for k, v in split.items())
                  + (f" (and {hidden:.1f} s compiled ahead, under ncu)" if hidden > 0.05 else "")
                  + f", report {report_s:.1f} s; total {time.monotonic() - START:.1f} s")


class ProgressBar:
    """profiling.Tracker on a rich progress bar: what is running now, units done of units planned."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.task = progress.add_task("starting", total=0)

    def add(self, units: int) -> None:
        self.progress.update(self.task, total=(self.progress.tasks[0].total or 0) + units)

    def doing(self, text: str) -> None:
        self.progress.update(self.task, description=escape(text))

    def done(self, units: int = 1) -> None:
        self.progress.advance(self.task, units)


def cmd_profile(args: argparse.Namespace) -> int:
    cfg = _root(args)
    if args.profiles_dir:
        cfg = dataclasses.replace(cfg, profiles_dir=str(Path(args.profiles_dir).resolve()))
    ops = ops_mod.discover(cfg, REPO, args.op)
    if args.variant:
        ops = [ops_mod.select_variants(op, args.variant) for op in ops]
    for op in ops:
        known = [s.id for s in op.config.op.shape_list(args.suite)]
        unknown = [s for s in (args.shape or []) if s not in known]
        if unknown and len(ops) == 1:
            raise PipelineError(f"unknown shape {', '.join(unknown)} for {op.name}; shapes: {', '.join(known)}")
    if args.suite and not any(op.config.op.suites.get(args.suite) for op in ops):
        raise PipelineError(f"no op defines shape suite '{args.suite}' (op.yaml: suites: {{{args.suite}: [...]}})")
    if args.stage:
        stage = export.stage_named(args.stage)
        ops = [dataclasses.replace(op, config=dataclasses.replace(op.config, ncu=dataclasses.replace(
            op.config.ncu, metrics=list(dict.fromkeys([*op.config.ncu.metrics, *stage.metrics()]))))) for op in ops]
    # transient: the bar is redrawn in place on a terminal and leaves nothing in logs and CI output
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as progress:
        written = profiling.run(ops, cfg, args.shape, args.require_gpu, console.print, device=args.device,
                                suite=args.suite, force=args.force,
                                gpus=[g for g in args.gpus.split(",") if g] if args.gpus else None,
                                tracker=ProgressBar(progress))
    reports_dir, profiles_dir = _dir(cfg.reports_dir), _dir(cfg.profiles_dir)
    if written is None:
        recorded = [p for p in results.find_all(profiles_dir) if results.load(p)["op"] in {o.name for o in ops}]
        if not recorded:
            raise PipelineError(f"no recorded results under {profiles_dir} to replay")
        for p in recorded:
            doc = results.load(p)
            console.print(f"Rendering reports from recorded samples: {os.path.relpath(p, Path.cwd())} "
                          f"(recorded on {doc['environment'].get('gpu_name')} at {doc.get('created')}).")
        pages = report.render(recorded, reports_dir, replayed=True)
        _summary(recorded)
        console.print(f"Report (replayed data): {os.path.relpath(pages[0], Path.cwd())}")
        return ExitCode.OK
    failed = _summary(written)
    t0 = time.time()
    pages = report.render(results.find_all(profiles_dir) if args.all_reports else written, reports_dir, False)
    _time_split(written, time.time() - t0)
    console.print(f"Results: {', '.join(os.path.relpath(p, Path.cwd()) for p in written)}")
    console.print(f"Report: {os.path.relpath(pages[0], Path.cwd())}")
    return ExitCode.VARIANT_FAILURES if failed and args.strict else ExitCode.OK


def _results_for(cfg: config_mod.Config, op: str, path: str | None) -> dict:
    if path:
        return results.load(Path(path))
    found = [p for p in results.find_all(_dir(cfg.profiles_dir)) if p.parent.name == results.slug(op)]
    if not found:
        raise PipelineError(f"no results for op '{op}' under {_dir(cfg.profiles_dir)}; run `make profile` first")
    return results.load(found[0])


def cmd_export(args: argparse.Namespace) -> int:
    doc = _results_for(_root(args), args.op, args.results)
    shape, variant = export.find(doc, args.variant or export.best_name(doc["shapes"][0]) or "", args.shape)
    wanted = export.stage_named(args.stage).metrics() if args.stage else None
    print(json.dumps(export.ncu_json(variant, wanted), indent=2))
    return ExitCode.OK


def cmd_prompt(args: argparse.Namespace) -> int:
    doc = _results_for(_root(args), args.op, args.results)
    shape, variant = export.find(doc, args.variant or export.best_name(doc["shapes"][0]) or "", args.shape)
    print(export.render_prompt(export.prompt_view(doc, shape, variant, export.stage_named(args.stage), REPO)))
    return ExitCode.OK


def cmd_add_variant(args: argparse.Namespace) -> int:
    (op,) = ops_mod.discover(_root(args), REPO, [args.op])
    placed = ingest.add_variant(op, Path(args.file), args.name, args.force)
    console.print(f"Added {os.path.relpath(placed, Path.cwd())}; profile it with "
                  f"`make profile ARGS=\"--op {op.name} --variant {placed.stem}\"`")
    return ExitCode.OK


def cmd_report(args: argparse.Namespace) -> int:
    cfg = _root(args)
    paths = [Path(p) for p in args.results] or results.find_all(_dir(cfg.profiles_dir))
    if not paths:
        raise PipelineError(f"no results files under {_dir(cfg.profiles_dir)}; run `make profile` first")
    pages = report.render(paths, _dir(cfg.reports_dir), replayed=not args.live)
    console.print(f"Report: {os.path.relpath(pages[0], Path.cwd())}")
    return ExitCode.OK


def cmd_list(args: argparse.Namespace) -> int:
    cfg = _root(args)
    for op in ops_mod.discover(cfg, REPO, args.op):
        console.print(f"[bold]{op.name}[/] ({op.dir}) baseline={op.config.op.baseline or '—'}")
        for s in op.config.op.shapes:
            console.print(f"  shape {s.id}")
        for v in op.variants:
            console.print(f"  variant {v.name}" + (f"  [red]{v.problem}[/]" if v.problem else f"  {v.layout}"))
    return ExitCode.OK


def cmd_config(args: argparse.Namespace) -> int:
    print("| key | type | default | meaning |\n|---|---|---|---|")
    for key, tp, default, doc in config_mod.documented_keys():
        print(f"| `{key}` | {tp} | `{default}` | {doc} |")
    return ExitCode.OK


def cmd_gate(args: argparse.Namespace) -> int:
    cfg = _root(args)
    if args.profiles_dir:
        cfg = dataclasses.replace(cfg, profiles_dir=str(Path(args.profiles_dir).resolve()))
    return gate_output.run(cfg, REPO, [Path(p).resolve() for p in args.results] or None, console=console,
                           junit=Path(args.junit) if args.junit else None, ops=args.op, shapes=args.shape,
                           suite=args.suite, variants=args.variant,
                           baseline=Path(args.baseline).resolve() if args.baseline else None)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pipeline", description=__doc__)
    p.add_argument("--config", default="pipeline.yaml", help="root config file (default: pipeline.yaml)")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("profile", help="verify, time and ncu-profile every variant; write results and reports")
    pr.add_argument("--op", action="append", help="only this op (repeatable)")
    pr.add_argument("--shape", action="append", help="only this shape id (repeatable)")
    pr.add_argument("--variant", action="append", help="only this variant: file stem or full name (repeatable)")
    pr.add_argument("--stage", choices=list(stages.STAGES),
                    help="also collect this optimisation stage's metrics (see pipeline/stages.py)")
    pr.add_argument("--suite", help="run the op.yaml shape suite of this name instead of `shapes`")
    pr.add_argument("--profiles-dir", help="write results here instead of profiles_dir")
    pr.add_argument("--require-gpu", action="store_true", help="fail (exit 3) instead of replaying recorded data")
    pr.add_argument("--force", action="store_true", help="re-measure shapes whose inputs did not change")
    pr.add_argument("--gpus", help="comma-separated GPU ids to spread shapes over, one lane each "
                                   "(default: every visible GPU)")
    pr.add_argument("--strict", action="store_true", help="exit 5 when any variant failed")
    pr.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu: Triton interpreter, verify and time only, no ncu (for tests)")
    pr.add_argument("--all-reports", action="store_true", help="also re-render reports of ops not profiled now")
    pr.set_defaults(func=cmd_profile)
    rp = sub.add_parser("report", help="render HTML from stored results (no GPU needed)")
    rp.add_argument("results", nargs="*", help="results.json files (default: all under profiles/)")
    rp.add_argument("--live", action="store_true", help="do not mark the data as replayed")
    rp.set_defaults(func=cmd_report)
    ex = sub.add_parser("export", help="print a variant's stored ncu metrics as the seed's {kernel: {metric: value}}")
    ex.add_argument("--format", choices=["ncu-json"], default="ncu-json")
    for sp in (ex, sub.add_parser("prompt", help="render an LLM optimisation-stage prompt from stored results")):
        sp.add_argument("--op", required=True)
        sp.add_argument("--variant", help="variant name (default: the recommended one)")
        sp.add_argument("--shape", help="shape id (default: the first)")
        sp.add_argument("--results", help="results.json (default: the one under profiles/ for the op)")
        sp.add_argument("--stage", required=sp.prog.endswith("prompt"), choices=list(stages.STAGES),
                        help="stage whose metric set to use")
        sp.set_defaults(func=cmd_export if sp is ex else cmd_prompt)
    av = sub.add_parser("add-variant", help="check a candidate file in the seed's format and place it in kernels/<op>/")
    av.add_argument("--op", required=True)
    av.add_argument("file")
    av.add_argument("--name", help="variant name (default: the file's stem)")
    av.add_argument("--force", action="store_true", help="replace an existing variant of that name")
    av.set_defaults(func=cmd_add_variant)
    ls = sub.add_parser("list", help="list ops, shapes and variants")
    ls.add_argument("--op", action="append")
    ls.set_defaults(func=cmd_list)
    gt = sub.add_parser("gate", help="judge stored results against targets (exit 0 met, 1 missed, 2 cannot judge)")
    gt.add_argument("results", nargs="*", help="results.json files (default: all under profiles_dir)")
    gt.add_argument("--op", action="append", help="only this op (repeatable)")
    gt.add_argument("--shape", action="append", help="only this shape id (repeatable; default: op.yaml shapes)")
    gt.add_argument("--suite", help="gate the op.yaml shape suite of this name instead of `shapes`")
    gt.add_argument("--variant", action="append",
                    help="gate this variant, file stem or full name (repeatable; default: targets.gate, else the "
                         "recommended one per shape)")
    gt.add_argument("--baseline", help="results.json or profiles folder to check regressions against (e.g. main's)")
    gt.add_argument("--profiles-dir", help="read results here instead of profiles_dir")
    gt.add_argument("--junit", help="also write JUnit XML here (one testcase per kernel × target)")
    gt.set_defaults(func=cmd_gate)
    cf = sub.add_parser("config", help="print every config key as a Markdown table")
    cf.set_defaults(func=cmd_config)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PipelineError as exc:
        console.print(f"[bold red]error:[/] {exc}", markup=True, highlight=False)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/]: results of ops completed before it are kept")
        return int(ExitCode.INTERRUPTED)


if __name__ == "__main__":
    sys.exit(main())
