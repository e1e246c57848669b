"""`profile --backend ray` on a real Ray cluster of several nodes on this machine (ray.cluster_utils.Cluster):
a head without lanes and two nodes declaring one stand-in lane each (raybackend.CPU_LANE instead of a GPU),
with the real driver, actors, workers and merging, and the deliberately broken variants of
tests/fixtures/faulty under `--device cpu`."""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

ray = pytest.importorskip("ray")

from testenv import FIXTURES, REPO  # noqa: E402
from pipeline import results  # noqa: E402
from pipeline.raybackend import CPU_LANE  # noqa: E402

ENV = {**os.environ, "TRITON_INTERPRET": "1"}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    lanes = [c.add_node(num_cpus=1, resources={CPU_LANE: 1}) for _ in range(2)]
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)    # to look at it from outside
    yield c, {n.all_processes["raylet"][0].process.pid: n.node_id for n in lanes}
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Two ops: the broken variants (the hang's limit shortened to 4 s), and three tiny shapes of a good variant
    and of one whose message names its own file (a lane elsewhere must name it as it is here)."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(FIXTURES / "faulty" / "kernels" / "faults", root / "kernels" / "faults")
    shutil.copytree(FIXTURES / "shards" / "kernels" / "threeshapes", root / "kernels" / "threeshapes")
    (root / "kernels" / "threeshapes" / "where.py").write_text(
        "import torch.nn as nn\n\n\nclass ModelNew(nn.Module):\n    def __init__(self, num_features, eps=1e-5):\n"
        "        super().__init__()\n\n    def forward(self, x):\n"
        "        raise NotImplementedError(f'not written yet: {__file__}')\n")
    op_yaml = root / "kernels" / "faults" / "op.yaml"
    op_yaml.write_text(op_yaml.read_text().replace("variant_timeout_s: 8", "variant_timeout_s: 4"))
    (root / "pipeline.yaml").write_text("reports_dir: reports\n")
    return root


def profile(project, out, *args):
    return [sys.executable, "-m", "pipeline", "--config", str(project / "pipeline.yaml"), "profile", "--device", "cpu",
            "--profiles-dir", str(out), *args]


def on_ray(c, *args):
    return ["--backend", "ray", "--ray-address", c.address, *args]


def statuses(profiles):
    """{(op, shape, variant): status} over every results file; each triple must appear once."""
    found = {}
    for path in results.find_all(profiles):
        doc = results.load(path)
        for shape in doc["shapes"]:
            for v in shape["variants"]:
                key = (doc["op"], shape["id"], v["name"])
                assert key not in found, f"{key} twice in {path}"
                found[key] = v["status"]
    return found


def shapes(profiles, op):
    (path,) = [p for p in results.find_all(profiles) if p.parent.name == op]
    return {s["id"]: s for s in results.load(path)["shapes"]}


def lanes_free(timeout=20):
    """Every stand-in lane's resource back in the cluster: no actor of the run is left."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ray.available_resources().get(CPU_LANE, 0) == 2:
            return True
        time.sleep(0.5)
    return False


def lane_workers():
    """Workers a cluster lane started (they run in the lane's folder), not those of other runs on this machine."""
    found = []
    for pid in subprocess.run(["pgrep", "-f", "pipeline.worker"], capture_output=True, text=True).stdout.split():
        try:
            if "/pipeline-lane-" in os.readlink(f"/proc/{pid}/cwd"):
                found.append(pid)
        except OSError:
            pass
    return found


def survivors(pids, timeout=10):
    """The processes among `pids` still there after `timeout` seconds (a killed worker takes a moment to go), as
    ps shows them; "" when all are gone."""
    deadline = time.time() + timeout
    while (left := [p for p in pids if os.path.exists(f"/proc/{p}")]) and time.time() < deadline:
        time.sleep(0.2)
    return subprocess.run(["ps", "-o", "pid,ppid,sid,stat,lstart,cmd", "-p", ",".join(left)], capture_output=True,
                          text=True).stdout if left else ""


@pytest.fixture(scope="module")
def both_runs(cluster, project, tmp_path_factory):
    """The same project measured by thread lanes here and by the cluster's lanes."""
    c, _ = cluster
    local, remote = tmp_path_factory.mktemp("local"), tmp_path_factory.mktemp("remote")
    threads = subprocess.run(profile(project, local), capture_output=True, text=True, cwd=REPO, env=ENV, timeout=300)
    on_cluster = subprocess.run(profile(project, remote, *on_ray(c)), capture_output=True, text=True, cwd=REPO,
                                env=ENV, timeout=300)
    return threads, on_cluster, local, remote


def test_cluster_results_equal_thread_lanes_each_once(both_runs, project):
    threads, on_cluster, local, remote = both_runs
    assert threads.returncode == 0, threads.stdout + threads.stderr
    assert on_cluster.returncode == 0, on_cluster.stdout + on_cluster.stderr
    assert "4 shape(s) over 2 GPUs" in on_cluster.stdout
    mine, theirs = statuses(remote), statuses(local)
    assert len(mine) == 9 + 2 * 3          # faults: 9 variants at one shape; threeshapes: two at three
    assert mine == theirs
    assert mine[("faults", "tiny", "hang")] == "timeout" and mine[("faults", "tiny", "segfault")] == "crashed"
    for profiles in (local, remote):
        where = {v["name"]: v for v in shapes(profiles, "threeshapes")["b"]["variants"]}["where"]
        assert where["error"] == f"not written yet: {project}/kernels/threeshapes/where.py"
        assert where["file"] == "kernels/threeshapes/where.py"


def test_each_shape_records_the_node_and_lane_that_measured_it(both_runs, cluster):
    _, on_cluster, _, remote = both_runs
    _, nodes = cluster
    where = {}
    for path in results.find_all(remote):
        for s in results.load(path)["shapes"]:
            where[s["id"]] = s["measured_on"]
            assert (path.parent / s["worker_log"]).is_file()     # the files a record names, beside it
    assert sorted(where) == ["a", "b", "c", "tiny"]
    assert all(w["node_id"] in nodes.values() and w["host"] for w in where.values()), where
    assert {w["node_id"] for w in where.values()} == set(nodes.values())        # both lane nodes worked
    assert not any(f.name.startswith(".") for f in remote.rglob("*"))          # no temporary file left
    assert lanes_free(), "a lane's actor outlived the run"


def test_an_actor_killed_mid_run_is_replaced_and_its_op_retried_on_another_lane(cluster, project, tmp_path,
                                                                                 both_runs):
    c, nodes = cluster
    out = tmp_path / "profiles"
    proc = subprocess.Popen(profile(project, out, "--op", "faults", *on_ray(c)), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=REPO, env=ENV)
    seen = []
    for line in proc.stdout:        # variants run in name order: once `good` is done, `hang` is running
        seen.append(line)
        if "faults tiny good: ok" in line:
            break
    (worker,) = lane_workers()        # one op: only its lane has a worker
    actor = int(subprocess.run(["ps", "-o", "ppid=", "-p", worker], capture_output=True, text=True).stdout)
    raylet = int(subprocess.run(["ps", "-o", "ppid=", "-p", str(actor)], capture_output=True, text=True).stdout)
    os.kill(actor, signal.SIGKILL)
    text = "".join(seen) + proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, text
    assert "died: The actor died unexpectedly" in text and "retrying faults tiny on" in text
    shape = shapes(out, "faults")["tiny"]
    assert shape["measured_on"]["node_id"] != nodes[raylet]                    # another lane's node
    assert statuses(out) == {k: v for k, v in statuses(both_runs[2]).items() if k[0] == "faults"}
    assert not survivors([worker]), "the dead actor's worker outlived it"
    assert lanes_free()


def test_job_timeout_replaces_the_lane_retries_once_then_records_the_reason(cluster, project, tmp_path):
    c, _ = cluster
    out = tmp_path / "profiles"
    proc = subprocess.run(profile(project, out, "--op", "faults", "--variant", "hang", "--variant", "good",
                                  *on_ray(c, "--job-timeout", "3")),
                          capture_output=True, text=True, cwd=REPO, env=ENV, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stopped = [ln for ln in proc.stdout.splitlines() if "✗ lane" in ln]
    assert len(stopped) == 2 and all("(job timeout), stopped" in ln for ln in stopped), proc.stdout
    assert "retrying faults tiny on" in proc.stdout
    hang = {v["name"]: v for v in shapes(out, "faults")["tiny"]["variants"]}
    assert {v["status"] for v in hang.values()} == {"worker-error"}
    assert "job timeout" in hang["hang"]["error"] and "retried on" in hang["hang"]["error"]
    assert not survivors(lane_workers())
    assert lanes_free()


def test_interrupt_cancels_every_actor_and_keeps_completed_ops(cluster, project, tmp_path):
    """SIGINT to the driver while one lane is in the hanging variant and the other has finished its op."""
    c, _ = cluster
    out = tmp_path / "profiles"
    proc = subprocess.Popen(profile(project, out, *on_ray(c)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO, env=ENV)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "faults tiny good: ok" in line:
            break
    deadline = time.time() + 60
    while not list(out.glob("*/threeshapes/results.json")) and time.time() < deadline:
        time.sleep(0.2)
    workers = lane_workers()
    assert workers, "".join(seen)
    assert not list(out.glob("*/faults/results.json")), "faults finished before the interrupt: nothing to cut short"
    proc.send_signal(signal.SIGINT)
    text = "".join(seen) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 130 and "interrupted" in text, text
    kept = statuses(out)
    assert kept and {k[0] for k in kept} == {"threeshapes"}                   # faults was cut short: nothing of it
    assert {k[1] for k in kept} >= {"a", "c"} and set(kept.values()) == {"ok", "unsupported"}
    assert not survivors(workers), f"a worker outlived the interrupt:\n{survivors(workers, 0)}"
    assert lanes_free(), "an actor outlived the interrupt"


def test_unknown_gpu_model_names_the_models_present(cluster, project, tmp_path):
    c, _ = cluster
    proc = subprocess.run(profile(project, tmp_path, *on_ray(c, "--gpu-model", "H100")), capture_output=True,
                          text=True, cwd=REPO, env=ENV, timeout=120)
    assert proc.returncode == 2
    assert "no GPU of model 'H100' (--gpu-model) among the lanes; models: cpu (Triton interpreter) (2 GPU(s); " \
           "--gpu-model cpu-triton-interpreter)" in proc.stderr, proc.stderr
    assert lanes_free()


def test_gpus_of_this_host_are_refused_with_the_ray_backend(project, tmp_path):
    proc = subprocess.run(profile(project, tmp_path, "--backend", "ray", "--gpus", "0,1"), capture_output=True,
                          text=True, cwd=REPO, env=ENV, timeout=120)
    assert proc.returncode == 2 and "--gpus picks GPUs of this host" in proc.stderr, proc.stderr


def test_a_cluster_without_gpus_is_a_machine_without_one(cluster, project, tmp_path):
    c, _ = cluster
    cmd = profile(project, tmp_path, *on_ray(c, "--require-gpu"))
    cmd[cmd.index("cpu")] = "cuda"
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=ENV, timeout=120)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert f"no NVIDIA GPU: the Ray cluster at '{c.address}' has no GPU (--require-gpu)" in proc.stderr
