"""Bad configuration and op folders are refused before any GPU work (exit 2), the message naming file, line
and key. Each case is a row of the README's "Bad input" table, whose messages are checked against these."""
import re

import pytest

from testenv import REPO
from pipeline import cli, ops
from pipeline.config import Config
from pipeline.errors import ExitCode

README = (REPO / "README.md").read_text()
REFERENCE = (REPO / "kernels" / "rmsnorm" / "reference.py").read_text()
VARIANT = "class ModelNew:\n    pass\n"
OP_YAML = "baseline: good\nshapes:\n  - {name: small, batch_size: 2}\n"
LATIN1 = b"# tile sizes from the caf\xe9 benchmark\n"     # a latin-1 byte where UTF-8 is expected
CLASH = {"kernels/MyOp/reference.py": REFERENCE, "kernels/MyOp/good.py": VARIANT}    # slugs to myop too
# a variant's problem as results files keep it: the file's name, not its path on this machine
VARIANT_MESSAGE = "latin.py:1: not UTF-8 text (byte 0xe9 at offset 25); save the file as UTF-8"

# (README "input" cell, files written under tmp_path (text or bytes), message with paths relative to tmp_path)
CASES = [
    ("`verify: {seeds: []}`", {"pipeline.yaml": "verify:\n  seeds: []\n"},
     "pipeline.yaml:2: 'verify.seeds' must list at least one item, got []"),
    ("`verify: {seeds: [0, 1, 0]}`", {"pipeline.yaml": "verify:\n  seeds: [0, 1, 0]\n"},
     "pipeline.yaml:2: 'verify.seeds[2]' repeats 0 (verify.seeds[0], line 2)"),
    ("`timing: {rounds: 0}`", {"pipeline.yaml": "timing:\n  rounds: 0\n"},
     "pipeline.yaml:2: 'timing.rounds' must be >= 1, got 0"),
    ("`timing: {min_reps: -5}`", {"pipeline.yaml": "timing:\n  min_reps: -5\n"},
     "pipeline.yaml:2: 'timing.min_reps' must be >= 1, got -5"),
    ("`timing: {min_reps: 50, max_reps: 20}`", {"pipeline.yaml": "timing:\n  min_reps: 50\n  max_reps: 20\n"},
     "pipeline.yaml:3: 'timing.max_reps' (20) must be >= 'timing.min_reps' (50)"),
    ("`timing: {min_reps: 500}` in op.yaml (max_reps 200 from pipeline.yaml)",
     {"kernels/myop/op.yaml": OP_YAML + "timing:\n  min_reps: 500\n"},
     "kernels/myop/op.yaml:5: 'timing.max_reps' (200) must be >= 'timing.min_reps' (500)"),
    ("`timing: {warmup: -1}`", {"pipeline.yaml": "timing:\n  warmup: -1\n"},
     "pipeline.yaml:2: 'timing.warmup' must be >= 0, got -1"),
    ("`timing: {budget_ms: 0}`", {"pipeline.yaml": "timing:\n  budget_ms: 0\n"},
     "pipeline.yaml:2: 'timing.budget_ms' must be > 0, got 0.0"),
    ("`timing: {race: 0.5}`", {"pipeline.yaml": "timing:\n  race: 0.5\n"},
     "pipeline.yaml:2: 'timing.race' must be 0 or >= 1, got 0.5"),
    ("`timing: {queue_ahead: -1}`", {"pipeline.yaml": "timing:\n  queue_ahead: -1\n"},
     "pipeline.yaml:2: 'timing.queue_ahead' must be >= 0, got -1.0"),
    ("`worker: {variant_timeout_s: -30}`", {"pipeline.yaml": "worker:\n  variant_timeout_s: -30\n"},
     "pipeline.yaml:2: 'worker.variant_timeout_s' must be > 0, got -30.0"),
    ("`ncu: {timeout_s: 0}`", {"pipeline.yaml": "ncu:\n  timeout_s: 0\n"},
     "pipeline.yaml:2: 'ncu.timeout_s' must be > 0, got 0.0"),
    ("`timing: {budget_ms: .nan}`", {"pipeline.yaml": "timing:\n  budget_ms: .nan\n"},
     "pipeline.yaml:2: 'timing.budget_ms' must be a finite number, got .nan"),
    ("`worker: {timing_timeout_s: .inf}`", {"pipeline.yaml": "worker:\n  timing_timeout_s: .inf\n"},
     "pipeline.yaml:2: 'worker.timing_timeout_s' must be a finite number, got .inf"),
    ("`verify: {tolerance: {float16: {rtol: 1.0e-2, atol: -1.0e-3}}}`",
     {"pipeline.yaml": "verify:\n  tolerance:\n    float16: {rtol: 1.0e-2, atol: -1.0e-3}\n"},
     "pipeline.yaml:3: 'verify.tolerance.float16.atol' must be >= 0, got -0.001"),
    ("`verify: {tolerance: {float16: {rtol: 1e-2}}}`",
     {"pipeline.yaml": "verify:\n  tolerance:\n    float16: {rtol: 1e-2}\n"},
     "pipeline.yaml:3: 'verify.tolerance.float16.rtol' must be float, got str '1e-2' (YAML reads an exponent "
     "without a dot as text: write 1.0e-2)"),
    ("`verify: {tolerance: {fp16: {rtol: 1.0e-2}}}`",
     {"pipeline.yaml": "verify:\n  tolerance:\n    fp16: {rtol: 1.0e-2}\n"},
     "pipeline.yaml:3: 'verify.tolerance.fp16' is not one of float32, float16, bfloat16."),
    ("`targets: {memory_throughput_min: 120}`", {"pipeline.yaml": "targets:\n  memory_throughput_min: 120\n"},
     "pipeline.yaml:2: 'targets.memory_throughput_min' must be between 0 and 100, got 120.0"),
    ("`targets: {variants: {seed: {max_regression: -0.1}}}`",
     {"pipeline.yaml": "targets:\n  variants:\n    seed: {max_regression: -0.1}\n"},
     "pipeline.yaml:3: 'targets.variants.seed.max_regression' must be between 0 and 1, got -0.1 "
     "(a fraction: 0.05 means 5 %)"),
    ("a key set twice", {"pipeline.yaml": "timing:\n  rounds: 3\n  warmup: 1\n  rounds: 7\n"},
     "pipeline.yaml:4: duplicate key 'timing.rounds' (first set at line 2); YAML would keep only the last"),
    ("a key set twice in a shape",
     {"kernels/myop/op.yaml": OP_YAML + "  - {name: big, batch_size: 8, batch_size: 16}\n"},
     "kernels/myop/op.yaml:4: duplicate key 'shapes[1].batch_size' (first set at line 4); YAML would keep only "
     "the last"),
    ("two shapes of one name", {"kernels/myop/op.yaml": OP_YAML + "  - {name: small, batch_size: 4}\n"},
     "kernels/myop/op.yaml:4: 'shapes[1]' has the shape id 'small' of shapes[0] (line 3); give one a distinct name"),
    ("two shapes of one built id", {"kernels/myop/op.yaml": "shapes:\n  - {batch_size: 2}\n  - {features: 2}\n"},
     "kernels/myop/op.yaml:3: 'shapes[1]' has the shape id '2-float32' of shapes[0] (line 2); give one a "
     "distinct name"),
    ("a suite shape with a `shapes` id, other sizes",
     {"kernels/myop/op.yaml": OP_YAML + "suites:\n  tiny:\n    - {name: small, batch_size: 1}\n"},
     "kernels/myop/op.yaml:6: 'suites.tiny[0]' has the shape id 'small' of shapes[0] (line 3) with other values; "
     "give one a distinct name"),
    ("pipeline.yaml not UTF-8", {"pipeline.yaml": LATIN1 + b"timing:\n  rounds: 3\n"},
     "pipeline.yaml:1: not UTF-8 text (byte 0xe9 at offset 25); save the file as UTF-8"),
    ("op.yaml not UTF-8", {"kernels/myop/op.yaml": LATIN1 + OP_YAML.encode()},
     "kernels/myop/op.yaml:1: not UTF-8 text (byte 0xe9 at offset 25); save the file as UTF-8"),
    ("reference.py not UTF-8", {"kernels/myop/reference.py": LATIN1 + REFERENCE.encode()},
     "kernels/myop/reference.py:1: not UTF-8 text (byte 0xe9 at offset 25); save the file as UTF-8"),
    ("op folders `myop` and `MyOp` (one results name)", CLASH,
     "kernels: op folders 'MyOp' and 'myop' share the results name 'myop' (profiles/<gpu>/myop/); rename one"),
]


def setup(tmp_path, files):
    """Two ops that load (myop, other), then the case's files; pipeline.yaml ends by pointing at them."""
    for op in ("myop", "other"):
        d = tmp_path / "kernels" / op
        d.mkdir(parents=True)
        (d / "reference.py").write_text(REFERENCE)
        (d / "good.py").write_text(VARIANT)
        (d / "op.yaml").write_text(OP_YAML)
    (tmp_path / "pipeline.yaml").write_text("")
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with (tmp_path / "pipeline.yaml").open("ab") as fh:
        fh.write(f"kernels_dir: {tmp_path / 'kernels'}\n".encode())
    return tmp_path / "pipeline.yaml"


def run(capsys, tmp_path, *argv):
    """Exit code and what the CLI printed (errors first), whitespace dropped (the console wraps long lines)
    and paths made relative to tmp_path."""
    code = cli.main(["--config", str(tmp_path / "pipeline.yaml"), *argv])
    printed = capsys.readouterr()
    return code, flat(printed.err + printed.out).replace(flat(f"{tmp_path}/"), "")


def flat(text):
    return re.sub(r"\s+", "", text)


def test_the_ops_of_the_cases_load_as_given(tmp_path, capsys):
    setup(tmp_path, {})
    code, out = run(capsys, tmp_path, "list")
    assert code == ExitCode.OK and "myop(" in out and "other(" in out and "shapesmall" in out


@pytest.mark.parametrize("files, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_refused_before_any_gpu_work(tmp_path, capsys, files, message):
    setup(tmp_path, files)
    # `profile --require-gpu` would exit 3 on this machine had the input passed
    for argv in (["list"], ["profile", "--require-gpu", "--op", "myop"]):
        code, out = run(capsys, tmp_path, *argv)
        assert code == ExitCode.CANNOT_JUDGE, out
        assert out.startswith("error:" + flat(message)), out


def test_a_broken_op_names_the_ops_that_load(tmp_path, capsys):
    setup(tmp_path, {"kernels/myop/reference.py": LATIN1 + REFERENCE.encode()})
    code, out = run(capsys, tmp_path, "list")
    assert code == ExitCode.CANNOT_JUDGE
    assert out.endswith(flat("save the file as UTF-8\nthese ops load: other (select them with --op)"))
    code, out = run(capsys, tmp_path, "list", "--op", "other")
    assert code == ExitCode.OK and "other(" in out and "myop" not in out


def test_every_broken_op_is_named_at_once(tmp_path, capsys):
    setup(tmp_path, {"kernels/myop/reference.py": LATIN1 + REFERENCE.encode(),
                     "kernels/other/op.yaml": "timing:\n  rounds: 0\n"})
    code, out = run(capsys, tmp_path, "list")
    assert code == ExitCode.CANNOT_JUDGE
    assert flat("kernels/myop/reference.py:1: not UTF-8") in out
    assert flat("kernels/other/op.yaml:2: 'timing.rounds' must be >= 1, got 0") in out
    assert "theseopsload" not in out


def test_slug_clash_leaves_other_ops_usable(tmp_path, capsys):
    setup(tmp_path, CLASH)
    code, out = run(capsys, tmp_path, "list", "--op", "other")
    assert code == ExitCode.OK and "other(" in out


def test_variant_file_not_utf8_is_marked_and_the_op_still_loads(tmp_path, capsys):
    setup(tmp_path, {"kernels/myop/latin.py": LATIN1 + VARIANT.encode()})
    code, out = run(capsys, tmp_path, "list")
    assert code == ExitCode.OK and "variantgood" in out and "other(" in out
    assert flat(f"variant latin {VARIANT_MESSAGE}") in out
    op = ops.load_op_dir(tmp_path / "kernels" / "myop", Config())
    assert {v.name: v.problem for v in op.variants} == {"good": "", "latin": VARIANT_MESSAGE}


def test_readme_bad_input_table_shows_these_messages():
    section = README.split("### Bad input", 1)[1].split("\n## ", 1)[0]
    for label, _, message in CASES:
        assert f"| {label} | `{message}` | 2 |" in section, label
    assert f"`{VARIANT_MESSAGE}`" in section


def test_python_files_with_a_utf8_bom_load(tmp_path):
    setup(tmp_path, {"kernels/myop/reference.py": "\ufeff" + REFERENCE, "kernels/myop/bom.py": "\ufeff" + VARIANT})
    op = ops.load_op_dir(tmp_path / "kernels" / "myop", Config())
    assert {v.name: v.problem for v in op.variants} == {"bom": "", "good": ""}
