"""`add-variant`: check a candidate file in the seed's output format and place it in kernels/<op>/.

Checked statically (nothing is imported or run): it parses; imports torch, torch.nn, triton and
triton.language; has at least one @triton.jit function and a `class ModelNew`; carries no test code
(`if __name__`, get_inputs, get_init_inputs); every launch grid written out has at most 3 dimensions: a
tuple or list in `kernel[...]` or bound to `grid`, a `lambda meta: (...)` or a function returning one, and a
name bound to any of these. Profiling it is then `make profile ARGS="--op OP --variant NAME"`.
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
    bound = _bindings(tree)
    grids = [node.slice for node in ast.walk(tree)
             if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id in jitted]
    grids += bound.get("grid", [])
    seen: dict[int, ast.AST] = {}
    for g in grids:
        for dims in _grid_tuples(g, bound, 0):
            seen.setdefault(id(dims), dims)
    for dims in sorted(seen.values(), key=lambda n: n.lineno):
        if len(dims.elts) > 3:
            found.append(f"line {dims.lineno}: launch grid has {len(dims.elts)} dimensions (at most 3)")
    return found


def _bindings(tree: ast.Module) -> dict[str, list[ast.AST]]:
    """Everything each name is bound to anywhere in the file: assigned values and (for a `def`) its
    returned values; a grid named at a launch may be any of them."""
    bound: dict[str, list[ast.AST]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            for t in node.targets if isinstance(node, ast.Assign) else [node.target]:
                if isinstance(t, ast.Name):
                    bound.setdefault(t.id, []).append(node.value)
        elif isinstance(node, ast.NamedExpr):
            bound.setdefault(node.target.id, []).append(node.value)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            bound.setdefault(node.name, []).extend(
                r.value for r in ast.walk(node) if isinstance(r, ast.Return) and r.value is not None)
    return bound


def _grid_tuples(node: ast.AST, bound: dict[str, list[ast.AST]], depth: int) -> list[ast.Tuple | ast.List]:
    """The tuples and lists a launch-grid expression stands for, as far as the file spells them out."""
    if isinstance(node, (ast.Tuple, ast.List)):
        return [] if any(isinstance(e, ast.Starred) for e in node.elts) else [node]
    if isinstance(node, ast.Lambda):
        return _grid_tuples(node.body, bound, depth)
    if isinstance(node, ast.IfExp):
        return _grid_tuples(node.body, bound, depth) + _grid_tuples(node.orelse, bound, depth)
    if isinstance(node, ast.Name) and depth < 8:      # bounded: `a = b; b = a` must not loop
        return [t for v in bound.get(node.id, []) for t in _grid_tuples(v, bound, depth + 1)]
    return []


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
