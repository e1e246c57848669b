"""Ray is optional: without it `--backend ray` says how to install it, and the keys that choose the backend
are checked like every other. None of this needs Ray installed."""
import os
import subprocess
import sys

import pytest

from testenv import FIXTURES, REPO
from pipeline import config
from pipeline.errors import ConfigError

ENV = {**os.environ, "TRITON_INTERPRET": "1"}
# the CLI in a Python that cannot import ray, whether or not it is installed here
WITHOUT_RAY = "import sys; sys.modules['ray'] = None; from pipeline.cli import main; sys.exit(main(sys.argv[1:]))"


def project(tmp_path, text=""):
    (tmp_path / "pipeline.yaml").write_text(f"kernels_dir: {FIXTURES / 'shards' / 'kernels'}\n{text}")
    return tmp_path / "pipeline.yaml"


@pytest.mark.parametrize("how", [["--backend", "ray"], []])
def test_ray_backend_without_ray_says_how_to_install_it(tmp_path, how):
    cfg = project(tmp_path, "backend: ray\n" if not how else "")
    proc = subprocess.run([sys.executable, "-c", WITHOUT_RAY, "--config", str(cfg), "profile", "--device", "cpu", *how],
                          capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--backend ray (backend: ray) needs Ray, which is not installed for this Python: run `pip install " \
           "'.[ray]'`" in " ".join(proc.stderr.split())


def test_backend_keys_are_checked_where_they_are_set(tmp_path):
    with pytest.raises(ConfigError, match=r"pipeline.yaml:2: 'backend' must be one of threads, ray, or module:Class, "
                                          r"got 'rays'\. Did you mean 'ray'\?"):
        config.load_root(project(tmp_path, "backend: rays\n"))
    with pytest.raises(ConfigError, match=r"pipeline.yaml:2: 'ray_address' must be str, got int 6379"):
        config.load_root(project(tmp_path, "ray_address: 6379\n"))
    cfg = config.load_root(project(tmp_path, "backend: ray\nray_address: ray://head:10001\n"))
    assert (cfg.backend, cfg.ray_address) == ("ray", "ray://head:10001")
    op_yaml = tmp_path / "op.yaml"
    op_yaml.write_text("backend: ray\n")        # a run has one backend, not one per op
    with pytest.raises(ConfigError, match=r"op.yaml:1: unknown key 'backend'"):
        config.load_op(cfg, op_yaml)


def test_job_timeout_is_for_the_ray_backend(tmp_path):
    base = [sys.executable, "-m", "pipeline", "--config", str(project(tmp_path)), "profile", "--device", "cpu"]
    proc = subprocess.run(base + ["--job-timeout", "60"], capture_output=True, text=True, cwd=REPO, env=ENV,
                          timeout=120)
    assert proc.returncode == 2 and "--job-timeout applies to --backend ray" in proc.stderr, proc.stderr
    proc = subprocess.run(base + ["--backend", "ray", "--job-timeout", "0"], capture_output=True, text=True, cwd=REPO,
                          env=ENV, timeout=120)
    assert proc.returncode == 2 and "--job-timeout: must be a number of seconds > 0, got '0'" in proc.stderr
