"""`python -m pipeline gate` on recorded H100 results: exit codes and the messages behind them.

Every measurement here is a real recording: the committed profiles/ and tests/fixtures/profiles/, and the
gate fixtures of tests/fixtures/gate/ (`bash tests/fixtures/gate/record.sh` on a GPU machine):
  base, rerun  `candidate` v1 at L1-36, recorded twice in independent processes (noise only)
  regressed    `candidate` v2 at L1-36: the same variant after a change that made it ~10 % slower
  small-rerun  grid_2d at the `small` shape, recorded again on another H100 VM, days after the fixture
  sample       the first RMSNorm sample of profiles/ (7 shapes x 33 variants), before source hashes existed
The gate fixtures carry source hashes: if candidate.py (v1/v2), kernels/rmsnorm/grid_2d.py or reference.py
change, the gate rightly calls them stale; re-record them then.
Tests that change a copy of a results file do so only to check handling (a corrupt file, a refused
counter, a stale hash), never to make a measurement pass or fail.
"""
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from testenv import FIXTURES, REPO
from pipeline import config as config_mod
from pipeline import gate, ncu
from pipeline.errors import ConfigError

# the first RMSNorm sample recorded on the H100 (7 shapes x 33 variants), kept as it was so these
# figures stay fixed when profiles/ is re-recorded
PROFILES = FIXTURES / "gate" / "sample" / "nvidia-h100-80gb-hbm3" / "rmsnorm" / "results.json"
SMALL = FIXTURES / "profiles" / "nvidia-h100-80gb-hbm3" / "rmsnorm" / "results.json"
GATE = FIXTURES / "gate"
V1, V2 = GATE / "v1" / "pipeline.yaml", GATE / "v2" / "pipeline.yaml"
CHUNKED = "chunked_c(BLOCK_C=64,BLOCK_HW=128,num_warps=8)"      # recommended at L1-36: 5.15 ms, SM 20.9 %
LATENCY = "grid_3d(BLOCK_H=8,BLOCK_W=16,num_warps=4)"           # latency-bound at L1-36: SM 4.7 %, DRAM 48.9 %


def recorded(name: str) -> Path:
    found = sorted((GATE / name).glob("*/rmsnorm/results.json"))
    if not found:
        pytest.skip(f"{GATE / name} not recorded yet: run `bash tests/fixtures/gate/record.sh` on a GPU machine")
    return found[0]


def run(tmp_path, *args):
    """The CLI as CI runs it; the GitHub step summary (Markdown, unwrapped) holds the messages."""
    summary = tmp_path / "summary.md"
    env = {**os.environ, "GITHUB_STEP_SUMMARY": str(summary)}
    proc = subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr, summary.read_text() if summary.exists() else ""


def targets(tmp_path, text: str) -> Path:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    return path


def evaluate(cfg_path=None, paths=(), **select):
    cfg = config_mod.load_root(Path(cfg_path) if cfg_path else None)
    root = Path(cfg_path).parent if cfg_path else REPO      # a config file's folder is its project's root
    return gate.evaluate(cfg, root, [Path(p) for p in paths] or None, **select)


def row(checks, variant, target_prefix):
    found = [c for c in checks if c.variant == variant and c.target.startswith(target_prefix)]
    assert len(found) == 1, [(c.variant, c.target) for c in checks]
    return found[0]


# ---------------------------------------------------------------- verdicts on the committed profiles

def test_memory_bound_kernel_passes_default_targets(tmp_path):
    code, out, md = run(tmp_path, "gate", PROFILES, "--shape", "L1-36", "--variant", CHUNKED)
    assert code == 0, out
    assert "exit 0 (every target met)" in out
    assert "not applicable: memory-bound at 81.7 % DRAM, judged by the memory targets instead" in md
    assert "memory throughput 81.7 % ≥ 60 %" in md
    assert "not checked: no source_sha256 in these results" in md     # recorded before hashes existed


def test_strict_sm_target_fails_the_memory_bound_seed(tmp_path):
    cfg = targets(tmp_path, "targets:\n  sm_target_strict: true\n")
    code, out, md = run(tmp_path, "--config", cfg, "gate", PROFILES, "--shape", "L1-36", "--variant", "seed_2d_tiles")
    assert code == 1, out
    assert "| **FAIL** | SM 9.3 % < 60 % |" in md
    assert "exit 1 (a target missed or a regression)" in out


def test_sm_target_fails_a_latency_bound_kernel(tmp_path):
    code, out, md = run(tmp_path, "gate", PROFILES, "--shape", "L1-36", "--variant", LATENCY)
    assert code == 1, out
    assert f"| {LATENCY} | latency-bound | sm_throughput_min ≥ 60 % | 4.7 % | **FAIL** | SM 4.7 % < 60 % |" in md
    assert "not applicable: latency-bound; memory targets judge memory-bound kernels only" in md


def test_memory_bound_kernels_judged_by_memory_throughput_and_roofline(tmp_path):
    """The seed (80.8 ms) and the recommended kernel (5.15 ms) both sit at ~9-21 % SM: the SM target cannot
    tell them apart; memory throughput and the fraction of copy bandwidth do."""
    cfg = targets(tmp_path, "targets:\n  memory_throughput_min: 80\n  roofline_fraction_min: 0.9\n")
    code, out, md = run(tmp_path, "--config", cfg, "gate", PROFILES, "--shape", "L1-36",
                        "--variant", CHUNKED, "--variant", "seed_2d_tiles")
    assert code == 1, out
    assert "memory throughput 81.7 % ≥ 80 %" in md and "96.3 % of device-copy bandwidth ≥ 90 %" in md
    assert "memory throughput 75.5 % < 80 %" in md and "6.1 % of device-copy bandwidth < 90 %" in md
    assert md.count("not applicable: memory-bound at") == 2


def test_verdict_compares_the_printed_figure():
    """The seed's SM throughput is 9.2765 %, printed 9.3 %: a 9.3 % target is met, as the table says."""
    cfg = config_mod.Config(targets=config_mod.GateConfig(sm_target_strict=True, sm_throughput_min=9.3))
    checks = gate.evaluate(cfg, REPO, [PROFILES], shapes=["L1-36"], variants=["seed_2d_tiles"])
    r = row(checks, "seed_2d_tiles", "sm_throughput_min")
    assert (r.verdict, r.value, r.reason) == (gate.PASS, "9.3 %", "SM 9.3 % ≥ 9.3 %")
    cfg = config_mod.Config(targets=config_mod.GateConfig(sm_target_strict=True, sm_throughput_min=9.31))
    checks = gate.evaluate(cfg, REPO, [PROFILES], shapes=["L1-36"], variants=["seed_2d_tiles"])
    assert row(checks, "seed_2d_tiles", "sm_throughput_min").reason == "SM 9.3 % < 9.31 %"


def test_time_target_and_per_variant_override(tmp_path):
    cfg = targets(tmp_path, "targets:\n  max_time_ms: 6\n  gate: [seed_2d_tiles, chunked_c]\n"
                            "  variants:\n    seed_2d_tiles: {max_time_ms: 100}\n")
    checks = evaluate(cfg, [PROFILES], shapes=["L1-36"])
    assert row(checks, "seed_2d_tiles", "max_time_ms").reason == "median 80.81 ms ≤ 100 ms"
    assert row(checks, CHUNKED, "max_time_ms").reason == "median 5.153 ms ≤ 6 ms"   # fastest chunked_c config
    assert gate.exit_code(checks) == 0


def test_launch_bound_kernel_needs_a_target_that_applies():
    """At the `small` fixture shape (9.8 µs) SM and memory targets do not apply: without a time target the
    gate cannot judge; with one it does."""
    checks = evaluate(None, [SMALL], shapes=["small"], variants=["grid_2d(BLOCK_HW=64,num_warps=4)"])
    assert gate.exit_code(checks) == 2
    assert any("no target applies to this launch-bound kernel" in c.reason for c in checks)
    cfg = config_mod.Config(targets=config_mod.GateConfig(max_time_ms=0.05))
    checks = gate.evaluate(cfg, REPO, [SMALL], shapes=["small"], variants=["grid_2d(BLOCK_HW=64,num_warps=4)"])
    assert gate.exit_code(checks) == 0
    assert row(checks, "grid_2d(BLOCK_HW=64,num_warps=4)", "max_time_ms").reason == "median 0.00984 ms ≤ 0.05 ms"


# ---------------------------------------------------------------- regressions against a baseline

def _change(base: Path, cur: Path) -> str:
    old, new = (json.loads(p.read_text())["shapes"][0]["variants"][0]["timing"]["median_ms"] for p in (base, cur))
    return f"({(new / old - 1) * 100:+.1f} %)"


def test_real_regression_fails(tmp_path):
    base, cur = recorded("base"), recorded("regressed")
    code, out, md = run(tmp_path, "--config", V2, "gate", cur, "--baseline", GATE / "base", "--junit",
                        tmp_path / "gate.xml")
    assert code == 1, out
    assert "regression: median" in md and _change(base, cur) in md
    assert "> +5 % and the interquartile ranges do not overlap" in md
    failures = ET.parse(tmp_path / "gate.xml").getroot().findall(".//failure")
    assert [f.get("message").split(":")[0] for f in failures] == ["regression"]


def test_noise_only_difference_passes(tmp_path):
    base, cur = recorded("base"), recorded("rerun")
    code, out, md = run(tmp_path, "--config", V1, "gate", cur, "--baseline", base)
    assert code == 0, out
    assert _change(base, cur) in md and "| max_regression ≤ +5 % |" in md
    assert "sha256 of 2 source files as measured at" in md          # fresh: hashes match the fixture sources


def test_baseline_from_other_conditions_cannot_be_judged(tmp_path):
    """grid_2d at `small`, same code, another H100 VM: torch eager and the kernels all ran 2-4x longer
    (host launch cost of ~10 µs kernels). The controls moved, so the gate refuses to call it a regression."""
    cur = recorded("small-rerun")
    code, out, md = run(tmp_path, "gate", cur, "--shape", "small", "--variant", "grid_2d", "--baseline", SMALL)
    assert code == 2, out
    assert "baseline not comparable: the controls moved at shape small: torch eager" in md
    assert "record the baseline on the same runner" in md


def test_regression_rule_on_noise_within_the_limit():
    """A kernel slower by more than the limit whose quartiles overlap is noise: the rule needs both."""
    base, cur = recorded("base"), recorded("regressed")
    cfg = config_mod.Config(kernels_dir="tests/fixtures/gate/v2/kernels",
                            targets=config_mod.GateConfig(max_regression=0.2))
    r = row(gate.evaluate(cfg, REPO, [cur], baseline=base), "candidate", "max_regression")
    assert r.verdict == gate.PASS and r.reason.endswith("≤ +20 %") and "p25" in r.reason


# ---------------------------------------------------------------- could not judge (exit 2)

def test_missing_results_file(tmp_path):
    code, out, md = run(tmp_path, "gate", tmp_path / "nope" / "results.json")
    assert code == 2, out
    assert f"{tmp_path / 'nope' / 'results.json'}: no such results file" in md
    code, out, md = run(tmp_path, "gate", "--op", "rmsnorm", "--profiles-dir", tmp_path)
    assert code == 2 and "no results for op rmsnorm under" in md and "make profile ARGS='--op rmsnorm'" in md


def test_corrupt_and_unknown_schema_files(tmp_path):
    bad = tmp_path / "results.json"
    bad.write_text('{"schema": "pipeline-results", "shapes": [')
    code, out, md = run(tmp_path, "gate", bad, "--junit", tmp_path / "j.xml")
    assert code == 2 and "not readable JSON" in md
    assert ET.parse(tmp_path / "j.xml").getroot().find(".//error").get("type") == gate.ERROR
    doc = json.loads(SMALL.read_text())
    bad.write_text(json.dumps({**doc, "schema_version": 99}))
    code, out, md = run(tmp_path, "gate", bad)
    assert code == 2 and "schema_version 99 is not 1" in md


def _copy(tmp_path, doc) -> Path:
    path = tmp_path / "nvidia-h100-80gb-hbm3" / "rmsnorm" / "results.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_counters_unavailable(tmp_path):
    """As profiling records ERR_NVGPUCTRPERM: the shape's and each variant's ncu status, with the fix."""
    doc = json.loads(SMALL.read_text())
    shape = next(s for s in doc["shapes"] if s["id"] == "small")
    shape["ncu"].update(status="permission-denied", message=ncu.PERMISSION_FIX)
    for v in shape["variants"]:
        v["ncu"] = {"status": "permission-denied", "error": ncu.PERMISSION_FIX, "kernels": []}
    path = _copy(tmp_path, doc)
    checks = evaluate(None, [path], shapes=["small"], variants=["grid_2d"])
    r = row(checks, "grid_2d(BLOCK_HW=64,num_warps=4)", "ncu profile")
    assert r.verdict == gate.ERROR and "profiling permission-denied" in r.reason
    assert "Counters unavailable" in r.reason and "NVreg_RestrictProfilingToAdminUsers=0" in r.reason
    # a time-only gate needs no counters
    cfg = config_mod.Config(targets=config_mod.GateConfig(sm_throughput_min=0, memory_throughput_min=0,
                                                          max_time_ms=0.05))
    assert gate.exit_code(gate.evaluate(cfg, REPO, [path], shapes=["small"], variants=["grid_2d"])) == 0


def test_metric_missing(tmp_path):
    doc = json.loads(PROFILES.read_text())
    shape = next(s for s in doc["shapes"] if s["id"] == "L1-36")
    v = next(v for v in shape["variants"] if v["name"] == LATENCY)
    del v["ncu"]["kernels"][0]["metrics"]["sm__throughput.avg.pct_of_peak_sustained_elapsed"]
    checks = evaluate(None, [_copy(tmp_path, doc)], shapes=["L1-36"], variants=[LATENCY])
    assert gate.exit_code(checks) == 2
    assert any(c.reason.startswith("metric sm__throughput.avg.pct_of_peak_sustained_elapsed missing") for c in checks)


def test_stale_and_incomplete_sources(tmp_path):
    base = recorded("base")
    doc = json.loads(base.read_text())
    doc["shapes"][0]["variants"][0]["source_sha256"] = "0" * 64     # candidate.py is not what was measured
    checks = evaluate(V1, [_copy(tmp_path, doc)])
    r = row(checks, "candidate", "fresh sources")
    assert r.verdict == gate.ERROR and "tests/fixtures/gate/v1/kernels/rmsnorm/candidate.py changed" in r.reason
    assert "make profile ARGS='--op rmsnorm --shape L1-36'" in r.reason
    # a variant file with no results makes the recommendation incomplete
    kernels = tmp_path / "kernels" / "rmsnorm"
    kernels.mkdir(parents=True)
    for name in ("reference.py", "op.yaml", "candidate.py"):
        (kernels / name).write_bytes((GATE / "v1" / "kernels" / "rmsnorm" / name).read_bytes())
    (kernels / "newer.py").write_text("class ModelNew:\n    pass\n")
    cfg = config_mod.Config(kernels_dir=str(tmp_path / "kernels"))
    r = row(gate.evaluate(cfg, REPO, [base]), "candidate", "fresh sources")
    assert r.verdict == gate.ERROR and "newer.py was not profiled" in r.reason


def test_incomplete_shapes_and_no_correct_variant(tmp_path):
    checks = evaluate(None, [SMALL], suite="small", variants=["grid_2d"])   # small-fp16 was never recorded
    assert any(c.reason.startswith("incomplete: shape small-fp16 is not in") for c in checks)
    doc = json.loads(SMALL.read_text())
    odd = next(s for s in doc["shapes"] if s["id"] == "odd")
    for v in odd["variants"]:
        v["status"] = "incorrect"
    checks = evaluate(None, [_copy(tmp_path, doc)], shapes=["odd"])
    assert [c.reason for c in checks] == ["no correct variant at shape odd (statuses: incorrect); nothing to "
                                          "recommend or gate"]
    assert gate.exit_code(checks) == 2


def test_unknown_variant_and_nothing_judged():
    checks = evaluate(None, [PROFILES], shapes=["L1-36"], variants=["no_such_variant"])
    assert "variant no_such_variant is not in the results at shape L1-36" in [c.reason for c in checks]
    checks = evaluate(None, [PROFILES], shapes=["C4096"], variants=["flat_1d"])  # flat_1d refuses C = 4096
    assert checks[0].verdict == gate.NA and checks[0].reason.startswith("unsupported at this shape")
    assert gate.exit_code(checks) == 2 and checks[-1].reason.startswith("nothing was judged")


# ---------------------------------------------------------------- outputs and config

def test_junit_one_testcase_per_kernel_and_target(tmp_path):
    cfg = targets(tmp_path, "targets:\n  roofline_fraction_min: 0.9\n")
    code, out, md = run(tmp_path, "--config", cfg, "gate", PROFILES, "--shape", "L1-36", "--variant", LATENCY,
                        "--variant", CHUNKED, "--junit", tmp_path / "gate.xml")
    assert code == 1
    suite = ET.parse(tmp_path / "gate.xml").getroot().find("testsuite")
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests")) == 2 * 4    # fresh, SM, memory, roofline per kernel
    failed = [c for c in cases if c.find("failure") is not None]
    assert [(c.get("name"), c.find("failure").get("message")) for c in failed] == \
        [(f"{LATENCY} · sm_throughput_min ≥ 60 %", "SM 4.7 % < 60 %")]
    assert int(suite.get("skipped")) == 2 + 2 + 1    # fresh ×2 (no hashes), SM on CHUNKED, memory ×2 on LATENCY
    assert md.startswith("### ❌ Kernel gate: a target missed or a regression (exit 1)")


def test_targets_config(tmp_path):
    root = targets(tmp_path, "targets:\n  sm_throughput_min: 50\n")
    op = tmp_path / "op.yaml"
    op.write_text("targets:\n  memory_throughput_min: 70\n  variants:\n    grid_2d: {max_time_ms: 2}\n"
                  "    'grid_2d(BLOCK_HW=64,num_warps=4)': {sm_target_strict: true, sm_throughput_min: 10}\n")
    cfg = config_mod.load_op(config_mod.load_root(root), op)
    t = cfg.targets.for_variant("grid_2d(BLOCK_HW=64,num_warps=4)", "grid_2d")
    assert (t.sm_throughput_min, t.sm_target_strict, t.memory_throughput_min, t.max_time_ms) == (10, True, 70, 2)
    t = cfg.targets.for_variant("flat_1d", "flat_1d")
    assert (t.sm_throughput_min, t.sm_target_strict, t.max_time_ms) == (50, False, 0)
    for text, message in (("targets:\n  max_regression: 5\n", ":2: 'targets.max_regression' must be between 0 and 1"),
                          ("targets:\n  sm_througput_min: 5\n", "Did you mean 'sm_throughput_min'?"),
                          ("targets:\n  variants:\n    x: {gate: [y]}\n", "unknown key 'targets.variants.x.gate'")):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("?", r"\?")):
            config_mod.load_root(targets(tmp_path, text))
    code, out, _ = run(tmp_path, "--config", targets(tmp_path, "targets:\n  roofline_fraction_min: 90\n"), "gate")
    assert code == 2 and "got 90.0 (a fraction: 0.8 means 80 %)" in " ".join(out.split())
