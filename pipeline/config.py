"""Load and validate the YAML config: `pipeline.yaml` (defaults for all ops) and `kernels/<op>/op.yaml`.

Precedence: built-in defaults (the dataclasses below) → pipeline.yaml → op.yaml → command-line flags.
Every key is a dataclass field; its `doc` metadata is the documentation (`python -m pipeline config`
prints the table). Errors name the file, the line and the key, and suggest the nearest known key.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import ConfigError

DTYPES = ("float32", "float16", "bfloat16")


def _f(default: Any, doc: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"doc": doc}, **kw)
    return field(default=default, metadata={"doc": doc}, **kw)


@dataclass(frozen=True)
class Tolerance:
    rtol: float = _f(1e-4, "relative tolerance")
    atol: float = _f(1e-5, "absolute tolerance")


DEFAULT_TOLERANCES = {
    "float32": Tolerance(rtol=1e-4, atol=1e-5),
    "float16": Tolerance(rtol=1e-2, atol=1e-3),
    "bfloat16": Tolerance(rtol=2e-2, atol=1e-2),
}


@dataclass(frozen=True)
class VerifyConfig:
    seeds: list[int] = _f([0, 1, 2], "random seeds; each draws fresh inputs from the reference's get_inputs()")
    tolerance: dict[str, Tolerance] = _f({}, "per output dtype {rtol, atol}; unset dtypes use the built-in table")

    def tolerance_for(self, dtype: str) -> Tolerance:
        return self.tolerance.get(dtype, DEFAULT_TOLERANCES.get(dtype, DEFAULT_TOLERANCES["float32"]))


@dataclass(frozen=True)
class TimingConfig:
    warmup: int = _f(3, "untimed calls per variant before timing (after compilation)")
    min_reps: int = _f(10, "fewest timed repeats per variant")
    max_reps: int = _f(200, "most timed repeats per variant")
    budget_ms: float = _f(200.0, "GPU time aimed at per variant; sets the repeat count between min and max")
    rounds: int = _f(5, "repeats are interleaved across variants in this many rounds, so drift hits all alike")
    race: float = _f(1.25, "after the first round, a variant slower than race x the fastest median stops at min_reps "
                          "(it cannot be recommended; its budget goes unspent); 0 times every variant to its budget")
    flush_l2: bool = _f(True, "overwrite a buffer of twice the L2 size before every timed repeat")
    queue_ahead: float = _f(2.0, "after the flush the GPU spins for this many times a call's host enqueue time "
                                 "(+0.02 ms), so the events time its kernels, not the launch path; 0: no spin")


DEFAULT_METRICS = [
    "gpu__time_duration.sum",
    "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "sm__warps_active.avg.pct_of_peak_sustained_active",
    "sm__maximum_warps_per_active_cycle_pct",
    "gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "dram__bytes_read.sum",
    "dram__bytes_write.sum",
    "lts__t_sector_hit_rate.pct",
    "launch__grid_size",
    "launch__grid_dim_x",
    "launch__grid_dim_y",
    "launch__grid_dim_z",
    "launch__block_size",
    "launch__block_dim_x",
    "launch__block_dim_y",
    "launch__block_dim_z",
    "launch__waves_per_multiprocessor",
    "launch__registers_per_thread",
    "launch__shared_mem_per_block",
    "launch__occupancy_limit_registers",
    "launch__occupancy_limit_shared_mem",
    "launch__occupancy_limit_warps",
    "launch__occupancy_limit_blocks",
    # thread-block clusters (sm_90): 0 x 0 x 0 for a launch without clusters; max_active is how many
    # clusters fit on the GPU at once (a cluster must sit within one GPC)
    "launch__cluster_dim_x",
    "launch__cluster_dim_y",
    "launch__cluster_dim_z",
    "launch__cluster_max_active",
]


@dataclass(frozen=True)
class NcuConfig:
    metrics: list[str] = _f(DEFAULT_METRICS, "metrics collected for every kernel (--metrics)")
    replay_mode: str = _f("kernel", "ncu --replay-mode (kernel replay was 5x faster than application replay)")
    clock_control: str = _f("base", "ncu --clock-control (base locks clocks; rank on event timing, not on ncu)")
    cache_control: str = _f("all", "ncu --cache-control (all flushes caches before each replay pass)")
    select: typing.Literal["family-best", "all"] = _f(
        "family-best", "which verified variants ncu profiles per shape: `family-best` (the fastest config of each "
        "layout family by event timing, and the baseline; ranking needs no counters) or `all`")
    timeout_s: float = _f(900.0, "wall-clock limit of one ncu process (the shapes of one op measured in a run)")
    path: str = _f("", "ncu executable; empty means search PATH, CUDA_HOME, /usr/local/cuda*, /opt/nvidia/nsight-compute")


@dataclass(frozen=True)
class WorkerConfig:
    variant_timeout_s: float = _f(180.0, "a variant still building or verifying after this long is killed: `timeout`")
    timing_timeout_s: float = _f(900.0, "limit for the timing phase of one op × shape")
    precompile: bool = _f(True, "compile a shape's Triton kernels on a thread pool before verifying; off: each "
                                "compiles at its first call (for variants that keep what a launch returns)")


@dataclass(frozen=True)
class Shape:
    params: dict[str, int] = _f({}, "reference module-level size names to override, e.g. {batch_size: 1}")
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
    shapes: list[Shape] = _f([], "shapes to run; each overrides the reference's module-level sizes")
    suites: dict[str, list[Shape]] = _f({}, "named extra shape lists, picked with --suite NAME (e.g. small)")
    variants: list[str] = _f([], "variant file stems to include; empty means every .py file but reference.py")
    description: str = _f("", "one line for the report")
    flops: str = _f("", "FLOPs of one call as arithmetic over the reference's size names, e.g. 2*M*N*K; "
                        "enables the compute roofline")

    def shape_list(self, suite: str | None) -> list[Shape]:
        return self.shapes if suite is None else self.suites.get(suite, [])


def _range(default: Any, doc: str, lo: float, hi: float, hint: str = "") -> Any:
    """A field whose value must lie in [lo, hi]; a value outside is a ConfigError at its file:line."""
    return field(default=default, metadata={"doc": doc, "range": (lo, hi, hint)})


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
    max_time_ms: float = _range(0.0, "largest event-timed median in ms, any kernel", 0, float("inf"))
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
        value = float(value)
    if tp is str and value is None:
        value = ""
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(
            f"{_where(path, node)}: '{key}' must be {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _build(cls: type, node: yaml.Node, path: Path, prefix: str, base: Any = None) -> Any:
    """A dataclass instance from a mapping node, starting from `base` (or defaults)."""
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{_where(path, node)}: '{prefix or 'top level'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for knode, vnode in node.value:
        key = knode.value
        full = f"{prefix}.{key}" if prefix else key
        if cls is Shape and key not in fields:
            # shape entries list size overrides directly: {batch_size: 1, dtype: float16}
            values.setdefault("params", {})[key] = _convert(vnode, int, path, full)
            continue
        if key not in fields:
            raise ConfigError(f"{_where(path, knode)}: unknown key '{full}'.{_suggest(key, fields)}")
        sub_base = getattr(base, key) if base is not None else None
        if dataclasses.is_dataclass(hints[key]):
            values[key] = _build(hints[key], vnode, path, full, sub_base)
        else:
            values[key] = _convert(vnode, hints[key], path, full)
        lo, hi, hint = next(f for f in dataclasses.fields(cls) if f.name == key).metadata.get("range", (None,) * 3)
        if lo is not None and values[key] is not None and not lo <= values[key] <= hi:
            raise ConfigError(f"{_where(path, vnode)}: '{full}' must be between {lo:g} and {hi:g}, got "
                              f"{values[key]!r}" + (f" ({hint})" if hint else ""))
    if cls is Shape and values.get("dtype", "float32") not in DTYPES:
        raise ConfigError(f"{_where(path, node)}: '{prefix}.dtype' must be one of {', '.join(DTYPES)}")
    start = base if base is not None else cls()
    return dataclasses.replace(start, **values)


def _compose(path: Path) -> yaml.Node | None:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: malformed YAML: {getattr(exc, 'problem', exc)}") from exc


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
    root_fields = {f.name for f in dataclasses.fields(Config)} - {"op", "kernels_dir", "profiles_dir", "reports_dir"}
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
    """(key, type, default, doc) rows for the README's config table."""
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
        default = getattr(defaults, f.name)
        shown = f"{len(default)} metrics (see config.py)" if f.name == "metrics" else repr(default)
        rows.append((key, str(tp), shown, f.metadata.get("doc", "")))
    return rows
