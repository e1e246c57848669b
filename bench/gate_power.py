"""How often the regression gate fails an unchanged kernel (A/A) and how often it catches a real slowdown,
on the noise of recorded repeats: `python bench/gate_power.py [RESULTS ...]` (default: every results file
under profiles/ whose timings keep their repeats).

Each trial draws a baseline run and a current run of one recorded variant: its repeats resampled with
replacement, both runs (kernel and its control alike) scaled by a common run-level drift (the machine's
state between runs: DRIFT, the largest shift seen between two runs of the same variants on one GPU), and
the current kernel alone slowed by the injected amount and by a kernel-own drift (RESIDUAL). Two rules judge
every trial side by side:
- median rule (results without repeats): median slower by more than max_regression and p25 above the
  baseline's p75 (gate._compare; controls that moved that way make it "cannot judge");
- shift rule (pipeline/compare.py): control-normalised Hodges–Lehmann shift with a bootstrap interval.
Printed: the share of trials each rule fails (exit 1) and cannot judge (exit 2), per injected slowdown.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipeline import compare, gate, recommend, results  # noqa: E402

SLOWDOWNS = (0.0, 0.02, 0.03, 0.05, 0.10)
DRIFT = 0.0195 / 2      # sd of the common run-level drift: ±1.95 % seen between two runs is about 2 sd
RESIDUAL = 0.003        # sd of a kernel's own drift between runs that its control does not share
MAX_REGRESSION = 0.05


def _stats(x: np.ndarray) -> dict:
    q = np.quantile(x, [0.25, 0.5, 0.75])
    return {"p25_ms": float(q[0]), "median_ms": float(q[1]), "p75_ms": float(q[2]), "samples": list(map(float, x))}


def trial(kernel: np.ndarray, control: np.ndarray, slow: float, rng: np.random.Generator) -> tuple[str, str]:
    """(median-rule verdict, shift-rule verdict) for one simulated pair of runs: pass | fail | error."""
    runs = []
    for extra in (0.0, slow):
        drift = 1 + rng.normal(0, DRIFT)
        k = rng.choice(kernel, len(kernel)) * drift * (1 + extra) * (1 + rng.normal(0, RESIDUAL))
        c = rng.choice(control, len(control)) * drift
        runs.append((_stats(k), _stats(c)))
    (old_k, old_c), (cur_k, cur_c) = runs
    limit = MAX_REGRESSION * 100
    change, above, below, _ = gate._compare(old_c, cur_c)
    if abs(change) > limit and (above or below):
        median_rule = "error"
    else:
        change, above, _, _ = gate._compare(old_k, cur_k)
        median_rule = "fail" if change > limit and above else "pass"
    found = compare.shift(old_k["samples"], cur_k["samples"], old_c["median_ms"], cur_c["median_ms"], "copy",
                          seed=int(rng.integers(1 << 31)))
    shift_rule = ("fail" if found.verdict == "slower" else
                  "error" if found.verdict == "unclear" and found.ratio - 1 > MAX_REGRESSION else "pass")
    return median_rule, shift_rule


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="*", type=Path)
    ap.add_argument("--trials", type=int, default=40, help="trials per variant and slowdown")
    args = ap.parse_args()
    paths = args.results or results.find_all(Path(__file__).resolve().parent.parent / "profiles")
    cases = []
    for path in paths:
        doc = results.load(path)
        for shape in doc["shapes"]:
            rec = recommend.recommend(shape)
            copy = (shape.get("copy") or {}).get("timing") or {}
            if rec and rec.variant["timing"].get("samples") and copy.get("samples"):
                cases.append((f"{doc['op']} {shape['id']}", np.array(rec.variant["timing"]["samples"]),
                              np.array(copy["samples"])))
    if not cases:
        print("no recorded timings with repeats (results recorded before repeats were stored)")
        return 2
    rng = np.random.default_rng(0)
    print(f"{len(cases)} recommended variants × {args.trials} trials per slowdown; drift sd {DRIFT:.2%} common, "
          f"{RESIDUAL:.2%} own; max_regression {MAX_REGRESSION:.0%}, equivalence ±{compare.EQUIVALENCE:.0%}")
    print(f"{'slowdown':>8}  {'median rule fails':>17} {'cannot judge':>12}  {'shift rule fails':>16} {'cannot judge':>12}")
    for slow in SLOWDOWNS:
        counts = {"median": {"fail": 0, "error": 0, "pass": 0}, "shift": {"fail": 0, "error": 0, "pass": 0}}
        for _, kernel, control in cases:
            for _ in range(args.trials):
                m, s = trial(kernel, control, slow, rng)
                counts["median"][m] += 1
                counts["shift"][s] += 1
        n = len(cases) * args.trials
        print(f"{slow:>8.0%}  {counts['median']['fail'] / n:>17.1%} {counts['median']['error'] / n:>12.1%}  "
              f"{counts['shift']['fail'] / n:>16.1%} {counts['shift']['error'] / n:>12.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
