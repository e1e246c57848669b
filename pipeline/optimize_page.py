"""The optimisation page: one `optimize` run's history (its `log.json`) as a page of the report.

Per step: the best it started from and its time on each tuning shape, what led to the candidates (the search
rules that fired, each with its metric and value, or the proposer command), every candidate's verdict and why,
and what the step cost on the clock. Read-only over the run folder: `optimize` alone writes it.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import display

LOG = "log.json"       # a run folder's history; optimize writes it (named here: the report reads it without the loop)


@dataclass(frozen=True)
class CandidateRow:
    name: str
    origin: str
    verdict: str
    css: str
    timing: str
    speedup: str
    reason: str


@dataclass(frozen=True)
class StepRow:
    stage: str
    step: int
    best: str
    best_ms: str
    wall: str
    per_candidate: str
    led_by: list[str]
    promoted: str
    ended: str
    candidates: list[CandidateRow]


@dataclass(frozen=True)
class RunView:
    op: str
    gpu: str
    stamp: str
    filename: str
    status: str
    proposer: str
    tuning: str
    holdout: str
    stages: str
    budget: str
    start: str
    best: str
    gain: str
    verdicts: list[tuple[str, int]]
    steps: list[StepRow]
    note: str
    op_href: str
    digest: str = ""


def runs(results_dir: Path) -> list[Path]:
    """The logs of the op's optimisation runs beside its results, oldest first."""
    return sorted((results_dir / "optimize").glob(f"*/{LOG}"))


def _first_ms(timing: dict[str, Any] | None) -> float | None:
    first = next(iter((timing or {}).values()), None)
    return (first or {}).get("median_ms")


def _timings(timing: dict[str, Any] | None) -> str:
    return "; ".join(f"{sid} {display.ms((t or {}).get('median_ms'))} ms" for sid, t in (timing or {}).items()) or "—"


def _led_by(step: dict[str, Any]) -> list[str]:
    p = step.get("proposer") or {}
    if p.get("kind") == "search":
        rules = [f"{r['rule']} ({r['metric']} = {r['value']})" for r in p.get("rules", [])]
        reach = [f"moves: {p['reach']}"] if p.get("reach") else []     # absent from runs recorded before reaches
        return rules + [f"neighbour order: {p.get('order', '—')}"] + reach
    if p.get("kind") == "cmd":
        cmd = " ".join(p.get("command") or [])
        how = p.get("failed") or f"exit {p.get('exit_code')}"
        return [f"proposer `{cmd}`: {how} in {display.num(p.get('wall_s'), '.1f')} s"]
    return []


def _candidate(c: dict[str, Any]) -> CandidateRow:
    verdict = c.get("verdict", "")
    css = {"promoted": "ok", "refused": "bad", "rejected": "bad"}.get(verdict, "muted")
    speedup = c.get("speedup")
    return CandidateRow(name=c["name"], origin=c.get("origin", ""), verdict=verdict, css=css,
                        timing=_timings(c.get("timing")) if c.get("timing") else "—",
                        speedup=f"{speedup:.2f}×" if speedup else "—", reason=c.get("reason", ""))


def _step(step: dict[str, Any]) -> StepRow:
    measured = [c for c in step.get("candidates", []) if c.get("timing") is not None or c.get("status")]
    wall = step.get("wall_s")
    # the best is measured again each step, beside its candidates: it counts as one evaluation of the step
    per = wall / (len(measured) + 1) if wall is not None else None
    promoted = next((c for c in step.get("candidates", []) if c.get("verdict") == "promoted"), None)
    return StepRow(
        stage=step["stage"], step=step["step"], best=step["best"], best_ms=_timings(step.get("best_timing")),
        wall=f"{wall:.1f} s" if wall is not None else "—",
        per_candidate=f"{per:.1f} s" if per is not None else "—", led_by=_led_by(step),
        promoted=f"{promoted['name']} ({promoted['speedup']:.2f}×)" if promoted and promoted.get("speedup") else "",
        ended=step.get("why_ended") or "", candidates=[_candidate(c) for c in step.get("candidates", [])])


def run_view(path: Path, filename: str, op_href: str) -> RunView:
    log = json.loads(path.read_text())
    steps = log.get("steps", [])
    sig = log.get("signature", {})
    first, last = (_first_ms(steps[0].get("best_timing")) if steps else None), None
    for s in steps:   # the best's time at the last step that measured it, or the promoted candidate's
        last = _first_ms(s.get("best_timing")) or last
        won = next((c for c in s.get("candidates", []) if c.get("verdict") == "promoted"), None)
        last = _first_ms(won.get("timing")) if won else last
    tuning = sig.get("tuning") or []
    gain = (f"{first / last:.2f}× at {tuning[0]} ({display.ms(first)} → {display.ms(last)} ms)"
            if first and last and tuning else "—")
    proposer = sig.get("proposer", "")
    if proposer == "cmd":
        proposer = f"cmd: {' '.join(sig.get('command') or [])}"
    return RunView(
        op=log.get("op", ""), gpu=log.get("gpu", ""), stamp=path.parent.name, filename=filename,
        status=("finished: " if log.get("finished") else "unfinished (a rerun resumes it): ") + log.get("ended", ""),
        proposer=proposer, tuning=", ".join(tuning), holdout=", ".join(sig.get("holdout") or []),
        stages=", ".join(sig.get("stages") or []), budget=f"{log.get('spent', 0)} of {log.get('budget', '—')}",
        start=f"{log['start']['name']} ({log['start'].get('how', '')})" if log.get("start") else "—",
        best=(log.get("best") or {}).get("name", "—"), gain=gain,
        verdicts=sorted(Counter(c.get("verdict", "") for s in steps for c in s.get("candidates", [])).items()),
        steps=[_step(s) for s in steps], note=log.get("note") or "", op_href=op_href)


def page_name(op_page: str, stamp: str) -> str:
    """`<op page stem>.optimize-<stamp>.html`, beside the op's page."""
    return f"{op_page.removesuffix('.html')}.optimize-{stamp.lower()}.html"
