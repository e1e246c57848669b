"""The detail pass (pipeline/detail.py) on the default suite recorded with it on an H100
(tests/fixtures/detail): which kernels it picks, what it stored, the sentences it draws and the page section."""
import html
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from testenv import FIXTURES, REPO
from pipeline import cache, config, detail, detail_view, ncu, ops, report, results, shapeanalysis, shapeview

DETAIL = FIXTURES / "detail" / "nvidia-h100-80gb-hbm3"
DOCS = {p.parent.name: results.load(p) for p in sorted(DETAIL.glob("*/results.json"))}


def picked(shape):
    return {v["name"]: v for v in shape["variants"] if v.get("detail")}


@pytest.mark.parametrize("op", sorted(DOCS))
def test_it_profiled_the_recommendation_the_best_other_family_and_the_correct_baseline(op):
    doc = DOCS[op]
    for shape in doc["shapes"]:
        sa = shapeanalysis.analyze_shape(shape, doc["environment"])
        want = dict(detail.picks(sa))
        assert {n: v["detail"]["role"] for n, v in picked(shape).items()} == want
        assert want[sa.recommendation.variant["name"]] == "recommended"
        base = next(v for v in shape["variants"] if v.get("baseline"))
        assert (base["name"] in want) == (base["status"] == "ok")
        others = [n for n, role in want.items() if role.startswith("fastest of another")]
        assert all(n.split("(")[0] != sa.recommendation.variant["stem"] for n in others)


@pytest.mark.parametrize("op", sorted(DOCS))
def test_each_picked_kernel_has_stalls_memory_and_its_hottest_source_lines(op):
    for shape in DOCS[op]["shapes"]:
        assert shape["detail"]["status"] == "ok" and shape["detail"]["report"].endswith(".detail.ncu-rep")
        for name, v in picked(shape).items():
            assert v["detail"]["range"] == ncu.range_name(DOCS[op]["shapes"].index(shape), v["index"])
            (k,) = v["detail"]["kernels"]
            assert k["name"] == v["ncu"]["kernels"][0]["name"] if v["ncu"].get("kernels") else k["name"]
            assert k["stalls"] and max(k["stalls"], key=k["stalls"].get) != "selected"
            rows = {m["what"]: m for m in k["memory"]}
            assert rows["DRAM read"]["value"] > 0 and rows["DRAM read"]["metric"] == "dram__bytes_read.sum"
            assert k["lines"] and 0 < sum(ln["share"] for ln in k["lines"]) <= 1.0 + 1e-9
            assert all(a["samples"] >= b["samples"] for a, b in zip(k["lines"], k["lines"][1:]))
            # the hottest lines are Python source of the variant or of Triton's own library, with their text
            assert any(ln["file"].endswith(v["file"].split("/")[-1]) for ln in k["lines"])
            assert all(ln["text"] for ln in k["lines"])


def test_the_baseline_that_rereads_its_input_is_explained_by_its_own_counters():
    shape = DOCS["rmsnorm"]["shapes"][0]        # L1-36: the seed kernel reads x several times
    kernels = {v["detail"]["role"]: v["detail"]["kernels"][0] for v in picked(shape).values()}
    said = detail.sentences(kernels["recommended"], kernels["baseline"], "seed_2d_tiles")
    ratio = ([m for m in kernels["baseline"]["memory"] if m["what"] == "DRAM read"][0]["value"]
             / [m for m in kernels["recommended"]["memory"] if m["what"] == "DRAM read"][0]["value"])
    assert ratio > 1.2
    assert f"seed_2d_tiles moves {ratio:.2f}× the DRAM read bytes" in [s.text for s in said]
    assert all(s.metric.startswith(("smsp__average_warps_issue_stalled_", "dram__", "l1tex__")) for s in said)


def test_a_kernel_compared_with_itself_gives_no_sentence():
    k = DOCS["softmax"]["shapes"][0]
    k = next(v for v in picked(k).values())["detail"]["kernels"][0]
    assert detail.sentences(k, k, "same") == []


def test_the_command_swaps_the_metric_list_for_the_sections():
    base = ncu.command("/usr/local/cuda/bin/ncu", config.NcuConfig(), Path("/o/x.detail.ncu-rep"), ["_k"],
                       ["python", "-m", "pipeline.worker", "job.json"])
    cmd = detail.command(base)
    assert "--metrics" not in cmd and cmd[-4:] == base[-4:] and cmd[0] == base[0]
    assert [cmd[i + 1] for i, x in enumerate(cmd) if x == "--section"] == list(detail.SECTIONS)
    assert cmd[cmd.index("--import-source") + 1] == "yes" and "-k" in cmd and "--nvtx-include" in cmd


def test_the_page_shows_why_the_winner_wins(tmp_path):
    doc = DOCS["rmsnorm"]
    path = DETAIL / "rmsnorm" / "results.json"
    view = shapeview.shape_view(doc["shapes"][0], doc["environment"], path.parent, tmp_path)
    why = view.why
    assert [k.role for k in why.kernels][0] == "recommended" and len(why.kernels) == 3
    rec = picked(doc["shapes"][0])[why.kernels[0].name]["detail"]["kernels"][0]
    assert why.stalls[0] == ("long scoreboard", [f"{rec['stalls']['long_scoreboard']:.2f}",
                                                 *why.stalls[0][1][1:]])
    assert why.kernels[0].command.startswith("ncu --import ") and "--nvtx-include s0.v" in why.kernels[0].command
    report.render([path], tmp_path, False)
    page = html.unescape((tmp_path / "rmsnorm.html").read_text())
    section = page.split('id="shape-l1-36"')[1].split("</section>")[0]
    assert "Why the winner wins" in section and "[dram__bytes_read.sum]" in section
    assert re.search(r"stalls on long scoreboard [\d.]+× more", section)
    assert rec["lines"][0]["text"] in section
    chart = section.split("<h3>Stall breakdown</h3>")[1].split("</figure>")[0]
    assert "<svg" in chart and "recommended: " in chart and "baseline: seed_2d_tiles" in chart
    assert "long scoreboard" in chart and "other" in chart
    memory = section.split("<h3>Memory traffic</h3>")[1].split("</figure>")[0]
    assert "<svg" in memory and "DRAM (reads + writes)" in memory and "baseline: seed_2d_tiles" in memory


def test_bytes_by_level_sum_the_table_rows():
    k = next(v for v in picked(DOCS["rmsnorm"]["shapes"][0]).values())["detail"]["kernels"][0]
    rows = {m["what"]: m["value"] for m in k["memory"]}
    got = dict(detail.bytes_by_level(k))
    assert got["DRAM (reads + writes)"] == rows["DRAM read"] + rows["DRAM write"]
    assert got["L1 (global loads + stores)"] == 32 * (rows["L1 global loads"] + rows["L1 global stores"])
    assert detail.bytes_by_level({"memory": []})[0][1] is None


def test_without_the_pass_a_shape_has_no_section_and_prune_keeps_the_detail_files(tmp_path):
    shape = {**DOCS["softmax"]["shapes"][0], "detail": None}
    assert detail_view.view(shape, tmp_path, tmp_path) is None
    d = DOCS["softmax"]
    names = [d["shapes"][0]["detail"]["report"], d["shapes"][0]["detail"]["log"], "old.detail.ncu-rep"]
    for n in names:
        (tmp_path / n).write_text("x")
    cache.prune(tmp_path, d)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[:2])


def test_profile_detail_adds_the_named_variant_to_the_picks():
    """detail._chosen over a recorded rmsnorm shape whose picks already have their detail: alone, nothing is
    profiled again; with `profile --detail` naming a slower variant measured now, that one is."""
    doc = DOCS["rmsnorm"]
    shape = json.loads(json.dumps(doc["shapes"][0]))
    slower = next(v for v in shape["variants"] if v["status"] == "ok" and not v.get("detail"))
    names = [ops.Variant(name=v["name"], file=v["file"], stem=v["stem"], layout="", config={},
                         baseline=bool(v.get("baseline"))) for v in shape["variants"]]
    lane = SimpleNamespace(op=SimpleNamespace(variants=names, detail_asked=()))
    assert detail._chosen(lane, shape, doc["environment"]) == []
    lane.op.detail_asked = (slower["name"],)
    slower["cached"] = True                      # not measured in this run: not profiled either
    assert detail._chosen(lane, shape, doc["environment"]) == []
    slower["cached"] = False
    assert detail._chosen(lane, shape, doc["environment"]) == [(slower["name"], detail.ASKED)]


def test_profile_detail_needs_a_variant(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pipeline", "profile", "--detail", "--op", "rmsnorm",
                           "--profiles-dir", str(tmp_path)], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 2 and "profile --detail re-profiles the variants named by --variant" in proc.stderr


def test_the_section_links_the_detail_report_only_where_it_is_kept(tmp_path):
    """The fixture keeps results and logs, not the detail .ncu-rep: the page says so instead of a dead link."""
    shape = DOCS["rmsnorm"]["shapes"][0]
    rep = shape["detail"]["report"]
    gone = detail_view.view(shape, DETAIL / "rmsnorm", tmp_path)
    assert gone.report_href == "" and gone.report_note.startswith(f"{rep} is not kept beside the results")
    (tmp_path / rep).write_bytes(b"x")             # a stand-in: the view looks for the file, never reads it
    kept = detail_view.view(shape, tmp_path, tmp_path)
    assert kept.report_href == rep and kept.report_note == ""
    pages = report.render([DETAIL / "rmsnorm" / "results.json"], tmp_path / "reports", replayed=True)
    page = next(p for p in pages if p.name == "rmsnorm.html").read_text()
    assert f"{rep} is not kept beside the results" in page and ">detail .ncu-rep</a>" not in page
