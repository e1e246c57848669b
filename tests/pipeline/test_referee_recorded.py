"""The cheating catalogue as recorded on a GPU (tests/fixtures/record.sh cheats): every cheat ends
incorrect or suspect with the evidence that caught it, the honest kernel is ok, poisoned on every check,
and recommended at every shape and dtype."""
import pytest

from testenv import FIXTURES, REPO
from pipeline import recommend, results

RECORDED = sorted((FIXTURES / "cheats" / "profiles").glob("*/cheats/results.json"))
# the reason each cheat must be caught for, as evidence.py and verify.py word it
CAUGHT = {"writes_nothing": ("incorrect", "NaN/Inf: unwritten"),
          "half_written": ("incorrect", "NaN/Inf: unwritten"),
          "input_view": ("suspect", "shares memory with input 0"),
          "cached_output": ("suspect", "memory held from before the call"),
          "background_thread": (("incorrect", "suspect"), ""),
          "side_stream": ("suspect", "stream the timing events do not see"),
          "calls_reference": ("suspect", "compiled no Triton kernel")}


@pytest.fixture(scope="module", params=RECORDED, ids=lambda p: p.parent.parent.name)
def doc(request):
    return results.load(request.param)


def test_recorded_on_a_gpu():
    assert RECORDED, "no GPU recording of the cheats fixture"


def test_every_cheat_caught_and_the_honest_kernel_recommended(doc):
    assert len(doc["shapes"]) == 3
    for shape in doc["shapes"]:
        v = {r["name"]: r for r in shape["variants"]}
        for name, (status, reason) in CAUGHT.items():
            want = status if isinstance(status, tuple) else (status,)
            assert v[name]["status"] in want and reason in v[name]["error"], (shape["id"], name, v[name])
        if shape["dtype"] == "float32":
            assert v["downcast"]["status"] == "incorrect", v["downcast"]
        assert v["honest"]["status"] == "ok"
        assert recommend.recommend(shape).variant["name"] in ("honest", "downcast")


def test_every_check_of_every_variant_that_allocates_is_poisoned(doc):
    for shape in doc["shapes"]:
        for v in shape["variants"]:
            if v["name"] in ("honest", "writes_nothing", "half_written", "side_stream"):
                assert v["checks"] and all(c["poisoned"] for c in v["checks"]), (shape["id"], v["name"])


SAMPLES = sorted((REPO / "profiles" / "nvidia-h100-80gb-hbm3").glob("*/results.json"))


def test_the_default_suite_recorded_under_the_referee():
    """make profile's default suite, recorded on a GPU with the guard, the recheck and the evidence rules:
    every check of every dtype is poisoned, and no variant of kernels/ is suspect."""
    assert {p.parent.name for p in SAMPLES} == {"attn_scores", "matmul", "rmsnorm", "softmax"}
    dtypes = set()
    for path in SAMPLES:
        for shape in results.load(path)["shapes"]:
            assert shape["matmul"]["timing"]["samples"] and shape["copy"]["timing"]["samples"]
            for v in shape["variants"]:
                assert all(c["poisoned"] for c in v.get("checks", [])), (path, shape["id"], v["name"])
                dtypes |= {shape["dtype"]} if v.get("checks") else set()
                if (v["name"], shape["id"]) == ("seed_2d_tiles", "odd-spatial"):   # its known masking bug
                    assert v["status"] == "incorrect" and "NaN/Inf: unwritten" in v["error"]
                else:
                    assert v["status"] in ("ok", "unsupported"), (path, shape["id"], v["name"], v.get("error"))
                if v["status"] == "ok":
                    assert v["after_timing"]["ok"] and v["timing"]["samples"]
    assert dtypes == {"float32", "float16", "bfloat16"}
