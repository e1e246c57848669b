"""The view model: the plain dataclasses the report templates receive, field by field.

Every value is already formatted text (or Markup built from escaped text); templates only loop, branch on
prepared flags and print. report.py builds these from a results file.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from pipeline import analysis
from pipeline.charts import Chart


@dataclass
class Cell:
    text: str
    sort: str                   # raw value the inline sort script uses ("" sorts last)
    cls: str = ""
    title: str = ""             # tooltip: the metric or rule behind the value


@dataclass
class Column:
    label: str
    title: str                  # the metric / timing it shows
    left: bool = False          # text column


@dataclass
class VariantRow:
    """One variant at one shape. The page shows `cells` and `findings`; the named fields are the same
    values for the CLI summary and pipeline/export.py."""
    name: str
    layout: str
    family: str
    status: str
    error: str
    baseline: bool
    recommended: bool
    tied: bool
    median_ms: str
    spread_ms: str              # p25–p75
    median_raw: float | None
    frac_copy: str
    vs_baseline: str
    sm_pct: str
    warps_pct: str
    dram_pct: str
    grid_size: str
    grid: str
    block: str
    regs: str
    spills: str
    bound: str
    bound_rule: str
    ncu_status: str
    css: str                    # row class: rec, tie, bad, unsupported
    cells: list[Cell]
    findings: list[analysis.Finding] = field(default_factory=list)


@dataclass
class Stat:
    label: str
    value: str
    detail: str                 # how it was computed, from which measurements


@dataclass
class FamilyRank:
    family: str
    best: str
    median_ms: str
    vs_winner: str


@dataclass
class Headline:
    name: str
    name_wrap: str              # Markup: the escaped name, breakable after its commas
    family: str
    layout: str
    grid: str
    block: str
    cluster: str                # cluster dims as ncu saw them; "" for a launch without clusters
    median_ms: str
    spread_ms: str
    vs_baseline: str
    baseline: str
    vs_reference: str
    frac_copy: str
    frac_roofline: str
    summary: str                # the answer in one line, under the name
    stats: list[Stat]
    bound: str
    bound_rule: str
    ties: list[str]
    families: list[FamilyRank]
    runner_up: str              # the best other layout family and how far behind it is
    findings: list[analysis.Finding]


@dataclass
class ShapeView:
    id: str
    anchor: str
    params: str
    dtype: str
    facts: list[tuple[str, str]]
    headline: Headline | None           # None when no variant is correct
    ties: list[str]
    charts: list[Chart]
    columns: list[Column]
    rows: list[VariantRow]
    counts: str
    families: list[tuple[str, str]]     # layout family -> its LAYOUT text
    ncu_status: str
    ncu_message: str
    ncu_command: str
    ncu_passes: str
    report_href: str
    cached_report_hrefs: list[str]      # earlier .ncu-rep files that cached variants' metrics come from
    log_href: str
    worker_log_href: str
    errors: list[str]


@dataclass
class OpPage:
    op: str
    replay_note: str                    # empty when the data was measured in this run
    gpu: str
    created: str
    environment: list[tuple[str, str]]
    commands: list[tuple[str, str]]     # (shape, exact ncu argv joined)
    thresholds: list[tuple[str, str, str]]
    glossary: list[Column]
    results_href: str
    results_name: str                   # the results file under its profiles folder
    sweep_chart: Chart | None
    shapes: list[ShapeView]
    filename: str
    digest: str = ""        # only the index carries it


@dataclass
class IndexPage:
    replay_note: str
    ops: list[OpPage]
    digest: str = ""        # of the inputs the pages were rendered from (report.render skips an unchanged set)
