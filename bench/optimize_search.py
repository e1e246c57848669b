"""The `search` proposer against exhaustive and random search, on a GPU: how many evaluations each needs to
reach a configuration within recommend.TIE_MARGIN of the exhaustive optimum.

    python bench/optimize_search.py [--ops rmsnorm matmul] [--seeds 10] [--batch 4] [--work DIR] [--reuse]
                                    [--json out.json]

For each op (RMSNorm at KernelBench L1-36: the grid_2d and flat_1d families; matmul 4096³ fp16: grid_2d and
persistent) each family's variant is given a SPACE and RESTRICT (below). Every configuration RESTRICT allows is
measured once through `profile` (verified, event-timed interleaved in rounds, ncu with the grid_and_parallel and
block_tiling metric sets, `ncu.select: all` so that every configuration has counters) in a scratch project under
--work. The strategies are then replayed on those measurements, so all of them see the same numbers:

  search     pipeline.search as `optimize --proposer search` runs it: from a start configuration, neighbours of
             the nearest reach with any left (search.REACHES), ordered by the counter rules, --batch per step,
             the best replaced by the fastest candidate that optimize.judge promotes, until search.ends
  fixed      the same search with every rule ignored (the order `optimize` uses on the CPU): what the rules add
  random     configurations drawn without replacement

search and fixed start from the family's slowest correct configuration, then from one random correct start per
seed (the start counts as one evaluation); random search draws one order per seed. The table gives the
evaluations until the first configuration within the margin of the family's exhaustive optimum: from the
slowest, and over the seeds as median / worst with how many got there at all. The H100 measurements are
committed in tests/fixtures/optimize-sweep: copy that folder and pass the copy as `--work` with `--reuse` to
replay them (the scratch projects are rewritten there). `--device cpu --ops scale` runs
the whole script on the Triton interpreter with the tests' fixture op (a smoke run: timings of the interpreter,
no counters).
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline import config, ops, optimize, recommend, results, search  # noqa: E402
from pipeline.stages import STAGES  # noqa: E402


@dataclass(frozen=True)
class Family:
    variant: str                   # the op's variant file the space is declared on
    space: dict[str, list[Any]]
    restrict: list[str]


@dataclass(frozen=True)
class Bench:
    op_dir: Path
    shape: str
    families: tuple[Family, ...]


# rmsnorm: per-thread tile C_PAD * BLOCK_HW / (32 * num_warps) fp32 values at C = 64: the kernels refuse more than 128
_RMS_SPACE = dict(BLOCK_HW=[16, 32, 64, 128, 256, 512, 1024], num_warps=[1, 2, 4, 8, 16])
_RMS_RESTRICT = ["64 * BLOCK_HW // (32 * num_warps) <= 128"]
# matmul: accumulator registers per thread, and shared memory per block (H100/H200: 227 KB)
_MM_RESTRICT = ["BLOCK_M * BLOCK_N // (32 * num_warps) <= 256",
                "num_stages * (BLOCK_M * BLOCK_K + BLOCK_K * BLOCK_N) * 2 <= 227 * 1024"]
BENCHES = {
    "rmsnorm": Bench(REPO / "kernels" / "rmsnorm", "L1-36", (
        Family("grid_2d.py", _RMS_SPACE, _RMS_RESTRICT),
        Family("flat_1d.py", _RMS_SPACE, _RMS_RESTRICT))),
    "matmul": Bench(REPO / "kernels" / "matmul", "4096-fp16", (
        Family("grid_2d.py", dict(BLOCK_M=[32, 64, 128, 256], BLOCK_N=[32, 64, 128, 256], BLOCK_K=[32, 64],
                                  num_warps=[4, 8], num_stages=[2, 3, 4]), _MM_RESTRICT),
        Family("persistent.py", dict(BLOCK_M=[64, 128, 256], BLOCK_N=[64, 128, 256], BLOCK_K=[32, 64],
                                     GROUP_M=[4, 8], num_warps=[4, 8], num_stages=[2, 3, 4]), _MM_RESTRICT))),
    "scale": Bench(REPO / "tests" / "fixtures" / "optimize" / "kernels" / "scale", "n4096", (
        Family("tiled.py", dict(BLOCK=[16, 32, 64, 128, 256], num_warps=[1, 2, 4]), ["BLOCK * num_warps <= 256"]),)),
}


def scratch(name: str, b: Bench, work: Path) -> tuple[Path, dict[str, tuple[list[dict[str, Any]], search.Tuning]]]:
    """A project under `work` holding the op's reference, an op.yaml of the one shape, and per family its variant
    with SPACE, RESTRICT and CONFIGS = every allowed configuration; per family stem (configs, tuning)."""
    root = work / name
    op_dir = root / "kernels" / name
    if op_dir.exists():
        shutil.rmtree(op_dir)
    op_dir.mkdir(parents=True)
    shutil.copyfile(b.op_dir / "reference.py", op_dir / "reference.py")
    op_yaml = yaml.safe_load((b.op_dir / "op.yaml").read_text())
    shape = next(s for s in op_yaml["shapes"] if s.get("name") == b.shape)
    kept = {k: v for k, v in op_yaml.items() if k in ("verify", "flops", "timing", "worker")}
    (op_dir / "op.yaml").write_text(yaml.safe_dump({**kept, "shapes": [shape]}, sort_keys=False))
    spaces = {}
    for fam in b.families:
        source = (b.op_dir / fam.variant).read_text()
        path = op_dir / fam.variant
        path.write_text(source + "\n" + f"SPACE = {fam.space!r}\nRESTRICT = {fam.restrict!r}\n")
        space = ops.read_space(path)
        base = search.start(next(iter(ops.read_variants(b.op_dir / fam.variant, ""))).config, space)
        tuned = search.tuning(space, base)
        configs = search.every_config(tuned, base)
        path.write_text(search.with_configs(path.read_text(), configs, str(path)))
        spaces[path.stem] = (configs, tuned)
    metrics = list(dict.fromkeys([*config.NcuConfig().metrics, *STAGES["grid_and_parallel"].metrics(),
                                  *STAGES["block_tiling"].metrics()]))
    (root / "pipeline.yaml").write_text(yaml.safe_dump({
        "kernels_dir": "kernels", "profiles_dir": "profiles", "reports_dir": "reports",
        "ncu": {"select": "all", "metrics": metrics, "timeout_s": 3600.0}}, sort_keys=False))
    return root, spaces


def measure(root: Path, name: str, shape: str, device: str) -> dict[str, Any]:
    args = [sys.executable, "-m", "pipeline", "--config", str(root / "pipeline.yaml"), "profile", "--op", name,
            "--shape", shape, "--device", device] + (["--require-gpu"] if device == "cuda" else [])
    proc = subprocess.run(args, cwd=REPO, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} exited {proc.returncode}")
    (path,) = results.find_all(root / "profiles")
    return results.load(path)


def table(doc: dict[str, Any], shape: str) -> tuple[dict[tuple[str, str], dict[str, Any]], dict[str, Any],
                                                 dict[str, Any]]:
    """The shape's records by (variant stem, configuration key), the shape, the environment."""
    s = next(s for s in doc["shapes"] if s["id"] == shape)
    return {(v["stem"], search.key(v["config"])): v for v in s["variants"]}, s, doc["environment"]


def replay_search(start: dict[str, Any], recs: dict[str, dict[str, Any]], shape: dict[str, Any], env: dict[str, Any],
                  tuned: search.Tuning, targets: set[str], batch: int, use_rules: bool) -> tuple[int | None, int, str]:
    """(evaluations until the first within the margin, or None; evaluations in all; why it stopped), stepping as
    optimize's search does: search.rules, search.propose, optimize.judge, search.ends."""
    best, evaluated, n, hit = start, {search.key(start)}, 1, 1 if search.key(start) in targets else None
    while True:
        fired = search.rules(recs[search.key(best)], shape, env)[0] if use_rules else []
        stop = search.stops(fired)
        prop = search.propose(best, tuned, fired, evaluated, batch)
        wins = []
        for cfg, _ in prop.candidates:
            n += 1
            evaluated.add(search.key(cfg))
            if hit is None and search.key(cfg) in targets:
                hit = n
            verdict = optimize.judge({"s": recs[search.key(best)]}, {"s": recs[search.key(cfg)]}, ["s"])
            if verdict.ok:
                wins.append((verdict.speedup, cfg))
        if wins:
            best = max(wins, key=lambda w: w[0])[1]
        why = search.ends(stop, bool(prop.candidates))
        if why:
            return hit, n, why


def summary(hits: list[int | None]) -> dict[str, Any]:
    got = [h for h in hits if h is not None]
    return {"median": statistics.median(got) if got else None, "worst": max(got) if got else None,
            "reached": f"{len(got)}/{len(hits)}", "each": hits}


def family_run(stem: str, configs: list[dict[str, Any]], tuned: search.Tuning, measured: dict, shape: dict[str, Any],
               env: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    recs = {search.key(c): measured[(stem, search.key(c))] for c in configs}
    ok = {k: r for k, r in recs.items() if r["status"] == "ok" and r.get("timing")}
    if not ok:
        sys.exit(f"{stem}: no configuration of the space is correct")
    ms = {k: r["timing"]["median_ms"] for k, r in ok.items()}
    opt_key, slow_key = min(ms, key=ms.get), max(ms, key=ms.get)
    targets = {k for k in ok if ms[k] <= ms[opt_key] * (1 + recommend.TIE_MARGIN)}
    by: dict[str, list[int | None]] = {"search": [], "fixed": [], "random": []}
    runs = []
    # the slowest correct configuration first (the start), then one random correct start per seed
    starts = [("slowest", json.loads(slow_key))] + [
        (f"seed {seed}", json.loads(random.Random(seed).choice(sorted(ok)))) for seed in range(args.seeds)]
    for label, start in starts:
        for strategy, rules in (("search", True), ("fixed", False)):
            hit, n, why = replay_search(start, recs, shape, env, tuned, targets, args.batch, rules)
            if label != "slowest":
                by[strategy].append(hit)
            if label == "slowest" or strategy == "search":       # every run from the slowest, search's from each seed
                runs.append({"start": label, "strategy": strategy, "config": start, "reached_at": hit,
                             "evaluations": n, "stopped": why})
    for seed in range(args.seeds):
        order = sorted(recs)
        random.Random(seed).shuffle(order)
        by["random"].append(next(i for i, k in enumerate(order, 1) if k in targets))
    slowest = {r["strategy"]: r["reached_at"] for r in runs if r["start"] == "slowest"}
    return {"family": stem, "space": len(configs), "correct": len(ok), "within_margin": len(targets),
            "optimum": {"config": json.loads(opt_key), "median_ms": ms[opt_key]},
            "slowest": {"config": json.loads(slow_key), "median_ms": ms[slow_key]},
            "from_slowest": slowest, "strategies": {k: summary(v) for k, v in by.items()}, "search_runs": runs}


def run(name: str, b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    root, spaces = scratch(name, b, args.work)
    found = results.find_all(root / "profiles")
    doc = results.load(found[0]) if args.reuse and found else measure(root, name, b.shape, args.device)
    measured, shape, env = table(doc, b.shape)
    fams = [family_run(stem, configs, tuned, measured, shape, env, args) for stem, (configs, tuned) in spaces.items()]
    return {"op": name, "shape": b.shape, "gpu": env.get("gpu_name"), "families": fams}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", nargs="+", choices=list(BENCHES), default=["rmsnorm", "matmul"])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--batch", type=int, default=4, help="neighbours per search step, as optimize --batch")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "kernel-pipeline-optimize-search",
                   help="scratch projects and their measurements (default: in the system's temporary folder)")
    p.add_argument("--reuse", action="store_true", help="replay the measurements already under --work")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args()
    args.work = args.work.resolve()
    out = [run(name, BENCHES[name], args) for name in args.ops]
    print(f"\nEvaluations to reach a configuration within {recommend.TIE_MARGIN:.0%} of the exhaustive optimum of "
          f"the family's space: from its slowest configuration, and from {args.seeds} random starts (median / worst, "
          f"starts that got there); random search over {args.seeds} seeds\n")
    print("| op | shape | GPU | family | space (allowed, correct) | exhaustive optimum | slowest | search from slowest "
          "| fixed from slowest | search | fixed order | random |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in out:
        for f in r["families"]:
            cells = [f"{s['median']} / {s['worst']} ({s['reached']})" for s in f["strategies"].values()]
            print(f"| {r['op']} | {r['shape']} | {r['gpu']} | {f['family']} | {f['space']}, {f['correct']} | "
                  f"{json.dumps(f['optimum']['config'])} {f['optimum']['median_ms']:.4g} ms | "
                  f"{f['slowest']['median_ms']:.4g} ms | {f['from_slowest']['search']} | {f['from_slowest']['fixed']} | "
                  + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
