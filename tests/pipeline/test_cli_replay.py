"""`profile` on a machine with no GPU: says so, replays the recorded samples, or fails with --require-gpu."""
import subprocess
import sys

import pytest

from testenv import HAS_GPU, REPO

pytestmark = pytest.mark.skipif(HAS_GPU, reason="checks the no-GPU fallback")


def run(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_no_gpu_replays_recorded_samples(tmp_path):
    cfg = tmp_path / "pipeline.yaml"
    # a config file's folder is the project root: the recorded samples are named by absolute path
    cfg.write_text(f"kernels_dir: {REPO / 'kernels'}\nprofiles_dir: {REPO / 'profiles'}\n"
                   f"reports_dir: {tmp_path / 'reports'}\n")
    proc = run("--config", str(cfg), "profile")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "No NVIDIA GPU found" in out and "nvidia-smi" in out
    assert "Rendering reports from recorded samples: profiles/nvidia-h100-80gb-hbm3/rmsnorm/results.json" in out
    assert "recorded on NVIDIA H100 80GB HBM3" in out
    page = (tmp_path / "reports" / "rmsnorm.html").read_text()
    assert "Replayed data: recorded on NVIDIA H100 80GB HBM3 on 20" in page
    assert (tmp_path / "reports" / "index.html").exists()


def test_require_gpu_is_an_error_without_one():
    proc = run("profile", "--require-gpu")
    assert proc.returncode == 3
    assert "no NVIDIA GPU" in proc.stderr and "--require-gpu" in proc.stderr


def test_bad_config_exits_2_before_any_gpu_work(tmp_path):
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text("timing:\n  rouns: 3\n")
    proc = run("--config", str(cfg), "profile", "--require-gpu")
    assert proc.returncode == 2 and "Did you mean 'rounds'" in proc.stderr
