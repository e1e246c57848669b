"""`optimize`: a measured loop over the optimisation stages of pipeline/stages.py.

Starting from the current recommendation (or `--from`), each stage runs steps. A step measures the current
best on the tuning shapes with the stage's metric set (on a GPU: the `profile` path, ncu included; on
`--device cpu`: verify and time under the Triton interpreter, no counters), asks the proposer for candidates,
checks them statically (ingest's rules), and measures them beside the current best through the very same
machinery (`profiling.run`, its worker the only process that imports them). A candidate is promoted only when
it is `ok` (correct on every seed, not `suspect`) on every tuning shape, faster than the current best beyond
the tie (`judge`), and `ok` on every held-out shape, which the proposer never sees. A promoted candidate
becomes `kernels/<op>/opt_<stage>_s<step>.py`.

Everything lands in `profiles/<gpu>/<op>/optimize/<stamp>/`: `log.json` (each finished step: the current
best, the rules or the prompt that led to it, every candidate's verdict and why), one folder per step
(`<stage>/s<k>/`: prompt.txt, proposer.log, candidates/, results snapshots) and `measure/`, the profiles
folder the steps measure into. `log.json` is replaced whole after each step, so an interrupt keeps every
finished step; the next run with the same flags resumes the newest unfinished run.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from rich.markup import escape

from pipeline import host, ingest, optimize_options, optimize_page, profiling, proposer, recommend, results, search
from pipeline import ops as ops_mod
from pipeline.config import Config, read_text
from pipeline.errors import ConfigError, NoGpuError, PipelineError, ResultsError, SelectionError
from pipeline.ops import Op, Variant
from pipeline.optimize_options import Options
from pipeline.stages import STAGES, Stage

Say = Callable[[str], None]
SCHEMA, SCHEMA_VERSION = "pipeline-optimize", 1
LOG = optimize_page.LOG
CPU_NOTE = ("--device cpu: the Triton interpreter has no ncu counters; the loop runs on verified timings only "
            "(search: neighbours in fixed order)")
CPU_PROMPT_NOTE = "measured under the Triton interpreter on the CPU, which has no ncu counters: judge by the timings"


@dataclasses.dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str
    speedup: float | None = None     # geometric mean over the tuning shapes of best median / candidate median


def judge(best: dict[str, dict[str, Any]], cand: dict[str, dict[str, Any]], shapes: list[str]) -> Verdict:
    """A candidate wins on the tuning shapes when it is `ok` on each, slower beyond the tie on none
    (recommend.tied: quartiles overlap or medians within TIE_MARGIN), apart from the best on at least one,
    and faster than the best by more than TIE_MARGIN in geometric mean."""
    for sid in shapes:
        c = cand.get(sid)
        if c is None or c.get("status") != "ok":
            status = c.get("status") if c else "not measured"
            return Verdict(False, f"{status} at {sid}" + (f": {c.get('error')}" if c and c.get("error") else ""))
        if not c.get("timing"):
            return Verdict(False, f"not timed at {sid}")
    ratios, apart = [], False
    for sid in shapes:
        bt, ct = best[sid]["timing"], cand[sid]["timing"]
        ratio, tie = bt["median_ms"] / ct["median_ms"], recommend.tied(bt, ct)
        if ratio < 1 and not tie:
            return Verdict(False, f"slower at {sid}: {ct['median_ms']:.4g} ms against {bt['median_ms']:.4g} ms",
                           ratio)
        apart |= not tie
        ratios.append(ratio)
    speedup = math.prod(ratios) ** (1 / len(ratios))
    if not apart or speedup <= 1 + recommend.TIE_MARGIN:
        return Verdict(False, f"not faster beyond the tie: {speedup:.3f}× the current best (needs > "
                              f"{1 + recommend.TIE_MARGIN:.2f}× and quartiles apart on a shape)", speedup)
    return Verdict(True, f"{speedup:.2f}× faster than the current best", speedup)


def held_out(best: dict[str, dict[str, Any]], cand: dict[str, dict[str, Any]], shapes: list[str]) -> str | None:
    """Why a candidate fails the held-out shapes, or None: it must be `ok` on each, except `unsupported` where
    the current best is not `ok` either."""
    for sid in shapes:
        c, b = cand.get(sid) or {}, best.get(sid) or {}
        if c.get("status") == "ok" or (c.get("status") == "unsupported" and b.get("status") != "ok"):
            continue
        return f"held-out shape {sid}: {c.get('status', 'not measured')}" + \
            (f": {c['error']}" if c.get("error") else "")
    return None


def _read_log(path: Path) -> dict[str, Any]:
    try:
        log = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: not readable JSON ({exc}); move the folder away to start afresh") from None
    if not isinstance(log, dict) or log.get("schema") != SCHEMA or log.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(f"{path}: not an optimize log of schema {SCHEMA} version {SCHEMA_VERSION}")
    return log


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", text.lower()).strip("_") or "candidate"


def _best_variant(op: Op, best: dict[str, Any]) -> Variant:
    """The log's current best as a Variant, read again from its file (never imported)."""
    path = Path(best["file"])
    if not path.exists():
        raise SelectionError(f"{path}: the current best {best['name']} of this run is gone; restore it or --fresh")
    for v in ops_mod.read_variants(path, op.config.op.baseline):
        if v.name == best["name"] and not v.problem:
            return v
    raise SelectionError(f"{path}: no longer holds the current best {best['name']} of this run; restore it or --fresh")


def _space(v: Variant) -> ops_mod.Space:
    space = ops_mod.read_space(Path(v.file))
    if space is None:
        raise ConfigError(f"{v.file}: no SPACE; the search proposer needs the variant to declare its space, e.g. "
                          "SPACE = dict(BLOCK=[64, 128, 256], num_warps=[2, 4, 8])")
    return space


def _as_best(v: Variant) -> dict[str, Any]:
    return {"name": v.name, "file": str(Path(v.file).resolve()), "stem": v.stem, "config": v.config}


def _timing(rec: dict[str, Any]) -> dict[str, Any] | None:
    t = rec.get("timing")
    return {k: t[k] for k in ("median_ms", "p25_ms", "p75_ms") if k in t} if t else None


class Loop:
    """One optimisation run: its history folder, its log, and the steps still to take."""

    def __init__(self, root: Path, cfg: Config, op: Op, opts: Options, tuning: list[str], holdout: list[str],
                 gpu: str, folder: Path, log: dict[str, Any], say: Say):
        self.root, self.cfg, self.op, self.opts, self.gpu, self.dir, self.log = root, cfg, op, opts, gpu, folder, log
        self.tuning, self.holdout, self.say = tuning, holdout, say
        self.measure_cfg = dataclasses.replace(cfg, profiles_dir=str(folder / "measure"))

    # --- measuring: the profile path, into this run's own profiles folder

    def measure(self, variants: list[Variant], shapes: list[str], stage: Stage | None) -> dict[str, Any]:
        op = dataclasses.replace(self.op, variants=variants)
        if self.opts.device == "cuda" and stage is not None:
            metrics = list(dict.fromkeys([*op.config.ncu.metrics, *stage.metrics()]))
            op = dataclasses.replace(op, config=dataclasses.replace(
                op.config, ncu=dataclasses.replace(op.config.ncu, metrics=metrics)))
        profiling.run([op], self.measure_cfg, shapes, True, self.say, device=self.opts.device, root=self.root,
                      gpu_model=self.gpu if self.opts.device == "cuda" else None)
        return results.load(results.path_for(Path(self.measure_cfg.profiles_dir), self.gpu, op.name))

    @staticmethod
    def records(doc: dict[str, Any], shapes: list[str], name: str) -> dict[str, dict[str, Any]]:
        """`name`'s record at each of `shapes`; a shape the run skipped reads `not measured`."""
        stored = {s["id"]: s for s in doc["shapes"]}
        missing = {"status": "not measured"}
        return {sid: next((v for v in (stored.get(sid) or {}).get("variants", []) if v["name"] == name), missing)
                for sid in shapes}

    def _save(self) -> None:
        self.log["updated"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        results.write_atomic(self.dir / LOG, json.dumps(self.log, indent=1, default=str) + "\n")

    def _mark_written(self, target: Path) -> None:
        """Note a file this run is about to place in the op, in the log on disk too (whose steps stay as they
        were): a rerun after an interrupt right here may then overwrite it."""
        disk = _read_log(self.dir / LOG)
        for log in (disk, self.log):
            log["written"] = sorted({*log.get("written", []), str(target)})
        results.write_atomic(self.dir / LOG, json.dumps(disk, indent=1, default=str) + "\n")

    def _rel(self, path: Path) -> str:
        return os.path.relpath(path, self.dir)

    # --- proposing

    def _search(self, best: Variant, rec: dict[str, Any], doc: dict[str, Any], sdir: Path, tag: str,
                step: dict[str, Any]) -> list[tuple[Path, str]]:
        space = _space(best)
        config = search.start(best.config, space)
        tuned = search.tuning(space, config)
        evaluated = set(self.log.setdefault("evaluated", []))
        evaluated.add(search.key(config))
        self.log["evaluated"] = sorted(evaluated)
        shape = next(s for s in doc["shapes"] if s["id"] == self.tuning[0])
        fired, counters = search.rules(rec, shape, doc["environment"])
        stop = search.stops(fired)
        room = min(self.opts.batch, self.log["budget"] - self.log["spent"])
        prop = search.propose(config, tuned, fired, evaluated, room)
        step["proposer"] = {
            "kind": "search", "from": config, "counters": counters, "rules": [f.as_dict() for f in fired],
            "order": "rules" if fired else ("fixed (no counters)" if not counters else "fixed (no rule fired)"),
            "stop": stop.as_dict() if stop else None, "reach": search.REACHES[prop.reach - 1],
            "restricted": [{"config": c, "by": why} for c, why in prop.restricted], "left": prop.left}
        ended = search.ends(stop, bool(prop.candidates))
        if ended:
            step["why_ended"] = ended
            return []
        source = read_text(Path(best.file))
        out = []
        for i, (cfg, why) in enumerate(prop.candidates, 1):
            path = sdir / "candidates" / f"{tag}_c{i}.py"
            path.write_text(search.with_config(source, cfg, best.file))
            out.append((path, why))
        return out

    def _cmd(self, best: Variant, recs: dict[str, dict[str, Any]], doc: dict[str, Any], stage: Stage, sdir: Path,
             tag: str, step: dict[str, Any]) -> list[tuple[Path, str]]:
        note = CPU_PROMPT_NOTE if self.opts.device == "cpu" else ""
        prompt = proposer.stage_prompt(doc, self.tuning, recs, Path(best.file), best.config, stage, self.root,
                                       Path(self.cfg.kernels_dir), note)
        (sdir / "prompt.txt").write_text(prompt)
        out = sdir / "proposed"
        out.mkdir()
        env = {"KERNEL_PIPELINE_OP": self.op.name, "KERNEL_PIPELINE_STAGE": stage.name,
               "KERNEL_PIPELINE_STEP": str(step["step"]), "KERNEL_PIPELINE_BEST": best.file,
               "KERNEL_PIPELINE_MAX": str(self.log["budget"] - self.log["spent"])}
        code, wall = proposer.run_proposer(self.opts.command, prompt, out, env, self.opts.timeout,
                                           sdir / "proposer.log", sdir)
        step["prompt"] = self._rel(sdir / "prompt.txt")
        step["proposer"] = {"kind": "cmd", "command": self.opts.command, "exit_code": code, "wall_s": wall,
                            "log": self._rel(sdir / "proposer.log")}
        if code != 0:
            why = f"killed after {self.opts.timeout:g} s" if code is None else f"exited with code {code}"
            step["proposer"]["failed"] = why
            step["why_ended"] = f"proposer {why} (see {step['proposer']['log']}); its files are not used"
            return []
        written = sorted(p for p in out.iterdir() if p.is_file())
        ignored = [p.name for p in written if p.suffix != ".py" or p.name.startswith(("_", "."))]
        if ignored:
            step["proposer"]["ignored"] = ignored
        found = []
        for p in (p for p in written if p.name not in ignored):
            target, n = sdir / "candidates" / f"{tag}_{_slug(p.stem)}.py", 1
            while target.exists():        # two names of one slug (Fast.py, fast.py)
                n += 1
                target = target.with_name(f"{tag}_{_slug(p.stem)}_{n}.py")
            shutil.copyfile(p, target)
            found.append((target, f"written by the proposer as {p.name}"))
        return found

    # --- one step

    def step(self, stage: Stage, k: int) -> dict[str, Any]:
        from pipeline import export     # matplotlib, through the report: only for the commands that draw
        sdir = self.dir / stage.name / f"s{k}"
        if sdir.exists():            # an attempt an interrupt cut short: it is taken again whole
            shutil.rmtree(sdir)
        (sdir / "candidates").mkdir(parents=True)
        tag = f"{stage.name}_s{k}"
        best = _best_variant(self.op, self.log["best"])
        self.say(f"[bold]{escape(stage.name)} s{k}[/]: current best {escape(best.name)}")
        doc = self.measure([best], self.tuning, stage)
        results.write_atomic(sdir / "best.results.json", json.dumps(doc, indent=1) + "\n")
        recs = self.records(doc, self.tuning, best.name)
        for sid, r in recs.items():
            if r.get("status") != "ok":
                raise PipelineError(f"the current best {best.name} is {r.get('status')} at {sid}"
                                    + (f": {r.get('error')}" if r.get("error") else "")
                                    + "; optimize starts from a correct variant (--from NAME)")
        first = recs[self.tuning[0]]
        counters = bool((first.get("ncu") or {}).get("kernels"))
        step: dict[str, Any] = {
            "stage": stage.name, "step": k, "dir": self._rel(sdir), "best": best.name,
            "best_timing": {sid: _timing(r) for sid, r in recs.items()},
            "counters": export.ncu_json(first, stage.metrics()) if counters else None,
            "note": None if counters else (CPU_NOTE if self.opts.device == "cpu" else
                                           f"no ncu counters on the best: {(first.get('ncu') or {}).get('status')}"),
            "candidates": [], "promoted": None, "ends_stage": False, "why_ended": None}
        if self.opts.proposer == "search":
            proposed = self._search(best, first, doc, sdir, tag, step)
        else:
            proposed = self._cmd(best, recs, doc, stage, sdir, tag, step)
        self._judge_all(best, proposed, stage, sdir, step)
        return step

    def _static(self, path: Path, best: Variant) -> tuple[list[str], list[Variant]]:
        try:
            source = read_text(path)
        except ConfigError as exc:
            return [str(exc)], []
        found = ingest.problems(source, path.name)
        if not found and source == read_text(Path(best.file)):
            found = ["the same source as the current best"]
        if found:
            return found, []
        variants = ops_mod.read_variants(path, "")
        bad = [v.problem for v in variants if v.problem]
        return (bad, []) if bad else ([], variants)

    def _judge_all(self, best: Variant, proposed: list[tuple[Path, str]], stage: Stage, sdir: Path,
                   step: dict[str, Any]) -> None:
        cands: list[dict[str, Any]] = step["candidates"]
        to_measure: list[Variant] = []
        for path, why in proposed:
            problems, variants = self._static(path, best)
            if problems:
                cands.append({"name": path.stem, "file": self._rel(path), "origin": why, "verdict": "refused",
                              "reason": "static check: " + "; ".join(problems), "static": problems})
                continue
            for v in variants:
                entry = {"name": v.name, "file": self._rel(path), "origin": why, "config": v.config, "static": []}
                if self.log["spent"] + len(to_measure) >= self.log["budget"]:
                    entry.update(verdict="not-measured", reason=f"budget spent ({self.log['budget']} candidates)")
                else:
                    to_measure.append(v)
                    if self.opts.proposer == "search":
                        self.log["evaluated"] = sorted({*self.log["evaluated"], search.key(v.config)})
                cands.append(entry)
        by_name = {c["name"]: c for c in cands}
        if to_measure:
            doc = self.measure([best, *to_measure], self.tuning, stage)
            results.write_atomic(sdir / "tuning.results.json", json.dumps(doc, indent=1) + "\n")
            self.log["spent"] += len(to_measure)
            best_recs = self.records(doc, self.tuning, best.name)
            step["best_timing"] = {sid: _timing(r) for sid, r in best_recs.items()}     # timed beside them
            untimed = [f"{sid}: {r.get('status')} {r.get('error') or ''}".strip() for sid, r in best_recs.items()
                       if r.get("status") != "ok" or not r.get("timing")]
            winners = []
            for v in to_measure:
                recs = self.records(doc, self.tuning, v.name)
                verdict = Verdict(False, f"the current best was not timed beside it ({'; '.join(untimed)})") \
                    if untimed else judge(best_recs, recs, self.tuning)
                entry = by_name[v.name]
                entry.update(status={sid: r.get("status") for sid, r in recs.items()},
                             timing={sid: _timing(r) for sid, r in recs.items()}, speedup=verdict.speedup)
                if verdict.ok:
                    winners.append((verdict.speedup, v))
                    entry["tuning"] = verdict.reason
                else:
                    entry.update(verdict="rejected", reason=verdict.reason)
            winners.sort(key=lambda w: -w[0])
            chosen = self._holdout(best, [v for _, v in winners], sdir, by_name)
            if chosen is not None:
                self._promote(chosen, by_name[chosen.name], stage, step, sdir)
        promoted = step["promoted"] is not None
        # the search goes on until `propose` has nothing left (search.ends); a cmd proposer's stage ends at the
        # first step that promotes nothing
        ended = not proposed or (self.opts.proposer != "search" and not promoted)
        if not step["why_ended"] and ended:
            step["why_ended"] = "no candidates" if not proposed else "no candidate promoted"
        step["ends_stage"] = ended or bool(step["why_ended"])

    def _holdout(self, best: Variant, winners: list[Variant], sdir: Path,
                 by_name: dict[str, dict[str, Any]]) -> Variant | None:
        if not winners:
            return None
        doc = self.measure([best, *winners], self.holdout, None)
        results.write_atomic(sdir / "holdout.results.json", json.dumps(doc, indent=1) + "\n")
        best_recs = self.records(doc, self.holdout, best.name)
        chosen = None
        for v in winners:           # fastest first
            recs = self.records(doc, self.holdout, v.name)
            entry = by_name[v.name]
            entry["holdout"] = {sid: r.get("status") for sid, r in recs.items()}
            failed = held_out(best_recs, recs, self.holdout)
            if failed:
                entry.update(verdict="rejected", reason=f"{entry['tuning']}, but {failed}")
            elif chosen is None:
                chosen = v
            else:
                entry.update(verdict="rejected", reason=f"{entry['tuning']} and correct on the held-out shapes, "
                                                        f"but {chosen.name} is faster")
        return chosen

    def _promote(self, v: Variant, entry: dict[str, Any], stage: Stage, step: dict[str, Any], sdir: Path) -> None:
        name = f"opt_{stage.name}_s{step['step']}"
        target = self.op.dir / f"{name}.py"
        if target.exists() and str(target) not in self.log["written"]:      # not this run's: never overwritten
            name = f"{name}_{_slug(self.dir.name)}"
            target = self.op.dir / f"{name}.py"
        self._mark_written(target)
        source = read_text(Path(v.file))
        if len(ops_mod.read_variants(Path(v.file), "")) > 1:    # only the winning config of a CONFIGS list
            source = search.with_config(source, v.config, v.file)
        staged = sdir / "promoted.py"
        staged.write_text(source)
        placed = ingest.add_variant(self.op, staged, name, force=True)
        new = next(x for x in ops_mod.read_variants(placed, self.op.config.op.baseline) if x.config == v.config)
        entry.update(verdict="promoted", reason=f"{entry['tuning']}; correct on every held-out shape "
                                                f"({', '.join(self.holdout)})", promoted_as=str(placed))
        step["promoted"] = new.name
        self.log["best"] = _as_best(new)
        self.log.setdefault("promoted", []).append({"stage": stage.name, "step": step["step"], "variant": new.name,
                                                    "file": str(placed), "speedup": entry.get("speedup")})

    # --- the run

    def run(self) -> None:
        stages = self.opts.stages
        pos = self.log.get("position") or {"stage": stages[0], "step": 1}
        i, k = stages.index(pos["stage"]), pos["step"]
        while i < len(stages):
            if self.log["spent"] >= self.log["budget"]:
                self.log["ended"] = f"budget spent: {self.log['spent']} of {self.log['budget']} candidates measured"
                break
            t0 = time.time()
            step = self.step(STAGES[stages[i]], k)
            step["wall_s"] = round(time.time() - t0, 2)   # measuring the best and every candidate: the page's cost column
            (self.dir / step["dir"] / "step.json").write_text(json.dumps(step, indent=1, default=str) + "\n")
            self.log["steps"].append(step)
            self._report(step)
            i, k = (i + 1, 1) if step["ends_stage"] else (i, k + 1)
            self.log["position"] = {"stage": stages[i], "step": k} if i < len(stages) else None
            self._save()
        self.log.setdefault("ended", "every stage ran")
        self.log["finished"] = True
        self.log["position"] = None
        self._save()

    def _report(self, step: dict[str, Any]) -> None:
        p = step.get("proposer") or {}
        if p.get("kind") == "search":
            rules = "; ".join(f"{r['rule']} ({r['metric']} = {r['value']})" for r in p["rules"]) or "none fired"
            self.say(f"  rules: {escape(rules)}; order: {escape(p['order'])}")
        for c in step["candidates"]:
            mark = {"promoted": "[green]✓ promoted[/]", "rejected": "[red]✗ rejected[/]",
                    "refused": "[red]✗ refused[/]"}.get(c["verdict"], f"[yellow]· {c['verdict']}[/]")
            self.say(f"  {mark} {escape(c['name'])}: {escape(c['reason'])}")
        if step["why_ended"]:
            self.say(f"  {escape(step['stage'])} ends: {escape(step['why_ended'])}")


def _open(base: Path, signature: dict[str, Any], opts: Options) -> tuple[Path, dict[str, Any] | None]:
    """The run folder to use and its log: the newest unfinished run with these flags, else a new folder."""
    runs = sorted(p.parent for p in base.glob(f"*/{LOG}")) if base.is_dir() else []
    newest = runs[-1] if runs else None
    log = _read_log(newest / LOG) if newest else None
    if log is not None and not log.get("finished") and not opts.fresh:
        if log.get("signature") != signature:
            old = log.get("signature") or {}
            diff = ", ".join(f"{k} {old.get(k)!r} (now {v!r})" for k, v in signature.items() if old.get(k) != v)
            raise SelectionError(f"{newest / LOG}: the unfinished run there was started with {diff}; pass the same "
                                 "flags to resume it, or --fresh to start a new run")
        return newest, log
    if opts.resume:
        raise SelectionError(f"nothing to resume under {base}: "
                             + (f"the newest run, {newest.name}, finished" if newest else "no run yet"))
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    folder, n = base / stamp, 1
    while folder.exists():
        n += 1
        folder = base / f"{stamp}-{n}"
    return folder, None


def command(args: argparse.Namespace, root: Path, cfg: Config, say: Say) -> int:
    """`optimize`: exit 0 when the run ended (promoted or not), 2 bad input, 3 no GPU for --device cuda,
    130 interrupted (finished steps are kept; the next run resumes)."""
    opts = optimize_options.options(args)
    (op,) = ops_mod.discover(cfg, root, [opts.op])
    tuning, holdout = optimize_options.split_shapes(op, opts)
    if opts.device == "cuda":
        present, why = host.gpu_present()
        if not present:
            raise NoGpuError(f"optimize --device cuda needs an NVIDIA GPU ({why}); --device cpu runs the loop under "
                             "the Triton interpreter on timings only")
    gpu = host.key_facts(opts.device, "")["gpu_name"]
    profiles = Path(cfg.profiles_dir)
    base = profiles / results.slug(gpu) / results.slug(op.name) / "optimize"
    signature = {"op": op.name, "device": opts.device, "proposer": opts.proposer, "command": opts.command,
                 "tuning": tuning, "holdout": holdout, "stages": opts.stages}
    folder, log = _open(base, signature, opts)
    if log is None:
        start, how = (optimize_options.find(op, opts.start, "--from"), "--from") if opts.start else \
            optimize_options.recommended(op, profiles, gpu, tuning[0], opts.device)
        if opts.proposer == "search":        # a missing or broken SPACE stops the run before any measuring
            space = _space(start)
            search.tuning(space, search.start(start.config, space))
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        log = {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "op": op.name, "gpu": gpu,
               "signature": signature, "started": now, "finished": False, "budget": opts.budget, "spent": 0,
               "note": CPU_NOTE if opts.device == "cpu" else None,
               "start": {**_as_best(start), "how": how}, "best": _as_best(start), "evaluated": [],
               "promoted": [], "written": [], "position": None, "steps": []}
        folder.mkdir(parents=True)
        results.write_atomic(folder / LOG, json.dumps(log, indent=1, default=str) + "\n")
        say(f"optimize {escape(op.name)}: from {escape(start.name)} ({escape(how)}); tuning on "
            f"{escape(', '.join(tuning))}, held out {escape(', '.join(holdout))}; history in {escape(str(folder))}")
    else:
        log["budget"] = opts.budget
        say(f"optimize {escape(op.name)}: resuming {escape(str(folder))} at "
            f"{escape(str((log.get('position') or {}).get('stage')))} s{(log.get('position') or {}).get('step')} "
            f"({len(log['steps'])} step(s) done, {log['spent']} candidate(s) measured)")
    if opts.device == "cpu":
        say(f"[yellow]{escape(CPU_NOTE)}[/]")
    loop = Loop(root, cfg, op, opts, tuning, holdout, gpu, folder, log, say)
    try:
        loop.run()
    except KeyboardInterrupt:
        say(f"[yellow]optimize interrupted[/]: {len(log['steps'])} finished step(s) kept in {escape(str(folder))}; "
            "run the same command again to resume")
        raise
    promoted = log.get("promoted") or []
    say(f"optimize {escape(op.name)}: {escape(log['ended'])}; best {escape(log['best']['name'])}"
        + (f" ({len(promoted)} promotion(s): " + ", ".join(escape(p["variant"]) for p in promoted) + ")"
           if promoted else " (nothing promoted)")
        + f"; history: {escape(str(folder / LOG))}")
    if promoted and op.config.op.variants:
        say(f"[yellow]{escape(str(op.dir / 'op.yaml'))} lists `variants:`; add "
            f"{', '.join(Path(p['file']).stem for p in promoted)} there for `profile` to see them[/]")
    return 0
