import textwrap

import pytest

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
