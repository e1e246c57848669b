"""Spreading shapes over several GPUs of one host. Only single-GPU machines are lent, so the lanes run here
on the CPU with stand-in GPU ids: the same parent, workers and merging as on a multi-GPU host."""
import os
import subprocess
import sys

import pytest

from testenv import FIXTURES, REPO
from pipeline import results, shard
from pipeline.errors import ConfigError


def test_plan_balances_expected_time_and_keeps_every_item_once():
    items = [shard.Item(("op", s), c) for s, c in [("a", 100), ("b", 60), ("c", 50), ("d", 40), ("e", 10)]]
    lanes = shard.plan(items, ["0", "1"])
    assert sorted(it.key for lane in lanes.values() for it in lane) == sorted(it.key for it in items)
    load = {d: sum(it.cost for it in lane) for d, lane in lanes.items()}
    assert load == {"0": 140, "1": 120}            # LPT: a | b, c, then d and e where the load is lowest
    assert [it.key[1] for it in lanes["0"]] == ["a", "d"]


def test_plan_with_one_device_keeps_all_work_there():
    items = [shard.Item(("op", str(i)), 1.0) for i in range(4)]
    assert [it.key for it in shard.plan(items, ["7"])["7"]] == [it.key for it in items]


def test_shapes_spread_over_lanes_merge_into_one_results_file(tmp_path):
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(f"kernels_dir: {FIXTURES / 'shards' / 'kernels'}\nreports_dir: {tmp_path / 'reports'}\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(cfg), "profile", "--device", "cpu",
                           "--gpus", "0,1", "--profiles-dir", str(tmp_path / "profiles")],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "TRITON_INTERPRET": "1"},
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 shape(s) over 2 GPUs: 0, 1" in proc.stdout
    (path,) = results.find_all(tmp_path / "profiles")
    shapes = results.load(path)["shapes"]
    assert sorted(s["id"] for s in shapes) == ["a", "b", "c"]                     # each exactly once
    lanes = {s["id"]: s["measured_on"]["cuda_visible_devices"] for s in shapes}
    assert set(lanes.values()) == {"0", "1"}                                      # both lanes worked
    assert all(s["variants"][0]["status"] == "ok" and s["variants"][0]["timing"] for s in shapes)


def test_a_backend_from_outside_the_package_runs_the_lanes(tmp_path):
    """backend: MODULE:CLASS: a Backend written against shard's protocol alone (tests/fixtures/backend) runs
    `profile` with no change to the package."""
    log = tmp_path / "batches.log"
    cfg = tmp_path / "pipeline.yaml"
    cfg.write_text(f"kernels_dir: {FIXTURES / 'shards' / 'kernels'}\nreports_dir: {tmp_path / 'reports'}\n"
                   "backend: inline_lanes:InlineLanes\n")
    env = {**os.environ, "TRITON_INTERPRET": "1", "INLINE_LANES_LOG": str(log),
           "PYTHONPATH": os.pathsep.join([str(FIXTURES / "backend"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(cfg), "profile", "--device", "cpu",
                           "--profiles-dir", str(tmp_path / "profiles")],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = results.find_all(tmp_path / "profiles")
    shapes = results.load(path)["shapes"]
    assert sorted(s["id"] for s in shapes) == ["a", "b", "c"]
    assert sorted(item.split("/")[1] for item in log.read_text().split()) == ["a", "b", "c"]     # every shape through it


def test_an_unknown_backend_is_named():
    opts = shard.Options(device="cpu", say=print, tracker=None)
    with pytest.raises(ConfigError, match=r"unknown backend 'nope'; backends: threads, ray, or MODULE:CLASS"):
        shard.backend("nope", opts)
    with pytest.raises(ConfigError, match=r"backend 'no_such_mod:X': cannot load no_such_mod:X \(ModuleNotFoundError"):
        shard.backend("no_such_mod:X", opts)
