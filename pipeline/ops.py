"""Find ops and their variants in kernels/ without importing them.

An op is a directory `kernels/<op>/` holding `reference.py` (a KernelBench problem file: `class Model`,
module-level sizes, `get_inputs()`, `get_init_inputs()`), an optional `op.yaml`, and variant files:
every other `*.py` not starting with `_`, each with `class ModelNew`, optional `LAYOUT` (str) and
`CONFIGS` (list of keyword dicts, literals). A variant with N configs expands to N sub-variants.
Reading sources with `ast` keeps user code out of the parent process: only the GPU worker imports it.
"""
from __future__ import annotations

import ast
import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import results
from pipeline.config import Config, load_op, read_text
from pipeline.errors import ConfigError, SelectionError


@dataclass(frozen=True)
class Variant:
    name: str                 # unique within the op: file stem, plus (k=v,...) for a config
    file: str                 # path of the variant's source
    stem: str
    layout: str
    config: dict[str, Any]
    baseline: bool
    problem: str = ""         # set when the file cannot be used at all (syntax error, no ModelNew)
    sha256: str = ""          # of the file's source, read once at discovery (results, cache keys)


@dataclass(frozen=True)
class Op:
    name: str
    dir: Path
    reference: Path
    config: Config
    variants: list[Variant] = field(default_factory=list)
    sizes: dict[str, Any] = field(default_factory=dict)   # module-level names whose default is known statically
    skipped_metrics: list[str] = field(default_factory=list)  # configured metrics this GPU does not report
    detail_asked: tuple[str, ...] = ()  # profile --detail: variants measured again and given the detail pass
    reference_sha256: str = ""  # of reference.py, read once at discovery (results, cache keys)
    names: dict[str, Assigned] = field(default_factory=dict)  # every module-level name: what a shape may set
    assignments: tuple[ast.stmt, ...] = field(default=(), repr=False, compare=False)  # to recompute at a shape

    @property
    def size_names(self) -> tuple[str, ...]:
        return tuple(self.names or self.sizes)

    def flops(self, params: dict[str, Any]) -> int | None:
        """The op's declared FLOPs at a shape (op.yaml `flops`), or None when it declares none. Names derived
        from overridden ones are recomputed, as the worker's run of the reference does."""
        if not self.config.op.flops:
            return None
        values = {**self.sizes, **params} if not self.assignments else \
            {n: a.default for n, a in module_names(self.assignments, params).items() if a.known}
        return int(arithmetic(self.config.op.flops, _numbers(values)))


def _eval(node: ast.expr) -> Any:
    """A literal, also accepting `dict(key=literal, ...)`, the usual way CONFIGS entries are written."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict" and not node.args:
        return {kw.arg: _eval(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e) for e in node.elts]
    return ast.literal_eval(node)


def _literal(tree: ast.Module, name: str) -> tuple[bool, Any]:
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return True, _eval(node.value)
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


def _numbers(values: dict[str, Any]) -> dict[str, Any]:
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


def _assignments(body: list[ast.stmt] | tuple[ast.stmt, ...]) -> list[tuple[list[ast.expr], ast.expr, ast.stmt]]:
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
    for targets, value_node, stmt in _assignments(body.body if isinstance(body, ast.Module) else body):
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
        hit = [n for targets, _, _ in _assignments([stmt]) for t in targets for n in _bound(t) if n in values]
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


def _override_lines(path: Path) -> dict[tuple[str, str], int]:
    """op.yaml's line of each shape override, keyed (shapes[i] or suites.NAME[i], name), for errors."""
    try:
        node = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return {}
    lines: dict[tuple[str, str], int] = {}

    def shape(where: str, n: yaml.Node) -> None:
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                if k.value == "params" and isinstance(v, yaml.MappingNode):
                    lines.update(((where, kk.value), vv.start_mark.line + 1) for kk, vv in v.value)
                else:
                    lines[(where, k.value)] = v.start_mark.line + 1

    for k, v in node.value if isinstance(node, yaml.MappingNode) else []:
        if k.value == "shapes" and isinstance(v, yaml.SequenceNode):
            for i, s in enumerate(v.value):
                shape(f"shapes[{i}]", s)
        elif k.value == "suites" and isinstance(v, yaml.MappingNode):
            for sk, sv in v.value:
                for i, s in enumerate(sv.value if isinstance(sv, yaml.SequenceNode) else []):
                    shape(f"suites.{sk.value}[{i}]", s)
    return lines


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


def _defines(tree: ast.Module, kind: type, name: str) -> bool:
    return any(isinstance(n, kind) and n.name == name for n in tree.body)


def config_label(stem: str, config: dict[str, Any]) -> str:
    if not config:
        return stem
    return f"{stem}(" + ",".join(f"{k}={v}" for k, v in config.items()) + ")"


def read_variants(path: Path, baseline: str) -> list[Variant]:
    sha = results.source_sha256(path)
    return [dataclasses.replace(v, sha256=sha) for v in _parse_variants(path, baseline)]


def _parse_variants(path: Path, baseline: str) -> list[Variant]:
    stem = path.stem
    is_base = stem == baseline
    try:
        tree = ast.parse(read_text(path), filename=str(path))
    except SyntaxError as exc:
        problem = f"SyntaxError: {exc.msg} ({path.name}, line {exc.lineno})"
        return [Variant(stem, str(path), stem, "", {}, is_base, problem)]
    except ConfigError as exc:      # not UTF-8, unreadable: this variant only
        return [Variant(stem, str(path), stem, "", {}, is_base, str(exc).replace(str(path), path.name, 1))]
    if not _defines(tree, ast.ClassDef, "ModelNew"):
        return [Variant(stem, str(path), stem, "", {}, is_base, f"{path.name} defines no class ModelNew")]
    try:
        _, layout = _literal(tree, "LAYOUT")
        has_configs, configs = _literal(tree, "CONFIGS")
    except ValueError:
        return [Variant(stem, str(path), stem, "", {}, is_base,
                        f"{path.name}: LAYOUT and CONFIGS must be literals (str; list of dicts)")]
    if not has_configs:
        configs = [{}]
    if not (isinstance(configs, list) and configs and all(isinstance(c, dict) for c in configs)):
        return [Variant(stem, str(path), stem, str(layout or ""), {}, is_base,
                        f"{path.name}: CONFIGS must be a non-empty list of dicts")]
    return [Variant(config_label(stem, c), str(path), stem, str(layout or ""), dict(c), is_base) for c in configs]


@dataclass(frozen=True)
class Space:
    """A variant's tunable space as written (`SPACE = dict(NAME=[values], ...)`, `RESTRICT = ["expr", ...]`,
    Kernel Tuner's tune_params/restrictions shape): read with ast, never run."""
    file: str
    params: dict[str, list[Any]]
    restrict: list[str]
    line: int                 # of SPACE
    restrict_line: int = 0    # of RESTRICT; 0 when the file has none


def _first_assign(tree: ast.Module, name: str) -> ast.Assign | None:
    """The module-level assignment to `name` that _literal reads (the first)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            return node
    return None


def read_space(path: Path) -> Space | None:
    """The SPACE and RESTRICT a variant file declares, or None without SPACE; ConfigError at file:line when
    they are not literals of the right kind."""
    try:
        tree = ast.parse(read_text(path), filename=str(path))
    except SyntaxError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: SyntaxError: {exc.msg}") from exc
    node = _first_assign(tree, "SPACE")
    if node is None:
        return None
    at = f"{path}:{node.lineno}"
    try:
        params = _eval(node.value)
    except (ValueError, TypeError):
        raise ConfigError(f"{at}: SPACE must be a literal dict of lists, e.g. "
                          "SPACE = dict(BLOCK=[64, 128], num_warps=[2, 4])") from None
    if not isinstance(params, dict) or not params:
        raise ConfigError(f"{at}: SPACE must be a non-empty dict of parameter name to list of values")
    for key, values in params.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"{at}: SPACE key {key!r} is not a parameter name")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{at}: SPACE['{key}'] must be a non-empty list of values, got {values!r}")
        bad = [v for v in values if not isinstance(v, (int, float, str, bool))]
        if bad:
            raise ConfigError(f"{at}: SPACE['{key}'] holds {bad[0]!r}; values must be numbers, strings or bools")
        if len(set(map(repr, values))) != len(values):
            raise ConfigError(f"{at}: SPACE['{key}'] lists a value twice: {values!r}")
    rnode = _first_assign(tree, "RESTRICT")
    restrict: list[str] = []
    if rnode is not None:
        try:
            value = _eval(rnode.value)
        except (ValueError, TypeError):
            value = None
        if not isinstance(value, list) or not all(isinstance(r, str) for r in value):
            raise ConfigError(f"{path}:{rnode.lineno}: RESTRICT must be a literal list of strings, e.g. "
                              "RESTRICT = [\"BLOCK // (32 * num_warps) <= 16\"]")
        restrict = value
    return Space(str(path), params, restrict, node.lineno, rnode.lineno if rnode is not None else 0)


def load_op_dir(op_dir: Path, root: Config) -> Op:
    reference = op_dir / "reference.py"
    if not reference.exists():
        raise ConfigError(f"{op_dir}: no reference.py (a KernelBench problem file with class Model, "
                          "get_inputs() and get_init_inputs())")
    try:
        ref_tree = ast.parse(read_text(reference), filename=str(reference))
    except SyntaxError as exc:
        raise ConfigError(f"{reference}:{exc.lineno}: SyntaxError: {exc.msg}") from exc
    missing = [n for n, k in (("Model", ast.ClassDef), ("get_inputs", ast.FunctionDef),
                              ("get_init_inputs", ast.FunctionDef)) if not _defines(ref_tree, k, n)]
    if missing:
        raise ConfigError(f"{reference}: missing {', '.join(missing)} (KernelBench problem format)")
    config = load_op(root, op_dir / "op.yaml")
    names = module_names(ref_tree)
    sizes = {n: a.default for n, a in names.items() if a.known}
    if config.op.flops:
        try:
            arithmetic(config.op.flops, _numbers(sizes))
        except (ValueError, SyntaxError) as exc:
            raise ConfigError(f"{op_dir / 'op.yaml'}: flops '{config.op.flops}': {exc}") from exc
    listed = [(f"shapes[{i}]", s) for i, s in enumerate(config.op.shapes)]
    listed += [(f"suites.{n}[{i}]", s) for n, ss in config.op.suites.items() for i, s in enumerate(ss)]
    lines = _override_lines(op_dir / "op.yaml") if listed else {}
    for where, shape in listed:
        for key, value in shape.params.items():
            line = lines.get((where, key))
            at = f"{op_dir / 'op.yaml'}" + (f":{line}" if line else "")
            try:
                check_overrides(names, {key: value}, reference)
            except ValueError as exc:
                raise ConfigError(f"{at}: {where}: {exc}") from None
    files = sorted(p for p in op_dir.glob("*.py") if p.name != "reference.py" and not p.name.startswith("_"))
    if config.op.variants:
        stems = {p.stem for p in files}
        unknown = [s for s in config.op.variants if s not in stems]
        if unknown:
            raise ConfigError(f"{op_dir / 'op.yaml'}: variants: {', '.join(unknown)} not found "
                              f"(have: {', '.join(sorted(stems))})")
        files = [p for p in files if p.stem in config.op.variants]
    if not files:
        raise ConfigError(f"{op_dir}: no variant files (kernels/<op>/*.py with class ModelNew besides reference.py)")
    variants = [v for p in files for v in read_variants(p, config.op.baseline)]
    base = config.op.baseline
    if base and base not in {p.stem for p in files}:
        # a full variant name picks one config of a file as the baseline
        if base not in {v.name for v in variants}:
            raise ConfigError(f"{op_dir / 'op.yaml'}: baseline '{base}' is neither a variant file nor a variant "
                              f"(files: {', '.join(p.stem for p in files)}; variants: "
                              f"{', '.join(v.name for v in variants)})")
        variants = [dataclasses.replace(v, baseline=v.name == base) for v in variants]
    return Op(op_dir.name, op_dir, reference, config, variants, sizes,
              reference_sha256=results.source_sha256(reference), names=names,
              assignments=tuple(s for _, _, s in _assignments(ref_tree.body)))


def select_variants(op: Op, names: list[str]) -> Op:
    """Keep the variants named by file stem or full name; unknown names are an error listing what exists."""
    known = {v.name for v in op.variants} | {v.stem for v in op.variants}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SelectionError(f"unknown variant {', '.join(unknown)} in op {op.name}; variants: "
                             + ", ".join(sorted({v.stem for v in op.variants})))
    return dataclasses.replace(op, variants=[v for v in op.variants if v.name in names or v.stem in names])


def discover(root: Config, base: Path, only: list[str] | None = None) -> list[Op]:
    kdir = base / root.kernels_dir
    found = sorted(p for p in kdir.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))) \
        if kdir.is_dir() else []
    names = [p.name for p in found]
    if only:
        unknown = [o for o in only if o not in names]
        if unknown:
            raise SelectionError(f"unknown op {', '.join(unknown)}; ops in {kdir}: {', '.join(names) or 'none'}")
        found = [p for p in found if p.name in only]
    if not found:
        raise SelectionError(f"no ops found in {kdir} (expected {kdir}/<op>/reference.py)")
    # results and reports are filed under results.slug(op): two ops of one slug would overwrite each other
    by_slug: dict[str, list[str]] = {}
    for name in names:
        by_slug.setdefault(results.slug(name), []).append(name)
    for p in found:
        clash = by_slug[results.slug(p.name)]
        if len(clash) > 1:
            raise ConfigError(f"{kdir}: op folders {' and '.join(repr(n) for n in clash)} share the results name "
                              f"'{results.slug(p.name)}' (profiles/<gpu>/{results.slug(p.name)}/); rename one")
    # every op's problems in one message, naming the ops that do load (--op picks them)
    loaded, broken = [], []
    for p in found:
        try:
            loaded.append(load_op_dir(p, root))
        except ConfigError as exc:
            broken.append(str(exc))
    if broken:
        fine = f"\nthese ops load: {', '.join(op.name for op in loaded)} (select them with --op)" if loaded else ""
        raise ConfigError("\n".join(broken) + fine)
    return loaded
