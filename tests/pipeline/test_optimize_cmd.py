"""The `cmd` proposer on the CPU (Triton interpreter), through the real worker: a scripted proposer
(tests/fixtures/optimize/canned_proposer.py) offers a faster kernel, a broken one, a wrong one, a cheating one,
one with a 4-D grid and one tuned to the tuning shape only. Only the faster correct one is promoted, and the
history says why each other one was not."""
import html
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest

from testenv import FIXTURES, REPO

CANNED = FIXTURES / "optimize"


def project(tmp_path):
    shutil.copytree(CANNED / "kernels", tmp_path / "kernels")
    (tmp_path / "pipeline.yaml").write_text("kernels_dir: kernels\nprofiles_dir: profiles\nreports_dir: reports\n")
    return tmp_path


def optimize(root, *args, env=None):
    return subprocess.run([sys.executable, "-m", "pipeline", "--config", str(root / "pipeline.yaml"), "optimize",
                           "--op", "softmax_opt", "--device", "cpu", "--stages", "grid_and_parallel", *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600, env={**os.environ, **(env or {})})


def the_log(root):
    (path,) = (root / "profiles" / "cpu-triton-interpreter" / "softmax_opt" / "optimize").glob("*/log.json")
    return json.loads(path.read_text()), path.parent


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = project(tmp_path_factory.mktemp("cmd"))
    calls = root / "calls.jsonl"
    proc = optimize(root, "--from", "slow", "--proposer", "cmd", "--proposer-cmd",
                    f"{sys.executable} {CANNED / 'canned_proposer.py'}", env={"CANNED_LOG": str(calls)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log, folder = the_log(root)
    return root, log, folder, [json.loads(line) for line in calls.read_text().splitlines()]


def verdicts(log):
    return {c["name"].removeprefix("grid_and_parallel_s1_"): c for c in log["steps"][0]["candidates"]}


def test_only_the_faster_correct_candidate_is_promoted(run):
    root, log, folder, _ = run
    v = verdicts(log)
    assert sorted(v) == ["broken", "cheat", "fast", "grid4d", "overfit", "wrong"]
    assert {n: c["verdict"] for n, c in v.items()} == {
        "fast": "promoted", "broken": "refused", "grid4d": "refused", "wrong": "rejected", "cheat": "rejected",
        "overfit": "rejected"}
    placed = root / "kernels" / "softmax_opt" / "opt_grid_and_parallel_s1.py"
    assert placed.read_text() == (CANNED / "canned" / "fast.py").read_text()
    assert sorted(p.name for p in placed.parent.glob("opt_*")) == [placed.name]
    assert log["best"]["name"] == "opt_grid_and_parallel_s1" and log["finished"]
    assert v["fast"]["speedup"] > 2 and v["fast"]["holdout"] == {"wide": "ok"}


def test_each_rejection_says_why(run):
    _, log, _, _ = run
    v = verdicts(log)
    assert "SyntaxError" in v["broken"]["reason"] and "line 8" in v["broken"]["reason"]
    assert "launch grid has 4 dimensions (at most 3)" in v["grid4d"]["reason"]
    assert v["wrong"]["reason"].startswith("incorrect at small") and "outside tolerance" in v["wrong"]["reason"]
    assert v["cheat"]["reason"].startswith("suspect at small") and "shares memory with input 0" in v["cheat"]["reason"]
    # as fast as the winner on the tuning shape, wrong on the shape it never saw
    assert "faster than the current best, but held-out shape wide: incorrect" in v["overfit"]["reason"]
    assert v["overfit"]["status"] == {"small": "ok"} and v["overfit"]["holdout"] == {"wide": "incorrect"}
    # statically refused candidates cost no measurement and no budget
    assert "status" not in v["broken"] and "status" not in v["grid4d"] and log["spent"] == 4


def test_the_proposer_sees_the_tuning_shape_only(run):
    _, log, folder, calls = run
    assert [c["step"] for c in calls] == ["1", "2"]
    assert all(c["out_env"] == c["out_arg"] for c in calls)
    prompt = calls[0]["prompt"]
    assert prompt == (folder / log["steps"][0]["prompt"]).read_text()
    assert "tuning shape small" in prompt and '"dim": 64' in prompt and "REPEAT = 6" in prompt
    assert "wide" not in prompt and '"dim": 100' not in prompt
    assert "no ncu counters" in prompt


def test_the_history_keeps_every_step(run):
    _, log, folder, calls = run
    first, second = log["steps"]
    assert (folder / first["dir"] / "candidates" / "grid_and_parallel_s1_fast.py").exists()
    assert (folder / first["dir"] / "proposed" / "fast.py").exists()
    for name in ("prompt.txt", "step.json", "proposer.log", "best.results.json", "tuning.results.json",
                 "holdout.results.json"):
        assert (folder / first["dir"] / name).exists(), name
    assert json.loads((folder / first["dir"] / "step.json").read_text()) == first
    # the second step starts from the promoted kernel, whose code the proposer has nothing to add to
    assert second["best"] == "opt_grid_and_parallel_s1" and "FAST_SOFTMAX" in calls[1]["prompt"]
    assert second["candidates"] == [] and second["why_ended"] == "no candidates" and second["ends_stage"]


def test_a_proposer_past_its_time_limit_is_killed_and_its_files_unused(tmp_path):
    root = project(tmp_path)
    marker = "sleep 37.5"
    proc = optimize(root, "--from", "slow", "--proposer", "cmd", "--proposer-timeout", "2",
                    "--proposer-cmd", f"sh -c 'touch \"$0/late.py\"; echo started; {marker}'")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log, folder = the_log(root)
    (step,) = log["steps"]
    assert step["proposer"]["failed"] == "killed after 2 s" and step["candidates"] == []
    assert "its files are not used" in step["why_ended"]
    assert (folder / step["dir"] / "proposed" / "late.py").exists()
    assert "started" in (folder / step["dir"] / "proposer.log").read_text()
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert left == [], "the proposer outlived its limit"
    assert not list((root / "kernels" / "softmax_opt").glob("opt_*"))


def test_the_history_page_shows_each_candidate_its_verdict_and_the_time_per_step(run):
    from pipeline import optimize_page, report
    _, log, folder, _ = run
    view = optimize_page.run_view(folder / "log.json", "x.html", "softmax_opt.html")
    assert [s.wall for s in view.steps] == [f"{s['wall_s']:.1f} s" for s in log["steps"]]
    first = {c.name.removeprefix("grid_and_parallel_s1_"): c for c in view.steps[0].candidates}
    assert first["fast"].verdict == "promoted" and first["fast"].speedup.endswith("×")
    assert first["overfit"].verdict == "rejected" and "held-out shape wide: incorrect" in first["overfit"].reason
    assert first["broken"].verdict == "refused" and "SyntaxError" in first["broken"].reason
    assert view.steps[0].promoted.startswith("grid_and_parallel_s1_fast (")
    assert dict(view.verdicts) == dict(Counter(c["verdict"] for s in log["steps"] for c in s["candidates"]))
    page = report.environment().get_template("optimize.html").render(page=view)
    assert "held-out shape wide: incorrect" in html.unescape(page)
