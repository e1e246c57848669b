"""What the gate says: the terminal table or JSON, JUnit XML, the GitHub step summary, and the `gate` command.

pipeline.gate judges; this module only reports its checks and returns the exit code.
"""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.config import Config
from pipeline.errors import ExitCode
from pipeline.gate import ERROR, FAIL, NA, PASS, Check, _rel, evaluate, exit_code

STYLE = {PASS: "green", FAIL: "bold red", NA: "dim", ERROR: "bold yellow"}

HEADLINE = {ExitCode.OK: "every target met", ExitCode.TARGET_MISSED: "a target missed or a regression",
            ExitCode.CANNOT_JUDGE: "could not judge"}


def summary_line(checks: list[Check], code: ExitCode) -> str:
    n = {v: sum(c.verdict == v for c in checks) for v in (PASS, FAIL, NA, ERROR)}
    kernels = len({(c.file, c.shape, c.variant) for c in checks if c.bound})
    return (f"gate: {kernels} kernel(s), {n[PASS]} met, {n[FAIL]} missed, {n[NA]} not applicable, "
            f"{n[ERROR]} could not judge → exit {int(code)} ({HEADLINE[code]})")


def print_table(checks: list[Check], code: ExitCode, console: Console) -> None:
    for file in dict.fromkeys(c.file for c in checks):
        rows = [c for c in checks if c.file == file]
        table = Table(title=f"gate · {rows[0].op} · {file}", title_justify="left")
        for col in ("shape", "variant / bound", "target", "value", "verdict", "reason"):
            table.add_column(col, overflow="fold", justify="right" if col == "value" else "left")
        last = None
        for c in rows:
            first = (c.shape, c.variant) != last
            last = (c.shape, c.variant)
            who = f"{escape(c.variant)}\n[dim]{escape(c.bound)}[/]" if c.bound else escape(c.variant)
            table.add_row(escape(c.shape) if first else "", who if first else "", escape(c.target), escape(c.value),
                          f"[{STYLE[c.verdict]}]{c.verdict}[/]", escape(c.reason))
        console.print(table)
    style = {ExitCode.OK: "bold green", ExitCode.TARGET_MISSED: "bold red"}.get(code, "bold yellow")
    console.print(f"[{style}]{escape(summary_line(checks, code))}[/]")


def write_junit(checks: list[Check], path: Path) -> None:
    """One testcase per kernel × target: <failure> for a miss, <skipped> for n/a, <error> for cannot judge."""
    root = ET.Element("testsuites", name="pipeline gate")
    for file in dict.fromkeys(c.file for c in checks):
        rows = [c for c in checks if c.file == file]
        suite = ET.SubElement(root, "testsuite", name=f"gate {rows[0].op} ({file})", tests=str(len(rows)),
                              failures=str(sum(c.verdict == FAIL for c in rows)),
                              errors=str(sum(c.verdict == ERROR for c in rows)),
                              skipped=str(sum(c.verdict == NA for c in rows)))
        for c in rows:
            case = ET.SubElement(suite, "testcase", classname=f"{c.op}.{c.shape}", name=f"{c.variant} · {c.target}")
            tag = {FAIL: "failure", NA: "skipped", ERROR: "error"}.get(c.verdict)
            if tag:
                ET.SubElement(case, tag, message=c.reason, type=c.verdict).text = f"value: {c.value}; file: {c.file}"
            else:
                ET.SubElement(case, "system-out").text = c.reason
    tree = ET.ElementTree(root)
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    tree.write(path, encoding="utf-8", xml_declaration=True)


def markdown(checks: list[Check], code: ExitCode) -> str:
    icon = {ExitCode.OK: "✅", ExitCode.TARGET_MISSED: "❌"}.get(code, "⚠️")
    cell = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [f"### {icon} Kernel gate: {HEADLINE[code]} (exit {int(code)})", "",
             "| op | shape | variant | bound | target | value | verdict | reason |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {' | '.join(cell(x) for x in (c.op, c.shape, c.variant, c.bound, c.target, c.value))} | "
              f"**{c.verdict}** | {cell(c.reason)} |" for c in checks]
    return "\n".join(lines + ["", summary_line(checks, code), ""]) + "\n"


def json_verdict(checks: list[Check], code: ExitCode) -> str:
    """The verdict for scripts: the exit code and its meaning, the summary line, and every check's fields."""
    return json.dumps({"exit_code": int(code), "verdict": HEADLINE[code], "summary": summary_line(checks, code),
                       "checks": [dataclasses.asdict(c) for c in checks]}, indent=1, ensure_ascii=False)


def run(cfg: Config, repo: Path, paths: list[Path] | None, *, console: Console, junit: Path | None = None,
        as_json: bool = False, **select: Any) -> ExitCode:
    """The `gate` command: judge, print the table (or JSON on stdout), write JUnit and the GitHub step summary;
    the exit code."""
    checks = evaluate(cfg, repo, paths, **select)
    code = exit_code(checks)
    if as_json:
        sys.stdout.write(json_verdict(checks, code) + "\n")
    else:
        print_table(checks, code, console)
    if junit is not None:
        write_junit(checks, junit)
        console.print(f"JUnit: {_rel(junit)}")
    if os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(os.environ["GITHUB_STEP_SUMMARY"], "a") as fh:
            fh.write(markdown(checks, code))
    return code
