"""`add-variant`: check a candidate file in the seed's output format and place it in kernels/<op>/.

Checked statically (nothing is imported or run): it parses; imports torch, torch.nn, triton and
triton.language; has at least one @triton.jit function and a `class ModelNew`; carries no test code
(`if __name__`, get_inputs, get_init_inputs); every literal launch grid `kernel[(...)]` and every
`grid = (...)` has at most 3 dimensions. Profiling it is then `make profile ARGS="--op OP --variant NAME"`.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

from pipeline.errors import PipelineError
from pipeline.ops import Op

REQUIRED_IMPORTS = ("torch", "torch.nn", "triton", "triton.language")


class CandidateError(PipelineError):
    """The candidate file breaks the seed's output format; the message lists every problem."""


def _imports(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _is_jit(fn: ast.FunctionDef) -> bool:
    for d in fn.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if isinstance(target, ast.Attribute) and target.attr == "jit" or isinstance(target, ast.Name) and target.id == "jit":
            return True
    return False


def problems(source: str, filename: str) -> list[str]:
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        return [f"line {exc.lineno}: SyntaxError: {exc.msg}"]
    found = []
    have = _imports(tree)
    missing = [m for m in REQUIRED_IMPORTS if m not in have]
    if missing:
        found.append(f"missing imports: {', '.join(missing)}")
    jitted = {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and _is_jit(n)}
    if not jitted:
        found.append("no @triton.jit kernel")
    if not any(isinstance(n, ast.ClassDef) and n.name == "ModelNew" for n in tree.body):
        found.append("no class ModelNew")
    for n in tree.body:
        if isinstance(n, ast.If) and "__name__" in ast.unparse(n.test):
            found.append(f"line {n.lineno}: test code (`if __name__ ...`) is not allowed")
        if isinstance(n, ast.FunctionDef) and n.name in ("get_inputs", "get_init_inputs"):
            found.append(f"line {n.lineno}: {n.name} belongs to the reference, not a variant")
    for node in ast.walk(tree):
        grid = None
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in jitted:
            grid = node.slice
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "grid" for t in node.targets):
            grid = node.value
        if isinstance(grid, ast.Tuple) and len(grid.elts) > 3:
            found.append(f"line {node.lineno}: launch grid has {len(grid.elts)} dimensions (at most 3)")
    return found


def add_variant(op: Op, candidate: Path, name: str | None, force: bool) -> Path:
    try:
        source = candidate.read_text()
    except OSError as exc:
        raise CandidateError(f"{candidate}: cannot read: {exc.strerror}") from exc
    found = problems(source, str(candidate))
    if found:
        raise CandidateError(f"{candidate}: not in the seed's output format:\n  - " + "\n  - ".join(found))
    stem = re.sub(r"[^a-z0-9_]+", "_", (name or candidate.stem).lower()).strip("_")
    if not stem or stem == "reference" or stem[0].isdigit():
        raise CandidateError(f"'{name or candidate.stem}' cannot be a variant name (use letters, digits, _)")
    target = op.dir / f"{stem}.py"
    if target.exists() and not force:
        raise CandidateError(f"{target} exists; pass --name NEW or --force to replace it")
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(source)
    tmp.replace(target)
    return target
