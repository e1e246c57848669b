"""The `search` proposer of `optimize`: neighbours of the current configuration in a variant's SPACE, ordered
by rules read from the current best's counters. No model, no randomness.

A variant declares `SPACE = dict(NAME=[values], ...)` and optionally `RESTRICT = ["expr", ...]` (both read
with ast by ops.read_space). A neighbour moves one parameter one step along its list (numbers in ascending
order). Restrictions are arithmetic, comparisons, `and`/`or`/`not` and min/max/abs over the parameters and the
variant's other config keys, evaluated on the syntax tree: nothing is eval()'d.

The rules (thresholds from analysis.THRESHOLDS); each one that fires is recorded with its metric and value:
  at_roofline      ≥ near_roofline_fraction of a roofline: stop, nothing left to win by tuning
  low_waves        grid smaller than the SMs, or under low_waves waves: more, smaller programs (tiles down)
  register_limited occupancy limited by registers, or spills: smaller tiles, or more warps
  latency_bound    SM and DRAM both below busy_pct: more parallelism (warps up, stages up, tiles down)
With no counters (the CPU interpreter, ncu failed) neighbours come in a fixed order: SPACE's keys as
written, each one step down, then one step up.
"""
from __future__ import annotations

import ast
import itertools
import json
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import analysis, shapeanalysis
from pipeline.config import read_text
from pipeline.errors import ConfigError
from pipeline.ops import Space

_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}
_CALLS = {"min": min, "max": max, "abs": abs}


def kind(param: str) -> str:
    """What a parameter's name says it sizes: tile (BLOCK*, *TILE*), warps (num_warps), stages (num_stages)."""
    if param == "num_warps":
        return "warps"
    if param == "num_stages":
        return "stages"
    return "tile" if re.search(r"BLOCK|TILE", param, re.I) else "other"


@dataclass(frozen=True)
class Restriction:
    index: int
    text: str
    tree: ast.Expression = field(repr=False, compare=False)


@dataclass(frozen=True)
class Tuning:
    """A SPACE with its restrictions checked and its numeric lists in ascending order."""
    space: Space
    values: dict[str, list[Any]]
    restrict: list[Restriction]

    def where(self, r: Restriction) -> str:
        return f"{self.space.file}:{self.space.restrict_line or self.space.line}: RESTRICT[{r.index}] {r.text!r}"


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def _check(node: ast.AST, names: set[str], where: str) -> None:
    """Refuse anything but arithmetic, comparisons, boolean logic, min/max/abs and known names."""
    for n in ast.walk(node):
        if isinstance(n, (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
                          ast.BinOp, ast.Compare, ast.Load)) or type(n) in _BIN or type(n) in _CMP:
            continue
        if isinstance(n, ast.Constant) and isinstance(n.value, (int, float, bool, str)):
            continue
        if isinstance(n, ast.Name):
            if n.id not in names and n.id not in _CALLS:
                raise ConfigError(f"{where}: unknown name '{n.id}' (parameters: {', '.join(sorted(names))})")
            continue
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _CALLS and not n.keywords:
            continue
        raise ConfigError(f"{where}: only numbers, parameter names, + - * / // % **, comparisons, and/or/not "
                          f"and min/max/abs are allowed, not {ast.unparse(n)!r}")


def tuning(space: Space, config: dict[str, Any]) -> Tuning:
    """`space` ready to search from `config` (the start's full config: its keys may appear in RESTRICT)."""
    names = set(space.params) | set(config)
    restrict = []
    for i, text in enumerate(space.restrict):
        where = f"{space.file}:{space.restrict_line}: RESTRICT[{i}] {text!r}"
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ConfigError(f"{where}: SyntaxError: {exc.msg}") from None
        _check(tree, names, where)
        restrict.append(Restriction(i, text, tree))
    values = {k: sorted(v) if _numeric(v) else list(v) for k, v in space.params.items()}
    return Tuning(space, values, restrict)


def _value(node: ast.AST, env: dict[str, Any]) -> Any:
    if isinstance(node, ast.Expression):
        return _value(node.body, env)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env[node.id]
    if isinstance(node, ast.UnaryOp):
        v = _value(node.operand, env)
        return not v if isinstance(node.op, ast.Not) else -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp):
        a, b = _value(node.left, env), _value(node.right, env)
        if isinstance(node.op, ast.Pow) and abs(b) > 64:     # a restriction must not hang the parent
            raise ValueError(f"exponent {b} too large")
        return _BIN[type(node.op)](a, b)
    if isinstance(node, ast.BoolOp):
        vals = (_value(v, env) for v in node.values)
        return all(vals) if isinstance(node.op, ast.And) else any(vals)
    if isinstance(node, ast.Compare):
        left = _value(node.left, env)
        for op, comp in zip(node.ops, node.comparators):
            right = _value(comp, env)
            if not _CMP[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        return _CALLS[node.func.id](*(_value(a, env) for a in node.args))
    raise ValueError(f"cannot evaluate {ast.unparse(node)}")


def violated(config: dict[str, Any], t: Tuning) -> Restriction | None:
    """The first restriction `config` breaks, or None. One that cannot be evaluated is a ConfigError."""
    for r in t.restrict:
        try:
            ok = _value(r.tree, config)
        except KeyError as exc:
            raise ConfigError(f"{t.where(r)}: {exc.args[0]} has no value in {config}") from None
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise ConfigError(f"{t.where(r)}: cannot evaluate at {config}: {exc}") from None
        if not ok:
            return r
    return None


@dataclass(frozen=True)
class Move:
    param: str
    direction: int          # -1: one step down its list, +1: up
    config: dict[str, Any]
    also: tuple[tuple[str, int], ...] = ()     # a two-parameter move's second (parameter, direction)

    @property
    def text(self) -> str:
        return " and ".join(f"{p} {'down' if d < 0 else 'up'} to {self.config[p]!r}"
                            for p, d in ((self.param, self.direction), *self.also))

    def moves(self, k: str, direction: int) -> bool:
        """Whether this move takes a parameter of kind `k` (search.kind) in `direction`."""
        return any(kind(p) == k and d == direction for p, d in ((self.param, self.direction), *self.also))


def _steps(config: dict[str, Any], t: Tuning) -> list[tuple[str, int, Any]]:
    """(parameter, direction, value) of every one-step change, in SPACE's order, down before up."""
    out = []
    for param, values in t.values.items():
        cur = config[param]
        if cur in values:
            i = values.index(cur)
            down, up = (values[i - 1] if i > 0 else None), (values[i + 1] if i + 1 < len(values) else None)
        elif _numeric(values) and isinstance(cur, (int, float)):
            down = max((v for v in values if v < cur), default=None)
            up = min((v for v in values if v > cur), default=None)
        else:
            down, up = None, None
        out += [(param, d, v) for d, v in ((-1, down), (1, up)) if v is not None]
    return out


REACHES = ("one parameter one step", "one parameter to any value", "two parameters one step each")


def neighbours(config: dict[str, Any], t: Tuning, reach: int = 1) -> list[Move]:
    """The moves of one reach (REACHES), each in the fixed order: SPACE's keys as written, down before up.
    1: one parameter one step. 2: one parameter to any other value of its list, nearest first (across a plateau
    of steps each within the tie). 3: two parameters one step each (the moves a restriction coupling two
    parameters, a tile and the warps that hold it, lets through only together)."""
    steps = _steps(config, t)
    if reach == 1:
        return [Move(p, d, {**config, p: v}) for p, d, v in steps]
    if reach == 2:
        far = []
        for param, values in t.values.items():
            if config[param] not in values:
                continue
            i = values.index(config[param])
            for dist in range(2, len(values)):
                far += [Move(param, d, {**config, param: values[j]}) for d, j in ((-1, i - dist), (1, i + dist))
                        if 0 <= j < len(values)]
        return sorted(far, key=lambda m: abs(t.values[m.param].index(m.config[m.param])
                                             - t.values[m.param].index(config[m.param])))
    return [Move(p, d, {**config, p: v, q: w}, ((q, e),))
            for i, (p, d, v) in enumerate(steps) for q, e, w in steps[i + 1:] if q != p]


@dataclass(frozen=True)
class Fired:
    rule: str
    metric: str
    value: str
    text: str
    prefers: tuple[tuple[str, int], ...] = ()     # (parameter kind, direction), most wanted first

    def as_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "metric": self.metric, "value": self.value, "text": self.text,
                "prefers": [f"{k} {'down' if d < 0 else 'up'}" for k, d in self.prefers]}


def rules(record: dict[str, Any], shape: dict[str, Any], env: dict[str, Any]) -> tuple[list[Fired], bool]:
    """The rules that fire on the current best's record at one shape, and whether it had counters."""
    fired: list[Fired] = []
    near = analysis.t("near_roofline_fraction")
    mem, comp = analysis.roofline_fractions(record, shape, env)
    for name, frac in (("memory", mem), ("compute", comp)):
        if frac is not None and frac >= near:
            fired.append(Fired("at_roofline", f"{name} roofline fraction", f"{frac:.0%}",
                               f"at {frac:.0%} of the {name} roofline (≥ {near:.0%}): stop"))
            return fired, analysis.dominant_kernel(record) is not None
    spills = [c for c in record.get("compiled") or [] if c.get("n_spills")]
    k = analysis.dominant_kernel(record)
    if k is None:
        if spills:
            fired.append(Fired("register_limited", "n_spills (Triton compile)", f"{spills[0]['n_spills']}",
                               f"{spills[0]['name']} spills registers", (("tile", -1), ("warps", 1))))
        return fired, False
    grid, waves, sms = analysis.m(k, "launch__grid_size"), analysis.m(k, analysis.WAVES), env.get("sm_count")
    low = analysis.t("low_waves")
    if grid is not None and sms and grid < sms:
        fired.append(Fired("low_waves", "launch__grid_size", f"{grid:,.0f}",
                           f"grid of {grid:,.0f} programs < {sms} SMs: more, smaller programs", (("tile", -1),)))
    elif waves is not None and waves < low:
        fired.append(Fired("low_waves", analysis.WAVES, f"{waves:.2f}",
                           f"{waves:.2f} waves per SM < {low:g}: more, smaller programs", (("tile", -1),)))
    limiter = analysis.occupancy_limiter(k)
    if limiter and limiter[0] == "registers":
        fired.append(Fired("register_limited", "launch__occupancy_limit_registers", f"{limiter[1]:g}",
                           f"registers allow {limiter[1]:g} blocks/SM where warps allow {limiter[2]:g}: "
                           "smaller tiles or more warps", (("tile", -1), ("warps", 1))))
    elif spills:
        fired.append(Fired("register_limited", "n_spills (Triton compile)", f"{spills[0]['n_spills']}",
                           f"{spills[0]['name']} spills registers: smaller tiles or more warps",
                           (("tile", -1), ("warps", 1))))
    bound = shapeanalysis.analyze_variant(record, shape, env).bound
    if bound.kind == "latency-bound":
        dram, _ = analysis.dram_pct_at_event_time(record, k)     # as classify() judged it
        fired.append(Fired("latency_bound", f"{analysis.SM}, {analysis.DRAM}",
                           f"SM {analysis.m(k, analysis.SM):.1f} %, DRAM {dram:.1f} %",
                           f"{bound.rule}: more parallelism", (("warps", 1), ("stages", 1), ("tile", -1))))
    return fired, True


def stops(fired: list[Fired]) -> Fired | None:
    return next((f for f in fired if f.rule == "at_roofline"), None)


def ordered(moves: list[Move], fired: list[Fired]) -> list[tuple[Move, str]]:
    """Moves a fired rule prefers first (the first rule's first preference first), the rest in fixed order;
    each with why it stands where it does."""
    wanted = [(f, p) for f in fired for p in f.prefers]

    def rank(m: Move) -> tuple[int, str]:
        for i, (f, (k, d)) in enumerate(wanted):
            if m.moves(k, d):
                return i, f"{f.rule} ({f.metric} = {f.value}): {k} {'down' if d < 0 else 'up'}"
        return len(wanted), "fixed order" if fired else "fixed order (no rule fired)"
    ranked = [(rank(m), n, m) for n, m in enumerate(moves)]
    ranked.sort(key=lambda r: (r[0][0], r[1]))
    return [(m, why) for (_, why), _, m in ranked]


def key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


@dataclass
class Proposal:
    candidates: list[tuple[dict[str, Any], str]]       # (config, why it was chosen now)
    restricted: list[tuple[dict[str, Any], str]]       # neighbours RESTRICT refused, with the restriction
    left: int                                           # allowed, unevaluated neighbours not taken this step
    reach: int = 1                                      # which of REACHES the candidates come from (1-based)


def propose(config: dict[str, Any], t: Tuning, fired: list[Fired], evaluated: set[str], limit: int) -> Proposal:
    """Up to `limit` unevaluated neighbours of `config` that RESTRICT allows, most wanted first, from the nearest
    reach (REACHES) that has any left. At the roofline (`stops`) only one-parameter moves (reaches 1 and 2)."""
    last = 2 if stops(fired) else len(REACHES)
    for reach in range(1, last + 1):
        picked, restricted = [], []
        for move, why in ordered(neighbours(config, t, reach), fired):
            if key(move.config) in evaluated:
                continue
            broken = violated(move.config, t)
            if broken is not None:
                restricted.append((move.config, f"RESTRICT[{broken.index}] {broken.text!r}"))
                continue
            picked.append((move.config, f"{move.text}: {why}"))
        if picked:
            break
    return Proposal(picked[:limit], restricted, max(0, len(picked) - limit), reach)


def ends(stop: Fired | None, proposed: bool) -> str | None:
    """Why the search ends, or None while `propose` has candidates. At the roofline it ends once every
    one-parameter neighbour is measured, rather than at once: on the H100 the first configuration over 90 % of the
    roofline was often 5 % slower than the space's best (rmsnorm L1-36: 92 % against 97 %), past the tie margin."""
    if proposed:
        return None
    if stop is not None:
        return f"{stop.rule}: {stop.metric} = {stop.value}, and every one-parameter neighbour measured"
    return f"no unevaluated neighbour left ({', '.join(REACHES)})"


def every_config(t: Tuning, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Every configuration of the space (on top of `base`'s other keys) that RESTRICT allows, in SPACE order."""
    out = []
    for values in itertools.product(*t.values.values()):
        config = {**base, **dict(zip(t.values, values))}
        if violated(config, t) is None:
            out.append(config)
    return out


def init_defaults(path: Path) -> dict[str, Any]:
    """Literal keyword defaults of ModelNew.__init__ (read, never run): a SPACE-only variant's starting point."""
    tree = ast.parse(read_text(path), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "ModelNew":
            for fn in node.body:
                if isinstance(fn, ast.FunctionDef) and fn.name == "__init__":
                    a = fn.args
                    pos = list(zip(a.args[len(a.args) - len(a.defaults):], a.defaults))
                    out = {}
                    for arg, default in [*pos, *zip(a.kwonlyargs, a.kw_defaults)]:
                        if default is None:
                            continue
                        try:
                            out[arg.arg] = ast.literal_eval(default)
                        except ValueError:
                            pass
                    return out
    return {}


def start(config: dict[str, Any], space: Space) -> dict[str, Any]:
    """The configuration the search starts from: the variant's config, then ModelNew's literal defaults."""
    defaults = init_defaults(Path(space.file))
    full = dict(config)
    missing = []
    for param in space.params:
        if param not in full:
            if param in defaults:
                full[param] = defaults[param]
            else:
                missing.append(param)
    if missing:
        raise ConfigError(f"{space.file}:{space.line}: no starting value for {', '.join(missing)}: give the variant "
                          "CONFIGS, or a literal default in ModelNew.__init__")
    return full


def _config_text(config: dict[str, Any]) -> str:
    if all(isinstance(k, str) and k.isidentifier() for k in config):
        return "dict(" + ", ".join(f"{k}={v!r}" for k, v in config.items()) + ")"
    return repr(config)


def with_config(source: str, config: dict[str, Any], filename: str) -> str:
    """`source` with `CONFIGS = [config]` in place of its CONFIGS (appended where it has none)."""
    return with_configs(source, [config], filename)


def with_configs(source: str, configs: list[dict[str, Any]], filename: str) -> str:
    """`source` with `CONFIGS = [configs...]` in place of its CONFIGS (appended where it has none)."""
    tree = ast.parse(source, filename=filename)
    line = "CONFIGS = [" + ",\n           ".join(_config_text(c) for c in configs) + "]\n"
    lines = source.splitlines(keepends=True)
    node = next((n for n in tree.body if isinstance(n, ast.Assign)
                 and any(isinstance(t, ast.Name) and t.id == "CONFIGS" for t in n.targets)), None)
    if node is None:
        return source + ("" if source.endswith("\n") else "\n") + line
    shared = [n for n in tree.body if n is not node and n.lineno <= node.end_lineno and n.end_lineno >= node.lineno]
    if node.col_offset or shared:
        raise ConfigError(f"{filename}:{node.lineno}: CONFIGS shares its lines with other code; give it lines "
                          "of its own so a configuration can be written in its place")
    return "".join(lines[:node.lineno - 1]) + line + "".join(lines[node.end_lineno:])
