"""The real worker and its parent on the CPU (Triton interpreter): every fault ends with its status,
one broken variant never loses the others, and the results file is complete."""
import os
import subprocess
import sys

import pytest

from testenv import FIXTURES, REPO, start_until
from pipeline import recommend, results


@pytest.fixture(scope="module")
def faulty_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("profiles")
    root = tmp_path_factory.mktemp("cfg") / "pipeline.yaml"
    root.write_text(f"kernels_dir: {FIXTURES / 'faulty' / 'kernels'}\nreports_dir: {out / 'reports'}\n")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(root), "profile", "--device", "cpu",
                           "--profiles-dir", str(out), "--strict"],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    paths = results.find_all(out)
    return proc, results.load(paths[0]), out


def test_every_fault_gets_its_status(faulty_run):
    proc, doc, _ = faulty_run
    status = {v["name"]: v["status"] for v in doc["shapes"][0]["variants"]}
    assert status == {
        "good": "ok", "wrong": "incorrect", "partial": "incorrect", "import_boom": "import-error",
        "syntax_error": "import-error", "unsupported": "unsupported", "segfault": "crashed", "hang": "timeout",
        "launch_error": "launch-error"}, proc.stdout + proc.stderr


def test_messages_name_the_cause(faulty_run):
    _, doc, _ = faulty_run
    v = {v["name"]: v for v in doc["shapes"][0]["variants"]}
    assert "half-finished variant" in v["import_boom"]["error"]
    assert "SyntaxError" in v["syntax_error"]["error"] and "line 3" in v["syntax_error"]["error"]
    assert "needs C <= 4" in v["unsupported"]["error"]
    assert "code -11" in v["segfault"]["error"]
    assert "killed after 8 s" in v["hang"]["error"]
    assert "elements outside tolerance" in v["wrong"]["error"] and "expected" in v["wrong"]["error"]
    # the output was allocated uninitialised during the call, so the guard filled it: the unwritten half
    # is NaN on the first seed, whatever the allocator held before
    partial = v["partial"]["checks"][0]
    assert partial["poisoned"] and partial["output_memory"] == "sentinel"
    assert partial["nonfinite"] == partial["numel"] // 2 and "NaN/Inf" in v["partial"]["error"]


def test_good_variant_kept_timed_and_recommended(faulty_run):
    proc, doc, _ = faulty_run
    shape = doc["shapes"][0]
    rec = recommend.recommend(shape)
    assert rec is not None and rec.variant["name"] == "good"
    assert rec.variant["timing"]["reps"] == 3
    assert shape["reference"]["timing"]["median_ms"] > 0 and shape["copy"]["timing"]["median_ms"] > 0
    assert shape["min_bytes"] == 2 * 2 * 6 * 5 * 7 * 4
    assert proc.returncode == 5   # --strict: some variant failed


def test_report_shows_failures_as_text(faulty_run):
    _, _, out = faulty_run
    page = (out / "reports" / "faults.html").read_text()
    assert "half-finished variant" in page and "timeout" in page and "crashed" in page


def test_rerun_with_nothing_changed_measures_nothing(faulty_run):
    proc, doc, out = faulty_run
    args = proc.args
    again = subprocess.run(args, capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, "TRITON_INTERPRET": "1"}, timeout=300)
    assert "tiny: unchanged since" in again.stdout and "cached" in again.stdout
    (path,) = results.find_all(out)
    assert results.load(path)["shapes"][0]["measured_at"] == doc["shapes"][0]["measured_at"]
    assert "verifying" not in again.stdout


def test_interrupt_kills_the_worker_and_keeps_completed_shapes(tmp_path):
    """Ctrl-C while a variant hangs: the parent exits 130, no worker survives, earlier shapes stay."""
    import signal
    import time
    out = tmp_path / "profiles"
    root = tmp_path / "pipeline.yaml"
    root.write_text(f"kernels_dir: {FIXTURES / 'faulty' / 'kernels'}\nreports_dir: {tmp_path / 'reports'}\n")
    base = [sys.executable, "-m", "pipeline", "--config", str(root), "profile", "--device", "cpu",
            "--profiles-dir", str(out)]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    first = subprocess.run(base + ["--variant", "good"], capture_output=True, text=True, cwd=REPO, env=env)
    assert first.returncode == 0, first.stdout
    # variants run in name order: once `good` is done, `hang` is running
    proc, seen = start_until(base + ["--variant", "good", "--variant", "hang", "--force"], "good: ok", cwd=REPO, env=env)
    time.sleep(1)
    workers = subprocess.run(["pgrep", "-f", "pipeline.worker"], capture_output=True, text=True).stdout.split()
    assert workers, "".join(seen)
    proc.send_signal(signal.SIGINT)
    text = "".join(seen) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 130 and "interrupted" in text
    time.sleep(0.5)
    alive = [pid for pid in workers if os.path.exists(f"/proc/{pid}")]
    assert alive == [], f"worker processes outlived the interrupt: {alive}"
    (path,) = results.find_all(out)
    kept = results.load(path)["shapes"][0]
    assert [v["name"] for v in kept["variants"]] == ["good"] and kept["variants"][0]["status"] == "ok"


def test_changing_one_variant_remeasures_it_and_retimes_the_controls_only(tmp_path):
    """Per-variant cache: after an edit to one variant, that variant is measured again, the fastest and the
    baseline are re-timed beside it, and every other result is kept as it was (marked cached)."""
    import shutil
    kernels = tmp_path / "kernels"
    shutil.copytree(FIXTURES / "faulty" / "kernels", kernels)
    (kernels / "faults" / "hang.py").unlink()      # 8 s of timeout buys nothing here
    root = tmp_path / "pipeline.yaml"
    root.write_text(f"kernels_dir: {kernels}\nreports_dir: {tmp_path / 'reports'}\n")
    args = [sys.executable, "-m", "pipeline", "--config", str(root), "profile", "--device", "cpu",
            "--profiles-dir", str(tmp_path / "profiles")]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    first = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    (path,) = results.find_all(tmp_path / "profiles")
    before = {v["name"]: v for v in results.load(path)["shapes"][0]["variants"]}
    assert not any(v["cached"] for v in before.values())

    with open(kernels / "faults" / "wrong.py", "a") as fh:
        fh.write("\n# edited\n")
    second = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "1 variant(s) changed" in second.stdout and "re-timing good beside them" in second.stdout
    shape = results.load(path)["shapes"][0]
    after = {v["name"]: v for v in shape["variants"]}
    assert after["wrong"]["cached"] is False and after["wrong"]["status"] == "incorrect"
    assert after["wrong"]["measured_at"] >= before["wrong"]["measured_at"]
    assert after["wrong"]["cache_key"] != before["wrong"]["cache_key"]
    assert after["good"]["cached"] is True and "retimed_at" in after["good"]          # control: re-timed
    assert after["good"]["checks"] == before["good"]["checks"]                         # ... not re-verified
    for name in ("partial", "import_boom", "syntax_error", "unsupported", "segfault", "launch_error"):
        assert after[name]["cached"] is True and after[name]["measured_at"] == before[name]["measured_at"], name
        assert after[name]["status"] == before[name]["status"]
    assert shape["counts"] == {"measured": 1, "cached": len(after) - 1, "retimed": 1}
    page = (tmp_path / "reports" / "faults.html").read_text()
    import re
    assert re.search(r">ok[^<]*· cached<", page)

    third = subprocess.run(args, capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert "tiny: unchanged since" in third.stdout and "verifying" not in third.stdout


def test_ncu_profiles_the_fastest_config_of_each_family(tmp_path):
    """ncu.select family-best on the recorded H200 L1-36 timings: one variant per layout family, the fastest."""
    from pipeline import cache, config, ncupass, ops
    op = ops.load_op_dir(REPO / "kernels" / "rmsnorm", config.load_root(REPO / "pipeline.yaml"))
    sample = results.load(FIXTURES / "samples-h200" / "nvidia-h200" / "rmsnorm" / "results.json")
    recorded = next(s for s in sample["shapes"] if s["id"] == "L1-36")
    timed = {v["name"]: v for v in recorded["variants"] if v["status"] == "ok" and v.get("timing")}
    work = cache.ShapeWork(op, op.config.op.shape_list(None)[0], 0, "k", list(enumerate(op.variants)), [], {})
    work.done = {n: {"name": n, "status": "ok"} for n in timed}
    work.timing = {n: v["timing"] for n, v in timed.items()}
    picked = ncupass.selected(work, "family-best")
    stems = {v.stem for v in op.variants if v.name in timed}
    assert sorted(v.stem for _, v in picked) == sorted(stems)                  # one per family
    for _, v in picked:
        family = [t["timing"]["median_ms"] for n, t in timed.items() if n.split("(")[0] == v.stem]
        assert timed[v.name]["timing"]["median_ms"] == min(family)
    assert len(ncupass.selected(work, "all")) == len(timed)
