"""What `make profile` costs on this machine: a cold run (--force: everything measured) then a warm run
(nothing changed: everything cached), wall time of each and the pipeline's own split.

    python bench/profile_cost.py [extra profile args...]

The cold run re-records the results under profiles/ like `make profile` does. Both runs use a Triton
cache folder of their own, empty before the cold run, so that the cold run compiles every kernel as on a
fresh machine, whatever ran here before.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "pipeline", "profile", *args], capture_output=True, text=True,
                          cwd=REPO, env=env)
    wall = time.time() - t0
    if proc.returncode != 0:
        sys.exit(f"profile {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return wall, proc.stdout


def main() -> int:
    extra = sys.argv[1:]
    triton_cache = tempfile.mkdtemp(prefix="triton-cache-")
    env = {**os.environ, "TRITON_CACHE_DIR": triton_cache}
    cold, cold_out = timed(["--force", *extra], env)
    warm, warm_out = timed(extra, env)
    split = [ln for ln in cold_out.splitlines() if ln.startswith("Time split")]
    print(cold_out[-6000:])
    print("warm run output:\n" + warm_out[-1500:])
    print(f"cold make profile: {cold:7.1f} s   {split[-1] if split else ''}  (Triton cache empty)")
    print(f"warm make profile: {warm:7.1f} s   (nothing changed: every shape cached)")
    shapes = []
    for path in sorted((REPO / "profiles").glob("*/*/results.json")):
        for s in json.loads(path.read_text())["shapes"]:
            shapes.append((s["id"], s.get("wall_s"), s.get("ncu", {}).get("passes"),
                           (s.get("precompile") or {}).get("ahead")))
    for sid, wall, passes, ahead in shapes:
        print(f"  {sid:<14} {json.dumps(wall)}  ncu passes/kernel {passes}"
              + (f"  compiled ahead: {json.dumps(ahead)}" if ahead else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
