"""Paths and facts the tests share (imported by conftest.py and test modules)."""
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"


def _has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    if not smi:
        return False
    try:
        return "GPU" in subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False


HAS_GPU = _has_gpu()


def start_until(cmd: list[str], marker: str, **popen) -> tuple[subprocess.Popen, list[str]]:
    """Start `cmd` and read its output until a line holds `marker` (or the output ends): the process is
    then mid-run, at a known point. Returns the process and the lines read."""
    popen.setdefault("stderr", subprocess.STDOUT)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, **popen)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            break
    return proc, seen


def slowed_copy(doc: dict, family: str, factor: float, gpu_name: str) -> dict:
    """A copy of a results document as if measured on `gpu_name`, with every timing of one layout family
    scaled by `factor`: a second recording made from a real one, for pages that compare two."""
    import copy
    d = copy.deepcopy(doc)
    d["environment"]["gpu_name"] = gpu_name
    for s in d["shapes"]:
        for v in s["variants"]:
            if v.get("stem") == family and v.get("timing"):
                for k in ("median_ms", "p25_ms", "p75_ms", "min_ms", "max_ms"):
                    v["timing"][k] *= factor
    return d
