"""Rank correct variants by event-timed median and name the recommended grid layout.

Two variants tie when their interquartile ranges overlap, or when their medians are within TIE_MARGIN
of each other: the ranking between them is noise. The margin is the practical-equivalence bound: on
one H200, re-running the same variants moved medians by up to 1.95 %, so a smaller win is not a win.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipeline import analysis


@dataclass(frozen=True)
class Recommendation:
    variant: dict[str, Any]
    median_ms: float
    ties: list[str] = field(default_factory=list)             # names tied with the winner
    speedup_vs_baseline: float | None = None
    baseline: str | None = None
    speedup_vs_reference: float | None = None
    fraction_of_copy: float | None = None
    grid: tuple[int, int, int] | None = None
    block: tuple[int, int, int] | None = None
    cluster: tuple[int, int, int] | None = None     # None: launched without clusters (or not measured)


TIE_MARGIN = 0.02


def overlaps(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a["p25_ms"] <= b["p75_ms"] and b["p25_ms"] <= a["p75_ms"]


def tied(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Timings `a` and `b` cannot be told apart: overlapping quartiles or medians within TIE_MARGIN."""
    lo, hi = sorted((a["median_ms"], b["median_ms"]))
    return overlaps(a, b) or hi <= lo * (1 + TIE_MARGIN)


def rank(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Correct, timed records, fastest first (stable: equal medians keep the given order)."""
    return sorted((v for v in records if v.get("status") == "ok" and v.get("timing")),
                  key=lambda v: v["timing"]["median_ms"])


def ranked(shape: dict[str, Any]) -> list[dict[str, Any]]:
    """Correct, timed variants of a shape, fastest first."""
    return rank(shape["variants"])


def from_ranking(shape: dict[str, Any], order: list[dict[str, Any]]) -> Recommendation | None:
    """The recommendation given the shape's ranking; shapeanalysis.analyze_shape is its one caller in the
    pipeline, so every consumer reads the same one."""
    if not order:
        return None
    best = order[0]
    bt = best["timing"]
    ties = [v["name"] for v in order[1:] if tied(bt, v["timing"])]
    base = [v for v in order if v.get("baseline")]
    ref = (shape.get("reference") or {}).get("timing")
    return Recommendation(
        variant=best, median_ms=bt["median_ms"], ties=ties,
        speedup_vs_baseline=base[0]["timing"]["median_ms"] / bt["median_ms"] if base else None,
        baseline=base[0]["name"] if base else None,
        speedup_vs_reference=ref["median_ms"] / bt["median_ms"] if ref else None,
        fraction_of_copy=analysis.fraction_of_copy(best, shape),
        grid=analysis.launch_dims(best, "grid"), block=analysis.launch_dims(best, "block"),
        cluster=analysis.cluster_dims(best))


def recommend(shape: dict[str, Any]) -> Recommendation | None:
    return from_ranking(shape, ranked(shape))
