"""The gate's regression statistic (pipeline/compare.py): control-normalised Hodges–Lehmann shift with a
bootstrap interval, on repeats drawn here and on real runs recorded on a GPU (record.sh slower)."""
import numpy as np
import pytest

from testenv import FIXTURES
from pipeline import compare, results

RUNS = FIXTURES / "slower"


def _runs(scale_new=1.0, noise=0.01, n=200, seed=0):
    rng = np.random.default_rng(seed)
    old = 1 + noise * rng.standard_normal(n)
    new = scale_new * (1 + noise * rng.standard_normal(n))
    return list(old), list(new)


@pytest.mark.parametrize("scale, verdict", [(1.0, "same"), (1.03, "slower"), (1.10, "slower"), (0.95, "faster")])
def test_verdicts_on_clear_shifts(scale, verdict):
    old, new = _runs(scale)
    found = compare.shift(old, new, 1.0, 1.0, "copy")
    assert found.verdict == verdict and found.low <= found.ratio <= found.high
    assert abs(found.ratio - scale) < 0.005


def test_a_noisy_small_sample_is_unclear_not_same():
    old, new = _runs(1.05, noise=0.2, n=12)
    assert compare.shift(old, new, 1.0, 1.0, "copy").verdict == "unclear"


def test_a_runner_that_moves_kernel_and_control_alike_is_the_same():
    old, new = _runs(1.10)      # 10 % slower repeats, but the control measured 10 % slower too
    assert compare.shift(old, new, 1.0, 1.10, "copy").verdict == "same"


def test_hodges_lehmann_is_the_median_of_pairwise_differences():
    a, b = np.array([0.0, 1.0, 2.0]), np.array([10.0, 11.0])
    assert compare.hodges_lehmann(a, b) == np.median([10, 9, 8, 11, 10, 9])


def _recorded(run):
    paths = sorted((RUNS / f"profiles-{run}").glob("*/slowsoftmax/results.json"))
    assert paths, f"no GPU recording under {RUNS}/profiles-{run} (tests/fixtures/record.sh slower)"
    doc = results.load(paths[0])
    shape = doc["shapes"][0]
    return shape, next(v for v in shape["variants"] if v["name"] == "rows")


@pytest.mark.parametrize("run, verdict", [("aa", "same"), ("slow", "slower")])
def test_recorded_reruns(run, verdict):
    old_shape, old = _recorded("a")
    cur_shape, cur = _recorded(run)
    found = compare.compare_timings(old_shape, old["timing"], cur_shape, cur["timing"], "memory-bound")
    assert found is not None and found.verdict == verdict, found
    # the estimate agrees with the plain ratio of the two runs' control-normalised medians
    plain = (cur["timing"]["median_ms"] / cur_shape["copy"]["timing"]["median_ms"]) / \
        (old["timing"]["median_ms"] / old_shape["copy"]["timing"]["median_ms"])
    assert found.ratio == pytest.approx(plain, rel=0.005) and found.low <= found.ratio <= found.high, found.text()
