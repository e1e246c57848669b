"""Load and validate the YAML config: `pipeline.yaml` (defaults for all ops) and `kernels/<op>/op.yaml`.

Precedence: built-in defaults (the dataclasses below) → pipeline.yaml → op.yaml → command-line flags.
Every key is a dataclass field; its `doc` metadata is the documentation (`python -m pipeline config`
prints the table) and its `rule` (set with `_range`) what values it accepts, checked at load. Errors name
the file, the line and the key, and suggest the nearest known key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline import catalogue
from pipeline.errors import ConfigError

DTYPES = ("float32", "float16", "bfloat16")


def _f(default: Any, doc: str, rule: Rule | None = None) -> Any:
    meta = {"doc": doc, "rule": rule} if rule else {"doc": doc}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


@dataclass(frozen=True)
class Rule:
    """What a numeric key (or each item of a list key) accepts, checked at its file:line and shown by
    `python -m pipeline config`. Floats must also be finite (checked for every float key)."""
    lo: float = -math.inf
    hi: float = math.inf
    hint: str = ""
    open_lo: bool = False       # lo itself is refused
    or_zero: bool = False       # 0 is accepted besides [lo, hi] (0 turns the feature off)
    at_least: str = ""          # another key of the same section this one may not be below
    nonempty: bool = False      # lists: at least one item
    distinct: bool = False      # lists: no item twice
    keys: tuple[str, ...] = ()  # mappings: the keys allowed
    name: bool = False          # strings: a name without spaces or commas (ncu takes a comma-joined list)
    one_of: tuple[str, ...] = ()  # strings: these, or a `module:Class` (another implementation, imported by name)

    def ok(self, v: float) -> bool:
        return (self.or_zero and v == 0) or ((self.lo < v if self.open_lo else self.lo <= v) and v <= self.hi)

    def bounds(self) -> str:
        if self.lo == -math.inf and self.hi == math.inf:
            return ""
        if self.hi == math.inf:
            text = f"{'>' if self.open_lo else '>='} {_num(self.lo)}"
        else:
            text = f"between {_num(self.lo)} and {_num(self.hi)}"
        return f"0 or {text}" if self.or_zero else text

    def text(self) -> str:
        """The rule in words, for the config table."""
        listed = self.nonempty or self.distinct
        parts = ["at least one" if self.nonempty else "", "distinct" if self.distinct else "",
                 f"each {self.bounds()}" if listed and self.bounds() else self.bounds(),
                 f">= {self.at_least}" if self.at_least else "", f"keys: {', '.join(self.keys)}" if self.keys else "",
                 "each a name without spaces or commas" if self.name else "",
                 f"one of {', '.join(self.one_of)}, or module:Class" if self.one_of else ""]
        return ", ".join(p for p in parts if p)


def _range(default: Any, doc: str, lo: float, hi: float = math.inf, hint: str = "", **rule: Any) -> Any:
    """A field whose value must lie in [lo, hi] (see Rule for the rest); a value outside is a ConfigError at
    its file:line."""
    return _f(default, doc, Rule(lo, hi, hint, **rule))


@dataclass(frozen=True)
class Tolerance:
    rtol: float = _range(1e-4, "relative tolerance", 0)
    atol: float = _range(1e-5, "absolute tolerance", 0)


DEFAULT_TOLERANCES = {
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
    "float16": Tolerance(rtol=1e-2, atol=1e-3),
    "bfloat16": Tolerance(rtol=2e-2, atol=1e-2),
}


@dataclass(frozen=True)
class VerifyConfig:
    seeds: list[int] = _range([0, 1, 2], "random seeds; each draws fresh inputs from the reference's get_inputs()",
                              0, 2**64 - 1, nonempty=True, distinct=True)
    tolerance: dict[str, Tolerance] = _f({}, "per output dtype {rtol, atol}, each >= 0; unset dtypes use the "
                                             "built-in table", Rule(keys=DTYPES))
    wide_inputs: float = _range(0.0, "opt-in extra check: the first seed's floating inputs mapped to (2x - 1) × "
                                     "this, signed and wide (KernelBench draws torch.rand, all in [0, 1), which "
                                     "hides sign and overflow bugs); 0: off", 0)

    def tolerance_for(self, dtype: str) -> Tolerance:
        return self.tolerance.get(dtype, DEFAULT_TOLERANCES.get(dtype, DEFAULT_TOLERANCES["float32"]))


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = _range(3, "untimed calls per variant before timing (after compilation)", 0)
    min_reps: int = _range(10, "fewest timed repeats per variant", 1)
    max_reps: int = _range(200, "most timed repeats per variant", 1, at_least="min_reps")
    budget_ms: float = _range(200.0, "GPU time aimed at per variant; sets the repeat count between min and max", 0,
                              open_lo=True)
    rounds: int = _range(5, "repeats are interleaved across variants in this many rounds, so drift hits all alike", 1)
    race: float = _range(1.25, "after the first round, a variant slower than race x the fastest median stops at "
                               "min_reps (it cannot be recommended; its budget goes unspent); 0 times every variant "
                               "to its budget", 1, or_zero=True)
    flush_l2: bool = _f(True, "overwrite a buffer of twice the L2 size before every timed repeat")
    queue_ahead: float = _range(2.0, "after the flush the GPU spins for this many times a call's host enqueue time "
                                     "(+0.02 ms), so the events time its kernels, not the launch path; 0: no spin", 0)


@dataclass(frozen=True)
class NcuConfig:
    metrics: list[str] = _f(catalogue.defaults(), "metrics collected for every kernel (--metrics); a list set here "
                                                  "replaces the default set (pipeline/catalogue.py)")
    extra_metrics: list[str] = _f([], "metrics collected besides `metrics`: added to it (to the default set when "
                                      "`metrics` is not set) rather than replacing it, e.g. "
                                      "[l1tex__t_sector_hit_rate.pct]",
                                  Rule(distinct=True, name=True))
    replay_mode: str = _f("kernel", "ncu --replay-mode (kernel replay was 5x faster than application replay)")
    clock_control: str = _f("base", "ncu --clock-control (base locks clocks; rank on event timing, not on ncu)")
    cache_control: str = _f("all", "ncu --cache-control (all flushes caches before each replay pass)")
    select: typing.Literal["family-best", "all"] = _f(
        "family-best", "which verified variants ncu profiles per shape: `family-best` (the fastest config of each "
        "layout family by event timing, and the baseline; ranking needs no counters) or `all`")
    timeout_s: float = _range(900.0, "wall-clock limit of one ncu process (the shapes of one op measured in a run)",
                              0, open_lo=True)
    detail: bool = _f(True, "a second ncu pass with the warp-state, source-counter and memory-table sections over "
                            "the recommended variant, the fastest of another layout family and the baseline of each "
                            "shape: the report's \"why the winner wins\" (pipeline/detail.py)")
    path: str = _f("", "ncu executable; empty means search PATH, CUDA_HOME, /usr/local/cuda*, /opt/nvidia/nsight-compute")


@dataclass(frozen=True)
class WorkerConfig:
    variant_timeout_s: float = _range(180.0, "a variant still building or verifying after this long is killed: "
                                             "`timeout`", 0, open_lo=True)
    timing_timeout_s: float = _range(900.0, "limit for the timing phase of one op × shape", 0, open_lo=True)
    precompile: bool = _f(True, "compile a shape's Triton kernels on a thread pool before verifying; off: each "
                                "compiles at its first call (for variants that keep what a launch returns)")


@dataclass(frozen=True)
class Shape:
    params: dict[str, Any] = _f({}, "reference module-level names to override, e.g. {batch_size: 1}")
    dtype: str = _f("float32", "floating inputs are cast to this dtype: " + ", ".join(DTYPES))
    name: str = _f("", "short id; default built from params and dtype")

    @property
    def id(self) -> str:
        if self.name:
            return self.name
        dims = "x".join(str(v) for v in self.params.values()) or "default"
        return f"{dims}-{self.dtype}"


@dataclass(frozen=True)
class OpConfig:
    baseline: str = _f("", "the variant others are compared with: a file stem (e.g. seed_2d_tiles; its fastest "
                           "config) or one config's full name (e.g. grid_2d(BLOCK_M=64,BLOCK_N=64))")
    shapes: list[Shape] = _f([], "shapes to run; each overrides the reference's module-level sizes; shape ids "
                                 "(`name`, else built from the values and dtype) must be distinct")
    suites: dict[str, list[Shape]] = _f({}, "named extra shape lists, picked with --suite NAME (e.g. small); an id "
                                            "in several lists must be the same shape")
    variants: list[str] = _f([], "variant file stems to include; empty means every .py file but reference.py")
    description: str = _f("", "one line for the report")
    flops: str = _f("", "FLOPs of one call as arithmetic over the reference's size names, e.g. 2*M*N*K; "
                        "enables the compute roofline")

    def shape_list(self, suite: str | None) -> list[Shape]:
        return self.shapes if suite is None else self.suites.get(suite, [])


@dataclass(frozen=True)
class Targets:
    """What `python -m pipeline gate` requires of a gated kernel (docs/gate.md). 0 turns a target off."""
    sm_throughput_min: float = _range(
        60.0, "% SM throughput (sm__throughput.avg.pct_of_peak_sustained_elapsed) a kernel must reach; "
              "not applicable to memory- or launch-bound kernels unless sm_target_strict", 0, 100)
    sm_target_strict: bool = _f(False, "apply sm_throughput_min to every kernel, memory- and launch-bound ones too")
    memory_throughput_min: float = _range(
        60.0, "% memory throughput (gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed) a "
              "memory-bound kernel must reach", 0, 100)
    roofline_fraction_min: float = _range(
        0.0, "fraction of device-copy bandwidth (copy time of the op's minimal bytes / kernel time) a "
             "memory-bound kernel must reach, e.g. 0.8", 0, 2, "a fraction: 0.8 means 80 %")
    warps_active_min: float = _range(
        0.0, "% achieved occupancy (sm__warps_active.avg.pct_of_peak_sustained_active), any kernel", 0, 100)
    max_time_ms: float = _range(0.0, "largest event-timed median in ms, any kernel", 0)
    max_regression: float = _range(
        0.05, "with --baseline: fail when the median is slower by more than this fraction AND the "
              "interquartile ranges do not overlap", 0, 1, "a fraction: 0.05 means 5 %")


# Per-variant overrides: every Targets key, optional (unset keys inherit the op's targets).
TargetOverride = dataclasses.make_dataclass(
    "TargetOverride",
    [(f.name, typing.Optional[typing.get_type_hints(Targets)[f.name]], field(default=None, metadata=f.metadata))
     for f in dataclasses.fields(Targets)],
    frozen=True)


@dataclass(frozen=True)
class GateConfig(Targets):
    """The `targets:` section: Targets for every gated kernel, which variants to gate, per-variant overrides."""
    gate: list[str] = _f([], "variants to gate (file stem or full name); empty means the recommended one per shape")
    variants: dict[str, TargetOverride] = _f(  # type: ignore[valid-type]
        {}, "per-variant overrides keyed by full name or file stem, e.g. {seed_2d_tiles: {max_time_ms: 100}}")

    def for_variant(self, name: str, stem: str) -> Targets:
        """The op's targets overlaid with the stem's, then the full name's overrides."""
        base = Targets(**{f.name: getattr(self, f.name) for f in dataclasses.fields(Targets)})
        for key in (stem, name):
            over = self.variants.get(key)
            if over is not None:
                base = dataclasses.replace(base, **{k: v for k, v in dataclasses.asdict(over).items() if v is not None})
        return base


@dataclass(frozen=True)
class Config:
    kernels_dir: str = _f("kernels", "where ops live: kernels/<op>/reference.py + variants + op.yaml")
    profiles_dir: str = _f("profiles", "results JSON and .ncu-rep files, per GPU and op")
    reports_dir: str = _f("reports", "generated HTML")
    backend: str = _f(
        "threads", "where `profile` runs its lanes, one per GPU: `threads` (the GPUs of this host), `ray` (every "
        "GPU of a Ray cluster, one actor each; `pip install .[ray]`), or `module:Class` of another "
        "implementation of shard.Backend; --backend", Rule(one_of=("threads", "ray")))
    ray_address: str = _f("auto", "the Ray cluster of backend ray: `auto` (the one `ray start` made this node part "
                                  "of), `host:port` of its head, or `ray://host:port` (Ray Client); --ray-address")
    verify: VerifyConfig = _f(VerifyConfig(), "correctness checking")
    timing: TimingConfig = _f(TimingConfig(), "CUDA-event timing outside ncu")
    ncu: NcuConfig = _f(NcuConfig(), "Nsight Compute settings")
    worker: WorkerConfig = _f(WorkerConfig(), "GPU child process limits")
    op: OpConfig = _f(OpConfig(), "per-op settings; set in kernels/<op>/op.yaml (top level there)")
    targets: GateConfig = _f(GateConfig(), "merge-gate targets (`python -m pipeline gate`, docs/gate.md)")


# ---------------------------------------------------------------- validation

def _where(path: Path, node: yaml.Node | None) -> str:
    return f"{path}:{node.start_mark.line + 1}" if node is not None else str(path)


def _suggest(key: str, known: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _convert(node: yaml.Node, tp: Any, path: Path, key: str) -> Any:
    """Build a value of type `tp` from a YAML node, or raise ConfigError naming file:line and key."""
    if tp is Any:
        return _override(node, path, key)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):       # Optional[X]: YAML null is None, else an X
        if isinstance(node, yaml.ScalarNode) and yaml.safe_load(yaml.serialize(node)) is None:
            return None
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
        origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _build(tp, node, path, key)
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        value = yaml.safe_load(yaml.serialize(node)) if isinstance(node, yaml.ScalarNode) else None
        if value not in allowed:
            raise ConfigError(f"{_where(path, node)}: '{key}' must be one of {', '.join(map(str, allowed))}, "
                              f"got {value!r}.{_suggest(str(value), map(str, allowed))}")
        return value
    if origin is list:
        if not isinstance(node, yaml.SequenceNode):
            raise ConfigError(f"{_where(path, node)}: '{key}' must be a list")
        (item_tp,) = typing.get_args(tp)
        return [_convert(n, item_tp, path, f"{key}[{i}]") for i, n in enumerate(node.value)]
    if origin is dict:
        if not isinstance(node, yaml.MappingNode):
            raise ConfigError(f"{_where(path, node)}: '{key}' must be a mapping")
        _, val_tp = typing.get_args(tp)
        return {k.value: _convert(v, val_tp, path, f"{key}.{k.value}") for k, v in node.value}
    if not isinstance(node, yaml.ScalarNode):
        raise ConfigError(f"{_where(path, node)}: '{key}' must be a single {tp.__name__}")
    value = yaml.safe_load(yaml.serialize(node))
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
    if tp is str and value is None:
        value = ""
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(
            f"{_where(path, node)}: '{key}' must be {tp.__name__}, got {type(value).__name__} {value!r}"
            + (" (YAML reads an exponent without a dot as text: write 1.0e-2)"
               if tp is float and isinstance(value, str) and "e" in value.lower() and _is_float(value) else ""))
    if tp is float and not math.isfinite(value):
        shown = node.value if len(node.value) <= 24 else node.value[:20] + "..."
        raise ConfigError(f"{_where(path, node)}: '{key}' must be a finite number, got {shown}")
    return value


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _override(node: yaml.Node, path: Path, key: str) -> Any:
    """A shape's override of a reference name: a number, bool, string, or a list of them. Whether it is
    of the kind of the name's default is checked against reference.py (ops.load_op_dir)."""
    if isinstance(node, yaml.SequenceNode):
        return [_override(n, path, f"{key}[{i}]") for i, n in enumerate(node.value)]
    value = yaml.safe_load(yaml.serialize(node)) if isinstance(node, yaml.ScalarNode) else {}
    if not isinstance(value, (int, float, str)):    # bool is an int
        raise ConfigError(f"{_where(path, node)}: '{key}' must be a number, bool, string or list, "
                          f"got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, node: yaml.Node, path: Path, prefix: str, base: Any = None) -> Any:
    """A dataclass instance from a mapping node, starting from `base` (or defaults)."""
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{_where(path, node)}: '{prefix or 'top level'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    nodes: dict[str, yaml.Node] = {}
    for knode, vnode in node.value:
        key = knode.value
        full = f"{prefix}.{key}" if prefix else key
        nodes[key] = vnode
        if cls is Shape and key not in fields:
            # shape entries list size overrides directly: {batch_size: 1, dtype: float16}
            values.setdefault("params", {})[key] = _convert(vnode, Any, path, full)
            continue
        if key not in fields:
            raise ConfigError(f"{_where(path, knode)}: unknown key '{full}'.{_suggest(key, fields)}")
        sub_base = getattr(base, key) if base is not None else None
        if dataclasses.is_dataclass(hints[key]):
            values[key] = _build(hints[key], vnode, path, full, sub_base)
        else:
            values[key] = _convert(vnode, hints[key], path, full)
        rule = next(f for f in dataclasses.fields(cls) if f.name == key).metadata.get("rule")
        if rule is not None and values[key] is not None:
            _check(rule, values[key], vnode, path, full)
    if cls is Shape and values.get("dtype", "float32") not in DTYPES:
        raise ConfigError(f"{_where(path, node)}: '{prefix}.dtype' must be one of {', '.join(DTYPES)}")
    start = base if base is not None else cls()
    built = dataclasses.replace(start, **values)
    for f in dataclasses.fields(cls):
        other = f.metadata["rule"].at_least if f.metadata.get("rule") else ""
        if other and getattr(built, f.name) < getattr(built, other) and (f.name in nodes or other in nodes):
            full, full_other = (f"{prefix}.{k}" if prefix else k for k in (f.name, other))
            raise ConfigError(f"{_where(path, nodes.get(f.name, nodes.get(other)))}: '{full}' "
                              f"({getattr(built, f.name)!r}) must be >= '{full_other}' ({getattr(built, other)!r})")
    if cls is OpConfig:
        _check_shape_ids(values, nodes, path)
    if cls is NcuConfig and built.extra_metrics:
        # extra_metrics add to whatever `metrics` is at this layer: the rest of the pipeline reads `metrics`
        built = dataclasses.replace(built, metrics=[*built.metrics, *(m for m in built.extra_metrics
                                                                      if m not in built.metrics)])
    return built


def _check(rule: Rule, value: Any, node: yaml.Node, path: Path, key: str) -> None:
    """Raise ConfigError at the node when `value` breaks `rule` (lists: each item, and the list as a whole)."""
    if isinstance(value, list):
        if rule.nonempty and not value:
            raise ConfigError(f"{_where(path, node)}: '{key}' must list at least one item, got []")
        first: dict[Any, int] = {}
        for i, (item, inode) in enumerate(zip(value, node.value)):
            if rule.distinct and item in first:
                j = first[item]
                raise ConfigError(f"{_where(path, inode)}: '{key}[{i}]' repeats {item!r} ({key}[{j}], line "
                                  f"{node.value[j].start_mark.line + 1})")
            first.setdefault(item, i)
            _check(dataclasses.replace(rule, nonempty=False, distinct=False), item, inode, path, f"{key}[{i}]")
    elif isinstance(value, dict):
        for knode, _ in node.value:
            if rule.keys and knode.value not in rule.keys:
                raise ConfigError(f"{_where(path, knode)}: '{key}.{knode.value}' is not one of "
                                  f"{', '.join(rule.keys)}.{_suggest(knode.value, rule.keys)}")
    elif isinstance(value, str):
        if rule.name and (not value or any(c.isspace() or c == "," for c in value)):
            raise ConfigError(f"{_where(path, node)}: '{key}' must be a name without spaces or commas, got {value!r}")
        module, _, cls = value.partition(":")        # another implementation, named module:Class
        if rule.one_of and value not in rule.one_of and not (module and cls.isidentifier()):
            raise ConfigError(f"{_where(path, node)}: '{key}' must be one of {', '.join(rule.one_of)}, or "
                              f"module:Class, got {value!r}.{_suggest(value, rule.one_of)}")
    elif not rule.ok(value):
        raise ConfigError(f"{_where(path, node)}: '{key}' must be {rule.bounds()}, got {value!r}"
                          + (f" ({rule.hint})" if rule.hint else ""))


def _check_shape_ids(values: dict[str, Any], nodes: dict[str, yaml.Node], path: Path) -> None:
    """Shape ids name results records: one id, one shape (an id may appear in several lists, the same shape)."""
    lists = [("shapes", values.get("shapes", []), nodes.get("shapes"))]
    if isinstance(nodes.get("suites"), yaml.MappingNode):
        lists += [(f"suites.{k.value}", values["suites"][k.value], v) for k, v in nodes["suites"].value]
    seen: dict[str, tuple[str, Shape, yaml.Node]] = {}
    for where, shapes, lnode in lists:
        mine: set[str] = set()
        for i, (shape, snode) in enumerate(zip(shapes, lnode.value if lnode is not None else [])):
            key = f"{where}[{i}]"
            if shape.id in seen and (shape.id in mine or seen[shape.id][1] != shape):
                other, _, onode = seen[shape.id]
                raise ConfigError(f"{_where(path, snode)}: '{key}' has the shape id '{shape.id}' of {other} (line "
                                  f"{onode.start_mark.line + 1})" + ("" if shape.id in mine else " with other "
                                  "values") + "; give one a distinct name")
            mine.add(shape.id)
            seen.setdefault(shape.id, (key, shape, snode))


def read_text(path: Path) -> str:
    """A UTF-8 text file (config or Python source), or ConfigError naming the file and line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return data.decode("utf-8").removeprefix("\ufeff")     # a BOM, as Python's own import drops it
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                          "save the file as UTF-8") from exc


def _no_duplicate_keys(node: yaml.Node, path: Path, prefix: str = "", seen: set[int] | None = None) -> None:
    """YAML keeps the last of two equal keys; a config that sets a key twice is refused, naming both lines."""
    seen = set() if seen is None else seen
    if id(node) in seen:    # an alias: checked where its anchor is (and anchors may refer to themselves)
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _no_duplicate_keys(item, path, f"{prefix}[{i}]", seen)
    elif isinstance(node, yaml.MappingNode):
        first: dict[str, yaml.Node] = {}
        for knode, vnode in node.value:
            full = f"{prefix}.{knode.value}" if prefix else str(knode.value)
            if isinstance(knode, yaml.ScalarNode):
                if knode.value in first:
                    raise ConfigError(f"{_where(path, knode)}: duplicate key '{full}' (first set at line "
                                      f"{first[knode.value].start_mark.line + 1}); YAML would keep only the last")
                first[knode.value] = knode
            _no_duplicate_keys(vnode, path, full, seen)


def _compose(path: Path) -> yaml.Node | None:
    text = read_text(path)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: malformed YAML: {getattr(exc, 'problem', exc)}") from exc
    if node is not None:
        _no_duplicate_keys(node, path)
    return node


def load_root(path: Path | None) -> Config:
    """Defaults overlaid with pipeline.yaml (if it exists)."""
    if path is None or not path.exists():
        return Config()
    node = _compose(path)
    if node is None:
        return Config()
    cfg = _build(Config, node, path, "")
    if cfg.op != OpConfig():
        raise ConfigError(f"{path}: 'op' settings belong in kernels/<op>/op.yaml")
    return cfg


def load_op(root: Config, path: Path) -> Config:
    """The root config overlaid with an op.yaml: its top-level keys are OpConfig's plus any root section."""
    if not path.exists():
        return root
    node = _compose(path)
    if node is None:
        return root
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{_where(path, node)}: top level must be a mapping")
    op_fields = {f.name for f in dataclasses.fields(OpConfig)}
    root_fields = {f.name for f in dataclasses.fields(Config)} - {"op", "kernels_dir", "profiles_dir", "reports_dir",
                                                                  "backend", "ray_address"}
    op_node = yaml.MappingNode("tag:yaml.org,2002:map", [], start_mark=node.start_mark)
    rest = yaml.MappingNode("tag:yaml.org,2002:map", [], start_mark=node.start_mark)
    for k, v in node.value:
        if k.value in op_fields:
            op_node.value.append((k, v))
        elif k.value in root_fields:
            rest.value.append((k, v))
        else:
            raise ConfigError(
                f"{_where(path, k)}: unknown key '{k.value}'.{_suggest(k.value, op_fields | root_fields)}")
    cfg = _build(Config, rest, path, "", base=root)
    return dataclasses.replace(cfg, op=_build(OpConfig, op_node, path, "", base=root.op))


def documented_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type and accepted values, default, doc) rows for the README's config table."""
    rows = []
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            rows += documented_keys(hints[f.name], key + ".")
            continue
        tp = getattr(hints[f.name], "__name__", str(hints[f.name])).replace("typing.", "")
        if typing.get_origin(hints[f.name]) is typing.Literal:
            tp = " \\| ".join(typing.get_args(hints[f.name]))
        if f.metadata.get("rule"):
            tp += ", " + f.metadata["rule"].text()
        default = getattr(defaults, f.name)
        shown = f"{len(default)} metrics (pipeline/catalogue.py)" if f.name == "metrics" else repr(default)
        rows.append((key, str(tp), shown, f.metadata.get("doc", "")))
    return rows
