"""A Python file's top level read without running it (`ast`): literals (CONFIGS, LAYOUT, SPACE), the module-level
names and the values they are statically known to take (`module_names`), a shape's overrides checked against
them (`check_overrides`, `fit`) and written into the tree (`override_tree`, which the worker compiles), and
op.yaml's arithmetic over size names (`arithmetic`). Nothing here imports or evaluates user code.
"""
from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any



def literal_value(node: ast.expr) -> Any:
    """A literal, also accepting `dict(key=literal, ...)`, the usual way CONFIGS entries are written."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: literal_value(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [literal_value(e) for e in node.elts]
    return ast.literal_eval(node)


def literal(tree: ast.Module, name: str) -> tuple[bool, Any]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True, literal_value(node.value)
    return False, None


_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Pow: lambda a, b: a ** b}


@dataclass(frozen=True)
class Assigned:
    """A name bound at reference.py's top level: a shape may override it."""
    name: str
    line: int              # of its last module-level assignment (the one that sets its default)
    known: bool            # the default could be computed without running the file
    default: Any = None


def numbers(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


class _Unknown(Exception):
    """A value the parent cannot compute without executing user code."""


_STATIC_OPS = {**_OPS, ast.Mod: lambda a, b: a % b}


def _static(node: ast.expr, env: dict[str, Any]) -> Any:
    """Literals and arithmetic over names already known; anything else (calls, attributes) is unknown."""
    if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (int, float, str))):
        return node.value
    if isinstance(node, ast.Name) and node.id in env:
        return env[node.id]
    if isinstance(node, (ast.Tuple, ast.List)) and not any(isinstance(e, ast.Starred) for e in node.elts):
        elts = [_static(e, env) for e in node.elts]
        return tuple(elts) if isinstance(node, ast.Tuple) else elts
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _static(node.operand, env)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _STATIC_OPS:
        a, b = _static(node.left, env), _static(node.right, env)
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
        # numbers only (no "x" * 10**9), and small exponents: a listing must not hang the parent
        if numeric and not (isinstance(node.op, ast.Pow) and abs(b) > 64):
            try:
                return _STATIC_OPS[type(node.op)](a, b)
            except (ArithmeticError, ValueError):
                pass
    raise _Unknown


def _bound(target: ast.expr) -> list[str]:
    """Names an assignment target binds (`D, H, W = ...` binds three; `x.y = ...` binds none)."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [n for e in target.elts for n in _bound(e)]
    if isinstance(target, ast.Starred):
        return _bound(target.value)
    return []


def assignments(body: list[ast.stmt] | tuple[ast.stmt, ...]) -> list[tuple[list[ast.expr], ast.expr, ast.stmt]]:
    """(targets, value, statement) of each module-level assignment, `x += 1` read as `x = x + 1`."""
    found = []
    for stmt in body:
        if isinstance(stmt, ast.Assign):
            found.append((stmt.targets, stmt.value, stmt))
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            found.append(([stmt.target], stmt.value, stmt))
        elif isinstance(stmt, ast.AugAssign):
            load = ast.Name(stmt.target.id, ast.Load()) if isinstance(stmt.target, ast.Name) else stmt.target
            found.append(([stmt.target], ast.BinOp(load, stmt.op, stmt.value), stmt))
    return found


_UNKNOWN = object()


def _bind(target: ast.expr, value: Any, env: dict[str, Any], overrides: dict[str, Any]) -> None:
    if isinstance(target, ast.Name):
        value = overrides.get(target.id, value)
        if value is _UNKNOWN:
            env.pop(target.id, None)
        else:
            env[target.id] = value
    elif isinstance(target, (ast.Tuple, ast.List)):
        pairs = isinstance(value, (tuple, list)) and len(value) == len(target.elts) \
            and not any(isinstance(e, ast.Starred) for e in target.elts)
        for i, e in enumerate(target.elts):
            _bind(e, value[i] if pairs else _UNKNOWN, env, overrides)
    elif isinstance(target, ast.Starred):
        _bind(target.value, _UNKNOWN, env, overrides)


def module_names(body: ast.Module | list[ast.stmt] | tuple[ast.stmt, ...],
                 overrides: dict[str, Any] | None = None) -> dict[str, Assigned]:
    """Every name bound by a module-level assignment, with its default where it can be computed statically
    (literals, and arithmetic over earlier names; with `overrides` in place, as the worker will run it).
    Nothing is imported or executed."""
    overrides = overrides or {}
    env: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for targets, value_node, stmt in assignments(body.body if isinstance(body, ast.Module) else body):
        try:
            value = _static(value_node, env)
        except _Unknown:
            value = _UNKNOWN
        for target in targets:
            _bind(target, value, env, overrides)
            lines.update((n, stmt.lineno) for n in _bound(target))
    return {n: Assigned(n, line, n in env, env.get(n)) for n, line in lines.items()}


def _kind(value: Any) -> str:
    return "tuple" if isinstance(value, tuple) else type(value).__name__


def fit(default: Any, value: Any, label: str) -> Any:
    """`value` as an override of a name whose default is `default`: an int where a float is, a list where
    a tuple is, are converted; another kind is a ValueError naming `label`."""
    if isinstance(default, bool) or isinstance(default, str):
        ok = type(value) is type(default)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, (tuple, list)):
        ok = isinstance(value, (tuple, list))
        if ok:
            kinds = {_kind(d) for d in default}
            if len(value) == len(default):
                value = [fit(d, v, f"{label}[{i}]") for i, (d, v) in enumerate(zip(default, value))]
            elif len(kinds) == 1:       # another length: each element of the default's one kind
                value = [fit(default[0], v, f"{label}[{i}]") for i, v in enumerate(value)]
            value = type(default)(value)
    else:
        return value     # None, or an unknown default: nothing to check against
    if not ok:
        hint = " (YAML reads 1e-5 as a string: write 1.0e-5)" if isinstance(default, float) \
            and isinstance(value, str) else ""
        raise ValueError(f"{label} must be {_kind(default)} like its default {default!r}, "
                         f"got {_kind(value)} {value!r}{hint}")
    return value


def check_overrides(names: dict[str, Assigned], params: dict[str, Any], reference: Path | str
                    ) -> dict[str, Any]:
    """`params` fitted to the defaults of `names`; an unknown name or a wrong kind is a ValueError."""
    unknown = [k for k in params if k not in names]
    if unknown:
        raise ValueError(f"{', '.join(unknown)} not a module-level size in {reference} (names assigned "
                         f"at its top level: {', '.join(names) or 'none'})")
    out = {}
    for key, value in params.items():
        a = names[key]
        try:
            out[key] = fit(a.default, value, key) if a.known else value
        except ValueError as exc:
            raise ValueError(f"{exc} ({reference}:{a.line})") from None
    return out


def _literal_node(value: Any, at: ast.AST) -> ast.expr:
    if isinstance(value, (tuple, list)):
        node: ast.expr = (ast.Tuple if isinstance(value, tuple) else ast.List)(
            elts=[_literal_node(v, at) for v in value], ctx=ast.Load())
    else:
        node = ast.Constant(value)
    return ast.copy_location(node, at)   # tracebacks keep pointing at the assignment's line


def _substituted(target: ast.expr, value: ast.expr, values: dict[str, Any]) -> ast.expr | None:
    """`value` with the parts assigned to overridden names replaced, or None where target and value do not
    pair up element by element (`a, b = f()`)."""
    if not set(_bound(target)) & values.keys():
        return value
    if isinstance(target, ast.Name):
        return _literal_node(values[target.id], value)
    starred = any(isinstance(e, ast.Starred) for e in [*getattr(target, "elts", []), *getattr(value, "elts", [])])
    if isinstance(target, (ast.Tuple, ast.List)) and isinstance(value, (ast.Tuple, ast.List)) \
            and len(target.elts) == len(value.elts) and not starred:
        parts = [_substituted(t, v, values) for t, v in zip(target.elts, value.elts)]
        if any(p is None for p in parts):
            return None
        return ast.copy_location(type(value)(elts=parts, ctx=ast.Load()), value)
    return None


def override_tree(tree: ast.Module, values: dict[str, Any]) -> ast.Module:
    """reference.py's tree with each overridden name's assigned value replaced by the override's literal,
    wherever the top level assigns it, so names computed from it are computed again when the tree runs."""
    tree = copy.deepcopy(tree)
    body: list[ast.stmt] = []
    for stmt in tree.body:
        hit = [n for targets, _, _ in assignments([stmt]) for t in targets for n in _bound(t) if n in values]
        if not hit:
            body.append(stmt)
            continue
        if isinstance(stmt, ast.AugAssign):     # `x += 1` would move x off its override
            body.append(ast.copy_location(ast.Assign([ast.Name(stmt.target.id, ast.Store())],
                                                     _literal_node(values[stmt.target.id], stmt)), stmt))
            continue
        targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
        new = _substituted(targets[0], stmt.value, values) if len(targets) == 1 else None
        if new is not None:
            stmt.value = new
            body.append(stmt)
            continue
        # chained (`h = w = 256`) or unpacking a computed value: run it, then set the overridden names
        body.append(stmt)
        body += [ast.copy_location(ast.Assign([ast.Name(n, ast.Store())], _literal_node(values[n], stmt)), stmt)
                 for n in dict.fromkeys(hit)]
    tree.body = body
    return ast.fix_missing_locations(tree)


def arithmetic(expr: str, names: dict[str, Any]) -> float:
    """Evaluate + - * / // ** over numbers and the given names; anything else is refused (no eval())."""
    def ev(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return node.value
        if isinstance(node, ast.Name):
            if node.id not in names:
                raise ValueError(f"unknown name '{node.id}' (have: {', '.join(names)})")
            return names[node.id]
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](ev(node.left), ev(node.right))
        raise ValueError(f"only numbers, size names and + - * / // ** are allowed, not {ast.unparse(node)!r}")
    return ev(ast.parse(expr, mode="eval"))
