"""A variant's thread must never cost another variant its result: here a variant leaves a thread behind set
to kill the worker during the next, correct, variant's check. The worker is restarted right after a variant
that leaves threads running (verify.LEFT_THREADS), and a worker lost during a check is not charged to the
variant being checked until it fails alone."""
import os
import shutil
import subprocess
import sys

from testenv import FIXTURES, REPO
from pipeline import results

TIMEBOMB = '''
import os, signal, threading, time
import torch, torch.nn as nn
class ModelNew(nn.Module):
    def __init__(self, num_features, eps=1e-5):
        super().__init__()
    def forward(self, x):
        def boom():
            time.sleep(2.0)   # past the rest of its own check: it goes off in the next variant's
            os.kill(os.getpid(), signal.SIGKILL)
        threading.Thread(target=boom, daemon=True).start()
        return x / torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-5)
'''
SLOW_GOOD = '''
import time
import torch, torch.nn as nn
class ModelNew(nn.Module):
    def __init__(self, num_features, eps=1e-5):
        super().__init__()
    def forward(self, x):
        time.sleep(4.0)
        return x / torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + 1e-5)
'''


def test_the_variant_that_killed_the_worker_is_charged_not_the_one_running(tmp_path):
    op = tmp_path / "kernels" / "blame"
    op.mkdir(parents=True)
    shutil.copy(FIXTURES / "faulty" / "kernels" / "faults" / "reference.py", op / "reference.py")
    (op / "op.yaml").write_text("baseline: b_slow_good\nshapes:\n  - {name: tiny, batch_size: 2, features: 6, "
                                "dim1: 5, dim2: 7}\nverify: {seeds: [0]}\n"
                                "timing: {min_reps: 1, max_reps: 1, rounds: 1, warmup: 1}\n")
    (op / "a_timebomb.py").write_text(TIMEBOMB)
    (op / "b_slow_good.py").write_text(SLOW_GOOD)
    (tmp_path / "pipeline.yaml").write_text("kernels_dir: kernels\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(tmp_path / "pipeline.yaml"), "profile",
                           "--device", "cpu"], capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = results.load(results.find_all(tmp_path / "profiles")[0])
    status = {v["name"]: (v["status"], v.get("error", "")) for v in doc["shapes"][0]["variants"]}
    assert status["a_timebomb"][0] == "suspect" and "thread(s) running" in status["a_timebomb"][1], status
    assert status["b_slow_good"][0] == "ok", status
