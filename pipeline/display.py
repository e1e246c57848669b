"""How numbers are written on the pages: one format per kind of quantity ("—" where it is unknown), so
the op pages, the cross-GPU and the diff pages write the same value the same way; and how they name, link and
open the files beside a results file."""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from pipeline.analysis import fmt_bytes
from pipeline.catalogue import Metric


def ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.4g}"


def num(x: float | None, spec: str) -> str:
    return "—" if x is None else format(x, spec)


def bytes(x: float | None) -> str:
    return "—" if not x else fmt_bytes(x)


def metric(x: float | None, m: Metric) -> str:
    """A metric's value in its catalogue format."""
    return bytes(x) if m.fmt == "bytes" else num(x, m.fmt)


def pct(x: float | None) -> str:
    return num(x, ".1f")


def ratio(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}×"


def frac(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def dims(d: tuple[int, int, int] | None) -> str:
    return "—" if d is None else "(" + ", ".join(str(v) for v in d) + ")"


def sort(x: Any) -> str:
    return "" if x is None else str(x)


def breakable(name: str) -> str:
    """A variant name that may wrap after its commas (<wbr> adds no text); escaped here, so Markup."""
    return Markup(str(escape(name)).replace(",", ",<wbr>").replace("(", "<wbr>("))


def faster(ratio: float, what: str) -> str:
    return f"{ratio:.2f}× faster than {what}" if ratio >= 1 else f"{1 / ratio:.2f}× slower than {what}"


def tflops(shape: dict[str, Any], ms: float | None) -> float | None:
    return shape["flops"] / ms / 1e9 if shape.get("flops") and ms else None


def gbs(shape: dict[str, Any], ms: float | None) -> float | None:
    return shape["min_bytes"] / ms / 1e6 if shape.get("min_bytes") and ms else None


def rate(x: float | None, unit: str) -> str:
    return "—" if x is None else f"{x:,.0f} {unit}" if x >= 100 else f"{x:,.3g} {unit}"


def replay_note(doc: dict[str, Any]) -> str:
    env = doc["environment"]
    return (f"Replayed data: recorded on {env.get('gpu_name', '?')} on {doc.get('created', '?')[:10]}, "
            "not measured on this machine.")


def results_file(results_dir: Path, name: str) -> str:
    """A file beside the results, named from the project root as the results file is (profiles/<gpu>/<op>/...)."""
    return "/".join((results_dir / name).parts[-4:])


def href(base: Path, reports_dir: Path, name: str | None) -> str:
    """The link from a page in `reports_dir` to the file `name` in `base`; "" for no file."""
    return os.path.relpath(base / name, reports_dir).replace(os.sep, "/") if name else ""


def ncu_again(results_dir: Path, rec: dict[str, Any]) -> str:
    """A recorded ncu pass's command made to run again from the project root: the job file it ran is the one kept
    beside the results (the recorded path was the run's scratch folder), and ncu writes <stamp>.again.ncu-rep in
    the current folder instead of over the recorded report. "" where the record keeps no job file."""
    argv = list(rec.get("command") or [])
    if not rec.get("job") or "-o" not in argv:
        return ""
    at = argv.index("-o") + 1
    argv[at] = Path(argv[at]).name.lstrip(".") + ".again"
    argv[-1] = results_file(results_dir, rec["job"])   # the worker's argv ends in its job file (ncupass)
    return shlex.join(argv)


def ncu_open(results_dir: Path, report: str, nvtx_range: str) -> str:
    """The copy-paste command opening one NVTX range of a recorded .ncu-rep. Start/end ranges (the worker's
    range_start) are matched by bare name; push/pop ones would end in "/". With --import, ncu refuses --nvtx
    (the report already holds the NVTX state): run on the H100, ncu 2025.3.1."""
    return (f"ncu --import {shlex.quote(results_file(results_dir, report))} --nvtx-include "
            f"{shlex.quote(nvtx_range)} --page details")


def behind(ratio: float) -> str:
    """How far a time is behind the fastest (ratio = time / fastest time)."""
    return f"+{(ratio - 1) * 100:.1f} %" if ratio < 2 else f"{ratio:.1f}× slower"


def standing(ratio: float, winner: bool, tied: bool, any_tie: bool) -> str:
    """A variant's place against the recommended one: a tie (recommend.tied) is never called fastest."""
    if winner:
        return "fastest, tied" if any_tie else "fastest"
    return f"tied, {behind(ratio)}" if tied else behind(ratio)
