"""Everything the consumers read about one shape, computed once: the ranking, ties, the recommendation,
each variant's bound, roofline position and findings, and the best of each layout family.

Reports, charts, the gate, exports and the terminal summary read a ShapeAnalysis instead of re-deriving
these from the results dict, so they cannot disagree on which variant is recommended or how it is bound.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline import analysis, recommend
from pipeline.records import KernelMetrics, ShapeRecord, VariantRecord


@dataclass(frozen=True)
class VariantAnalysis:
    variant: VariantRecord
    kernel: KernelMetrics | None            # the dominant ncu kernel; None when not profiled
    bound: analysis.Bound                   # "unknown" without ncu metrics
    memory_fraction: float | None           # of the memory roofline (None without a timing, whatever the status)
    compute_fraction: float | None
    fraction_of_copy: float | None          # likewise: pages show these for correct variants only
    grid: tuple[int, int, int] | None
    block: tuple[int, int, int] | None
    cluster: tuple[int, int, int] | None    # None: launched without clusters (or not measured)
    findings: tuple[analysis.Finding, ...]
    recommended: bool
    tied: bool                              # tied with the recommended variant (never the recommended one)

    @property
    def name(self) -> str:
        return self.variant["name"]

    @property
    def family(self) -> str:
        return self.variant.get("stem", self.variant["name"])


@dataclass(frozen=True)
class ShapeAnalysis:
    shape: ShapeRecord
    environment: dict[str, Any]
    ranking: tuple[VariantRecord, ...]                  # correct, timed variants, fastest first
    recommendation: recommend.Recommendation | None
    variants: tuple[VariantAnalysis, ...]               # in the results' order
    family_best: dict[str, VariantRecord]               # stem -> its fastest correct variant, fastest family first
    lead: str                                           # `compute` or `memory`: the ceiling the shape is shown against

    @property
    def ties(self) -> list[str]:
        return list(self.recommendation.ties) if self.recommendation else []

    @property
    def baseline_ms(self) -> float | None:
        """The fastest correct config of the baseline file: what "vs baseline" divides by."""
        return next((v.median_ms for v in self.ranking if v.baseline), None)

    @property
    def recommended(self) -> VariantAnalysis | None:
        return next((a for a in self.variants if a.recommended), None)

    def of(self, variant: dict[str, Any] | str) -> VariantAnalysis:
        name = variant if isinstance(variant, str) else variant["name"]
        return next(a for a in self.variants if a.name == name)

    def is_recommended(self, variant: dict[str, Any] | None) -> bool:
        return variant is not None and self.recommendation is not None \
            and variant["name"] == self.recommendation.variant["name"]

    def ties_winner(self, variant: dict[str, Any] | None) -> bool:
        """The recommended variant or one tied with it."""
        return variant is not None and (self.is_recommended(variant) or variant["name"] in self.ties)

    def best_of(self, name: str) -> dict[str, Any] | None:
        """The variant of that full name when it is correct; else, where no variant has that name, the fastest
        correct one of that family (file stem)."""
        if any(v["name"] == name for v in self.shape["variants"]):
            return next((v for v in self.ranking if v["name"] == name), None)
        return self.family_best.get(name)


def analyze_variant(v: dict[str, Any], shape: dict[str, Any], env: dict[str, Any],
                    rec: recommend.Recommendation | None = None) -> VariantAnalysis:
    v, shape = VariantRecord.of(v), ShapeRecord.of(shape)
    timed = v.ok and v.median_ms is not None
    mem, comp = analysis.roofline_fractions(v, shape, env)
    is_rec = rec is not None and rec.variant["name"] == v.name
    return VariantAnalysis(
        variant=v, kernel=analysis.dominant_kernel(v), bound=analysis.classify(v, shape, env),
        memory_fraction=mem, compute_fraction=comp,
        fraction_of_copy=analysis.fraction_of_copy(v, shape),
        grid=analysis.launch_dims(v, "grid"), block=analysis.launch_dims(v, "block"),
        cluster=analysis.cluster_dims(v), findings=tuple(analysis.findings(v, shape, env)),
        recommended=is_rec, tied=timed and not is_rec and rec is not None and v.name in rec.ties)


def _lead(shape: dict[str, Any], best: VariantAnalysis | None) -> str:
    """`compute` when the op declares FLOPs and the recommended variant is compute-bound or nearer its compute
    roofline than its memory one; else `memory`."""
    if not shape.get("flops"):
        return "memory"
    if best is None:
        return "compute"
    if best.bound.kind == "compute-bound":
        return "compute"
    mem, comp = best.memory_fraction, best.compute_fraction
    return "compute" if comp is not None and (mem is None or comp > mem) else "memory"


def analyze_shape(shape: dict[str, Any], environment: dict[str, Any]) -> ShapeAnalysis:
    shape = ShapeRecord.of(shape)       # a results file's shape is typed already (results.load)
    order = recommend.ranked(shape)
    rec = recommend.from_ranking(shape, order)
    variants = tuple(analyze_variant(v, shape, environment, rec) for v in shape["variants"])
    best: dict[str, VariantRecord] = {}
    for v in order:                 # fastest first: the first of a family is its best
        best.setdefault(v.stem, v)
    rec_va = next((a for a in variants if a.recommended), None)
    return ShapeAnalysis(shape=shape, environment=environment, ranking=tuple(order), recommendation=rec,
                         variants=variants, family_best=best, lead=_lead(shape, rec_va))


def analyze_doc(doc: dict[str, Any]) -> list[ShapeAnalysis]:
    return [analyze_shape(s, doc["environment"]) for s in doc["shapes"]]
