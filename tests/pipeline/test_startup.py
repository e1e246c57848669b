"""Commands that draw nothing start without matplotlib (it costs half a second of every gate's start)."""
import subprocess
import sys

import pytest

from testenv import REPO


@pytest.mark.parametrize("command", [["gate", "--help"], ["list", "--help"], ["config"]])
def test_no_matplotlib_at_start_up(command):
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline", *command],
                          capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")]
    assert "pipeline.gate" in imported or command[0] != "gate"
    assert not [m for m in imported if m.startswith("matplotlib")]
