"""`optimize`'s bad input: each case stops before anything is measured, exit 2 (3 for --device cuda without a
GPU), with a message naming what is wrong and where."""
import argparse
import json
import shutil
import subprocess
import sys

import pytest

from testenv import FIXTURES, HAS_GPU, REPO


@pytest.fixture
def root(tmp_path):
    shutil.copytree(FIXTURES / "optimize" / "kernels", tmp_path / "kernels")
    (tmp_path / "pipeline.yaml").write_text("kernels_dir: kernels\nprofiles_dir: profiles\nreports_dir: reports\n")
    return tmp_path


def optimize(root, *args):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(root / "pipeline.yaml"), "optimize",
                           *args], capture_output=True, text=True, cwd=REPO, timeout=120)
    return proc.returncode, " ".join(proc.stderr.split())


SEARCH = ["--op", "scale", "--proposer", "search", "--device", "cpu"]


@pytest.mark.parametrize("args, message", [
    (["--shape", "n9"], "--shape: unknown shape n9 for scale; shapes: n4096, n1000"),
    (["--shape", "n4096", "--shape", "n1000"], "no held-out shape for op scale: every shape is tuned on"),
    (["--holdout", "n4096"], "shape n4096 is both tuned on and held out"),
    (["--from", "nosuch"], "--from: unknown variant nosuch in op scale; variants: tiled"),
    ([], "no results of op scale on cpu (Triton interpreter)"),
])
def test_selection_errors(root, args, message):
    code, err = optimize(root, *SEARCH, *args)
    assert code == 2 and message in err, err
    assert not (root / "profiles").exists() or not list((root / "profiles").rglob("log.json"))


def test_no_recommendation_says_how_to_get_one(root):
    code, err = optimize(root, *SEARCH)
    assert code == 2 and "run `profile --op scale --shape n4096 --device cpu` first, or pass --from VARIANT" in err


def test_search_needs_a_space_naming_the_file(root):
    (root / "kernels" / "scale" / "plain.py").write_text(
        (root / "kernels" / "scale" / "tiled.py").read_text().replace("SPACE = ", "NOT_SPACE = "))
    code, err = optimize(root, *SEARCH, "--from", "plain")
    assert code == 2 and "plain.py: no SPACE; the search proposer needs the variant to declare its space" in err


def test_a_restriction_that_is_code_names_file_and_line(root):
    tiled = root / "kernels" / "scale" / "tiled.py"
    tiled.write_text(tiled.read_text().replace('RESTRICT = ["BLOCK * num_warps <= 256"]',
                                               'RESTRICT = ["open(\'/etc/passwd\') and BLOCK"]'))
    code, err = optimize(root, *SEARCH, "--from", "tiled")
    assert code == 2 and "tiled.py:9: RESTRICT[0]" in err and "only numbers, parameter names" in err, err


@pytest.mark.parametrize("args, message", [
    (["--proposer", "cmd"], "--proposer cmd needs --proposer-cmd CMD"),
    (["--proposer", "cmd", "--proposer-cmd", "no-such-proposer-x"], "no-such-proposer-x is not an executable"),
    (["--proposer", "search", "--proposer-cmd", "true"], "--proposer-cmd is for --proposer cmd"),
    (["--proposer", "search", "--resume"], "nothing to resume under"),
])
def test_proposer_flags(root, args, message):
    code, err = optimize(root, "--op", "softmax_opt", "--device", "cpu", "--from", "slow", *args)
    assert code == 2 and message in err, err


@pytest.mark.parametrize("flag, value", [("--budget", "0"), ("--batch", "-1"), ("--proposer-timeout", "nan")])
def test_numbers_are_checked(root, flag, value):
    code, err = optimize(root, *SEARCH, flag, value)
    assert code == 2 and flag in err


def test_an_unfinished_run_with_other_flags_is_not_taken_over(root):
    folder = root / "profiles" / "cpu-triton-interpreter" / "scale" / "optimize" / "20240101T000000"
    folder.mkdir(parents=True)
    signature = {"op": "scale", "device": "cpu", "proposer": "search", "command": [], "tuning": ["n4096"],
                 "holdout": ["n1000"], "stages": ["grid_and_parallel"]}
    (folder / "log.json").write_text(json.dumps({"schema": "pipeline-optimize", "schema_version": 1,
                                                 "finished": False, "signature": signature, "steps": []}))
    code, err = optimize(root, *SEARCH, "--from", "tiled")
    assert code == 2 and "was started with stages ['grid_and_parallel'] (now" in err and "--fresh" in err, err


@pytest.mark.skipif(HAS_GPU, reason="checks the machine without a GPU")
def test_cuda_without_a_gpu_exits_3(root):
    code, err = optimize(root, "--op", "scale", "--proposer", "search", "--from", "tiled")
    assert code == 3 and "needs an NVIDIA GPU" in err and "--device cpu" in err


def test_a_proposer_path_relative_to_here_still_runs_from_the_step_folder(tmp_path, monkeypatch):
    from pipeline import optimize_options, proposer
    monkeypatch.chdir(REPO)
    parser = optimize_options.add_arguments(argparse.ArgumentParser())
    opts = optimize_options.options(parser.parse_args(
        ["--op", "x", "--proposer", "cmd", "--proposer-cmd", "python3 tests/fixtures/optimize/canned_proposer.py"]))
    assert opts.command == ["python3", str(FIXTURES / "optimize" / "canned_proposer.py")]
    step = tmp_path / "step"
    step.mkdir()
    code, _ = proposer.run_proposer(["true", *opts.command[1:]], "prompt", step, {}, 10.0, tmp_path / "log", step)
    assert code == 0


def test_a_proposer_that_cannot_be_started_is_bad_input_not_a_crash(tmp_path):
    from pipeline import proposer
    from pipeline.errors import SelectionError
    script = tmp_path / "propose.sh"
    script.write_text("#!/bin/sh\n")          # not executable
    with pytest.raises(SelectionError, match="--proposer-cmd: cannot run .*propose.sh: Permission denied"):
        proposer.run_proposer([str(script)], "prompt", tmp_path, {}, 10.0, tmp_path / "log", tmp_path)
