"""Racing in the timing stage: after the first round a clearly slower variant stops at min_reps, the
ones near the fastest and the controls (reference, copy) get their whole budget. Host timers on the CPU."""
import time

from pipeline import timing
from pipeline.config import TimingConfig


def _sleeper(ms):
    return lambda: time.sleep(ms / 1e3)


def _reps(race):
    cfg = TimingConfig(warmup=0, min_reps=2, max_reps=40, budget_ms=24, rounds=4, race=race, flush_l2=False)
    cands = {"fast": _sleeper(1), "near": _sleeper(1.2), "slow": _sleeper(6), "__copy__": _sleeper(6)}
    est = {"fast": 1.0, "near": 1.2, "slow": 6.0, "__copy__": 6.0}
    stats = timing.measure(cands, est, cfg, 0, "cpu", controls=frozenset({"__copy__"}))
    return {n: s["reps"] for n, s in stats.items()}


def test_a_clearly_slower_variant_stops_at_min_reps():
    assert _reps(1.5) == {"fast": 24, "near": 20, "slow": 2, "__copy__": 4}


def test_race_zero_times_every_variant_to_its_budget():
    assert _reps(0) == {"fast": 24, "near": 20, "slow": 4, "__copy__": 4}
