import dataclasses
import textwrap
import typing

import pytest

from testenv import REPO
from pipeline import config
from pipeline.errors import ConfigError, ExitCode


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_defaults_overlaid_by_root_then_op(tmp_path):
    root = config.load_root(write(tmp_path, "pipeline.yaml", """
        timing:
          rounds: 7
        ncu:
          clock_control: none
        """))
    assert root.timing.rounds == 7 and root.timing.min_reps == config.TimingConfig().min_reps
    op = config.load_op(root, write(tmp_path, "op.yaml", """
        baseline: seed
        timing: {rounds: 3}
        shapes:
          - {batch_size: 2, features: 8, dtype: float16}
          - {name: big, batch_size: 4}
        """))
    assert op.timing.rounds == 3 and op.ncu.clock_control == "none"
    assert op.op.baseline == "seed"
    assert op.op.shapes[0].params == {"batch_size": 2, "features": 8}
    assert op.op.shapes[0].id == "2x8-float16"
    assert op.op.shapes[1].id == "big"


def test_typo_names_file_line_key_and_suggests(tmp_path):
    p = write(tmp_path, "pipeline.yaml", """
        timing:
          min_reps: 5
          rouns: 3
        """)
    with pytest.raises(ConfigError) as err:
        config.load_root(p)
    msg = str(err.value)
    assert f"{p}:4" in msg and "timing.rouns" in msg and "Did you mean 'rounds'?" in msg
    assert err.value.exit_code == ExitCode.CANNOT_JUDGE


def test_wrong_type_names_key_and_value(tmp_path):
    p = write(tmp_path, "pipeline.yaml", "timing:\n  min_reps: many\n")
    with pytest.raises(ConfigError, match=r"pipeline.yaml:2: 'timing.min_reps' must be int, got str 'many'"):
        config.load_root(p)


def test_malformed_yaml_names_line(tmp_path):
    p = write(tmp_path, "pipeline.yaml", "timing:\n  rounds: [1, 2\n")
    with pytest.raises(ConfigError, match=r"pipeline.yaml:\d+: malformed YAML"):
        config.load_root(p)


def test_bad_dtype_and_op_key_in_root(tmp_path):
    with pytest.raises(ConfigError, match="dtype' must be one of float32, float16, bfloat16"):
        config.load_op(config.Config(), write(tmp_path, "op.yaml", "shapes:\n  - {batch_size: 1, dtype: fp8}\n"))
    with pytest.raises(ConfigError, match="unknown key 'baselin'.*Did you mean 'baseline'"):
        config.load_op(config.Config(), write(tmp_path, "op2.yaml", "baselin: x\n"))


def test_tolerance_table_by_dtype():
    v = config.VerifyConfig(tolerance={"float16": config.Tolerance(rtol=0.5, atol=0.5)})
    assert v.tolerance_for("float16").rtol == 0.5
    assert v.tolerance_for("bfloat16") == config.DEFAULT_TOLERANCES["bfloat16"]


def test_every_key_documented():
    rows = config.documented_keys()
    keys = {r[0] for r in rows}
    assert {"timing.rounds", "ncu.metrics", "verify.seeds", "op.baseline", "op.shapes"} <= keys
    assert all(doc for _, _, _, doc in rows)


def _numeric_fields(cls, seen=None):
    """(class, field) for every int/float field reachable from cls, also inside lists, dicts and Optionals."""
    seen = set() if seen is None else seen
    if cls in seen:
        return []
    seen.add(cls)
    found = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tps = [hints[f.name]]
        while tps:
            tp = tps.pop()
            if dataclasses.is_dataclass(tp):
                found += _numeric_fields(tp, seen)
            elif tp in (int, float):
                found.append((cls.__name__, f))
            else:
                tps += [a for a in typing.get_args(tp) if a is not type(None)]
    return found


def test_every_numeric_key_has_a_rule():
    fields = _numeric_fields(config.Config) + _numeric_fields(config.TargetOverride)
    assert {f.name for _, f in fields} >= {"rounds", "seeds", "rtol", "timeout_s", "max_regression"}
    assert [f"{c}.{f.name}" for c, f in fields if "rule" not in f.metadata] == []


def test_rules_are_shown_in_the_config_table():
    types = {key: tp for key, tp, _, _ in config.documented_keys()}
    assert types["timing.rounds"] == "int, >= 1"
    assert types["timing.max_reps"] == "int, >= 1, >= min_reps"
    assert types["timing.race"] == "float, 0 or >= 1"
    assert types["timing.budget_ms"] == "float, > 0"
    assert types["ncu.timeout_s"] == "float, > 0"
    assert types["targets.max_regression"] == "float, between 0 and 1"
    assert types["verify.seeds"].startswith("list, at least one, distinct, each between 0 and ")
    assert types["verify.tolerance"] == "dict, keys: float32, float16, bfloat16"


def test_readme_config_table_is_what_pipeline_config_prints(capsys):
    from pipeline import cli
    assert cli.main(["config"]) == ExitCode.OK
    table = capsys.readouterr().out
    readme = (REPO / "README.md").read_text()
    assert table in readme, "regenerate the README's table with `python -m pipeline config`"


@pytest.mark.parametrize("text", [
    "timing: {rounds: 1, min_reps: 1, max_reps: 1, warmup: 0, race: 0, queue_ahead: 0, budget_ms: 0.001}",
    "timing: {race: 1}",
    "timing: {min_reps: 200}",                  # equal to the default max_reps
    "verify: {seeds: [0, 18446744073709551615], tolerance: {float16: {rtol: 0, atol: 0}}}",
    "targets: {sm_throughput_min: 100, max_regression: 0, variants: {x: {max_regression: null}}}",
    "worker: {variant_timeout_s: 0.5}",
])
def test_values_on_the_edge_of_a_rule_are_accepted(tmp_path, text):
    config.load_root(write(tmp_path, "pipeline.yaml", text + "\n"))


@pytest.mark.parametrize("text, key, message", [
    ("timing: {budget_ms: 0}", "timing.budget_ms", "must be > 0, got 0.0"),
    ("timing: {race: 0.99}", "timing.race", "must be 0 or >= 1, got 0.99"),
    ("timing: {rounds: -1}", "timing.rounds", "must be >= 1, got -1"),
    ("worker: {variant_timeout_s: 0}", "worker.variant_timeout_s", "must be > 0, got 0.0"),
    ("targets: {sm_throughput_min: 100.5}", "targets.sm_throughput_min", "must be between 0 and 100, got 100.5"),
    ("verify: {seeds: [18446744073709551616]}", "verify.seeds[0]", "must be between 0 and 18446744073709551615"),
    ("verify: {seeds: [-1]}", "verify.seeds[0]", "must be between 0 and"),
    ("targets: {max_time_ms: -.inf}", "targets.max_time_ms", "must be a finite number, got -.inf"),
    ("timing: {queue_ahead: " + "9" * 400 + "}", "timing.queue_ahead", "must be a finite number, got 99999"),
])
def test_values_past_a_rule_name_file_line_and_key(tmp_path, text, key, message):
    p = write(tmp_path, "pipeline.yaml", "# defaults for every op\n" + text + "\n")
    with pytest.raises(ConfigError) as err:
        config.load_root(p)
    assert str(err.value).startswith(f"{p}:2: '{key}' {message}")
    assert err.value.exit_code == ExitCode.CANNOT_JUDGE


def test_max_reps_below_min_reps_from_another_file_names_both_keys(tmp_path):
    root = config.load_root(write(tmp_path, "pipeline.yaml", "timing:\n  max_reps: 50\n"))
    p = write(tmp_path, "op.yaml", "baseline: x\ntiming:\n  warmup: 1\n  min_reps: 60\n")
    with pytest.raises(ConfigError, match=r"op.yaml:4: 'timing.max_reps' \(50\) must be >= 'timing.min_reps' \(60\)"):
        config.load_op(root, p)
    assert config.load_op(root, write(tmp_path, "op2.yaml", "timing:\n  min_reps: 50\n")).timing.min_reps == 50


def test_duplicate_keys_name_both_lines_at_any_depth(tmp_path):
    p = write(tmp_path, "op.yaml", """
        shapes:
          - {name: a, batch_size: 1}
          - name: b
            dtype: float16
            batch_size: 2
            dtype: bfloat16
        """)
    with pytest.raises(ConfigError, match=r"op.yaml:7: duplicate key 'shapes\[1\].dtype' \(first set at line 5\)"):
        config.load_op(config.Config(), p)


def test_an_alias_is_not_a_duplicate_and_a_shape_may_be_in_several_lists(tmp_path):
    op = config.load_op(config.Config(), write(tmp_path, "op.yaml", """
        shapes:
          - &small {name: small, batch_size: 2, dtype: float16}
          - {name: big, batch_size: 64}
        suites:
          ci: [*small]
          nightly: [*small, {name: huge, batch_size: 512}]
        """))
    assert [s.id for s in op.op.shape_list("nightly")] == ["small", "huge"]


def test_shape_ids_must_differ_within_a_suite(tmp_path):
    p = write(tmp_path, "op.yaml", "suites:\n  ci:\n    - {batch_size: 2, dtype: float16}\n"
                                   "    - {batch_size: 2, dtype: float16, name: 2-float16}\n")
    with pytest.raises(ConfigError, match=r"op.yaml:4: 'suites.ci\[1\]' has the shape id '2-float16' of "
                                          r"suites.ci\[0\] \(line 3\); give one a distinct name"):
        config.load_op(config.Config(), p)


def test_overrides_of_zero_or_less_are_left_to_the_reference(tmp_path):
    # shapes may set any top-level name: KernelBench files assign `padding = 0` and `hardtanh_min = -2`
    op = config.load_op(config.Config(), write(tmp_path, "op.yaml", "shapes:\n  - {padding: 0, hardtanh_min: -2}\n"))
    assert op.op.shapes[0].params == {"padding": 0, "hardtanh_min": -2}


def test_utf8_with_bom_is_read_and_other_bytes_name_the_line(tmp_path):
    p = tmp_path / "pipeline.yaml"
    p.write_bytes("\ufefftiming:\n  rounds: 2\n".encode())
    assert config.load_root(p).timing.rounds == 2
    p.write_bytes(b"timing:\n  rounds: 2\n# \xff\n")
    with pytest.raises(ConfigError, match=r"pipeline.yaml:3: not UTF-8 text \(byte 0xff at offset 22\)"):
        config.load_root(p)


def test_an_anchor_inside_itself_is_an_error_not_a_crash(tmp_path):
    p = write(tmp_path, "pipeline.yaml", "verify:\n  seeds: &s [0, *s]\n")
    with pytest.raises(ConfigError, match=r"pipeline.yaml:2: 'verify.seeds\[1\]' must be a single int"):
        config.load_root(p)


def test_readme_tolerance_table_is_the_built_in_one():
    from pipeline.config import DEFAULT_TOLERANCES
    readme = (REPO / "README.md").read_text()
    for dtype, tol in DEFAULT_TOLERANCES.items():
        assert f"| {dtype} | {tol.rtol:.0e} | {tol.atol:.0e} |".replace("e-0", "e-") in readme, dtype
