"""LLM-loop exports from recorded results (the H200 sample, H100 stage fixtures): the seed's metrics block, the stage prompt, and ingest."""
import json
import textwrap

import pytest

from testenv import FIXTURES, REPO
from pipeline import config, export, ingest, ops, results
from pipeline.errors import SelectionError

SAMPLE = FIXTURES / "samples-h200" / "nvidia-h200" / "rmsnorm" / "results.json"
SEED = (REPO / "kernels" / "rmsnorm" / "seed_2d_tiles.py").read_text()


@pytest.fixture(scope="module")
def doc():
    return results.load(SAMPLE)


def test_ncu_json_equals_stored_metrics(doc):
    shape, variant = export.find(doc, "seed_2d_tiles", "L1-36")
    block = export.ncu_json(variant)
    (kernel,) = variant["ncu"]["kernels"]
    assert list(block) == ["rms_norm_kernel"] == [kernel["name"]]
    assert block["rms_norm_kernel"] == {m: e["value"] for m, e in kernel["metrics"].items()}


def test_ncu_json_stage_subset(doc):
    _, variant = export.find(doc, "seed_2d_tiles", "L1-36")
    stage = export.stage_named("grid_and_parallel")
    block = export.ncu_json(variant, stage.metrics())["rms_norm_kernel"]
    assert set(block) <= set(stage.metrics())
    assert "sm__throughput.avg.pct_of_peak_sustained_elapsed" in block and "launch__grid_size" in block


def test_prompt_for_seed_kernel_carries_its_real_metrics(doc):
    shape, variant = export.find(doc, "seed_2d_tiles", "L1-36")
    text = export.render_prompt(export.prompt_view(doc, shape, variant, export.stage_named("grid_and_parallel"), REPO))
    kernel = variant["ncu"]["kernels"][0]["metrics"]
    sm = kernel["sm__throughput.avg.pct_of_peak_sustained_elapsed"]["value"]
    assert f'"sm__throughput.avg.pct_of_peak_sustained_elapsed": {json.dumps(sm)}' in text
    assert f'"launch__grid_size": {kernel["launch__grid_size"]["value"]}' in text
    assert f"GPU Name: {doc['environment']['gpu_name']}" in text and "Architecture: Hopper" in text
    assert f"Number of SMs: {doc['environment']['sm_count']}" in text
    assert "def rms_norm_kernel(" in text and "class ModelNew" in text
    assert "best layout found so far" in text and "fraction of device-copy bandwidth" in text
    assert "&lt;" not in text and "&#39;" not in text   # a text template: nothing HTML-escaped


def test_unknown_names_list_what_exists(doc):
    with pytest.raises(SelectionError, match="no variant 'nope'; variants: .*seed_2d_tiles"):
        export.find(doc, "nope", "L1-36")
    with pytest.raises(SelectionError, match="no shape 'x'; shapes: L1-36"):
        export.find(doc, "seed_2d_tiles", "x")
    with pytest.raises(SelectionError, match="unknown stage 'gird'"):
        export.stage_named("gird")


def test_add_variant_accepts_the_seed_and_places_it(tmp_path):
    op_dir = tmp_path / "kernels" / "rmsnorm"
    op_dir.mkdir(parents=True)
    (op_dir / "reference.py").write_text((REPO / "kernels" / "rmsnorm" / "reference.py").read_text())
    (op_dir / "seed.py").write_text(SEED)
    op = ops.load_op_dir(op_dir, config.Config())
    cand = tmp_path / "candidate.py"
    cand.write_text(SEED)
    placed = ingest.add_variant(op, cand, "LLM try 1", force=False)
    assert placed == op_dir / "llm_try_1.py" and placed.read_text() == SEED
    with pytest.raises(ingest.CandidateError, match="exists; pass --name NEW or --force"):
        ingest.add_variant(op, cand, "LLM try 1", force=False)
    assert "llm_try_1" in {v.stem for v in ops.load_op_dir(op_dir, config.Config()).variants}


def test_add_variant_rejects_what_breaks_the_format():
    bad = textwrap.dedent("""
        import torch
        import triton

        @triton.jit
        def k(x):
            pass

        def launch(x):
            k[(1, 2, 3, 4)](x)

        def get_inputs():
            return []

        if __name__ == "__main__":
            launch(None)
        """)
    found = ingest.problems(bad, "cand.py")
    assert "missing imports: torch.nn, triton.language" in found
    assert "no class ModelNew" in found
    assert any("launch grid has 4 dimensions" in p for p in found)
    assert any("get_inputs belongs to the reference" in p for p in found)
    assert any("test code" in p for p in found)
    assert ingest.problems("def f(:\n", "c.py") == ["line 1: SyntaxError: invalid syntax"]
    assert ingest.problems(SEED, "seed.py") == []


@pytest.mark.parametrize("stage_name", ["grid_and_parallel", "block_tiling", "memory_access", "advanced_memory"])
def test_each_stage_run_collected_its_metrics(stage_name):
    """`profile --stage NAME` on the H100 (L1-36, seed and chunked_c): every metric of the stage was
    collected for the seed's kernel, and the export and the prompt carry those values."""
    doc = results.load(FIXTURES / "stages" / stage_name / "results.json")
    stage = export.stage_named(stage_name)
    assert set(stage.metrics()) <= set(doc["environment"]["ncu_settings"]["metrics"])
    shape, variant = export.find(doc, "seed_2d_tiles", "L1-36")
    (kernel,) = variant["ncu"]["kernels"]
    skipped = set(doc["environment"]["skipped_metrics"])
    assert [m for m in stage.metrics() if m not in kernel["metrics"] and m not in skipped] == []
    block = export.ncu_json(variant, stage.metrics())["rms_norm_kernel"]
    assert block == {m: kernel["metrics"][m]["value"] for m in stage.metrics() if m in kernel["metrics"]}
    text = export.render_prompt(export.prompt_view(doc, shape, variant, stage, REPO))
    for metric, _ in stage.checks:
        assert f'"{metric}": {json.dumps(kernel["metrics"][metric]["value"])}' in text, metric


def test_every_format_is_one_reporter_over_the_same_results(doc, tmp_path):
    """export --format: terminal is what `profile` prints, html the page `report` writes, prompt what `prompt`
    prints; each names the same recommendation."""
    from pipeline import report, shapeanalysis
    recs = [shapeanalysis.analyze_shape(s, doc["environment"]).recommendation for s in doc["shapes"]]
    term = export.as_format("terminal", SAMPLE)
    for s, rec in zip(doc["shapes"], recs):
        assert f"rmsnorm · {s['id']} · NVIDIA H200" in term and rec.variant["name"] in term
    report.render([SAMPLE], tmp_path, replayed=True)
    assert export.as_format("html", SAMPLE, reports_dir=tmp_path) == (tmp_path / "rmsnorm.html").read_text()
    prompt = export.as_format("prompt", SAMPLE, variant="seed_2d_tiles", shape="L1-36", stage="memory_access",
                              root=REPO, kernels=REPO / "kernels")
    shape, variant = export.find(doc, "seed_2d_tiles", "L1-36")
    assert prompt == export.render_prompt(export.prompt_view(doc, shape, variant, export.stage_named("memory_access"),
                                                             REPO, REPO / "kernels")) + "\n"
    with pytest.raises(SelectionError, match="--format prompt needs --stage"):
        export.as_format("prompt", SAMPLE)
    assert json.loads(export.as_format("ncu-json", SAMPLE, variant="seed_2d_tiles", shape="L1-36")) == \
        export.ncu_json(variant)
