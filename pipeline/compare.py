"""Is a kernel slower than it was? The gate's regression statistic, on the stored repeats.

Each timing keeps its repeats (`samples`). A run's repeats are divided by the median of a control timed
in the same run (the device copy for memory- and launch-bound kernels, the fp16 matmul for the rest), so
a runner whose clocks or memory differ moves the control and the kernel alike and the ratio stays. The
shift between two runs is the Hodges–Lehmann estimate on log ratios (the median of every pairwise
difference: robust to outliers, no normality assumed), with a percentile bootstrap confidence interval.
The verdict, in the way of nvbench's compare tool:

- `slower`: the whole interval lies above 1 + EQUIVALENCE (a slowdown beyond run-to-run drift);
- `faster`: the whole interval lies below 1 - EQUIVALENCE;
- `same`: the whole interval lies within ±EQUIVALENCE;
- `unclear`: the interval straddles a bound: more repeats would decide.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline import recommend

EQUIVALENCE = recommend.TIE_MARGIN     # shifts within ±2 % are the same kernel (the tie margin)
BOOTSTRAP = 400                        # resamples for the interval: its ends move < 0.1 % past this
CONFIDENCE = 0.95
MAX_PAIRS = 200                        # repeats per side used (evenly thinned): 200² pairwise differences


@dataclass(frozen=True)
class Shift:
    ratio: float            # current / baseline time, control-normalised (1.03 = 3 % slower)
    low: float              # CONFIDENCE interval of the ratio
    high: float
    verdict: str            # faster | same | slower | unclear
    control: str            # which control normalised both runs

    def text(self) -> str:
        return (f"{(self.ratio - 1) * 100:+.1f} % [{(self.low - 1) * 100:+.1f}, {(self.high - 1) * 100:+.1f}] "
                f"({CONFIDENCE:.0%} CI, Hodges–Lehmann, per {self.control}): {self.verdict}")


def _thin(x: np.ndarray) -> np.ndarray:
    return x if len(x) <= MAX_PAIRS else x[np.linspace(0, len(x) - 1, MAX_PAIRS).astype(int)]


def hodges_lehmann(a: np.ndarray, b: np.ndarray) -> float:
    """Median of all pairwise differences b_j - a_i."""
    return float(np.median(np.subtract.outer(b, a)))


def shift(old: list[float], new: list[float], old_control: float, new_control: float, control: str,
          seed: int = 0) -> Shift:
    """The control-normalised shift from `old` repeats to `new` repeats (both in ms)."""
    a = _thin(np.log(np.asarray(old, dtype=float) / old_control))
    b = _thin(np.log(np.asarray(new, dtype=float) / new_control))
    est = hodges_lehmann(a, b)
    rng = np.random.default_rng(seed)
    boots = [hodges_lehmann(rng.choice(a, len(a)), rng.choice(b, len(b))) for _ in range(BOOTSTRAP)]
    lo, hi = np.quantile(boots, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    ratio, low, high = math.exp(est), math.exp(lo), math.exp(hi)
    if low > 1 + EQUIVALENCE:
        verdict = "slower"
    elif high < 1 - EQUIVALENCE:
        verdict = "faster"
    elif low >= 1 - EQUIVALENCE and high <= 1 + EQUIVALENCE:
        verdict = "same"
    else:
        verdict = "unclear"
    return Shift(ratio, low, high, verdict, control)


def control_for(bound: str | None) -> str:
    """The control a kernel is normalised by: the copy unless it is compute- or latency-bound."""
    return "matmul" if bound in ("compute-bound", "latency-bound") else "copy"


def compare_timings(old_shape: dict[str, Any], old: dict[str, Any], cur_shape: dict[str, Any],
                    cur: dict[str, Any], bound: str | None) -> Shift | None:
    """The shift of a variant between two recorded shapes; None when either lacks repeats or the control."""
    control = control_for(bound)
    if control == "matmul" and not all((s.get("matmul") or {}).get("timing") for s in (old_shape, cur_shape)):
        control = "copy"        # results recorded before the matmul control: the copy stands in
    controls = [(((s.get(control) or {}).get("timing")) or {}).get("median_ms") for s in (old_shape, cur_shape)]
    if None in controls or not old.get("samples") or not cur.get("samples"):
        return None
    return shift(old["samples"], cur["samples"], controls[0], controls[1], control)
