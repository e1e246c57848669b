"""The `search` proposer against exhaustive and random search, on a GPU: how many evaluations each needs to
reach a configuration within recommend.TIE_MARGIN of the exhaustive optimum.

    python bench/optimize_search.py [--ops rmsnorm matmul] [--seeds 10] [--batch 4] [--work DIR] [--reuse]
                                    [--json out.json]

For each op (RMSNorm at KernelBench L1-36 from kernels/rmsnorm/grid_2d.py; matmul 4096³ fp16 from
kernels/matmul/grid_2d.py) a SPACE and RESTRICT are given below. Every configuration RESTRICT allows is measured
once through `profile` (verified, event-timed interleaved in rounds, ncu with the grid_and_parallel and
block_tiling metric sets, `ncu.select: all` so that every configuration has counters) in a scratch project
under --work. The strategies are then replayed on those measurements, so all of them see the same numbers:

  search     pipeline.search as `optimize --proposer search` runs it: from a start configuration, neighbours
             ordered by the counter rules, --batch per step, the best replaced by the fastest candidate that
             optimize.judge promotes; stops at the roofline rule or when no unevaluated neighbour is left
  fixed      the same search with every rule ignored (the order `optimize` uses on the CPU): what the rules add
  random     configurations drawn without replacement

Each seed draws one correct start configuration, shared by search and fixed (the start counts as one
evaluation), and one random order. The table gives, per strategy, the evaluations until the first evaluated
configuration within the margin (median and worst over the seeds) and how many seeds got there at all.
`--device cpu --ops scale` runs the whole script on the Triton interpreter with the tests' fixture op (a smoke
run: timings of the interpreter, no counters).
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
class Bench:
    op_dir: Path
    variant: str
    shape: str
    space: dict[str, list[Any]]
    restrict: list[str]


BENCHES = {
    # per-thread tile C_PAD * BLOCK_HW / (32 * num_warps) fp32 values at C = 64: the kernel refuses more than 128
    "rmsnorm": Bench(REPO / "kernels" / "rmsnorm", "grid_2d.py", "L1-36",
                     dict(BLOCK_HW=[16, 32, 64, 128, 256, 512, 1024], num_warps=[1, 2, 4, 8, 16]),
                     ["64 * BLOCK_HW // (32 * num_warps) <= 128"]),
    # accumulator registers per thread, and shared memory per block (H100/H200: 227 KB)
    "matmul": Bench(REPO / "kernels" / "matmul", "grid_2d.py", "4096-fp16",
                    dict(BLOCK_M=[32, 64, 128, 256], BLOCK_N=[32, 64, 128, 256], BLOCK_K=[32, 64],
                         num_warps=[4, 8], num_stages=[2, 3, 4]),
                    ["BLOCK_M * BLOCK_N // (32 * num_warps) <= 256",
                     "num_stages * (BLOCK_M * BLOCK_K + BLOCK_K * BLOCK_N) * 2 <= 227 * 1024"]),
    "scale": Bench(REPO / "tests" / "fixtures" / "optimize" / "kernels" / "scale", "tiled.py", "n4096",
                   dict(BLOCK=[16, 32, 64, 128, 256], num_warps=[1, 2, 4]), ["BLOCK * num_warps <= 256"]),
}


def scratch(name: str, b: Bench, work: Path, device: str) -> tuple[Path, list[dict[str, Any]], search.Tuning]:
    """A project under `work` holding the op's reference, an op.yaml of the one shape, and the variant with
    SPACE, RESTRICT and CONFIGS = every allowed configuration."""
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
    source = (b.op_dir / b.variant).read_text()
    space_src = f"SPACE = {b.space!r}\nRESTRICT = {b.restrict!r}\n"
    path = op_dir / "space.py"
    path.write_text(source + "\n" + space_src)
    space = ops.read_space(path)
    base = search.start(next(iter(ops.read_variants(b.op_dir / b.variant, ""))).config, space)
    tuned = search.tuning(space, base)
    configs = search.every_config(tuned, base)
    path.write_text(search.with_configs(path.read_text(), configs, str(path)))
    metrics = list(dict.fromkeys([*config.NcuConfig().metrics, *STAGES["grid_and_parallel"].metrics(),
                                  *STAGES["block_tiling"].metrics()]))
    (root / "pipeline.yaml").write_text(yaml.safe_dump({
        "kernels_dir": "kernels", "profiles_dir": "profiles", "reports_dir": "reports",
        "ncu": {"select": "all", "metrics": metrics, "timeout_s": 3600.0}}, sort_keys=False))
    return root, configs, tuned


def measure(root: Path, name: str, shape: str, device: str) -> dict[str, Any]:
    args = [sys.executable, "-m", "pipeline", "--config", str(root / "pipeline.yaml"), "profile", "--op", name,
            "--shape", shape, "--device", device] + (["--require-gpu"] if device == "cuda" else [])
    proc = subprocess.run(args, cwd=REPO, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args)} exited {proc.returncode}")
    (path,) = results.find_all(root / "profiles")
    return results.load(path)


def table(doc: dict[str, Any], shape: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, Any]]:
    s = next(s for s in doc["shapes"] if s["id"] == shape)
    return {search.key(v["config"]): v for v in s["variants"]}, s, doc["environment"]


def replay_search(start: dict[str, Any], recs: dict[str, dict[str, Any]], shape: dict[str, Any], env: dict[str, Any],
                  tuned: search.Tuning, targets: set[str], batch: int, use_rules: bool) -> tuple[int | None, int, str]:
    """(evaluations until the first within the margin, or None; evaluations in all; why it stopped)."""
    best, evaluated, n, hit = start, {search.key(start)}, 1, 1 if search.key(start) in targets else None
    while True:
        fired = search.rules(recs[search.key(best)], shape, env)[0] if use_rules else []
        stop = search.stops(fired)
        if stop:
            return hit, n, f"{stop.rule} ({stop.metric} = {stop.value})"
        prop = search.propose(best, tuned, fired, evaluated, batch)
        if not prop.candidates:
            return hit, n, "no unevaluated neighbour left"
        wins = []
        for cfg, _ in prop.candidates:
            n += 1
            evaluated.add(search.key(cfg))
            if hit is None and search.key(cfg) in targets:
                hit = n
            rec = recs[search.key(cfg)]
            verdict = optimize.judge({"s": recs[search.key(best)]}, {"s": rec}, ["s"])
            if verdict.ok:
                wins.append((verdict.speedup, cfg))
        if wins:
            best = max(wins, key=lambda w: w[0])[1]


def summary(hits: list[int | None]) -> dict[str, Any]:
    got = [h for h in hits if h is not None]
    return {"median": statistics.median(got) if got else None, "worst": max(got) if got else None,
            "reached": f"{len(got)}/{len(hits)}", "each": hits}


def run(name: str, b: Bench, args: argparse.Namespace) -> dict[str, Any]:
    root, configs, tuned = scratch(name, b, args.work, args.device)
    found = results.find_all(root / "profiles")
    doc = results.load(found[0]) if args.reuse and found else measure(root, name, b.shape, args.device)
    measured, shape, env = table(doc, b.shape)
    recs = {search.key(c): measured[search.key(c)] for c in configs}
    ok = {k: r for k, r in recs.items() if r["status"] == "ok" and r.get("timing")}
    if not ok:
        sys.exit(f"{name}: no configuration of the space is correct")
    opt_key = min(ok, key=lambda k: ok[k]["timing"]["median_ms"])
    opt_ms = ok[opt_key]["timing"]["median_ms"]
    targets = {k for k, r in ok.items() if r["timing"]["median_ms"] <= opt_ms * (1 + recommend.TIE_MARGIN)}
    by = {"search": [], "fixed": [], "random": []}
    stops = []
    for seed in range(args.seeds):
        rng = random.Random(seed)
        start = json.loads(rng.choice(sorted(ok)))
        for strategy, rules in (("search", True), ("fixed", False)):
            hit, n, why = replay_search(start, recs, shape, env, tuned, targets, args.batch, rules)
            by[strategy].append(hit)
            if strategy == "search":
                stops.append({"seed": seed, "start": start, "evaluations": n, "stopped": why})
        order = sorted(recs)
        rng.shuffle(order)
        by["random"].append(next(i for i, k in enumerate(order, 1) if k in targets))
    return {"op": name, "shape": b.shape, "gpu": env.get("gpu_name"), "space": len(configs), "correct": len(ok),
            "optimum": {"config": json.loads(opt_key), "median_ms": opt_ms}, "within_margin": len(targets),
            "strategies": {k: summary(v) for k, v in by.items()}, "search_runs": stops}


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
    print(f"\nEvaluations to reach a configuration within {recommend.TIE_MARGIN:.0%} of the exhaustive optimum "
          f"({args.seeds} seeds; median / worst, seeds that got there)\n")
    print("| op | shape | GPU | space (allowed, correct) | exhaustive optimum | search | fixed order | random |")
    print("|---|---|---|---|---|---|---|---|")
    for r in out:
        cells = [f"{s['median']} / {s['worst']} ({s['reached']})" for s in r["strategies"].values()]
        print(f"| {r['op']} | {r['shape']} | {r['gpu']} | {r['space']}, {r['correct']} | "
              f"{json.dumps(r['optimum']['config'])} {r['optimum']['median_ms']:.4g} ms | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
