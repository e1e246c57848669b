"""The `search` proposer: SPACE and RESTRICT read without running anything, restrictions evaluated on the
syntax tree only, neighbours ordered by rules that fire on counters recorded on the H200; and a whole search
on the CPU (Triton interpreter) over a small SPACE with a RESTRICT, interrupted and resumed."""
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from testenv import FIXTURES, REPO
from pipeline import ops, results, search
from pipeline.errors import ConfigError

SCALE = FIXTURES / "optimize" / "kernels" / "scale"


def variant(tmp_path, body):
    path = tmp_path / "v.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_space_and_restrict_are_read_from_the_fixture():
    space = ops.read_space(SCALE / "tiled.py")
    assert space.params == {"BLOCK": [16, 32, 64, 128, 256], "num_warps": [1, 2, 4]}
    assert space.restrict == ["BLOCK * num_warps <= 256"] and space.line == 8 and space.restrict_line == 9


@pytest.mark.parametrize("body, message", [
    ("SPACE = dict(BLOCK=[64, f(2)])\n", r"v.py:1: SPACE must be a literal dict of lists"),
    ("X = 1\nSPACE = dict(BLOCK=64)\n", r"v.py:2: SPACE\['BLOCK'\] must be a non-empty list"),
    ("SPACE = dict(BLOCK=[64, 64])\n", r"v.py:1: SPACE\['BLOCK'\] lists a value twice"),
    ("SPACE = dict(BLOCK=[64])\nRESTRICT = 'BLOCK > 1'\n", r"v.py:2: RESTRICT must be a literal list of strings"),
])
def test_malformed_space_names_file_and_line(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        ops.read_space(variant(tmp_path, body))


@pytest.mark.parametrize("restriction, message", [
    ("__import__('os').system('true')", r"v.py:2: RESTRICT\[0\] .*only numbers, parameter names"),
    ("BLOCK.bit_length() < 9", r"v.py:2: RESTRICT\[0\] .*only numbers, parameter names"),
    ("BLOKC <= 128", r"v.py:2: RESTRICT\[0\] .*unknown name 'BLOKC' \(parameters: BLOCK, num_warps\)"),
    ("BLOCK <=", r"v.py:2: RESTRICT\[0\] .*SyntaxError"),
])
def test_restrictions_are_refused_unless_plain_arithmetic(tmp_path, restriction, message):
    path = variant(tmp_path, f"SPACE = dict(BLOCK=[64, 128], num_warps=[2, 4])\nRESTRICT = [{restriction!r}]\n")
    with pytest.raises(ConfigError, match=message):
        search.tuning(ops.read_space(path), {"BLOCK": 64, "num_warps": 2})


def test_restrictions_evaluate_and_a_failure_names_the_restriction(tmp_path):
    path = variant(tmp_path, 'SPACE = dict(BLOCK=[64, 128], num_warps=[0, 2, 4])\n'
                             'RESTRICT = ["BLOCK // (32 * num_warps) <= 1",\n'
                             '            "max(BLOCK, 32) % 64 == 0 and not num_warps > 4"]\n')
    t = search.tuning(ops.read_space(path), {"BLOCK": 64, "num_warps": 2})
    assert search.violated({"BLOCK": 64, "num_warps": 2}, t) is None
    assert search.violated({"BLOCK": 128, "num_warps": 2}, t).index == 0
    assert search.violated({"BLOCK": 64, "num_warps": 8}, t).index == 1
    with pytest.raises(ConfigError, match=r"v.py:2: RESTRICT\[0\] .*cannot evaluate at .*by zero"):
        search.violated({"BLOCK": 64, "num_warps": 0}, t)


def test_neighbours_move_one_parameter_one_step_in_fixed_order():
    t = search.tuning(ops.read_space(SCALE / "tiled.py"), {"BLOCK": 32, "num_warps": 2})
    moves = search.neighbours({"BLOCK": 32, "num_warps": 2}, t)
    assert [m.config for m in moves] == [{"BLOCK": 16, "num_warps": 2}, {"BLOCK": 64, "num_warps": 2},
                                         {"BLOCK": 32, "num_warps": 1}, {"BLOCK": 32, "num_warps": 4}]
    # a value between the listed ones: its nearest neighbours; the end of a list has one side only
    assert [m.config["BLOCK"] for m in search.neighbours({"BLOCK": 48, "num_warps": 4}, t)][:2] == [32, 64]
    assert [m.config for m in search.neighbours({"BLOCK": 256, "num_warps": 4}, t)] == \
        [{"BLOCK": 128, "num_warps": 4}, {"BLOCK": 256, "num_warps": 2}]


def test_wider_reaches_move_one_parameter_far_then_two_parameters_together():
    t = search.tuning(ops.read_space(SCALE / "tiled.py"), {"BLOCK": 32, "num_warps": 2})
    start = {"BLOCK": 32, "num_warps": 2}
    # reach 2: any other value of one parameter, nearest first (BLOCK 16 and 64 are reach 1)
    assert [m.config for m in search.neighbours(start, t, 2)] == [
        {"BLOCK": 128, "num_warps": 2}, {"BLOCK": 256, "num_warps": 2}]
    pairs = search.neighbours(start, t, 3)
    assert [m.config for m in pairs] == [{"BLOCK": 16, "num_warps": 1}, {"BLOCK": 16, "num_warps": 4},
                                         {"BLOCK": 64, "num_warps": 1}, {"BLOCK": 64, "num_warps": 4}]
    assert pairs[3].text == "BLOCK up to 64 and num_warps up to 4" and pairs[3].moves("warps", 1)


def test_propose_widens_only_when_the_nearer_reach_is_measured_and_not_at_the_roofline():
    start = {"BLOCK": 32, "num_warps": 2}
    t = search.tuning(ops.read_space(SCALE / "tiled.py"), start)
    near = {search.key(m.config) for m in search.neighbours(start, t, 1)} | {search.key(start)}
    prop = search.propose(start, t, [], near, 8)
    assert prop.reach == 2 and [c for c, _ in prop.candidates] == [{"BLOCK": 128, "num_warps": 2}]
    assert [c for c, _ in prop.restricted] == [{"BLOCK": 256, "num_warps": 2}]      # BLOCK * num_warps <= 256
    far = near | {search.key({"BLOCK": 128, "num_warps": 2})}
    assert search.propose(start, t, [], far, 8).reach == 3
    roof = [search.Fired("at_roofline", "memory roofline fraction", "93%", "at 93 %")]
    assert search.propose(start, t, roof, far, 8).candidates == []
    assert search.ends(roof[0], False) == ("at_roofline: memory roofline fraction = 93%, and every one-parameter "
                                           "neighbour measured")
    assert search.ends(None, True) is None and search.ends(None, False).startswith("no unevaluated neighbour left")


SWEEP = FIXTURES / "optimize-sweep"


def test_search_reaches_the_recorded_optimum_within_30_percent_of_the_space(tmp_path):
    """bench/optimize_search.py replayed on its H100 sweeps (tests/fixtures/optimize-sweep: every configuration
    of rmsnorm L1-36's and matmul 4096³ fp16's declared spaces, two layout families each, measured once)."""
    for op in ("rmsnorm", "matmul"):
        shutil.copytree(SWEEP / op / "profiles", tmp_path / op / "profiles")
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "optimize_search.py"), "--reuse", "--work",
                           str(tmp_path), "--json", str(out)], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [f for r in json.loads(out.read_text()) for f in r["families"]]
    assert [f["family"] for f in rows] == ["grid_2d", "flat_1d", "grid_2d", "persistent"]
    for f in rows:
        cap = 0.3 * f["space"]
        assert f["from_slowest"]["search"] is not None and f["from_slowest"]["search"] <= cap, f
        s = f["strategies"]["search"]
        assert s["reached"] == "10/10" and s["worst"] <= cap, f


def h200(op, shape, name):
    doc = results.load(FIXTURES / "samples-h200" / "nvidia-h200" / op / "results.json")
    s = next(s for s in doc["shapes"] if s["id"] == shape)
    return next(v for v in s["variants"] if v["name"] == name), s, doc["environment"]


def test_rules_fire_on_recorded_counters_and_order_the_neighbours(tmp_path):
    rec, shape, env = h200("rmsnorm", "batch1", "stream_1d(PROGRAMS_PER_SM=4,BLOCK_HW=64,num_warps=4,PREFETCH=True)")
    fired, counters = search.rules(rec, shape, env)
    assert counters and [f.rule for f in fired] == ["low_waves", "register_limited", "latency_bound"]
    assert (fired[0].metric, fired[0].value) == ("launch__waves_per_multiprocessor", "0.97")
    assert (fired[1].metric, fired[1].value) == ("launch__occupancy_limit_registers", "4")
    path = variant(tmp_path, "SPACE = dict(PROGRAMS_PER_SM=[1, 2, 4, 8], BLOCK_HW=[32, 64, 128], "
                             "num_warps=[2, 4, 8])\n")
    config = {"PROGRAMS_PER_SM": 4, "BLOCK_HW": 64, "num_warps": 4, "PREFETCH": True}
    order = search.ordered(search.neighbours(config, search.tuning(ops.read_space(path), config)), fired)
    assert [m.text for m, _ in order] == ["BLOCK_HW down to 32", "num_warps up to 8", "PROGRAMS_PER_SM down to 2",
                                          "PROGRAMS_PER_SM up to 8", "BLOCK_HW up to 128", "num_warps down to 2"]
    assert order[0][1] == "low_waves (launch__waves_per_multiprocessor = 0.97): tile down"
    assert order[1][1] == "register_limited (launch__occupancy_limit_registers = 4): warps up"
    assert order[2][1] == "fixed order"


def test_at_the_roofline_the_search_stops_widening():
    rec, shape, env = h200("matmul", "4096-fp16",
                           "grid_2d(BLOCK_M=128,BLOCK_N=256,BLOCK_K=64,num_warps=8,num_stages=3)")
    stop = search.stops(search.rules(rec, shape, env)[0])
    assert (stop.rule, stop.metric, stop.value) == ("at_roofline", "compute roofline fraction", "92%")


def test_without_counters_only_the_roofline_rule_can_fire():
    # neither was profiled by ncu; the roofline needs only the timing and the measured copy bandwidth
    below = h200("rmsnorm", "batch1", "grid_2d(BLOCK_HW=64,num_warps=4)")
    at = h200("rmsnorm", "L1-36", "grid_2d(BLOCK_HW=64,num_warps=4)")
    assert below[0]["ncu"]["status"] == at[0]["ncu"]["status"] == "not-selected"
    assert search.rules(*below) == ([], False)
    fired, counters = search.rules(*at)
    assert not counters and [(f.rule, f.value) for f in fired] == [("at_roofline", "95%")]


def test_with_config_rewrites_configs_only(tmp_path):
    source = (SCALE / "tiled.py").read_text()
    out = search.with_config(source, {"BLOCK": 64, "num_warps": 1}, "tiled.py")
    assert "CONFIGS = [dict(BLOCK=64, num_warps=1)]\n" in out
    assert out.replace("CONFIGS = [dict(BLOCK=64, num_warps=1)]", "CONFIGS = [dict(BLOCK=32, num_warps=2)]") == source
    path = tmp_path / "c.py"
    path.write_text(out)
    assert [v.config for v in ops.read_variants(path, "")] == [{"BLOCK": 64, "num_warps": 1}]
    assert search.with_config("X = 1\n", {"B": 2}, "x.py") == "X = 1\nCONFIGS = [dict(B=2)]\n"
    with pytest.raises(ConfigError, match="x.py:1: CONFIGS shares its lines"):
        search.with_config("X = 1; CONFIGS = [dict(B=1)]\n", {"B": 2}, "x.py")


def test_a_space_only_variant_starts_from_modelnew_defaults(tmp_path):
    path = variant(tmp_path, """
        SPACE = dict(BLOCK=[64, 128], num_warps=[2, 4])
        class ModelNew:
            def __init__(self, features, eps=1e-5, *, BLOCK=128, num_warps=4):
                pass
        """)
    assert search.start({}, ops.read_space(path)) == {"BLOCK": 128, "num_warps": 4}
    bare = variant(tmp_path, "SPACE = dict(BLOCK=[64, 128])\nclass ModelNew:\n    pass\n")
    with pytest.raises(ConfigError, match="v.py:1: no starting value for BLOCK"):
        search.start({}, ops.read_space(bare))


# --- the whole loop on the CPU

def project(tmp_path):
    shutil.copytree(FIXTURES / "optimize" / "kernels", tmp_path / "kernels")
    (tmp_path / "pipeline.yaml").write_text("kernels_dir: kernels\nprofiles_dir: profiles\nreports_dir: reports\n")
    return tmp_path


SEARCH = ["optimize", "--op", "scale", "--proposer", "search", "--device", "cpu", "--from", "tiled",
          "--budget", "5", "--batch", "2", "--stages", "grid_and_parallel"]


def cli(root, *args, **kw):
    return subprocess.run([sys.executable, "-m", "pipeline", "--config", str(root / "pipeline.yaml"), *args],
                          capture_output=True, text=True, cwd=REPO, timeout=600, **kw)


def the_log(root):
    (path,) = (root / "profiles" / "cpu-triton-interpreter" / "scale" / "optimize").glob("*/log.json")
    return json.loads(path.read_text()), path.parent


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    root = project(tmp_path_factory.mktemp("search"))
    proc = cli(root, *SEARCH)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return root, proc, *the_log(root)


def test_search_measures_allowed_unevaluated_neighbours_within_the_budget(searched):
    root, proc, log, _ = searched
    space = ops.read_space(SCALE / "tiled.py")
    t = search.tuning(space, {"BLOCK": 32, "num_warps": 2})
    measured = [c for s in log["steps"] for c in s["candidates"] if c["verdict"] != "not-measured"]
    configs = [json.dumps(c["config"], sort_keys=True) for c in measured]
    assert 0 < len(measured) == log["spent"] <= 5 and len(set(configs)) == len(configs)
    assert json.dumps({"BLOCK": 32, "num_warps": 2}, sort_keys=True) not in configs     # the start itself
    assert all(search.violated(c["config"], t) is None for c in measured)
    restricted = [r["config"] for s in log["steps"] for r in s["proposer"]["restricted"]]
    assert all(search.violated(c, t) is not None for c in restricted)


def test_without_counters_the_order_is_fixed_and_said(searched):
    root, proc, log, _ = searched
    assert "no ncu counters" in proc.stdout and log["note"].startswith("--device cpu")
    first = log["steps"][0]
    assert first["proposer"]["order"] == "fixed (no counters)" and first["proposer"]["rules"] == []
    assert first["counters"] is None
    # BLOCK down, then up: the two of the first batch
    assert [c["config"] for c in first["candidates"]] == [{"BLOCK": 16, "num_warps": 2}, {"BLOCK": 64, "num_warps": 2}]
    assert all("fixed order" in c["origin"] for c in first["candidates"])


def test_fewer_programs_win_under_the_interpreter_and_are_promoted(searched):
    root, proc, log, _ = searched
    first = {c["config"]["BLOCK"]: c for c in log["steps"][0]["candidates"]}
    assert first[16]["verdict"] == "rejected" and first[16]["reason"].startswith("slower at n4096")
    assert first[64]["verdict"] == "promoted" and first[64]["holdout"] == {"n1000": "ok"}
    promoted = root / "kernels" / "scale" / "opt_grid_and_parallel_s1.py"
    assert log["promoted"][0]["file"] == str(promoted)
    assert [v.config for v in ops.read_variants(promoted, "")] == [{"BLOCK": 64, "num_warps": 2}]
    assert ops.read_space(promoted).params == ops.read_space(SCALE / "tiled.py").params     # still searchable
    assert log["finished"] and log["best"]["config"]["BLOCK"] >= 64


def test_interrupted_search_keeps_finished_steps_and_resumes(tmp_path):
    root = project(tmp_path)
    args = [sys.executable, "-m", "pipeline", "--config", str(root / "pipeline.yaml"), *SEARCH]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO)
    base = root / "profiles" / "cpu-triton-interpreter" / "scale" / "optimize"
    deadline = time.time() + 300
    while time.time() < deadline:
        logs = list(base.glob("*/log.json"))
        if logs and json.loads(logs[0].read_text())["steps"]:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "run the same command again to resume" in " ".join(out.split()), out
    log, folder = the_log(root)
    assert not log["finished"] and len(log["steps"]) >= 1
    done = [(s["stage"], s["step"]) for s in log["steps"]]
    first_dir = folder / log["steps"][0]["dir"]
    first_mtime = (first_dir / "step.json").stat().st_mtime

    again = cli(root, *SEARCH)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming" in again.stdout
    log2, folder2 = the_log(root)
    assert folder2 == folder and log2["finished"]
    assert [(s["stage"], s["step"]) for s in log2["steps"]][:len(done)] == done
    assert (first_dir / "step.json").stat().st_mtime == first_mtime          # not taken again
    configs = [json.dumps(c["config"], sort_keys=True) for s in log2["steps"] for c in s["candidates"]
               if c["verdict"] != "not-measured"]
    assert len(set(configs)) == len(configs) == log2["spent"] <= 5
