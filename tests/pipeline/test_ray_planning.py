"""What profiling plans over lanes of several GPU models (a mixed Ray cluster), run on the CPU: a backend
written here, in this module only, declares two thread lanes of this host as two models, one with too little
memory for some shapes; everything else is the real planning, lanes, workers and merging."""
import pytest

from testenv import FIXTURES
from pipeline import config, host, ops, profiling, results, shard
from pipeline.cache import plan_shape
from pipeline.errors import ConfigError, SelectionError

MODELS = {"gpu0": ("Small GPU", 1024), "gpu1": ("Big GPU", 2**40)}


class TwoModels(shard.ThreadLanes):
    """Thread lanes on GPUs 0 and 1, declared as the models of MODELS (name, memory in bytes)."""

    def open(self, make_lane, probe, keep):
        def declared(lane):
            facts = probe(lane)
            model, memory = MODELS[lane.name]
            return {**facts, "gpu_name": model, "key": {**facts["key"], "gpu_name": model}, "memory_bytes": memory}
        return super().open(make_lane, declared, keep)


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setitem(shard.BACKENDS, "two-models", f"{__name__}:TwoModels")
    (tmp_path / "pipeline.yaml").write_text(f"kernels_dir: {FIXTURES / 'shards' / 'kernels'}\n")
    return tmp_path


def run(project, **kw):
    said = []
    cfg = config.load_root(project / "pipeline.yaml")
    profiling.run(ops.discover(cfg, project), cfg, None, False, said.append, device="cpu", gpus=["0", "1"],
                  root=project, backend="two-models", **kw)
    return "\n".join(said)


def shapes(project, model):
    doc = results.load(results.path_for(project / "profiles", model, "threeshapes"))
    return {s["id"]: s for s in doc["shapes"]}


def test_every_shape_is_measured_once_per_model_and_skipped_where_it_cannot_fit(project):
    run(project)
    small, big = shapes(project, "Small GPU"), shapes(project, "Big GPU")
    assert sorted(small) == sorted(big) == ["a", "b", "c"]
    assert {s["measured_on"]["cuda_visible_devices"] for s in small.values()} == {"0"}
    assert {s["measured_on"]["cuda_visible_devices"] for s in big.values()} == {"1"}
    # min_bytes is stored now: 1 KiB holds shape b (864 bytes) only
    assert [s["min_bytes"] <= 1024 for s in (small["a"], small["b"], small["c"])] == [False, True, False]

    said = run(project, force=True)
    assert "threeshapes a: skipped on Small GPU: its inputs and output alone take 3.3 KiB (min_bytes, as stored), " \
           "more than the GPU's 1.0 KiB" in said
    assert "threeshapes c: skipped on Small GPU" in said and "threeshapes b: skipped" not in said
    again, big_again = shapes(project, "Small GPU"), shapes(project, "Big GPU")
    assert again["a"] == small["a"] and again["c"] == small["c"]                 # kept as they were
    assert again["b"]["measured_at"] != small["b"]["measured_at"]                # measured again
    assert all(big_again[i]["measured_at"] != big[i]["measured_at"] for i in big)


def test_gpu_model_measures_on_that_model_only(project):
    run(project)
    small = shapes(project, "Small GPU")
    said = run(project, force=True, gpu_model="big-gpu")       # the profiles folder name works as well
    assert "Small GPU" not in said
    assert shapes(project, "Small GPU") == small
    with pytest.raises(SelectionError, match=r"no GPU of model 'H100' \(--gpu-model\) among the lanes; models: "
                                        r"Big GPU \(1 GPU\(s\); --gpu-model big-gpu\), Small GPU"):
        run(project, gpu_model="H100")


def test_too_big_needs_both_sizes():
    assert profiling.too_big(None, 1024) is None and profiling.too_big(2048, None) is None
    assert profiling.too_big(1024, 1024) is None
    assert profiling.too_big(3 * 2**30, 80 * 2**30) is None
    assert profiling.too_big(96 * 2**30, 80 * 2**30) == ("its inputs and output alone take 96.0 GiB (min_bytes, as "
                                                         "stored), more than the GPU's 80.0 GiB")


def lane(name, driver="550.54", package=None, uuid=None):
    key = {"gpu_name": "NVIDIA H100", "driver": driver, "torch": "2.13.0", "triton": "3.5", "ncu_version": "2025.1",
           "gpu_uuid": uuid}
    return shard.LaneInfo(name, f"node{name} gpu 0", "NVIDIA H100",
                          {"key": key, "host": f"node{name}", "package": package or host.package_digest()})


def test_lanes_of_one_model_must_share_a_software_stack_and_this_pipeline():
    assert profiling._stand_in("NVIDIA H100", [lane("1", uuid="GPU-b"), lane("2", uuid="GPU-a")]).name == "2"
    with pytest.raises(ConfigError, match=r"the GPUs of model NVIDIA H100 differ in their software; .*: node1 gpu 0: "
                                          r"driver 550.54, .*; node2 gpu 0: driver 560.28"):
        profiling._stand_in("NVIDIA H100", [lane("1"), lane("2", driver="560.28")])
    with pytest.raises(ConfigError, match=r"node2 gpu 0 \(node2\) runs other pipeline code than this machine"):
        profiling._stand_in("NVIDIA H100", [lane("1"), lane("2", package="0" * 64)])


def test_a_job_is_bounded_by_its_ops_own_limits():
    (op,) = ops.discover(config.Config(), FIXTURES / "shards")
    work = plan_shape(op, op.config.op.shapes[0], None, "k", False)
    c = op.config
    assert profiling._job_limit(work) == 3 * c.worker.variant_timeout_s + c.worker.timing_timeout_s \
        + c.ncu.timeout_s + 300
