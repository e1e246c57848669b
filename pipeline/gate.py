"""`python -m pipeline gate`: judge stored results against targets, in the spirit of `coverage --fail-under`.

Reads only results files, so it needs no GPU. Exit 0: every target met; 1: a target missed or a
regression; 2: the gate could not judge (no, corrupt, stale or incomplete results, profiling failed,
counters unavailable, a metric missing, no correct variant) — never a silent pass. Every verdict compares
the rounded figure it prints (`SM 9.3 % < 60 %`). Targets, the bound-aware rule and the regression rule:
docs/gate.md.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import analysis, compare, results, shapeanalysis
from pipeline.shapeanalysis import ShapeAnalysis, VariantAnalysis
from pipeline.config import Config, Shape, Targets, load_op
from pipeline.errors import ExitCode, ResultsError
from pipeline.records import ShapeRecord

PASS, FAIL, NA, ERROR = "pass", "FAIL", "n/a", "cannot judge"
COUNTERS = ("sm_throughput_min", "memory_throughput_min", "roofline_fraction_min", "warps_active_min")


@dataclass(frozen=True)
class Check:
    """One row of the verdict: a gated kernel (or a whole results file) × one target."""
    file: str
    op: str
    shape: str
    variant: str
    target: str
    value: str
    verdict: str
    reason: str
    bound: str = ""


def _rel(p: Path | str) -> str:
    return os.path.relpath(p, Path.cwd())


def _shown(value: float, digits: str = ".1f") -> float:
    """The value as printed: verdicts compare this, so they always agree with the table."""
    return float(format(value, digits))


def _profile_hint(op: str, shape: str) -> str:
    return f"re-run `make profile ARGS='--op {op} --shape {shape}'`"


def _ms(value: float) -> float:
    return _shown(value, ".4g")


def _compare(old: dict[str, Any], cur: dict[str, Any]) -> tuple[float, bool, bool, str]:
    """Median change in % and whether cur's IQR lies above / below old's, all as printed; the median text."""
    change = _shown((cur["median_ms"] / old["median_ms"] - 1) * 100)
    above, below = _ms(cur["p25_ms"]) > _ms(old["p75_ms"]), _ms(cur["p75_ms"]) < _ms(old["p25_ms"])
    return change, above, below, f"median {_ms(old['median_ms']):g} → {_ms(cur['median_ms']):g} ms ({change:+.1f} %)"


# ---------------------------------------------------------------- one kernel's targets

class _Kernel:
    """Judges one gated variant at one shape; each method returns a Check."""

    def __init__(self, ctx: dict[str, Any], va: VariantAnalysis, shape: ShapeRecord, t: Targets) -> None:
        self.ctx, self.v, self.shape, self.t = ctx, va.variant, shape, t
        self.k = va.kernel
        ok = va.variant.ncu_status == "ok"
        self.bound = va.bound if ok else None

    def row(self, target: str, value: str, verdict: str, reason: str) -> Check:
        return Check(self.ctx["file"], self.ctx["op"], self.shape["id"], self.v["name"], target, value, verdict,
                     reason, self.bound.kind if self.bound else "")

    def metric(self, target: str, name: str, label: str, minimum: float) -> Check:
        value = analysis.m(self.k, name)
        if value is None:
            listed = ", ".join((self.k or {}).get("missing") or []) or "none"
            return self.row(target, "—", ERROR, f"metric {name} missing from ncu kernel {(self.k or {}).get('name')} "
                                                f"(metrics ncu did not report: {listed}); add it to ncu.extra_metrics and "
                                                + _profile_hint(self.ctx["op"], self.shape["id"]))
        shown = _shown(value)
        ok = shown >= minimum
        return self.row(target, f"{shown:.1f} %", PASS if ok else FAIL,
                        f"{label} {shown:.1f} % {'≥' if ok else '<'} {minimum:g} %")

    def not_memory(self, target: str) -> Check:
        return self.row(target, "—", NA, f"not applicable: {self.bound.kind}; memory targets judge memory-bound "
                                         "kernels only")

    def sm(self) -> Check:
        target = f"sm_throughput_min ≥ {self.t.sm_throughput_min:g} %"
        kind = self.bound.kind
        if kind in ("memory-bound", "launch-bound") and not self.t.sm_target_strict:
            if kind == "memory-bound":
                dram = analysis.m(self.k, analysis.DRAM)
                at = f"{dram:.1f} % DRAM" if dram is not None else f"{analysis.m(self.k, analysis.MEM):.1f} % memory"
                why = f"memory-bound at {at}, judged by the memory targets instead"
            else:
                why = f"launch-bound ({self.bound.rule}), judge it by max_time_ms"
            sm = analysis.m(self.k, analysis.SM)
            return self.row(target, f"{sm:.1f} %" if sm is not None else "—", NA,
                            f"not applicable: {why} (sm_target_strict: true applies it anyway)")
        return self.metric(target, analysis.SM, "SM", self.t.sm_throughput_min)

    def memory(self) -> Check:
        target = f"memory_throughput_min ≥ {self.t.memory_throughput_min:g} %"
        if self.bound.kind != "memory-bound":
            return self.not_memory(target)
        return self.metric(target, analysis.MEM, "memory throughput", self.t.memory_throughput_min)

    def roofline(self) -> Check:
        minimum = round(self.t.roofline_fraction_min * 100, 6)
        target = f"roofline_fraction_min ≥ {minimum:g} % of copy"
        if self.bound.kind != "memory-bound":
            return self.not_memory(target)
        frac = analysis.fraction_of_copy(self.v, self.shape)
        if frac is None:
            return self.row(target, "—", ERROR, f"no device-copy timing at shape {self.shape['id']}: the fraction of "
                                                "copy bandwidth is unknown; " + _profile_hint(self.ctx["op"], self.shape["id"]))
        shown = _shown(frac * 100)
        ok = shown >= minimum
        return self.row(target, f"{shown:.1f} %", PASS if ok else FAIL,
                        f"{shown:.1f} % of device-copy bandwidth {'≥' if ok else '<'} {minimum:g} %")

    def time(self) -> Check:
        target = f"max_time_ms ≤ {self.t.max_time_ms:g} ms"
        shown = _shown(self.v["timing"]["median_ms"], ".4g")
        ok = shown <= self.t.max_time_ms
        return self.row(target, f"{shown:g} ms", PASS if ok else FAIL,
                        f"median {shown:g} ms {'≤' if ok else '>'} {self.t.max_time_ms:g} ms")

    def regression(self, base: dict[str, Any] | None, why_none: str, old_shape: dict[str, Any] | None,
                   label: str = "baseline") -> Check:
        limit = round(self.t.max_regression * 100, 6)
        target = f"max_regression ≤ +{limit:g} %" + ("" if label == "baseline" else f" vs {label}")
        if base is None:
            return self.row(target, "—", ERROR if why_none.startswith("!") else NA, why_none.lstrip("!"))
        found = compare.compare_timings(old_shape, base["timing"], self.shape, self.v["timing"],
                                        self.bound.kind if self.bound else None)
        if found is not None:
            return self._shift_row(target, found, limit)
        moved = []      # results without their repeats: the median and quartile rule below      # the controls: copy and torch eager, the same code in both runs
        for key, label in (("copy", "device copy"), ("reference", "torch eager")):
            old_t, cur_t = (old_shape.get(key) or {}).get("timing"), (self.shape.get(key) or {}).get("timing")
            if old_t and cur_t:
                change, above, below, text = _compare(old_t, cur_t)
                if abs(change) > limit and (above or below):
                    moved.append(f"{label} {text}, interquartile ranges apart")
        if moved:
            return self.row(target, "—", ERROR,
                            f"baseline not comparable: the controls moved at shape {self.shape['id']}: "
                            f"{'; '.join(moved)}; the conditions (runner, clocks, load) differ, so a change of "
                            "this kernel cannot be told from them: record the baseline on the same runner")
        cur, old = self.v["timing"], base["timing"]
        change, above, _, text = _compare(old, cur)
        text += (f", p25 {_ms(cur['p25_ms']):g} {'>' if above else '≤'} baseline p75 {_ms(old['p75_ms']):g} ms "
                 f"({cur['reps']} vs {old['reps']} reps)")
        if change > limit and above:
            return self.row(target, f"{change:+.1f} %", FAIL, f"regression: {text}: > +{limit:g} % and the "
                                                            "interquartile ranges do not overlap")
        if change > limit:
            return self.row(target, f"{change:+.1f} %", PASS, f"noise: {text}: > +{limit:g} %, but the "
                                                            "interquartile ranges overlap")
        return self.row(target, f"{change:+.1f} %", PASS, f"{text}: ≤ +{limit:g} %")

    def _shift_row(self, target: str, found: compare.Shift, limit: float) -> Check:
        """slower fails; unclear fails to judge when its estimate is past max_regression, else passes."""
        value, text = f"{(found.ratio - 1) * 100:+.1f} %", found.text()
        if found.verdict == "slower":
            return self.row(target, value, FAIL, f"regression: {text}")
        if found.verdict == "unclear" and (found.ratio - 1) * 100 > limit:
            return self.row(target, value, ERROR, f"cannot tell: {text}, beyond +{limit:g} %: re-run with more "
                                                  "repeats (timing.max_reps, timing.budget_ms)")
        return self.row(target, value, PASS, text)

    def judge(self, fresh: Check, baselines: list[tuple[str, tuple[Any, str, Any]]]) -> list[Check]:
        rows = [fresh]
        if fresh.verdict == ERROR:
            return rows
        t, ncu = self.t, self.v.ncu
        counters = [k for k in COUNTERS if getattr(t, k) > 0]
        if counters and self.bound is None:
            status = ncu.get("status", "missing")
            how = (" Counters unavailable: " if status == "permission-denied" else " ") + (ncu.get("error") or "")
            log = self.shape.ncu.get("log")
            rows.append(self.row("ncu profile", status, ERROR,
                                 f"profiling {status}: no ncu metrics for {', '.join(counters)}.{how.rstrip()}"
                                 + (f" (log: {log})" if log else "") + f"; then {_profile_hint(self.ctx['op'], self.shape['id'])}"))
        elif counters and self.bound.kind == "unknown" and (t.memory_throughput_min or t.roofline_fraction_min):
            rows.append(self.row("bound", "—", ERROR, f"cannot classify the kernel: {self.bound.rule}"))
            counters = [k for k in counters if k in ("sm_throughput_min", "warps_active_min")]
        if self.bound is not None:
            if "sm_throughput_min" in counters:
                rows.append(self.sm())
            if "memory_throughput_min" in counters:
                rows.append(self.memory())
            if "roofline_fraction_min" in counters:
                rows.append(self.roofline())
            if "warps_active_min" in counters:
                rows.append(self.metric(f"warps_active_min ≥ {t.warps_active_min:g} %", analysis.WARPS,
                                        "warps active", t.warps_active_min))
        if t.max_time_ms > 0:
            rows.append(self.time())
        for label, baseline in baselines:
            rows.append(self.regression(*baseline, label=label))
        if not any(r.verdict in (PASS, FAIL, ERROR) for r in rows[1:]):
            rows.append(self.row("any target", "—", ERROR,
                                 f"no target applies to this {self.bound.kind if self.bound else ''} kernel: every "
                                 "target is off or not applicable; set max_time_ms, warps_active_min or "
                                 "sm_target_strict: true for it (targets.variants)"))
        return rows


# ---------------------------------------------------------------- a results file

def _freshness(ctx: dict[str, Any], shape: dict[str, Any], records: list[dict[str, Any]], every: bool,
               repo: Path) -> tuple[str, str]:
    """Whether the sources that produced these records are the ones in the tree (stored sha256 vs file)."""
    files = [Path(v["file"]) for v in shape["variants"] if v.get("file")]
    op_dir = ctx["kernels_dir"] / ctx["op"]
    if not op_dir.is_dir():     # results of an op not in this tree: its reference sits beside its variants
        op_dir, every = (results.source_path(str(files[0]), repo, ctx["kernels_dir"], ctx["op"]).parent
                         if files else op_dir), False
    problems = []
    if every:   # the recommendation ranks every variant: a variant file with no record makes it incomplete
        listed = ctx["op_cfg"].op.variants
        stems = {v.get("stem") for v in shape["variants"]}
        for p in sorted(op_dir.glob("*.py")):
            if p.name != "reference.py" and not p.name.startswith("_") and (not listed or p.stem in listed) \
                    and p.stem not in stems:
                problems.append(f"{_rel(p)} was not profiled")
    hashed = [(results.source_path(v["file"], repo, ctx["kernels_dir"], ctx["op"]), v["source_sha256"])
              for v in records if v.get("source_sha256") and v.get("file")]
    if shape.get("reference_sha256"):
        hashed.append((op_dir / "reference.py", shape["reference_sha256"]))
    for path, digest in hashed:
        if not path.exists():
            problems.append(f"{_rel(path)} no longer exists")
        elif results.source_sha256(path) != digest:
            problems.append(f"{_rel(path)} changed")
    when = shape.get("measured_at") or "?"
    if problems:
        return ERROR, f"stale or incomplete results (measured {when}): {'; '.join(problems)}; " \
                      + _profile_hint(ctx["op"], shape["id"])
    if not hashed:
        return NA, ("not checked: no source_sha256 in these results (recorded before hashes were stored; "
                    "file times are not trusted after a git clone)")
    return PASS, f"sha256 of {len(hashed)} source files as measured at {when}"


def _pick(sa: ShapeAnalysis, name: str) -> tuple[dict[str, Any] | None, str, str]:
    """A named variant at a shape: its fastest correct config (by stem or full name), or why there is none."""
    shape = sa.shape
    best = sa.best_of(name)
    if best is not None:
        return best, "", ""
    cands = [v for v in shape["variants"] if v["name"] == name] or \
            [v for v in shape["variants"] if v.get("stem") == name]
    if not cands:
        return None, ERROR, f"variant {name} is not in the results at shape {shape['id']}"
    if all(v["status"] == "unsupported" for v in cands):
        return None, NA, f"unsupported at this shape: {cands[0].get('error', '')}"
    bad = next(v for v in cands if v["status"] not in ("ok", "unsupported"))
    return None, ERROR, f"{bad['name']} is {bad['status']} at shape {shape['id']}: {bad.get('error', '')}"


def _baseline_for(doc: dict[str, Any], base_docs: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, str]:
    same = results.same_op_and_gpu(doc, base_docs)
    if same:
        return same, ""
    same_op = [b for b in base_docs if b["op"] == doc["op"]]
    if same_op:
        return None, (f"!baseline measured on {same_op[0]['environment'].get('gpu_name')}, these results on "
                      f"{doc['environment'].get('gpu_name')}: timings of different GPUs are not comparable")
    return None, f"!the baseline has no results for op {doc['op']}"


def _gate_file(path: Path, doc: dict[str, Any], cfg: Config, repo: Path, shapes: list[str] | None,
               suite: str | None, variants: list[str] | None,
               against: list[tuple[str, list[dict[str, Any]]]]) -> list[Check]:
    kernels_dir = repo / cfg.kernels_dir
    op_dir = kernels_dir / doc["op"]
    op_cfg = load_op(cfg, op_dir / "op.yaml")
    ctx = {"file": _rel(path), "op": doc["op"], "op_cfg": op_cfg, "kernels_dir": kernels_dir,
           "env": doc["environment"]}
    present = {s["id"]: s for s in doc["shapes"]}
    if shapes:
        expected = shapes
    elif op_dir.is_dir():
        expected = [s.id for s in op_cfg.op.shape_list(suite) or ([] if suite else [Shape()])]
    else:
        expected = list(present)
    file_row = lambda sid, reason: Check(ctx["file"], doc["op"], sid, "—", "results", "—", ERROR, reason)  # noqa: E731
    checks = [file_row(sid, f"incomplete: shape {sid} is not in {ctx['file']}; " + _profile_hint(doc["op"], sid))
              for sid in expected if sid not in present]
    if suite and not expected:
        checks.append(file_row("—", f"op {doc['op']} defines no shape suite '{suite}'"))
    bases = [(label, *_baseline_for(doc, docs)) for label, docs in against]
    wanted = variants or op_cfg.targets.gate
    for sid in (s for s in expected if s in present):
        shape = present[sid]
        sa = shapeanalysis.analyze_shape(shape, ctx["env"])
        if wanted:
            picked = [(n, *_pick(sa, n)) for n in wanted]
        else:
            rec = sa.recommendation
            statuses = ", ".join(sorted({f"{v['status']}" for v in shape["variants"]})) or "no variants"
            picked = [("recommended", rec.variant if rec else None, ERROR,
                       f"no correct variant at shape {sid} (statuses: {statuses}); nothing to recommend or gate")]
        records = [v for _, v, _, _ in picked if v is not None]
        fresh = _freshness(ctx, shape, shape["variants"] if not wanted else records, not wanted, repo)
        for name, variant, verdict, reason in picked:
            if variant is None:
                checks.append(Check(ctx["file"], doc["op"], sid, name, "variant", "—", verdict, reason))
                continue
            kernel = _Kernel(ctx, sa.of(variant), sa.shape,
                             op_cfg.targets.for_variant(variant["name"], variant.get("stem", "")))
            baselines = []
            for label, base_doc, base_why in bases:
                old = next((s for s in (base_doc or {}).get("shapes", []) if s["id"] == sid), None)
                ov = next((v for v in (old or {}).get("variants", []) if v["name"] == variant["name"]), None)
                why = base_why or (f"no {label}: shape {sid} is not in the {label} (new shape)" if old is None else
                                   f"no {label}: {variant['name']} is not in the {label} (new variant)" if ov is None
                                   else f"no {label}: it is {ov['status']} there, without a timing")
                baselines.append((label, (ov if ov and ov["status"] == "ok" and ov.get("timing") and not base_why
                                          else None, why, old)))
            checks += kernel.judge(kernel.row("fresh sources", "—", *fresh), baselines)
    return checks


def evaluate(cfg: Config, repo: Path, paths: list[Path] | None = None, *, ops: list[str] | None = None,
             shapes: list[str] | None = None, suite: str | None = None, variants: list[str] | None = None,
             baseline: Path | None = None, reference: Path | None = None) -> list[Check]:
    """Every check of every gated kernel in `paths` (default: all results files under profiles_dir), with
    regressions against `baseline` (the last run) and `reference` (a fixed run: small slowdowns that each
    pass against the last run cannot add up past it)."""
    checks: list[Check] = []
    err = lambda where, reason, op="—": Check(where, op, "—", "—", "results", "—", ERROR, reason)  # noqa: E731
    if paths is None:
        profiles_dir, kernels_dir = repo / cfg.profiles_dir, repo / cfg.kernels_dir
        paths = [p for p in results.find_all(profiles_dir) if not ops or p.parent.name in map(results.slug, ops)]
        names = sorted(p.name for p in kernels_dir.glob("*") if (p / "reference.py").exists())
        for op in (o for o in (ops or names) if results.slug(o) not in {p.parent.name for p in paths}):
            checks.append(err(_rel(profiles_dir), f"no results for op {op} under {_rel(profiles_dir)}; run "
                                                  f"`make profile ARGS='--op {op}'` first", op))
        if not paths and not checks:
            checks.append(err(_rel(profiles_dir), f"no results files under {_rel(profiles_dir)}; run `make profile`"))
    against: list[tuple[str, list[dict[str, Any]]]] = []
    for label, where in (("baseline", baseline), ("reference run", reference)):
        if where is None:
            continue
        files = results.files_at(where)
        try:
            against.append((label, [results.load(f) for f in files]))
        except ResultsError as exc:
            checks.append(err(_rel(where), f"{label}: {exc}"))
        if not files:
            checks.append(err(_rel(where), f"{label}: no results files under {_rel(where)}"))
    for path in paths:
        try:
            doc = results.load(path)
        except ResultsError as exc:
            checks.append(err(_rel(path), f"{exc}"))
            continue
        if not ops or doc["op"] in ops:
            checks += _gate_file(path, doc, cfg, repo, shapes, suite, variants, against)
    if not any(c.verdict != NA and c.target != "fresh sources" for c in checks):
        checks.append(err("—", "nothing was judged: no gated kernel at the selected ops, shapes and variants "
                               "has a target that applies"))
    return checks


def exit_code(checks: list[Check]) -> ExitCode:
    """2 when anything could not be judged (the verdict is incomplete), else 1 on any miss, else 0."""
    verdicts = {c.verdict for c in checks}
    return ExitCode.CANNOT_JUDGE if ERROR in verdicts else ExitCode.TARGET_MISSED if FAIL in verdicts else ExitCode.OK
