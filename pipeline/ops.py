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

import yaml

from pipeline import results, toplevel
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
    names: dict[str, toplevel.Assigned] = field(default_factory=dict)  # every module-level name: what a shape may set
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
            {n: a.default for n, a in toplevel.module_names(self.assignments, params).items() if a.known}
        return int(toplevel.arithmetic(self.config.op.flops, toplevel.numbers(values)))


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
        _, layout = toplevel.literal(tree, "LAYOUT")
        has_configs, configs = toplevel.literal(tree, "CONFIGS")
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
    """The module-level assignment to `name` that toplevel.literal reads (the first)."""
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
        params = toplevel.literal_value(node.value)
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
            value = toplevel.literal_value(rnode.value)
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
    names = toplevel.module_names(ref_tree)
    sizes = {n: a.default for n, a in names.items() if a.known}
    if config.op.flops:
        try:
            toplevel.arithmetic(config.op.flops, toplevel.numbers(sizes))
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
                toplevel.check_overrides(names, {key: value}, reference)
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
              assignments=tuple(s for _, _, s in toplevel.assignments(ref_tree.body)))


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
