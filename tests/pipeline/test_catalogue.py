"""pipeline/catalogue.py, the one list of ncu metrics, and what reads it: the default metric set, the stage
metric sets, the variants table's columns and the chart labels; `ncu.extra_metrics` adding to the defaults."""
import dataclasses
import textwrap

import pytest

from testenv import FIXTURES, REPO
from pipeline import cache, catalogue, config, ops, results, shapeanalysis, shapeview, varianttable
from pipeline.errors import ConfigError
from pipeline.stages import STAGES

SAMPLE = FIXTURES / "samples-h200" / "nvidia-h200" / "rmsnorm" / "results.json"


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_names_are_unique_and_stages_exist():
    names = [m.name for m in catalogue.METRICS]
    assert len(names) == len(set(names))
    assert {s for m in catalogue.METRICS for s in m.stages} <= set(STAGES)
    assert all(STAGES[s].checks for s in STAGES)
    assert all(m.fmt == "bytes" or format(1.5, m.fmt) for m in catalogue.METRICS)


def test_the_default_set_is_what_the_samples_were_recorded_with():
    assert config.NcuConfig().metrics == catalogue.defaults()
    for path in results.find_all(REPO / "profiles"):
        assert results.load(path)["environment"]["ncu_settings"]["metrics"] == catalogue.defaults(), path
    # the H200 fixture predates the FLOP counters: the rest of the set is the same
    flops = {*catalogue.FLOP_WEIGHTS, catalogue.TENSOR_INST}
    older = results.load(SAMPLE)["environment"]["ncu_settings"]["metrics"]
    assert [m for m in catalogue.defaults() if m not in flops] == older
    # every FLOP counter was collected on the H100 (tests/fixtures/flops, recorded with them as extra metrics)
    probe = results.load(FIXTURES / "flops" / "nvidia-h100-80gb-hbm3" / "matmul" / "results.json")
    assert flops <= set(probe["environment"]["ncu_settings"]["metrics"])
    assert not probe["environment"]["skipped_metrics"]


def test_a_stage_collects_the_core_set_and_its_checks():
    stage = STAGES["memory_access"]
    assert stage.checks == [("l1tex__t_sector_hit_rate.pct", "L1 hit rate"),
                            ("smsp__sass_average_data_bytes_per_sector_mem_global_op_st.pct",
                             "Useful bytes per sector for global stores (100 % = fully coalesced)")]
    assert stage.metrics() == [*catalogue.core(), *(m for m, _ in stage.checks)]
    assert catalogue.core()[-1] not in catalogue.defaults()      # a stage-only metric


@pytest.mark.parametrize("lead", ["memory", "compute"])
def test_every_column_metric_is_a_column_with_its_label_and_title(lead):
    cols = {c.label: c.title for c in varianttable.columns(lead)}
    for m in catalogue.columns():
        assert cols[m.label] == m.title


def _rows(doc):
    sa = shapeanalysis.analyze_shape(doc["shapes"][0], doc["environment"])
    view = shapeview.shape_view(sa.shape, doc["environment"], SAMPLE.parent, REPO / "reports", sa=sa)
    return view, sa


def test_cells_follow_the_declared_columns():
    view, _ = _rows(results.load(SAMPLE))
    labels = [c.label for c in view.columns]
    for r in view.rows:
        assert len(r.cells) == len(labels)
        cell = dict(zip(labels, r.cells))
        assert cell["IQR ms"].text == r.spread_ms and cell["bound"].text == r.bound
        assert cell["SM %"].text == r.sm_pct and cell["DRAM %"].text == r.dram_pct


def test_one_catalogue_entry_adds_a_column(monkeypatch):
    extra = catalogue.Metric("launch__occupancy_limit_warps", "warp limit", "block", column=True)
    metrics = [extra if m.name == extra.name else m for m in catalogue.METRICS]
    monkeypatch.setattr(catalogue, "METRICS", metrics)
    monkeypatch.setattr(catalogue, "BY_NAME", {m.name: m for m in metrics})
    doc = results.load(SAMPLE)
    view, sa = _rows(doc)
    labels = [c.label for c in view.columns]
    assert labels[-3:] == ["warp limit", "ncu range", "bound"]
    assert all(len(r.cells) == len(labels) for r in view.rows)
    row = next(r for r in view.rows if r.recommended)
    assert row.cells[-3].text == f"{sa.recommended.kernel['metrics'][extra.name]['value']:,.0f}"


def test_chart_axes_name_their_metric():
    assert catalogue.BY_NAME[catalogue.SM].axis == "SM throughput, % of peak (sm__throughput)"
    assert catalogue.BY_NAME[catalogue.DRAM].axis == "DRAM throughput, % of peak (dram__throughput)"


# ---------------------------------------------------------------- ncu.metrics replaces, ncu.extra_metrics adds

L1 = "l1tex__t_sector_hit_rate.pct"


def test_extra_metrics_add_to_the_defaults(tmp_path):
    cfg = config.load_root(write(tmp_path, "pipeline.yaml", f"ncu:\n  extra_metrics: [{L1}]\n"))
    assert cfg.ncu.metrics == [*catalogue.defaults(), L1]


def test_metrics_replace_the_defaults_and_extra_metrics_add_to_them(tmp_path):
    cfg = config.load_root(write(tmp_path, "pipeline.yaml", "ncu:\n  metrics: [gpu__time_duration.sum]\n"))
    assert cfg.ncu.metrics == ["gpu__time_duration.sum"]
    cfg = config.load_root(write(tmp_path, "both.yaml", f"""
        ncu:
          extra_metrics: [{L1}, gpu__time_duration.sum]
          metrics: [gpu__time_duration.sum]
        """))
    assert cfg.ncu.metrics == ["gpu__time_duration.sum", L1]


def test_op_yaml_layers_on_the_root(tmp_path):
    root = config.load_root(write(tmp_path, "pipeline.yaml", f"ncu:\n  extra_metrics: [{L1}]\n"))
    assert config.load_op(root, write(tmp_path, "a.yaml", "ncu:\n  select: all\n")).ncu.metrics == root.ncu.metrics
    op = config.load_op(root, write(tmp_path, "b.yaml", "ncu:\n  extra_metrics: [launch__cluster_dim_x2]\n"))
    assert op.ncu.metrics == [*catalogue.defaults(), L1, "launch__cluster_dim_x2"]
    op = config.load_op(root, write(tmp_path, "c.yaml", "ncu:\n  metrics: [gpu__time_duration.sum]\n"))
    assert op.ncu.metrics == ["gpu__time_duration.sum", L1]


@pytest.mark.parametrize("text, message", [
    ("ncu:\n  extra_metrics: dram__bytes_read.sum\n", r"pipeline.yaml:2: 'ncu.extra_metrics' must be a list"),
    ("ncu:\n  extra_metrics:\n    - a.sum\n    - 3\n",
     r"pipeline.yaml:4: 'ncu.extra_metrics\[1\]' must be str, got int 3"),
    ("ncu:\n  extra_metrics:\n    - a.sum\n    - a.sum\n",
     r"pipeline.yaml:4: 'ncu.extra_metrics\[1\]' repeats 'a.sum' \(ncu.extra_metrics\[0\], line 3\)"),
    ("ncu:\n  extra_metrics: ['a.sum,b.sum']\n",
     r"pipeline.yaml:2: 'ncu.extra_metrics\[0\]' must be a name without spaces or commas, got 'a.sum,b.sum'"),
    ("ncu:\n  extra_metric: [a.sum]\n",
     r"pipeline.yaml:2: unknown key 'ncu.extra_metric'.*Did you mean 'extra_metrics'"),
])
def test_bad_extra_metrics_name_file_line_and_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        config.load_root(write(tmp_path, "pipeline.yaml", text))


def test_extra_metrics_key_the_cache_as_the_same_list_in_metrics_does(tmp_path):
    op = ops.load_op_dir(FIXTURES / "faulty" / "kernels" / "faults", config.Config())
    shape, facts = op.config.op.shape_list(None)[0], {"gpu_name": "H100"}

    def key(ncu):
        return cache.shape_key(dataclasses.replace(op, config=dataclasses.replace(op.config, ncu=ncu)), shape, facts)

    extra = config.load_root(write(tmp_path, "pipeline.yaml", f"ncu:\n  extra_metrics: [{L1}]\n")).ncu
    assert key(extra) == key(config.NcuConfig(metrics=[*catalogue.defaults(), L1]))
    assert key(extra) != key(config.NcuConfig())
