"""How every chart on the pages looks and is written out: one colour and marker per layout family, the rc
settings, label text, and SVG that the page inlines.

Output is deterministic (fixed hash salt per chart, no date, group ids stripped) so tests can compare it, and
every id left is unique per chart so several charts can share one HTML page. Text goes in as <text>
(svg.fonttype none): matplotlib XML-escapes it, and `$` is escaped here so a variant name is never read as
mathtext.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass

import matplotlib
from matplotlib.figure import Figure

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf"]
# past ten families the colours repeat; the marker then tells them apart (70 distinct pairs)
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
LABEL_CHARS = 56          # a tick label longer than this wraps after a comma, onto two lines
RC = {"svg.fonttype": "none", "font.size": 8, "font.family": "sans-serif",
      "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial"], "axes.titlesize": 9,
      "axes.spines.top": False, "axes.spines.right": False}


@dataclass(frozen=True)
class Style:
    color: str
    marker: str


def styles(families: list[str]) -> dict[str, Style]:
    """Stable colour and marker per layout family across every chart of an op."""
    return {f: Style(PALETTE[i % len(PALETTE)], MARKERS[i // len(PALETTE) % len(MARKERS)])
            for i, f in enumerate(sorted(set(families)))}


def literal(text: str) -> str:
    return text.replace("$", r"\$")     # a literal dollar, never mathtext


def wrap(name: str, width: int = LABEL_CHARS) -> str:
    """A variant name longer than `width` on two lines of about equal length, broken after a comma."""
    if len(name) <= width:
        return name
    cuts = [i + 1 for i, ch in enumerate(name) if ch == ","]
    if not cuts:
        return name
    cut = min(cuts, key=lambda i: abs(i - len(name) / 2))
    return name[:cut] + "\n" + name[cut:]


def svg(fig: Figure, salt: str) -> str:
    with matplotlib.rc_context({"svg.hashsalt": salt}):
        buf = io.StringIO()
        fig.savefig(buf, format="svg", bbox_inches="tight", pad_inches=0.05,
                    metadata={"Date": None, "Creator": None, "Format": None, "Type": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]                                   # drop the XML prolog and DOCTYPE
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.S)
    svg = re.sub(r'<g id="[^"]*"', "<g", svg)                       # group labels repeat across charts
    if "<script" in svg.lower():                                    # matplotlib escapes text; stay sure
        raise ValueError("chart SVG contains a script element")
    return svg.strip()
