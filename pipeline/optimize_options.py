"""What `optimize` is asked to do: its flags (add_arguments) checked into Options, the tuning and held-out shapes,
and the variant it starts from (`--from`, or the recommendation recorded at the first tuning shape). Every refusal
is a SelectionError naming the flag, shape or file at fault. pipeline/optimize.py runs the loop.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import shutil
from pathlib import Path

from pipeline import argtypes, proposer, results, shapeanalysis
from pipeline.errors import SelectionError
from pipeline.ops import Op, Variant
from pipeline.stages import STAGES


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--op", required=True)
    p.add_argument("--shape", action="append", help="tuning shape id (repeatable; default: the op's first shape); "
                                                   "the proposer sees these only")
    p.add_argument("--holdout", action="append", metavar="SHAPE",
                   help="held-out shape id (repeatable; default: the op's other shapes); a candidate must be correct "
                        "there to be promoted")
    p.add_argument("--from", dest="start", metavar="VARIANT",
                   help="start from this variant (file stem or full name) instead of the recommended one")
    p.add_argument("--proposer", choices=["search", "cmd"], required=True,
                   help="search: neighbours in the variant's SPACE, ordered by counter rules; cmd: an executable")
    p.add_argument("--proposer-cmd", metavar="CMD",
                   help="with --proposer cmd: the command (split as a shell would); it reads the stage prompt on "
                        "stdin and writes candidate .py files into the folder given as its last argument (also "
                        f"${proposer.CANDIDATES_ENV})")
    p.add_argument("--proposer-timeout", type=argtypes.seconds, default=900.0, metavar="SECONDS",
                   help="the cmd proposer is killed after this long; its files are then not used (default 900)")
    p.add_argument("--budget", type=argtypes.positive_int, default=20,
                   help="most candidates measured in the whole run (static refusals are free; default 20)")
    p.add_argument("--batch", type=argtypes.positive_int, default=4,
                   help="search: most neighbours measured per step (default 4)")
    p.add_argument("--stages", nargs="+", choices=list(STAGES), default=list(STAGES),
                   help="stages to run, in the order of pipeline/stages.py (default: all)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: Triton interpreter, timings only (no counters)")
    p.add_argument("--resume", action="store_true",
                   help="resume the newest unfinished run (an error if there is none); done by default when the "
                        "flags match")
    p.add_argument("--fresh", action="store_true", help="start a new run even when the newest one is unfinished")
    p.add_argument("--profiles-dir", help="read results and keep the history here instead of profiles_dir")
    return p


@dataclasses.dataclass
class Options:
    op: str
    shapes: list[str] | None
    holdout: list[str] | None
    start: str | None
    proposer: str
    command: list[str]
    timeout: float
    budget: int
    batch: int
    stages: list[str]
    device: str
    resume: bool
    fresh: bool


def options(args: argparse.Namespace) -> Options:
    command: list[str] = []
    if args.proposer == "cmd":
        if not args.proposer_cmd:
            raise SelectionError("--proposer cmd needs --proposer-cmd CMD (an executable that reads the prompt on "
                                 "stdin and writes candidate files into the folder it is given)")
        try:
            command = shlex.split(args.proposer_cmd)
        except ValueError as exc:
            raise SelectionError(f"--proposer-cmd {args.proposer_cmd!r}: {exc}") from None
        if not command or not (shutil.which(command[0]) or Path(command[0]).is_file()):
            raise SelectionError(f"--proposer-cmd: {command[0] if command else '(empty)'} is not an executable "
                                 "on PATH or a file")
        # the proposer runs in its step's folder: paths the user gave relative to here must still reach their files
        command = [str(Path(a).resolve()) if "/" in a and Path(a).exists() else a for a in command]
    elif args.proposer_cmd:
        raise SelectionError("--proposer-cmd is for --proposer cmd")
    if args.resume and args.fresh:
        raise SelectionError("--resume and --fresh exclude each other")
    stages = [s for s in STAGES if s in args.stages]
    return Options(args.op, args.shape, args.holdout, args.start, args.proposer, command, args.proposer_timeout,
                   args.budget, args.batch, stages, args.device, args.resume, args.fresh)


def split_shapes(op: Op, opts: Options) -> tuple[list[str], list[str]]:
    known = [s.id for s in op.config.op.shapes]
    if not known:
        raise SelectionError(f"{op.dir / 'op.yaml'}: op {op.name} lists no shapes; optimize needs a tuning shape "
                             "and a held-out one")
    for flag, ids in (("--shape", opts.shapes), ("--holdout", opts.holdout)):
        unknown = [s for s in ids or [] if s not in known]
        if unknown:
            raise SelectionError(f"{flag}: unknown shape {', '.join(unknown)} for {op.name}; shapes: "
                                 f"{', '.join(known)}")
    tuning = list(dict.fromkeys(opts.shapes or known[:1]))
    holdout = list(dict.fromkeys(opts.holdout or [s for s in known if s not in tuning]))
    both = [s for s in holdout if s in tuning]
    if both:
        raise SelectionError(f"shape {', '.join(both)} is both tuned on and held out; a held-out shape must be "
                             "one the proposer never sees")
    if not holdout:
        raise SelectionError(f"no held-out shape for op {op.name}: every shape is tuned on ({', '.join(tuning)}); "
                             f"add a shape to {op.dir / 'op.yaml'} or name one with --holdout")
    return tuning, holdout


def find(op: Op, name: str, flag: str) -> Variant:
    found = [v for v in op.variants if v.name == name] or [v for v in op.variants if v.stem == name]
    if not found:
        raise SelectionError(f"{flag}: unknown variant {name} in op {op.name}; variants: "
                             + ", ".join(sorted({v.stem for v in op.variants})))
    if len(found) > 1:
        raise SelectionError(f"{flag}: {name} has {len(found)} configs; name one: "
                             + ", ".join(v.name for v in found))
    if found[0].problem:
        raise SelectionError(f"{flag}: {found[0].file}: {found[0].problem}")
    return found[0]


def recommended(op: Op, profiles: Path, gpu: str, shape: str, device: str) -> tuple[Variant, str]:
    path = results.path_for(profiles, gpu, op.name)
    hint = (f"run `profile --op {op.name} --shape {shape}{' --device cpu' if device == 'cpu' else ''}` first, "
            "or pass --from VARIANT")
    if not path.exists():
        raise SelectionError(f"no results of op {op.name} on {gpu} ({path}) to take the recommendation from; {hint}")
    doc = results.load(path)
    rec = next((s for s in doc["shapes"] if s["id"] == shape), None)
    best = shapeanalysis.analyze_shape(rec, doc["environment"]).recommendation if rec else None
    if best is None:
        raise SelectionError(f"{path}: no correct variant recorded at shape {shape}; {hint}")
    name = best.variant["name"]
    if not any(v.name == name for v in op.variants):
        raise SelectionError(f"{path}: the recommended {name} is no longer a variant of op {op.name}; {hint}")
    return find(op, name, "recommendation"), f"recommended at {shape} in {path}"
