"""host.py, the one place nvidia-smi is asked: a stand-in nvidia-smi on PATH answers as the lent H100's did
(`-L`, and `--query-gpu` with the fields asked for), so that what each caller reads from it is checked here
without a GPU."""
import os
import stat

import pytest

from pipeline import host

# `nvidia-smi -L` on the lent H100, with a second line as a 2-GPU host prints it
LISTING = ("GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-c1bddd6c-6ac1-27e3-a159-aacf95d07e5f)\n"
           "GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-2ce3b7b5-6496-40e4-8b98-b78add597164)\n")
ROWS = {"0": {"name": "NVIDIA H100 80GB HBM3", "driver_version": "570.86.15",
              "uuid": "GPU-c1bddd6c-6ac1-27e3-a159-aacf95d07e5f", "memory.total": "81559"},
        "1": {"name": "NVIDIA H100 80GB HBM3", "driver_version": "570.86.15",
              "uuid": "GPU-2ce3b7b5-6496-40e4-8b98-b78add597164", "memory.total": "81559"}}


@pytest.fixture()
def smi(tmp_path, monkeypatch):
    """Put a stand-in nvidia-smi first on PATH; returns a function that sets what it lists."""
    script = tmp_path / "nvidia-smi"
    rows = {i: ", ".join(f"{k}={v}" for k, v in r.items()) for i, r in ROWS.items()}

    def answer(listing=LISTING, exit_code=0):
        script.write_text(f"""#!/usr/bin/env python3
import sys
args = sys.argv[1:]
if args == ["-L"]:
    sys.stdout.write({listing!r})
    sys.exit({exit_code})
fields = next(a.split("=", 1)[1] for a in args if a.startswith("--query-gpu=")).split(",")
index = args[args.index("-i") + 1]
rows = {{i: dict(kv.split("=", 1) for kv in r.split(", ")) for i, r in {rows!r}.items()}}
if index not in rows:
    print("No devices were found")
    sys.exit(6)
print(", ".join(rows[index][f] for f in fields))
""")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    answer()
    return answer


def test_a_gpu_is_present_when_nvidia_smi_lists_one(smi):
    assert host.gpu_present() == (True, LISTING.splitlines()[0])
    smi(listing="No devices were found\n", exit_code=6)
    present, why = host.gpu_present()
    assert not present and "lists no GPU (No devices were found)" in why


def test_no_nvidia_smi_no_gpu(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert host.gpu_present() == (False, "nvidia-smi not found")
    assert host.visible_gpus() == []
    assert host.query_gpu("0", ["name"]) is None and host.gpu_memory("0") is None


def test_lanes_are_the_listed_gpus_unless_cuda_visible_devices_names_them(smi, monkeypatch):
    assert host.visible_gpus() == ["0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert host.visible_gpus() == ["1"]


def test_a_gpu_is_asked_about_by_the_first_index_its_lane_names(smi):
    assert host.query_gpu("1,0", ["uuid", "driver_version"]) == [ROWS["1"]["uuid"], ROWS["1"]["driver_version"]]
    assert host.query_gpu("", ["uuid"]) == [ROWS["0"]["uuid"]]                 # none named: GPU 0
    assert host.query_gpu("7", ["uuid"]) is None                               # nvidia-smi knows no such GPU
    assert host.gpu_memory("1") == 81559 * 2**20


def test_the_cache_key_s_facts_name_the_card(smi, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    facts = host.key_facts("cuda", "")
    assert (facts["gpu_name"], facts["driver"], facts["gpu_uuid"]) == (ROWS["1"]["name"], ROWS["1"]["driver_version"],
                                                                      ROWS["1"]["uuid"])
    assert facts["device"] == "cuda" and facts["ncu_version"] is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")
    assert host.key_facts("cuda", "")["gpu_name"] == "unknown"
    cpu = host.key_facts("cpu", "")
    assert cpu["gpu_name"] == "cpu (Triton interpreter)" and cpu["driver"] is None and "gpu_uuid" not in cpu


def test_a_child_is_pinned_to_its_gpu_and_the_interpreter_only_on_the_cpu(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    gpu = host.child_env("3")
    assert gpu["CUDA_VISIBLE_DEVICES"] == "3" and "TRITON_INTERPRET" not in gpu
    cpu = host.child_env(device="cpu")
    assert cpu["TRITON_INTERPRET"] == "1" and cpu["PYTHONSAFEPATH"] == "1"


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 5")
    assert host.visible_gpus() == ["2", "5"]


def test_gpus_listed_by_nvidia_smi():
    assert host.listed_gpus(LISTING) == ["0", "1"]
    assert host.listed_gpus("No devices were found\n") == []
