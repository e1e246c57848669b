"""Find ops and their variants in kernels/ without importing them.

An op is a directory `kernels/<op>/` holding `reference.py` (a KernelBench problem file: `class Model`,
module-level sizes, `get_inputs()`, `get_init_inputs()`), an optional `op.yaml`, and variant files:
every other `*.py` not starting with `_`, each with `class ModelNew`, optional `LAYOUT` (str) and
`CONFIGS` (list of keyword dicts, literals). A variant with N configs expands to N sub-variants.
Reading sources with `ast` keeps user code out of the parent process: only the GPU worker imports it.
"""
from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import results
from pipeline.config import Config, load_op
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
    sizes: dict[str, Any] = field(default_factory=dict)   # reference.py's module-level numbers; shapes override
    skipped_metrics: list[str] = field(default_factory=list)  # configured metrics this GPU does not report
    reference_sha256: str = ""  # of reference.py, read once at discovery (results, cache keys)

    @property
    def size_names(self) -> tuple[str, ...]:
        return tuple(self.sizes)

    def flops(self, params: dict[str, int]) -> int | None:
        """The op's declared FLOPs at a shape (op.yaml `flops`), or None when it declares none."""
        if not self.config.op.flops:
            return None
        return int(arithmetic(self.config.op.flops, {**self.sizes, **params}))


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


def _module_numbers(tree: ast.Module) -> dict[str, Any]:
    sizes = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) \
                and isinstance(node.value.value, (int, float)) and not isinstance(node.value.value, bool):
            sizes.update({t.id: node.value.value for t in node.targets if isinstance(t, ast.Name)})
    return sizes


_OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Pow: lambda a, b: a ** b}


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
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as exc:
        problem = f"SyntaxError: {exc.msg} ({path.name}, line {exc.lineno})"
        return [Variant(stem, str(path), stem, "", {}, is_base, problem)]
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


def load_op_dir(op_dir: Path, root: Config) -> Op:
    reference = op_dir / "reference.py"
    if not reference.exists():
        raise ConfigError(f"{op_dir}: no reference.py (a KernelBench problem file with class Model, "
                          "get_inputs() and get_init_inputs())")
    try:
        ref_tree = ast.parse(reference.read_text(), filename=str(reference))
    except SyntaxError as exc:
        raise ConfigError(f"{reference}:{exc.lineno}: SyntaxError: {exc.msg}") from exc
    missing = [n for n, k in (("Model", ast.ClassDef), ("get_inputs", ast.FunctionDef),
                              ("get_init_inputs", ast.FunctionDef)) if not _defines(ref_tree, k, n)]
    if missing:
        raise ConfigError(f"{reference}: missing {', '.join(missing)} (KernelBench problem format)")
    config = load_op(root, op_dir / "op.yaml")
    sizes = _module_numbers(ref_tree)
    if config.op.flops:
        try:
            arithmetic(config.op.flops, sizes)
        except (ValueError, SyntaxError) as exc:
            raise ConfigError(f"{op_dir / 'op.yaml'}: flops '{config.op.flops}': {exc}") from exc
    listed = [(f"shapes[{i}]", s) for i, s in enumerate(config.op.shapes)]
    listed += [(f"suites.{n}[{i}]", s) for n, ss in config.op.suites.items() for i, s in enumerate(ss)]
    for where, shape in listed:
        unknown = [k for k in shape.params if k not in sizes]
        if unknown:
            raise ConfigError(f"{op_dir / 'op.yaml'}: {where}: {', '.join(unknown)} not a module-level size in "
                              f"reference.py (it has: {', '.join(sizes) or 'none'})")
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
              reference_sha256=results.source_sha256(reference))


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
    return [load_op_dir(p, root) for p in found]
