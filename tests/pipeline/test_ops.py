import shutil
import subprocess
import sys
import textwrap

import pytest

from testenv import REPO
from pipeline import config, ops
from pipeline.errors import ConfigError, SelectionError

REFERENCE = (REPO / "kernels" / "rmsnorm" / "reference.py").read_text()


def make_op(tmp_path, files, op_yaml="baseline: good\n"):
    d = tmp_path / "kernels" / "myop"
    d.mkdir(parents=True)
    (d / "reference.py").write_text(REFERENCE)
    (d / "op.yaml").write_text(op_yaml)
    for name, text in files.items():
        (d / name).write_text(textwrap.dedent(text))
    return d


GOOD = """
    LAYOUT = "1D"
    CONFIGS = [dict(BLOCK=64, num_warps=4), {"BLOCK": 128, "num_warps": 8}]
    class ModelNew:
        pass
    """


def test_configs_expand_to_named_sub_variants(tmp_path):
    d = make_op(tmp_path, {"good.py": GOOD})
    op = ops.load_op_dir(d, config.Config())
    assert [v.name for v in op.variants] == ["good(BLOCK=64,num_warps=4)", "good(BLOCK=128,num_warps=8)"]
    assert all(v.baseline and v.layout == "1D" and not v.problem for v in op.variants)
    assert op.variants[1].config == {"BLOCK": 128, "num_warps": 8}
    assert "batch_size" in op.size_names


def test_syntax_error_and_missing_model_are_marked_not_fatal(tmp_path):
    d = make_op(tmp_path, {"good.py": GOOD, "broken.py": "def f(:\n", "nomodel.py": "X = 1\n"})
    op = ops.load_op_dir(d, config.Config())
    problems = {v.name: v.problem for v in op.variants}
    assert problems["broken"].startswith("SyntaxError") and "line 1" in problems["broken"]
    assert "no class ModelNew" in problems["nomodel"]
    assert problems["good(BLOCK=64,num_warps=4)"] == ""


def test_unknown_size_name_in_shape_is_rejected(tmp_path):
    d = make_op(tmp_path, {"good.py": GOOD}, "baseline: good\nshapes:\n  - {batch: 2}\n")
    with pytest.raises(ConfigError, match=r"shapes\[0\]: batch not a module-level size.*batch_size"):
        ops.load_op_dir(d, config.Config())


def test_reference_contract_and_unknown_baseline(tmp_path):
    d = make_op(tmp_path, {"good.py": GOOD}, "baseline: nosuch\n")
    with pytest.raises(ConfigError, match="baseline 'nosuch' is neither a variant file nor a variant"):
        ops.load_op_dir(d, config.Config())
    (d / "reference.py").write_text("class Model: pass\n")
    with pytest.raises(ConfigError, match="missing get_inputs, get_init_inputs"):
        ops.load_op_dir(d, config.Config())


def test_unknown_op_lists_what_exists(tmp_path):
    make_op(tmp_path, {"good.py": GOOD})
    cfg = config.Config(kernels_dir=str(tmp_path / "kernels"))
    with pytest.raises(SelectionError, match="unknown op nope; ops in .*: myop"):
        ops.discover(cfg, tmp_path, ["nope"])


def test_empty_op_dir_is_an_error(tmp_path):
    d = tmp_path / "kernels" / "empty"
    d.mkdir(parents=True)
    (d / "reference.py").write_text(REFERENCE)
    with pytest.raises(ConfigError, match="no variant files"):
        ops.load_op_dir(d, config.Config())


def test_repo_rmsnorm_op_loads():
    op = ops.load_op_dir(REPO / "kernels" / "rmsnorm", config.load_root(REPO / "pipeline.yaml"))
    assert op.config.op.baseline == "seed_2d_tiles"
    assert len({v.stem for v in op.variants}) >= 5
    assert not [v for v in op.variants if v.problem]
    assert op.config.op.shapes[0].params == {"batch_size": 112, "features": 64, "dim1": 512, "dim2": 512}


def test_parent_process_never_imports_torch():
    # ncu_report and torch in one process crashed the parent on the GPU machine (measured): keep them apart
    code = "import sys, pipeline.cli, pipeline.profiling, pipeline.report; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "False"


def test_flops_expression_evaluated_per_shape_and_checked(tmp_path):
    d = make_op(tmp_path, {"good.py": GOOD}, "baseline: good\nflops: 2*batch_size*features*dim1*dim2\n")
    op = ops.load_op_dir(d, config.Config())
    assert op.flops({"batch_size": 1}) == 2 * 1 * 64 * 512 * 512
    (d / "op.yaml").write_text("baseline: good\nflops: 2*M*N\n")
    with pytest.raises(ConfigError, match="flops '2\\*M\\*N': unknown name 'M'"):
        ops.load_op_dir(d, config.Config())
    (d / "op.yaml").write_text("baseline: good\nflops: __import__('os')\n")
    with pytest.raises(ConfigError, match="only numbers, size names"):
        ops.load_op_dir(d, config.Config())


def test_baseline_may_name_one_config_of_a_file(tmp_path):
    op_dir = tmp_path / "kernels" / "matmul"
    shutil.copytree(REPO / "kernels" / "matmul", op_dir)
    op = ops.load_op_dir(op_dir, config.load_root(REPO / "pipeline.yaml"))
    base = [v.name for v in op.variants if v.baseline]
    assert base == ["grid_2d(BLOCK_M=64,BLOCK_N=64,BLOCK_K=32,num_warps=4,num_stages=3)"]
    (op_dir / "op.yaml").write_text((op_dir / "op.yaml").read_text().replace("BLOCK_K=32,num_warps=4,num_stages=3",
                                                                            "BLOCK_K=33,num_warps=4,num_stages=3"))
    with pytest.raises(ConfigError, match=r"baseline 'grid_2d\(BLOCK_M=64,BLOCK_N=64,BLOCK_K=33.*variants: grid_2d\("):
        ops.load_op_dir(op_dir, config.load_root(REPO / "pipeline.yaml"))
