"""The CLI's contract with scripts and CI: exit codes, errors on stderr, --version, JSON outputs, the project
root, signals (children ended, completed ops kept, exit 130), and what a rerun trusts from the cache."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import pipeline
from testenv import FIXTURES, HAS_GPU, REPO, start_until
from pipeline import cache, config, ingest, newop, ops, recommend, report, results

FAULTS = FIXTURES / "faulty" / "kernels"
GATE_SAMPLE = FIXTURES / "gate" / "sample" / "nvidia-h100-80gb-hbm3" / "rmsnorm" / "results.json"
LATENCY = "grid_3d(BLOCK_H=8,BLOCK_W=16,num_warps=4)"    # SM 4.7 % at L1-36: misses the default SM target


def cli(*args, cwd=REPO, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(todo.pop())], capture_output=True, text=True).stdout
        kids = {int(x) for x in out.split()}
        found |= kids
        todo += kids
    return found


def gone(pids: set[int], within: float = 10.0) -> set[int]:
    """The pids still alive (zombies count as gone) after waiting up to `within` seconds."""
    def alive(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
        except OSError:
            return False
    end = time.time() + within
    while (left := {p for p in pids if alive(p)}) and time.time() < end:
        time.sleep(0.2)
    return left


# ---------------------------------------------------------------- exit codes and where messages go

def test_version_from_package_metadata():
    proc = cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"python -m pipeline {pipeline.__version__}"


def test_a_missing_config_file_is_an_error_naming_it(tmp_path):
    for args in (["--config", tmp_path / "nope.yaml", "list"], ["--config", tmp_path, "config"]):
        proc = cli(*args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert str(args[1]) in proc.stderr and "(--config)" in proc.stderr and proc.stdout == ""


def test_errors_go_to_stderr_and_name_what_exists():
    proc = cli("list", "--op", "nope")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "unknown op nope" in proc.stderr and "rmsnorm" in proc.stderr, proc.stderr


def test_internal_error_exit_70_one_line_and_traceback_log(tmp_path):
    doc = results.load(FIXTURES / "samples-h200" / "nvidia-h200" / "softmax" / "results.json")
    del doc["shapes"][0]["variants"][0]["status"]       # past the schema check, a record the code cannot read
    broken = tmp_path / "results.json"
    results.save(broken, doc)
    proc = cli("report", broken, "--reports-dir", tmp_path / "reports")
    assert proc.returncode == 70, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    found = re.fullmatch(r"error: internal error at (\S+/pipeline/\w+\.py:\d+): KeyError: 'status'; traceback in (\S+)\n",
                         proc.stderr)
    assert found, proc.stderr
    log = Path(found[2])
    try:
        text = log.read_text()
        assert "Traceback (most recent call last)" in text and "KeyError: 'status'" in text
        assert text.startswith(f"$ kernel-pipeline report {broken}")
    finally:
        log.unlink()


def test_internal_error_names_the_file_an_os_error_names(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    sample = FIXTURES / "samples-h200" / "nvidia-h200" / "softmax" / "results.json"
    proc = cli("report", sample, "--reports-dir", blocker / "reports")
    assert proc.returncode == 70
    found = re.fullmatch(rf"error: internal error at {re.escape(str(blocker / 'reports'))}: NotADirectoryError: .*; "
                         r"traceback in (\S+)\n", proc.stderr)
    assert found, proc.stderr
    Path(found[1]).unlink()


def test_config_paths_resolve_against_the_config_files_folder(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(FAULTS, project / "src" / "kernels")
    (project / "pipeline.yaml").write_text("kernels_dir: src/kernels\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = cli("--config", "../project/pipeline.yaml", "list", "--json", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    listing = json.loads(proc.stdout)
    assert listing["root"] == str(project.resolve())
    assert listing["kernels_dir"] == str(project.resolve() / "src" / "kernels")
    assert [op["name"] for op in listing["ops"]] == ["faults"]
    assert {v["file"] for v in listing["ops"][0]["variants"]} >= {"src/kernels/faults/good.py"}


def test_gate_json_carries_the_verdict_and_the_exit_code():
    proc = cli("gate", GATE_SAMPLE, "--shape", "L1-36", "--variant", LATENCY, "--json")
    assert proc.returncode == 1, proc.stderr
    verdict = json.loads(proc.stdout)
    assert verdict["exit_code"] == 1 and verdict["verdict"] == "a target missed or a regression"
    miss = [c for c in verdict["checks"] if c["verdict"] == "FAIL"]
    assert [(c["variant"], c["reason"]) for c in miss] == [(LATENCY, "SM 4.7 % < 60 %")]
    assert set(miss[0]) == {"file", "op", "shape", "variant", "target", "value", "verdict", "reason", "bound"}


def test_the_index_lists_ops_whose_pages_are_not_rendered_again(tmp_path):
    softmax, matmul = (FIXTURES / "samples-h200" / "nvidia-h200" / op / "results.json" for op in ("softmax", "matmul"))
    out = tmp_path / "reports"
    report.render([softmax, matmul], out, replayed=True)
    (out / "old_op.html").write_text("")        # the page of an op listed before, whose results are gone
    with open(out / "index.html", "a") as fh:
        fh.write('<h2><a href="old_op.html">old_op</a></h2>\n')
    kept = (out / "matmul.html").stat().st_mtime_ns
    written = report.render([softmax], out, replayed=False, index=[softmax, matmul])
    assert [p.name for p in written] == ["index.html", "softmax.html"]
    assert (out / "matmul.html").stat().st_mtime_ns == kept
    index = (out / "index.html").read_text()
    for shape in results.load(matmul)["shapes"]:
        rec = recommend.recommend(shape)
        assert f'<a href="matmul.html#shape-{results.slug(shape["id"])}">' in index
        assert f"<td>{rec.median_ms:.4g}</td>" in index
    assert not (out / "old_op.html").exists()


# ---------------------------------------------------------------- new-op

def test_new_op_refuses_what_is_not_a_kernelbench_file_and_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nN = 4\nclass Model:\n    pass\n")
    proc = cli("new-op", "x", "--from", bad, cwd=tmp_path)
    assert proc.returncode == 2 and f"{bad}: missing get_inputs, get_init_inputs" in proc.stderr
    proc = cli("new-op", "x", "--from", tmp_path / "none.py", cwd=tmp_path)
    assert proc.returncode == 2 and "none.py: cannot read" in proc.stderr
    proc = cli("new-op", "../x", "--from", bad, cwd=tmp_path)
    assert proc.returncode == 2 and "cannot be an op name" in proc.stderr
    assert not (tmp_path / "kernels").exists() or list((tmp_path / "kernels").iterdir()) == []


def test_new_op_template_is_in_the_variant_format_and_takes_models_arguments(tmp_path):
    made = newop.create(tmp_path / "kernels", "norm", FAULTS / "faults" / "reference.py", config.Config())
    template = made[2].read_text()
    assert ingest.problems(template, "template.py") == []
    assert "def __init__(self, num_features: int, eps: float=1e-05, *, BLOCK=1024, num_warps=4):" in template
    assert "def forward(self, x: torch.Tensor):" in template
    (variant,) = ops.load_op_dir(tmp_path / "kernels" / "norm", config.Config()).variants
    assert variant.name == "template" and not variant.problem


# ---------------------------------------------------------------- add-variant's grid rule

def test_grid_rule_follows_lambdas_lists_and_names():
    source = textwrap.dedent("""
        import torch
        import torch.nn as nn
        import triton
        import triton.language as tl

        @triton.jit
        def k(x):
            pass

        FOUR = (1, 2, 3, 4)

        def grid_of(meta):
            return (1, 1, 1, 1, 1)

        class ModelNew(nn.Module):
            def forward(self, x):
                grid = lambda meta: (triton.cdiv(x.numel(), meta["B"]), 1, 1, 1)
                k[grid](x)
                k[[1, 2, 3, 4]](x)
                g = FOUR
                k[g](x)
                k[grid_of](x)
                ok = lambda meta: (triton.cdiv(x.numel(), meta["B"]), 2, 3)
                k[ok](x)
                k[[1, 2]](x)
                return x
        """)
    found = ingest.problems(source, "cand.py")
    assert found == ["line 11: launch grid has 4 dimensions (at most 3)",
                     "line 14: launch grid has 5 dimensions (at most 3)",
                     "line 18: launch grid has 4 dimensions (at most 3)",
                     "line 20: launch grid has 4 dimensions (at most 3)"]


# ---------------------------------------------------------------- the cache

def test_an_environment_failure_is_measured_again_a_variant_failure_is_not():
    op = ops.load_op_dir(FAULTS / "faults", config.Config())
    shape = op.config.op.shape_list(None)[0]
    key = "shape-key"
    by_name = {v.name: v for v in op.variants}

    def stored(name, status, error):
        return {"name": name, "status": status, "error": error, "cache_key": cache.variant_key(by_name[name], key)}

    record = {"cache_key": key, "variants": [
        stored("good", "launch-error", "RuntimeError: 0 active drivers ([]). There should only be one."),
        stored("launch_error", "launch-error", "AssertionError: grid must have at most 3 dimensions"),
        stored("wrong", "import-error", "RuntimeError: Found no NVIDIA driver on your system.")]}
    work = cache.plan_shape(op, shape, record, key, force=False)
    assert set(work.cached) == {"launch_error"}
    assert {"good", "wrong"} <= {v.name for _, v in work.measure}


# ---------------------------------------------------------------- signals

def _faults_project(tmp_path):
    root = tmp_path / "pipeline.yaml"
    root.write_text(f"kernels_dir: {FAULTS}\n")
    return root


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_run_like_ctrl_c(tmp_path, sig):
    """A stop while a variant hangs: exit 130, the worker is ended, the op finished before is kept."""
    root = _faults_project(tmp_path)
    out = tmp_path / "profiles"
    base = [sys.executable, "-m", "pipeline", "--config", str(root), "profile", "--device", "cpu",
            "--profiles-dir", str(out), "--reports-dir", str(tmp_path / "reports")]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    first = subprocess.run(base + ["--variant", "good"], capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stdout + first.stderr
    # variants run in name order: once `good` is done, `hang` is running
    proc, seen = start_until(base + ["--variant", "good", "--variant", "hang", "--force"], "good: ok",
                             stderr=subprocess.PIPE, env=env)
    time.sleep(1)
    children = descendants(proc.pid)
    assert children, "".join(seen)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + stdout + stderr
    assert "interrupted: results of ops completed before it are kept" in stderr
    assert gone(children) == set()
    (path,) = results.find_all(out)
    kept = results.load(path)["shapes"][0]
    assert [v["name"] for v in kept["variants"]] == ["good"] and kept["variants"][0]["status"] == "ok"


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="charts are drawn in one process on one core")
def test_sigterm_while_charts_are_drawn_ends_the_drawing_processes(tmp_path):
    sample = FIXTURES / "samples-h200" / "nvidia-h200" / "rmsnorm" / "results.json"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "report", str(sample), "--reports-dir",
                             str(tmp_path / "reports")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=REPO)
    end, children = time.time() + 120, set()
    while time.time() < end and len(children) < 2 and proc.poll() is None:     # the pool's drawing processes
        children = descendants(proc.pid)
        time.sleep(0.1)
    assert len(children) >= 2, "no drawing processes seen"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    assert "interrupted" in stderr
    assert gone(children) == set()


@pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU path")
def test_profile_json_summary_of_a_replay(tmp_path):
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(f"kernels_dir: {REPO / 'kernels'}\nprofiles_dir: {REPO / 'profiles'}\n")
    proc = cli("--config", cfg, "profile", "--op", "softmax", "--reports-dir", tmp_path / "reports",
               "--json-summary", tmp_path / "summary.json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["replayed"] is True and summary["exit_code"] == 0
    # one entry per recording: softmax is recorded on each GPU model under profiles/
    assert sorted(op["results"] for op in summary["ops"]) == sorted(
        str(p) for p in (REPO / "profiles").glob("*/softmax/results.json"))
    for op in summary["ops"]:
        doc = results.load(Path(op["results"]))
        assert op["op"] == "softmax" and [s["id"] for s in op["shapes"]] == [s["id"] for s in doc["shapes"]]
    assert summary["report"] == str(tmp_path / "reports" / "index.html")
