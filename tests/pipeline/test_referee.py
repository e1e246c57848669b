"""The referee on the CPU (Triton interpreter): the cheating candidates of tests/fixtures/cheats, run
through the real worker and parent, each end incorrect or suspect with its reason; the honest kernel is
ok, poisoned on every check, and recommended. The GPU-only evidence (streams, CUPTI, copy bound) is
checked on the recording from the device in test_referee_recorded.py."""
import json
import os
import subprocess
import sys

import pytest
import torch

from testenv import FIXTURES, REPO
from pipeline import build, recommend, results, supervise, verify

CHEATS = FIXTURES / "cheats" / "kernels"
# what the CPU can see; side_stream and calls_reference need CUPTI (GPU); downcast passes half tolerances
CPU_CAUGHT = {"writes_nothing": ("incorrect", "NaN/Inf: unwritten"),
              "half_written": ("incorrect", "NaN/Inf: unwritten"),
              "input_view": ("suspect", "shares memory with input 0"),
              "cached_output": ("suspect", "memory held from before the call"),
              "background_thread": ("suspect", "thread(s) running")}


@pytest.fixture(scope="module")
def cheats_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("profiles")
    root = tmp_path_factory.mktemp("cfg") / "pipeline.yaml"
    root.write_text(f"kernels_dir: {CHEATS}\nreports_dir: {out / 'reports'}\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(root), "profile", "--device", "cpu",
                           "--suite", "small", "--profiles-dir", str(out)],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "TRITON_INTERPRET": "1"},
                          timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return results.load(results.find_all(out)[0])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_each_cheat_is_caught_with_its_reason(cheats_run, dtype):
    shape = next(s for s in cheats_run["shapes"] if s["dtype"] == dtype)
    v = {r["name"]: r for r in shape["variants"]}
    for name, (status, reason) in CPU_CAUGHT.items():
        assert v[name]["status"] == status and reason in v[name]["error"], (name, v[name])
    if dtype == "float32":
        assert v["downcast"]["status"] == "incorrect"
    assert v["honest"]["status"] == "ok"
    # background_thread's thread must not act during the others' checks (the worker is restarted after it)
    assert not [n for n, r in v.items() if r["status"] in ("launch-error", "crashed", "worker-error")], v
    rec = recommend.recommend(shape)
    assert rec.variant["name"] not in CPU_CAUGHT


def test_honest_checks_are_poisoned_with_both_sentinels(cheats_run):
    for shape in cheats_run["shapes"]:
        honest = next(r for r in shape["variants"] if r["name"] == "honest")
        assert all(c["poisoned"] and c["output_memory"] == "sentinel" for c in honest["checks"])
        assert {c["sentinel"] for c in honest["checks"]} == set(verify.SENTINELS)
        assert honest["after_timing"]["ok"] and honest["after_timing"]["poisoned"]


def _checks(tmp_path, source, dtype, device="cpu", **extra):
    """verify_variants on one variant file at a small RMSNorm shape (the faults fixture's reference)."""
    (tmp_path / "v.py").write_text(source)
    params = {"batch_size": 2, "features": 6, "dim1": 5, "dim2": 7}
    job = {"op": "guard_t", "reference": str(FIXTURES / "faulty" / "kernels" / "faults" / "reference.py"),
           "device": device, "seeds": [0, 1, 2], "params": params, **extra}
    shape = {"id": "tiny", "index": 0, "params": params, "dtype": dtype, "tolerance": {"rtol": 1e-2, "atol": 1e-2},
             "verify": [{"index": 0, "name": "v", "file": str(tmp_path / "v.py"), "config": {}}], "time": []}
    ref_mod = build.load_reference(job)
    events = tmp_path / "events.jsonl"
    events.unlink(missing_ok=True)
    build.MODULES.pop(("guard_t", 0), None)
    verify.verify_variants(job, shape, ref_mod, build.reference_model(ref_mod, device), supervise.Events(str(events)))
    return next(e["result"] for e in map(json.loads, events.read_text().splitlines()) if e["event"] == "variant")


UNWRITTEN = '''
import torch, torch.nn as nn
class ModelNew(nn.Module):
    def __init__(self, num_features, eps=1e-5):
        super().__init__()
    def forward(self, x):
        ref = (x.float() / torch.sqrt(torch.mean(x.float() ** 2, dim=1, keepdim=True) + 1e-5)).to(x.dtype)
        out = torch.empty_like(x)   # freed just before: the allocator may hand back ref's rounded block
        del ref
        return out
'''


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_unwritten_output_fails_in_every_dtype(tmp_path, dtype):
    r = _checks(tmp_path, UNWRITTEN, dtype)
    assert r["status"] == "incorrect" and "NaN/Inf: unwritten" in r["error"], r
    assert r["checks"][0]["poisoned"] and r["checks"][0]["nonfinite"] == r["checks"][0]["numel"]


def test_the_finite_sentinel_catches_nan_masking(tmp_path):
    # replaces NaN by the reference-like value 0: passes the NaN seed only where the output is 0 anyway,
    # and the finite sentinel of the second seed is never replaced
    masking = UNWRITTEN.replace("return out", "return torch.nan_to_num(out, nan=0.0)")
    r = _checks(tmp_path, masking, "float32")
    assert r["status"] == "incorrect"


SIGN_BUG = '''
import torch, torch.nn as nn
class ModelNew(nn.Module):
    def __init__(self, num_features, eps=1e-5):
        super().__init__()
    def forward(self, x):
        xf = x.float()
        return (xf.abs() / torch.sqrt(torch.mean(xf ** 2, dim=1, keepdim=True) + 1e-5)).to(x.dtype)
'''


def test_wide_signed_inputs_catch_a_sign_bug(tmp_path):
    # right on KernelBench's [0, 1) inputs, wrong for negative ones
    assert _checks(tmp_path, SIGN_BUG, "float32")["status"] == "ok"
    r = _checks(tmp_path, SIGN_BUG, "float32", wide_inputs=100.0)
    assert r["status"] == "incorrect" and "(inputs signed, x100)" in r["error"], r
    assert r["checks"][-1]["wide_inputs"] == 100.0 and all(c["ok"] for c in r["checks"][:-1])


def test_guard_fills_every_uninitialised_allocation():
    guard = verify.OutputGuard("nan")
    with guard:
        a = torch.empty(4, dtype=torch.float16)
        b = torch.empty_strided((2, 2), (2, 1), dtype=torch.int32)
        c = a.new_empty(3)
        d = torch.zeros(2)
    assert torch.isnan(a).all() and torch.isnan(c).all() and (b == torch.iinfo(torch.int32).max).all()
    kinds = {t.untyped_storage().data_ptr(): k for t, k in [(a, "sentinel"), (b, "sentinel"), (c, "sentinel")]}
    assert all(guard.allocated[p] == k for p, k in kinds.items())
    assert guard.allocated[d.untyped_storage().data_ptr()] == "torch" and (d == 0).all()


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_unwritten_output_fails_on_the_gpu(tmp_path, dtype):
    # with CUDA's caching allocator the freed rounded reference is the block the output gets
    r = _checks(tmp_path, UNWRITTEN, dtype, "cuda")
    assert r["status"] == "incorrect" and "NaN/Inf: unwritten" in r["error"], r
    assert r["checks"][0]["poisoned"] and r["checks"][0]["nonfinite"] == r["checks"][0]["numel"]


@pytest.mark.gpu
def test_kernel_trace_sees_a_side_stream():
    x = torch.rand(1 << 22, device="cuda")
    side = torch.cuda.Stream()

    def on_side():
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            return x * 2

    plain = build.kernel_trace(lambda: x * 2)
    hidden = build.kernel_trace(on_side)
    assert len(plain["launched"]) == 1 and plain["other_streams"] == [] and plain["kernel_ms"] > 0
    assert hidden["other_streams"] == hidden["launched"] and len(hidden["launched"]) == 1
