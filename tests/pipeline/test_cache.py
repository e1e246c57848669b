"""cache.py on its own: what a result's key covers (shape_key, variant_key), which stored results a rerun
measures again (remeasure, plan_shape) and which tied runners-up it re-times beside them, and the clean-up of
files no record names (prune). Stored records are the recorded H100 results of the gpufaults op."""
import dataclasses
import json
import shutil

import pytest

from testenv import FIXTURES
from pipeline import cache, config, ops, recommend, results

FAULTS = FIXTURES / "faulty" / "kernels"
GPUFAULTS = FIXTURES / "faulty-gpu" / "kernels" / "gpufaults"
RECORDED = FIXTURES / "faulty-gpu" / "profiles" / "nvidia-h100-80gb-hbm3" / "gpufaults"


def _t(median, p25=None, p75=None):
    return {"median_ms": median, "p25_ms": p25 if p25 is not None else median, "p75_ms": p75 if p75 is not None else median}


@pytest.fixture()
def recorded():
    """The gpufaults op as its files are now, and its one recorded shape (keys recorded from these files)."""
    op = ops.load_op_dir(GPUFAULTS, config.Config())
    (shape,) = results.load(RECORDED / "results.json")["shapes"]
    return op, op.config.op.shape_list(None)[0], json.loads(json.dumps(shape))


def _replace(op, section, **changes):
    return dataclasses.replace(op, config=dataclasses.replace(
        op.config, **{section: dataclasses.replace(getattr(op.config, section), **changes)}))


def test_the_shape_key_covers_reference_shape_facts_and_settings():
    op = ops.load_op_dir(FAULTS / "faults", config.Config())
    shape = op.config.op.shape_list(None)[0]
    facts = {"gpu_name": "NVIDIA H100 80GB HBM3", "driver": "570.1", "torch": "2.13.0"}
    key = cache.shape_key(op, shape, facts)
    assert key == cache.shape_key(op, shape, dict(facts))                                    # a pure function
    changed = [
        cache.shape_key(dataclasses.replace(op, reference_sha256="0" * 64), shape, facts),
        cache.shape_key(op, dataclasses.replace(shape, params={**shape.params, "batch_size": 3}), facts),
        cache.shape_key(op, dataclasses.replace(shape, dtype="float16"), facts),
        cache.shape_key(op, shape, {**facts, "driver": "570.2"}),
        cache.shape_key(_replace(op, "timing", rounds=op.config.timing.rounds + 1), shape, facts),
        cache.shape_key(_replace(op, "verify", seeds=[*op.config.verify.seeds, 99]), shape, facts),
        cache.shape_key(_replace(op, "ncu", select="all"), shape, facts),
        cache.shape_key(_replace(op, "worker", variant_timeout_s=op.config.worker.variant_timeout_s + 1), shape, facts),
    ]
    assert key not in changed and len(set(changed)) == len(changed)
    # when kernels compile changes no measurement: results stay cached
    precompile = _replace(op, "worker", precompile=not op.config.worker.precompile)
    assert cache.shape_key(precompile, shape, facts) == key


def test_the_variant_key_covers_its_source_config_problem_and_shape(recorded):
    op, _, stored = recorded
    v, key = op.variants[0], stored["cache_key"]
    base = cache.variant_key(v, key)
    assert base == next(r["cache_key"] for r in stored["variants"] if r["name"] == v.name)    # as recorded
    changed = [cache.variant_key(v, "another shape key"),
               cache.variant_key(dataclasses.replace(v, sha256="0" * 64), key),
               cache.variant_key(dataclasses.replace(v, config={"BLOCK": 64}), key),
               cache.variant_key(dataclasses.replace(v, problem="SyntaxError"), key),
               cache.variant_key(dataclasses.replace(v, name="other"), key)]
    assert base not in changed and len(set(changed)) == len(changed)


def test_machine_failures_are_measured_again_the_variant_s_own_are_not(recorded):
    _, _, stored = recorded
    by_status = {r["status"]: r for r in stored["variants"]}
    # what the variants earned on the H100 (a crash, a hang, a compile error) recurs: cached
    for status in ("crashed", "timeout", "compile-error", "launch-error", "ok"):
        assert not cache.remeasure(by_status[status]), status
    assert cache.remeasure({"status": "worker-error", "error": "not measured"})
    lost_driver = dict(by_status["crashed"], error="RuntimeError: Found no NVIDIA driver on your system")
    assert cache.remeasure(lost_driver)
    # an ok result is never re-measured for its text
    assert not cache.remeasure(dict(by_status["ok"], error="0 active drivers"))


def test_an_unchanged_shape_is_cached_whole(recorded):
    op, shape, stored = recorded
    work = cache.plan_shape(op, shape, stored, stored["cache_key"], force=False)
    assert work.measure == [] and work.controls == []
    assert set(work.cached) == {v.name for v in op.variants}
    assert work.cached["good"] == next(r for r in stored["variants"] if r["name"] == "good")


def test_profile_detail_measures_the_named_variants_again_and_keeps_the_rest_cached(recorded):
    op, shape, stored = recorded
    asked = dataclasses.replace(op, detail_asked=("good",))
    work = cache.plan_shape(asked, shape, stored, stored["cache_key"], force=False)
    assert [v.name for _, v in work.measure] == ["good"]
    assert set(work.cached) == {v.name for v in op.variants} - {"good"}


def test_force_another_shape_key_or_no_record_measure_everything(recorded):
    op, shape, stored = recorded
    every = [v.name for v in op.variants]
    for work in (cache.plan_shape(op, shape, stored, stored["cache_key"], force=True),
                 cache.plan_shape(op, shape, stored, "another key", force=False),
                 cache.plan_shape(op, shape, None, stored["cache_key"], force=False)):
        assert [v.name for _, v in work.measure] == every and work.cached == {} and work.controls == []


def test_a_changed_variant_is_measured_beside_the_fastest_and_the_baseline(recorded):
    op, shape, stored = recorded
    for r in stored["variants"]:
        if r["name"] == "launch_error":
            r["cache_key"] = "stale"                    # its source changed since
        if r["name"] == "illegal_address":
            r.update(status="worker-error", error="worker exited")    # the machine failed it
    work = cache.plan_shape(op, shape, stored, stored["cache_key"], force=False)
    assert [v.name for _, v in work.measure] == ["illegal_address", "launch_error"]
    assert [i for i, _ in work.measure] == [[v.name for v in op.variants].index(n)
                                            for n in ("illegal_address", "launch_error")]
    # recorded: good (the baseline, 0.0602 ms, quartiles 0.0568-0.0646) is the fastest; count_mismatch (0.0699 ms,
    # 0.0613-0.0755) overlaps it, so it is tied and re-timed too; cpu_only (0.0918 ms, from 0.0892) is not
    fastest = recommend.rank(stored["variants"])[0]
    assert fastest["name"] == "good" and fastest["baseline"]
    assert [v.name for _, v in work.controls] == ["count_mismatch", "good"]


def test_a_rerun_retimes_the_fastest_and_its_ties_beside_a_changed_variant():
    op = ops.load_op_dir(FAULTS / "faults", config.Config())
    shape = op.config.op.shape_list(None)[0]
    key = "shape-key"
    by_name = {v.name: v for v in op.variants}
    medians = {"good": 1.0, "wrong": 1.01, "partial": 1.5}      # pretend all three were ok; wrong ties good

    def stored(name):
        return {"name": name, "status": "ok", "timing": _t(medians[name]), "baseline": name == "good",
                "cache_key": cache.variant_key(by_name[name], key)}

    record = {"cache_key": key, "variants": [stored(n) for n in medians]}
    work = cache.plan_shape(op, shape, json.loads(json.dumps(record)), key, force=False)
    # every other variant file has no stored record, so it is measured; the cached tied pair is re-timed
    assert {v.name for _, v in work.controls} == {"good", "wrong"}
    assert set(work.cached) == {"good", "wrong", "partial"}


def test_the_fastest_baseline_config_is_retimed_even_when_slower(recorded):
    op, shape, stored = recorded
    for r in stored["variants"]:
        if r["name"] == "good":
            r["baseline"] = False
        if r["name"] == "cpu_only":
            r["baseline"] = True                         # 0.0918 ms: far behind good
        if r["name"] == "launch_error":
            r["cache_key"] = "stale"
    work = cache.plan_shape(op, shape, stored, stored["cache_key"], force=False)
    assert {v.name for _, v in work.controls} == {"good", "count_mismatch", "cpu_only"}


def test_prune_deletes_only_the_files_no_record_names(tmp_path, recorded):
    _, _, stored = recorded
    op_dir = tmp_path / "gpufaults"
    op_dir.mkdir()
    shutil.copyfile(RECORDED / "results.json", op_dir / "results.json")
    doc = results.load(op_dir / "results.json")
    doc["shapes"][0]["ncu"]["job"] = "20250102T000000.ncu.job.json"     # records written since jobs are kept
    stored = doc["shapes"][0]
    named = {stored["worker_log"], stored["ncu"]["report"], stored["ncu"]["log"], stored["ncu"]["job"]}
    stale = {"20250101T000000.ncu-rep", "20250101T000000.ncu.log", "20250101T000000.worker.log",
             "20250101T000000.ncu.job.json", "20250101T000000.detail.job.json"}
    for name in [*named, *stale, "notes.txt"]:
        (op_dir / name).write_text("x")         # stand-ins: prune reads names, never contents
    cache.prune(op_dir, doc)
    left = {p.name for p in op_dir.iterdir()}
    assert left == named | {"results.json", "notes.txt"}       # what prune does not own is kept
    # a report only a variant still names is kept
    doc = {"shapes": [{"variants": [{"ncu": {"report": stored["ncu"]["report"]}}]}]}
    cache.prune(op_dir, doc)
    assert {p.name for p in op_dir.iterdir()} == {stored["ncu"]["report"], "results.json", "notes.txt"}
