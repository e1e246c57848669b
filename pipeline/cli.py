"""`kernel-pipeline` (`python -m pipeline`): the commands; the only place exceptions become exit codes.

The project root is the folder of the config file (`--config`, default ./pipeline.yaml), or the working
directory where there is none; kernels_dir, profiles_dir and reports_dir resolve against it. Paths given as
flags resolve against the working directory. Errors go to stderr; SIGTERM and SIGHUP stop a run as Ctrl-C does.

Commands (each a cmd_* function here; the module named does the work):
  profile      verify, time and ncu-profile every variant, then render (pipeline.profiling, pipeline.report)
  report       re-render HTML from stored results, diff pages with --baseline (pipeline.report)
  export       one results file in an output format: ncu-json, csv, json, prompt, terminal, html (pipeline.export)
  prompt       an LLM optimisation-stage prompt from stored results (pipeline.export)
  add-variant  check a candidate file and place it in kernels/<op>/ (pipeline.ingest)
  new-op       set up kernels/<NAME>/ from a KernelBench problem file (pipeline.newop)
  list         ops, shapes and variants found (pipeline.ops)
  gate         judge stored results against targets: exit 0 met, 1 missed, 2 cannot judge (pipeline.gate_output)
  optimize     propose, verify and time candidates stage by stage (pipeline.optimize)
  config       every config key as a table (pipeline.config)
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import signal
import time
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

import pipeline
from pipeline import config as config_mod
from pipeline import errors as errors_mod
from pipeline import ops as ops_mod
# report and export (matplotlib, through the charts) are imported by the commands that draw: gate, list and
# config start without them
from pipeline import (argtypes, gate_output, ingest, jsonout, newop, optimize, optimize_options, profiling, results,
                      stages, supervise, terminal)
from pipeline.errors import ConfigError, ExitCode, PipelineError

START = time.monotonic()
PROG = "kernel-pipeline" if Path(sys.argv[0]).name == "kernel-pipeline" else "python -m pipeline"   # for hints
console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclasses.dataclass(frozen=True)
class Project:
    """The project a command works on: its root, and its config with every configured folder made absolute."""
    root: Path
    cfg: config_mod.Config

    @property
    def kernels(self) -> Path:
        return Path(self.cfg.kernels_dir)

    @property
    def profiles(self) -> Path:
        return Path(self.cfg.profiles_dir)

    @property
    def reports(self) -> Path:
        return Path(self.cfg.reports_dir)


def _project(args: argparse.Namespace) -> Project:
    named = args.config is not None
    path = Path(args.config if named else "pipeline.yaml").expanduser()
    path = path if path.is_absolute() else Path.cwd() / path
    if path.is_file():
        root, cfg = path.parent.resolve(), config_mod.load_root(path)
    elif named:
        raise ConfigError(f"{path}: {'not a file' if path.exists() else 'no such config file'} (--config)")
    else:
        root, cfg = Path.cwd().resolve(), config_mod.Config()
    dirs = {k: str(root / Path(getattr(cfg, k)).expanduser()) for k in ("kernels_dir", "profiles_dir", "reports_dir")}
    for key in ("profiles_dir", "reports_dir"):
        if getattr(args, key, None):
            dirs[key] = str(Path(getattr(args, key)).expanduser().resolve())
    return Project(root, dataclasses.replace(cfg, **dirs))


def _rel(path: Path) -> str:
    return os.path.relpath(path, Path.cwd())


def _write_json(path: str, doc: dict) -> None:
    results.write_atomic(Path(path).expanduser().resolve(), json.dumps(doc, indent=1, default=str) + "\n")


def cmd_profile(args: argparse.Namespace) -> int:
    from pipeline import export
    from pipeline import report
    proj = _project(args)
    cfg = proj.cfg
    ops = ops_mod.discover(cfg, proj.root, args.op)
    if args.detail:
        if not args.variant:
            raise PipelineError("profile --detail re-profiles the variants named by --variant (with --shape, at "
                                "those shapes): name at least one")
        # the named variants are measured again and given the detail pass, whatever the cache and ncu.detail say;
        # the op keeps its other variants, served from the cache, so the shape's record stays whole
        ops = [dataclasses.replace(
            op, detail_asked=tuple(v.name for v in ops_mod.select_variants(op, args.variant).variants),
            config=dataclasses.replace(op.config, ncu=dataclasses.replace(op.config.ncu, detail=True))) for op in ops]
    elif args.variant:
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
                                tracker=terminal.ProgressBar(progress), root=proj.root, backend=args.backend,
                                ray_address=args.ray_address, gpu_model=args.gpu_model, job_timeout=args.job_timeout)
    present = results.find_all(proj.profiles)     # the index lists every op with results, not only these
    if written is None:
        recorded = [p for p in present if results.load(p)["op"] in {o.name for o in ops}]
        if not recorded:
            raise PipelineError(f"no recorded results under {proj.profiles} to replay")
        for p in recorded:
            doc = results.load(p)
            console.print(f"Rendering reports from recorded samples: {_rel(p)} "
                          f"(recorded on {doc['environment'].get('gpu_name')} at {doc.get('created')}).")
        pages = report.render(recorded, proj.reports, replayed=True, index=present)
        terminal.summary(console, recorded)
        console.print(f"Report (replayed data): {_rel(pages[0])}")
        if args.json_summary:
            _write_json(args.json_summary, jsonout.profile_summary(recorded, pages[0], ExitCode.OK, True))
        return ExitCode.OK
    failed = terminal.summary(console, written)
    t0 = time.time()
    pages = report.render(present if args.all_reports else written, proj.reports, False, index=present)
    terminal.time_split(console, written, time.time() - t0, START)
    console.print(f"Results: {', '.join(_rel(p) for p in written)}")
    console.print(f"Report: {_rel(pages[0])}")
    code = ExitCode.VARIANT_FAILURES if failed and args.strict else ExitCode.OK
    if args.json_summary:
        _write_json(args.json_summary, jsonout.profile_summary(written, pages[0], code, False))
    return code


def _results_for(proj: Project, op: str, path: str | None) -> Path:
    if path:
        return Path(path)
    found = [p for p in results.find_all(proj.profiles) if p.parent.name == results.slug(op)]
    if not found:
        raise PipelineError(f"no results for op '{op}' under {proj.profiles}; run `{PROG} profile "
                            f"--op {op}` first")
    return found[0]


def cmd_export(args: argparse.Namespace) -> int:
    from pipeline import export
    proj = _project(args)
    sys.stdout.write(export.as_format(args.format, _results_for(proj, args.op, args.results), variant=args.variant,
                                      shape=args.shape, stage=args.stage, root=proj.root, kernels=proj.kernels))
    return ExitCode.OK


def cmd_prompt(args: argparse.Namespace) -> int:
    args.format = "prompt"
    return cmd_export(args)


def cmd_add_variant(args: argparse.Namespace) -> int:
    proj = _project(args)
    (op,) = ops_mod.discover(proj.cfg, proj.root, [args.op])
    placed = ingest.add_variant(op, Path(args.file), args.name, args.force)
    console.print(f"Added {_rel(placed)}; profile it with "
                  f"`{PROG} profile --op {op.name} --variant {placed.stem}`")
    return ExitCode.OK


def cmd_new_op(args: argparse.Namespace) -> int:
    proj = _project(args)
    reference, op_yaml, template = newop.create(proj.kernels, args.name, Path(args.from_file), proj.cfg)
    console.print(f"Created {_rel(reference.parent)}/: reference.py ({args.from_file} as it is), op.yaml (its "
                  f"module-level sizes as the shape `default`) and {template.name} (a variant that is `unsupported` "
                  f"until its kernel is written). Next: write the kernel in {_rel(template)}, then "
                  f"`{PROG} profile --op {args.name}`.")
    return ExitCode.OK


def cmd_report(args: argparse.Namespace) -> int:
    from pipeline import report
    proj = _project(args)
    present = results.find_all(proj.profiles)
    paths = [Path(p).resolve() for p in args.results] or present
    if not paths:
        raise PipelineError(f"no results files under {proj.profiles}; run `{PROG} profile` first")
    baseline = Path(args.baseline).expanduser().resolve() if args.baseline else None
    if baseline and not baseline.exists():
        raise PipelineError(f"--baseline {args.baseline}: no such results file or folder")
    pages = report.render(paths, proj.reports, replayed=not args.live, index=present, baseline=baseline)
    console.print(f"Report: {_rel(pages[0])}")
    return ExitCode.OK


def cmd_list(args: argparse.Namespace) -> int:
    proj = _project(args)
    found = ops_mod.discover(proj.cfg, proj.root, args.op)
    if args.json:
        print(json.dumps(jsonout.op_listing(found, proj.root, proj.kernels), indent=1, default=str))
        return ExitCode.OK
    for op in found:
        console.print(f"[bold]{op.name}[/] ({op.dir}) baseline={op.config.op.baseline or '—'}")
        for s in op.config.op.shapes:
            console.print(f"  shape {s.id}")
        for v in op.variants:
            console.print(f"  variant {v.name}" + (f"  [red]{v.problem}[/]" if v.problem else f"  {v.layout}"))
    return ExitCode.OK


def cmd_config(args: argparse.Namespace) -> int:
    _project(args)      # a --config that names no file is an error here too
    print("| key | type | default | meaning |\n|---|---|---|---|")
    for key, tp, default, doc in config_mod.documented_keys():
        print(f"| `{key}` | {tp} | `{default}` | {doc} |")
    return ExitCode.OK


def cmd_gate(args: argparse.Namespace) -> int:
    proj = _project(args)
    return gate_output.run(proj.cfg, proj.root, [Path(p).resolve() for p in args.results] or None,
                           console=stderr if args.json else console, as_json=args.json,
                           junit=Path(args.junit) if args.junit else None, ops=args.op, shapes=args.shape,
                           suite=args.suite, variants=args.variant,
                           baseline=Path(args.baseline).resolve() if args.baseline else None,
                           reference=Path(args.reference).resolve() if args.reference else None)


def cmd_optimize(args: argparse.Namespace) -> int:
    proj = _project(args)
    return optimize.command(args, proj.root, proj.cfg, console.print)


def version() -> str:
    try:
        return importlib.metadata.version("kernel-grid-pipeline")
    except importlib.metadata.PackageNotFoundError:
        return pipeline.__version__


def parser() -> argparse.ArgumentParser:
    # the subcommands list themselves below: the description stops before the docstring's list of them
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\nCommands")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="the project's config file; its folder is the project root (default: "
                                    "./pipeline.yaml if present, else defaults with the working directory as root)")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    pr = sub.add_parser("profile", help="verify, time and ncu-profile every variant; write results and reports")
    pr.add_argument("--op", action="append", help="only this op (repeatable)")
    pr.add_argument("--shape", action="append", help="only this shape id (repeatable)")
    pr.add_argument("--variant", action="append", help="only this variant: file stem or full name (repeatable)")
    pr.add_argument("--stage", choices=list(stages.STAGES),
                    help="also collect this optimisation stage's metrics (see pipeline/stages.py)")
    pr.add_argument("--suite", help="run the op.yaml shape suite of this name instead of `shapes`")
    pr.add_argument("--profiles-dir", help="write results here instead of profiles_dir")
    pr.add_argument("--reports-dir", help="write reports here instead of reports_dir")
    pr.add_argument("--json-summary", metavar="PATH",
                    help="also write what the run left (recommendation and statuses per shape) as JSON here")
    pr.add_argument("--require-gpu", action="store_true", help="fail (exit 3) instead of replaying recorded data")
    pr.add_argument("--force", action="store_true", help="re-measure shapes whose inputs did not change")
    pr.add_argument("--gpus", help="comma-separated GPU ids to spread shapes over, one lane each "
                                   "(default: every visible GPU)")
    pr.add_argument("--backend", metavar="threads|ray|MODULE:CLASS",
                    help="run the lanes as threads over this host's GPUs, as Ray actors over a cluster's, or "
                         "through another shard.Backend (default: backend in pipeline.yaml, else threads)")
    pr.add_argument("--ray-address", metavar="ADDR",
                    help="with --backend ray: auto, HOST:PORT or ray://HOST:PORT (default: ray_address, else auto)")
    pr.add_argument("--gpu-model", metavar="NAME",
                    help="measure on GPUs of this model only (its name as nvidia-smi gives it, or its profiles "
                         "folder name); default: once on each model present")
    pr.add_argument("--job-timeout", metavar="SECONDS", type=argtypes.seconds,
                    help="with --backend ray: a lane still on one op after this long is replaced and the op "
                         "retried once (default: the op's own limits summed, plus 5 minutes)")
    pr.add_argument("--strict", action="store_true", help="exit 5 when any variant failed")
    pr.add_argument("--detail", action="store_true",
                    help="with --variant: measure those variants again and give them the ncu detail pass (warp "
                         "states, source counters, memory tables) at every selected shape, beside the "
                         "recommendation's; the report's per-variant command")
    pr.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                    help="cpu: Triton interpreter, verify and time only, no ncu (for tests)")
    pr.add_argument("--all-reports", action="store_true",
                    help="also re-render the pages of ops not profiled now (the index lists them anyway)")
    pr.set_defaults(func=cmd_profile)
    rp = sub.add_parser("report", help="render HTML from stored results (no GPU needed)")
    rp.add_argument("results", nargs="*", help="results.json files (default: all under profiles/)")
    rp.add_argument("--live", action="store_true", help="do not mark the data as replayed")
    rp.add_argument("--profiles-dir", help="read results here instead of profiles_dir")
    rp.add_argument("--reports-dir", help="write reports here instead of reports_dir")
    rp.add_argument("--baseline", help="results.json or profiles folder to diff against: one page per op (Δ per variant)")
    rp.set_defaults(func=cmd_report)
    ex = sub.add_parser("export", help="print a variant's stored ncu metrics as the seed's {kernel: {metric: value}}")
    ex.add_argument("--format", choices=["ncu-json", "csv", "json", "prompt", "terminal", "html"], default="ncu-json",
                    help="ncu-json: one variant's metrics for a prompt; csv / json: one row per variant × shape "
                         "(columns in docs/results.md); prompt: as the prompt command (needs --stage); terminal: "
                         "the tables `profile` prints; html: the op's page, its links relative to the current folder")
    for sp in (ex, sub.add_parser("prompt", help="render an LLM optimisation-stage prompt from stored results")):
        sp.add_argument("--op", required=True)
        sp.add_argument("--variant", help="variant name (default: the recommended one)")
        sp.add_argument("--shape", help="shape id (default: the first)")
        sp.add_argument("--results", help="results.json (default: the one under profiles_dir for the op)")
        sp.add_argument("--profiles-dir", help="read results here instead of profiles_dir")
        sp.add_argument("--stage", required=sp.prog.endswith("prompt"), choices=list(stages.STAGES),
                        help="stage whose metric set to use")
        sp.set_defaults(func=cmd_export if sp is ex else cmd_prompt)
    av = sub.add_parser("add-variant", help="check a candidate file in the seed's format and place it in kernels/<op>/")
    av.add_argument("--op", required=True)
    av.add_argument("file")
    av.add_argument("--name", help="variant name (default: the file's stem)")
    av.add_argument("--force", action="store_true", help="replace an existing variant of that name")
    av.set_defaults(func=cmd_add_variant)
    no = sub.add_parser("new-op", help="set up kernels/<NAME>/ from a KernelBench problem file")
    no.add_argument("name")
    no.add_argument("--from", dest="from_file", required=True, metavar="PROBLEM.py",
                    help="KernelBench problem file: copied as reference.py; its module-level sizes become the "
                         "default shape")
    no.set_defaults(func=cmd_new_op)
    ls = sub.add_parser("list", help="list ops, shapes and variants")
    ls.add_argument("--op", action="append")
    ls.add_argument("--json", action="store_true", help="print them as JSON")
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
    gt.add_argument("--reference", help="a fixed results set checked as well as --baseline (e.g. the last release's), "
                                        "so slowdowns too small to fail against the last run cannot add up")
    gt.add_argument("--profiles-dir", help="read results here instead of profiles_dir")
    gt.add_argument("--junit", help="also write JUnit XML here (one testcase per kernel × target)")
    gt.add_argument("--json", action="store_true", help="print the verdict and every check as JSON instead of "
                                                        "the table (the exit code is the same)")
    gt.set_defaults(func=cmd_gate)
    om = sub.add_parser("optimize", help="propose, verify and time candidates stage by stage; promote only real wins")
    optimize_options.add_arguments(om).set_defaults(func=cmd_optimize)
    cf = sub.add_parser("config", help="print every config key as a Markdown table")
    cf.set_defaults(func=cmd_config)
    return p


def _stop(signum: int, frame: object) -> None:
    for sig in STOP_SIGNALS:        # the clean-up that follows must not be cut short by a second one
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


STOP_SIGNALS = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    before = {sig: signal.signal(sig, _stop) for sig in STOP_SIGNALS}
    try:
        args = parser().parse_args(argv)
        return int(args.func(args))
    except PipelineError as exc:
        stderr.print(f"[bold red]error:[/] {escape(str(exc))}")
        return int(exc.exit_code)
    except KeyboardInterrupt:
        supervise.kill_all()
        stderr.print("[yellow]interrupted[/]: results of ops completed before it are kept")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a bug: one line here, the traceback in a log file
        stderr.print(f"[bold red]error:[/] {escape(errors_mod.internal_error(exc, ['kernel-pipeline', *argv]))}")
        return int(ExitCode.INTERNAL_ERROR)
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
