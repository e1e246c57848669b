"""The pipeline as a kernel engineer installs it: `pip install` (not editable) into a fresh venv, then every
command run from a project folder of its own. Its paths resolve against that folder, the worker imports the
installed package, and nothing is written into the installed package or this checkout."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from testenv import FIXTURES, REPO

FAULTS = FIXTURES / "faulty" / "kernels" / "faults"
TINY = {"batch_size": 2, "features": 6, "dim1": 5, "dim2": 7}


def _purelib(python: Path | str) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, check=True)
    return Path(out.stdout.strip())


def _pip_can_target() -> bool:
    """pip ≥ 22.3 installs into another interpreter's environment (--python)."""
    if importlib.util.find_spec("pip") is None or importlib.util.find_spec("venv") is None:
        return False
    out = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    found = re.match(r"pip (\d+)\.(\d+)", out.stdout)
    return bool(found) and (int(found[1]), int(found[2])) >= (22, 3)


pytestmark = pytest.mark.skipif(not _pip_can_target(), reason="needs pip >= 22.3 and venv")


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under the roots: any file written, changed or removed shows."""
    found = {}
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                st = path.stat()
                found[str(path)] = (st.st_size, st.st_mtime_ns)
    return found


def checkout_state() -> dict:
    """This checkout where a misplaced run would write: its project folders and its top-level entries."""
    return {"files": snapshot(*(REPO / d for d in ("kernels", "profiles", "reports"))),
            "top": sorted(p.name for p in REPO.iterdir())}


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    base = tmp_path_factory.mktemp("install")
    src = base / "src"      # a copy: building in the checkout would leave build/ and egg-info in it
    shutil.copytree(REPO / "pipeline", src / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", src)
    made = subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(base / "venv")],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot create a venv: {made.stderr[-300:]}")
    python = base / "venv" / "bin" / "python"
    site = _purelib(python)
    # torch, triton & co: --system-site-packages would reach only the base interpreter's packages, so a .pth
    # line puts this test environment's site-packages after the venv's own (its .pth files are not run)
    (site / "_test_environment.pth").write_text(f"{_purelib(sys.executable)}\n")
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                          "--no-build-isolation", "--no-index", "--ignore-installed", str(src)],
                         capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return base / "venv", site


@pytest.fixture(scope="module")
def flow(venv, tmp_path_factory):
    """Every command, in order, from the project folder; returns what they printed and left."""
    env_dir, site = venv
    tool = env_dir / "bin" / "kernel-pipeline"
    project = tmp_path_factory.mktemp("project")
    # no PYTHONPATH to this checkout, no TRITON_INTERPRET: the tool must not need them
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TRITON_INTERPRET")}

    def run(*args, check=True):
        proc = subprocess.run([str(tool), *map(str, args)], capture_output=True, text=True, cwd=project, env=env,
                              timeout=600)
        if check:
            assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    before = {"site": snapshot(site), "checkout": checkout_state()}
    problem = FAULTS.joinpath("reference.py").read_text()
    for name, value in TINY.items():
        problem = re.sub(rf"^{name} = \d+$", f"{name} = {value}", problem, flags=re.M)
    (project / "problem.py").write_text(problem)
    (project / "pipeline.yaml").write_text(
        "# timings only: a CPU run has no ncu counters\n"
        "targets: {sm_throughput_min: 0, memory_throughput_min: 0, max_time_ms: 100000}\n")
    out = {"version": run("--version"), "new_op": run("new-op", "tiny", "--from", "problem.py")}
    out["again"] = run("new-op", "tiny", "--from", "problem.py", check=False)
    op_dir = project / "kernels" / "tiny"
    out["op_yaml"] = yaml.safe_load((op_dir / "op.yaml").read_text())
    shutil.copy(FAULTS / "good.py", op_dir)
    with open(op_dir / "op.yaml", "a") as fh:
        fh.write("verify: {seeds: [0, 1]}\ntiming: {min_reps: 3, max_reps: 3, rounds: 1, warmup: 0}\n")
    # an op measured on another machine, copied in with its sources: its results name them relative to that root
    shutil.copytree(REPO / "kernels" / "softmax", project / "kernels" / "softmax")
    copied = project / "profiles" / "nvidia-h200" / "softmax"
    copied.mkdir(parents=True)
    shutil.copy(FIXTURES / "samples-h200" / "nvidia-h200" / "softmax" / "results.json", copied)

    out["list"] = json.loads(run("list", "--json").stdout)
    out["profile"] = run("profile", "--device", "cpu", "--op", "tiny", "--json-summary", "summary.json")
    out["summary"] = json.loads((project / "summary.json").read_text())
    out["index_after_profile"] = (project / "reports" / "index.html").read_text()
    out["pages_after_profile"] = sorted(p.name for p in (project / "reports").iterdir())
    out["report"] = run("report")
    out["gate"] = run("gate", "--json", check=False)
    out["export"] = run("export", "--op", "softmax")
    out["export_cpu"] = run("export", "--op", "tiny", check=False)
    out["prompt"] = run("prompt", "--op", "softmax", "--stage", "grid_and_parallel")
    shutil.rmtree(project / "profiles" / "nvidia-h200")
    out["report_after_removal"] = run("report")
    out["pages_after_removal"] = sorted(p.name for p in (project / "reports").iterdir())
    out["after"] = {"site": snapshot(site), "checkout": checkout_state()}
    out["before"] = before
    out["child_env"] = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import pipeline, pipeline.host as h; print(pipeline.__file__); "
         "print(h.child_env(device='cpu').get('PYTHONPATH'))"],
        capture_output=True, text=True, cwd=project, env=env, check=True).stdout.split("\n")
    return project, site, out


def test_version_comes_from_the_installed_metadata(flow):
    _, _, out = flow
    version = re.search(r'^version = "(.+)"$', (REPO / "pyproject.toml").read_text(), re.M)[1]
    assert out["version"].stdout.strip() == f"kernel-pipeline {version}"


def test_the_installed_package_runs_and_its_worker_needs_no_path_to_the_checkout(flow):
    _, site, out = flow
    assert out["child_env"][0] == str(site / "pipeline" / "__init__.py")
    assert out["child_env"][1] == "None"      # found as installed: no PYTHONPATH set for the worker


def test_new_op_sets_up_the_op_from_the_problem_file(flow):
    project, _, out = flow
    op_dir = project / "kernels" / "tiny"
    assert (op_dir / "reference.py").read_bytes() == (project / "problem.py").read_bytes()
    assert out["op_yaml"]["shapes"] == [{"name": "default", **TINY}]
    assert out["again"].returncode == 2 and f"{op_dir} exists" in out["again"].stderr
    assert out["again"].stdout == ""


def test_list_json_finds_the_projects_ops(flow):
    project, _, out = flow
    listing = out["list"]
    assert listing["root"] == str(project.resolve())
    ops = {op["name"]: op for op in listing["ops"]}
    assert sorted(ops) == ["softmax", "tiny"]
    assert {v["name"]: v["file"] for v in ops["tiny"]["variants"]} == \
        {"good": "kernels/tiny/good.py", "template": "kernels/tiny/template.py"}
    assert ops["tiny"]["shapes"] == [{"id": "default", "params": TINY, "dtype": "float32"}]


def test_profile_on_the_cpu_without_triton_interpret_set(flow):
    project, _, out = flow
    (op,) = out["summary"]["ops"]
    (shape,) = op["shapes"]
    assert out["summary"]["exit_code"] == 0 and op["op"] == "tiny"
    assert shape["status"] == {"good": "ok", "template": "unsupported"}, out["profile"].stdout
    assert shape["recommended"]["variant"] == "good" and shape["failed"] == []
    doc = json.loads(Path(op["results"]).read_text())
    assert Path(op["results"]).is_relative_to(project)
    variants = {v["name"]: v for v in doc["shapes"][0]["variants"]}
    assert variants["template"]["error"] == "write the kernel"
    assert variants["good"]["file"] == "kernels/tiny/good.py"     # relative to the project root


def test_a_partial_profile_keeps_the_other_ops_on_the_index(flow):
    _, _, out = flow
    assert out["pages_after_profile"] == ["index.html", "softmax.html", "tiny.html"]
    assert 'href="tiny.html"' in out["index_after_profile"] and 'href="softmax.html"' in out["index_after_profile"]


def test_gate_judges_local_and_copied_results(flow):
    _, _, out = flow
    verdict = json.loads(out["gate"].stdout)
    assert out["gate"].returncode == verdict["exit_code"] == 0, out["gate"].stdout
    fresh = {c["op"]: c["reason"] for c in verdict["checks"] if c["target"] == "fresh sources"}
    assert fresh["tiny"].startswith("sha256 of 3 source files") and fresh["softmax"].startswith("sha256 of")


def test_export_and_prompt_read_sources_from_this_project(flow):
    project, _, out = flow
    metrics = json.loads(out["export"].stdout)
    assert metrics and all("gpu__time_duration.sum" in m for m in metrics.values())
    doc = json.loads((FIXTURES / "samples-h200" / "nvidia-h200" / "softmax" / "results.json").read_text())
    from pipeline import recommend
    best = recommend.recommend(doc["shapes"][0]).variant
    assert (project / best["file"]).read_text().strip() in out["prompt"].stdout
    assert out["export_cpu"].returncode == 2 and "has no ncu metrics" in out["export_cpu"].stderr
    assert out["export_cpu"].stdout == ""


def test_a_page_whose_results_are_gone_is_removed(flow):
    _, _, out = flow
    assert out["pages_after_removal"] == ["index.html", "tiny.html"]


def test_nothing_written_into_the_package_or_the_checkout(flow):
    _, site, out = flow
    assert str(site / "pipeline" / "cli.py") in out["before"]["site"] and out["before"]["checkout"]["files"]
    assert out["after"]["site"] == out["before"]["site"]
    assert out["after"]["checkout"] == out["before"]["checkout"]
