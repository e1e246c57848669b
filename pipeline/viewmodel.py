"""The view model: the plain dataclasses the report templates receive, field by field.

Every value is already formatted text (or Markup built from escaped text); templates only loop, branch on
prepared flags and print. report.py and shapeview.py build these from a results file.
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
class Alert:
    css: str                    # bad (red) | warn (amber)
    text: str
    short: str                  # one line for the summary table and the index


@dataclass
class Trace:
    """Where a variant's kernels are in its .ncu-rep, and how to open them there."""
    range: str                  # NVTX start/end range (s<shape>.v<variant>); "" when ncu did not profile it
    kernels: str                # kernel names ncu saw (or, unprofiled, those the CUDA profiler saw)
    command: str                # copy-paste ncu command opening the range's details; "" without a range
    reprofile: str              # copy-paste `profile --detail` command measuring it again with the detail pass
    report_href: str
    shared: str                 # shared memory per block: ncu's launch value and Triton's compiled one
    ncu_time: str               # ncu's own duration (base clocks) of the variant's kernels
    note: str                   # why there is no range, when there is none


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
    dram_pct: str               # dram__throughput: what the terminal summary prints as DRAM %
    memsys_pct: str             # gpu__compute_memory_throughput: L1/L2/DRAM, the whole memory system
    grid_size: str
    grid: str
    block: str
    regs: str
    spills: str
    bound: str
    bound_rule: str
    ncu_status: str
    standing: str               # fastest / tied / how far behind the recommended one
    css: str                    # row class: rec, tie, bad, unsupported
    folded: bool                # failed or unsupported: listed in the folded table
    cells: list[Cell]
    trace: Trace
    findings: list[analysis.Finding] = field(default_factory=list)


@dataclass
class Stat:
    label: str
    value: str
    detail: str                 # how it was computed, from which measurements
    css: str = ""               # bad: the recommendation loses on this count


@dataclass
class FamilyRank:
    family: str
    best: str                   # Markup: the breakable name of the family's fastest variant
    median_ms: str
    vs_winner: str              # winner / tied / how far behind
    css: str = ""               # rec | tie


@dataclass
class Headline:
    title: str                  # "Recommended for <shape>", or weaker when torch is faster
    css: str                    # headline box class: "" or beaten
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
    vs_compile: str             # torch.compile (bench.json beside the results), "—" where not measured
    frac_copy: str
    frac_roofline: str          # memory roofline fraction (the CLI summary's "of the roofline")
    lead: str                   # compute | memory: which ceiling the shape is presented against
    throughput: str             # TFLOP/s (compute-led) or GB/s of minimal bytes (memory-led)
    frac_lead: str              # fraction of the leading roofline, with its name
    summary: str                # the verdict in one line, under the name
    tie_note: str               # "" or which variants it is tied with and how
    warning: str                # "" or what beats it (torch eager / torch.compile), for the index
    stats: list[Stat]
    bound: str
    bound_rule: str
    ties: list[str]
    families: list[FamilyRank]
    runner_up: str              # the best other layout family and how far behind (or tied) it is
    trace: Trace
    findings: list[analysis.Finding]


@dataclass
class WhyKernel:
    role: str
    name: str
    median_ms: str
    kernels: str
    lines: list[tuple[str, str, str, str]]   # (file:line, share of stall samples, top reasons, source text)
    command: str                              # prints its detail sections from the detail report


@dataclass
class WhyView:
    """The detail pass of one shape (pipeline/detail.py): where each kernel's warps stall, how its memory
    traffic reaches L1, L2 and DRAM, and one sentence per difference that matters."""
    kernels: list[WhyKernel]
    stalls: list[tuple[str, list[str]]]        # reason -> cycles per issued instruction, per kernel
    memory: list[tuple[str, list[str]]]        # row -> value (and per request), per kernel
    sentences: list[tuple[str, str]]          # (text, metric)
    status: str
    report_href: str                          # "" where the report is not beside the results (report_note says)
    report_note: str
    wall: str
    chart: str = ""                           # Markup: the stall breakdown, one stacked bar per kernel
    memory_chart: str = ""                    # Markup: bytes moved at L1, L2 and DRAM, one bar per kernel


@dataclass
class ShapeView:
    id: str
    anchor: str
    params: str
    dtype: str
    lead: str                           # compute | memory
    facts: list[tuple[str, str]]
    alerts: list[Alert]                 # torch eager / torch.compile faster than every variant
    headline: Headline | None           # None when no variant is correct
    ties: list[str]
    charts: list[Chart]
    columns: list[Column]
    rows: list[VariantRow]              # every variant (CLI summary, export)
    shown_rows: list[VariantRow]        # the page's main table: correct, incorrect and suspect ones
    folded_rows: list[VariantRow]       # failed and unsupported: folded under the table
    folded_summary: str
    counts: str
    families: list[tuple[str, str]]     # layout family -> its LAYOUT text
    ncu_status: str
    ncu_message: str
    commands: list[PassCommand]         # the ncu passes this shape's record was measured by
    ncu_passes: str
    report_href: str
    cached_report_hrefs: list[str]      # earlier .ncu-rep files that cached variants' metrics come from
    log_href: str
    worker_log_href: str
    errors: list[str]
    why: WhyView | None = None          # the detail pass; None where it did not run


@dataclass
class PassCommand:
    """One ncu pass of a shape: its argv as it ran, joined for a shell, and the same pass run again from the kept
    job file."""
    label: str                          # "main pass" or "detail pass"
    command: str
    again: str                          # "" where the record predates kept job files
    job_href: str
    job_name: str


@dataclass
class Link:
    href: str
    text: str
    note: str = ""


@dataclass
class OpPage:
    op: str
    replay_note: str                    # empty when the data was measured in this run
    gpu: str
    created: str
    environment: list[tuple[str, str]]
    commands: list[tuple[str, PassCommand]]     # (shape, one of its ncu passes)
    thresholds: list[tuple[str, str, str]]
    glossary: list[Column]
    results_href: str
    results_name: str                   # the results file under its profiles folder
    sweep_chart: Chart | None
    shapes: list[ShapeView]
    filename: str
    bench_note: str = ""                # where torch.compile times come from, when they exist
    related: list[Link] = field(default_factory=list)   # cross-GPU and baseline-diff pages of this op
    digest: str = ""        # only the index carries it


@dataclass
class CompareCell:
    gpu: str
    winner: str                 # Markup: breakable name
    family: str
    median_ms: str
    lead: str                   # TFLOP/s or GB/s with its roofline fraction
    vs_reference: str
    tie_note: str
    href: str                   # the shape on that GPU's page


@dataclass
class CompareShape:
    id: str
    verdict: str                # does the winning layout family change between GPUs
    changed: bool
    cells: list[CompareCell]
    gpus: list[str]
    families: list[tuple[str, list[str]]]   # family -> its standing on each GPU


@dataclass
class ComparePage:
    op: str
    filename: str
    replay_note: str
    gpus: list[Link]
    summary: str
    shapes: list[CompareShape]
    digest: str = ""


@dataclass
class DiffRow:
    name: str                   # Markup: breakable name
    old_ms: str
    new_ms: str
    delta: str                  # median Δ %
    verdict: str                # the gate's control-normalised shift, or the median Δ and whether IQRs overlap
    status: str                 # status now (and before, where it changed)
    css: str                    # slower: bad, faster: good


@dataclass
class DiffShape:
    id: str
    recommendation: str         # what was recommended then and now
    rows: list[DiffRow]
    note: str = ""


@dataclass
class DiffPage:
    op: str
    gpu: str
    filename: str
    replay_note: str
    current_name: str
    baseline_name: str
    page_href: str              # the op's page on this GPU
    method: str
    shapes: list[DiffShape]
    digest: str = ""


@dataclass
class IndexPage:
    replay_note: str
    ops: list[OpPage]
    compares: list[Link] = field(default_factory=list)
    diffs: list[Link] = field(default_factory=list)
    digest: str = ""        # of the inputs the pages were rendered from (report.render skips an unchanged set)
