"""Read an .ncu-rep with NVIDIA's `ncu_report` module and attribute each profiled kernel to its variant.

Kernels are attributed by the NVTX start/end range `s<shape>.v<variant>` they ran in (ncu.range_name;
reports recorded one shape per file used `v<variant>`); the worker opens one per variant and shape. Values keep ncu's units. No CSV is parsed anywhere.
"""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from pipeline.errors import ToolError

RANGE = re.compile(r"^(s\d+\.)?v\d+$")
# ncu-internal metrics worth keeping when present (how many passes the collection took)
EXTRA = ("profiler__replayer_passes",)


def import_ncu_report(install_dir: Path | None = None) -> Any:
    """The installed `ncu_report` package, else the copy in the ncu install's extras/python."""
    try:
        return importlib.import_module("ncu_report")
    except ImportError:
        pass
    places = [install_dir / "extras" / "python"] if install_dir else []
    places += sorted(Path("/opt/nvidia/nsight-compute").glob("*/extras/python"), reverse=True)
    for place in places:
        if (place / "ncu_report.py").exists():
            sys.path.insert(0, str(place))
            return importlib.import_module("ncu_report")
    raise ToolError("cannot import ncu_report: `pip install ncu-report`, or install Nsight Compute "
                    f"(looked in: {', '.join(map(str, places)) or 'no ncu install found'})")


def _value(metric: Any) -> Any:
    value = metric.value()
    if isinstance(value, float) and value.is_integer() and "pct" not in metric.name():
        return int(value)
    return value


def ranges(action: Any) -> list[str]:
    state = action.nvtx_state()
    names: list[str] = []
    if state is None:
        return names
    for domain_id in state.domains():
        domain = state.domain_by_id(domain_id)
        names += list(domain.start_end_ranges()) + list(domain.push_pop_ranges())
    return names


def load_report(path: Path, install_dir: Path | None = None) -> Any:
    """The report as ncu_report opens it; a file it cannot read is a ToolError naming it."""
    ncu_report = import_ncu_report(install_dir)
    try:
        return ncu_report.load_report(str(path))
    except Exception as exc:  # noqa: BLE001 - ncu_report raises its own types
        raise ToolError(f"{path}: ncu_report could not read it: {exc}") from exc


def read_report(path: Path, metric_names: list[str], install_dir: Path | None = None) -> dict[str, Any]:
    """{"by_range": {range name: [kernel, ...]}, "unattributed": [kernel, ...]}.

    A kernel is {"name", "metrics": {metric: {"value", "unit"}}, "missing": [metrics ncu did not give]}."""
    report = load_report(path, install_dir)
    by_range: dict[str, list[dict[str, Any]]] = {}
    unattributed: list[dict[str, Any]] = []
    for r in range(report.num_ranges()):
        rng = report.range_by_idx(r)
        for a in range(rng.num_actions()):
            action = rng.action_by_idx(a)
            kernel: dict[str, Any] = {"name": action.name(), "metrics": {}, "missing": []}
            for name in [*metric_names, *EXTRA]:
                metric = action.metric_by_name(name)
                if metric is None or metric.value() is None:
                    if name not in EXTRA:
                        kernel["missing"].append(name)
                    continue
                kernel["metrics"][name] = {"value": _value(metric), "unit": metric.unit()}
            name = next((n for n in ranges(action) if RANGE.match(n)), None)
            (by_range.setdefault(name, []) if name is not None else unattributed).append(kernel)
    return {"by_range": by_range, "unattributed": unattributed}


def isolated(module: str, path: Path, *args: str) -> dict[str, Any]:
    """`python -m module path args...` and its JSON output: ncu_report crashed (SIGSEGV in metric.unit()) in
    processes that had loaded matplotlib or torch first (measured on the H100), so the parent never loads it
    next to them."""
    proc = subprocess.run([sys.executable, "-m", module, str(path), *args], capture_output=True, text=True,
                          timeout=600)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        raise ToolError(f"{path}: reading the report failed: {last}")
    return json.loads(proc.stdout)


def read_report_isolated(path: Path, metric_names: list[str], install_dir: Path | None) -> dict[str, Any]:
    """read_report in a child process (isolated)."""
    return isolated("pipeline.metrics", path, json.dumps(metric_names), str(install_dir or ""))


if __name__ == "__main__":
    out = read_report(Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3]) if sys.argv[3] else None)
    print(json.dumps(out))
