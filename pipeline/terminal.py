"""What a profile run prints in the terminal: each shape's table and recommendation, where the run's time
went, and the progress bar."""
from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from pipeline import results, shapeanalysis


def summary(console: Console, paths: list[Path]) -> bool:
    """Print each shape's table; True if any variant failed (not ok, not unsupported)."""
    from pipeline import shapeview
    failed = False
    for path in paths:
        doc = results.load(path)
        for shape in doc["shapes"]:
            sa = shapeanalysis.analyze_shape(shape, doc["environment"])
            rec = sa.recommendation
            table = Table(title=f"{doc['op']} · {shape['id']} · {doc['environment'].get('gpu_name')}")
            for col in ("variant", "status", "median ms", "of copy", "SM %", "warps %", "grid", "DRAM %"):
                table.add_column(col, justify="left" if col in ("variant", "status") else "right")
            view = shapeview.shape_view(shape, doc["environment"], path.parent, path.parent, sa=sa)
            for r in view.rows:
                failed |= r.status not in ("ok", "unsupported")
                name = f"[bold green]{escape(r.name)}[/]" if r.recommended else escape(r.name)
                table.add_row(name, r.status, r.median_ms, r.frac_copy, r.sm_pct, r.warps_pct, r.grid_size, r.dram_pct)
            console.print(table)
            if rec:
                h = view.headline
                console.print(f"Recommended: [bold]{escape(h.name)}[/] {h.median_ms} ms, {h.vs_baseline} vs baseline, "
                              f"{h.vs_reference} vs torch eager, {h.frac_copy} of copy bandwidth, "
                              f"{h.frac_roofline} of the roofline"
                              + (f"; tied: {', '.join(rec.ties)}" if rec.ties else ""))
            else:
                console.print("[red]No correct variant at this shape.[/]")
    return failed


def time_split(console: Console, paths: list[Path], report_s: float, started: float) -> None:
    """Where this run's time went, from the shapes measured in it (cached shapes cost nothing); `started`:
    the process's start on the monotonic clock."""
    since = time.time() - (time.monotonic() - started)
    split = {"compile": 0.0, "verify": 0.0, "time": 0.0, "ncu": 0.0, "detail": 0.0}
    hidden = 0.0      # compile seconds that ran between an op's measuring and the next op's, under ncu
    for path in paths:
        for shape in results.load(path).shapes:
            measured = dt.datetime.fromisoformat(shape["measured_at"]).timestamp() if shape.get("measured_at") else 0
            if measured + 1 < since:
                continue
            for key in split:
                split[key] += shape.wall_s.get(key) or 0
            ahead = (shape.get("precompile") or {}).get("ahead") or {}
            hidden += ahead.get("seconds", 0) - ahead.get("waited_s", 0)
    split["verify"] -= split["compile"]
    console.print("Time split: " + ", ".join(f"{k} {v:.1f} s" for k, v in split.items())
                  + (f" (and {hidden:.1f} s compiled ahead, under ncu)" if hidden > 0.05 else "")
                  + f", report {report_s:.1f} s; total {time.monotonic() - started:.1f} s")


class ProgressBar:
    """profiling.Tracker on a rich progress bar: what is running now, units done of units planned."""

    def __init__(self, progress: Progress):
        self.progress = progress
        self.task = progress.add_task("starting", total=0)

    def add(self, units: int) -> None:
        self.progress.update(self.task, total=(self.progress.tasks[0].total or 0) + units)

    def doing(self, text: str) -> None:
        self.progress.update(self.task, description=escape(text))

    def done(self, units: int = 1) -> None:
        self.progress.advance(self.task, units)
