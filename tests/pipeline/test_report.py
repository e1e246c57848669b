"""The HTML report rendered from the committed real H100 fixtures: headline, charts, table, links, safety."""
import copy
import dataclasses
import html
import re
import shlex

import markupsafe
import pytest

from testenv import FIXTURES
from pipeline import analysis, display, report, recommend, results, shapeview, viewmodel

FIX = FIXTURES / "profiles" / "nvidia-h100-80gb-hbm3" / "rmsnorm" / "results.json"
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="module")
def doc():
    return results.load(FIX)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    pages = report.render([FIX], out, replayed=True)
    return out, {p.name: p.read_text() for p in pages}


def sections(page_html):
    """Per shape id, the HTML of its <section>, without the <wbr> that let long names break."""
    parts = re.split(r'(?=<section class="shape" id=")', page_html.replace("<wbr>", ""))[1:]
    return {re.search(r"<h2>(.*?) <small>", p).group(1): p.split("</section>")[0] for p in parts}


def test_headline_names_the_recommendation_with_its_real_numbers(doc, rendered):
    page = sections(rendered[1]["rmsnorm.html"])
    env = doc["environment"]
    for shape in doc["shapes"]:
        rec = recommend.recommend(shape)
        sec = page[shape["id"]]
        assert f"Recommended for {shape['id']}: <strong>{html.escape(rec.variant['name'])}</strong>" in sec
        ms = rec.median_ms
        base = next(v for v in recommend.ranked(shape) if v.get("baseline"))["timing"]["median_ms"] \
            if any(v.get("baseline") for v in recommend.ranked(shape)) else None
        ref = shape["reference"]["timing"]["median_ms"]
        copy_gbs = env["ceilings"]["copy_bytes"] / env["ceilings"]["timing"]["copy"]["min_ms"] / 1e6  # fastest repeat
        roof = shape["min_bytes"] / (copy_gbs * 1e9) * 1e3
        copy_ms = shape["copy"]["timing"]["median_ms"]
        headline = sec.split('<div class="headline">')[1].split("</div>\n</div>")[0]
        assert f'<div class="v">{ms:.4g} ms</div>' in headline
        assert f'<div class="v">{ref / ms:.2f}×</div>' in headline
        assert f'<div class="v">{roof / ms:.0%}</div>' in headline and f"{roof:.4g} ms" in headline
        assert f'<div class="v">{copy_ms / ms:.0%}</div>' in headline and f"{copy_ms:.4g} ms" in headline
        assert f"{copy_gbs:,.0f} GB/s" in headline
        if base:
            assert f'<div class="v">{base / ms:.2f}×</div>' in headline
        else:                                           # odd: the seed baseline is incorrect, and says so
            seed = next(v for v in shape["variants"] if v.get("baseline"))
            assert '<div class="v">baseline incorrect</div>' in headline
            assert f"the baseline {seed['name']} is incorrect at this shape" in headline
            assert html.escape(seed["error"]) in headline
        assert "op declares no FLOPs" in headline
        dims = [analysis.m(analysis.dominant_kernel(rec.variant), f"launch__{w}_dim_{a}")
                for w in ("grid", "block") for a in "xyz"]
        assert f"ncu saw grid <strong>({int(dims[0])}, {int(dims[1])}, {int(dims[2])})</strong>" in headline
        assert html.escape(rec.variant["layout"]) in headline


def test_compute_roofline_appears_when_the_shape_declares_flops(doc, tmp_path):
    d = copy.deepcopy(doc)
    shape = d["shapes"][0]
    shape["flops"] = 5 * 10**9
    view = shapeview.shape_view(shape, d["environment"], FIX.parent, tmp_path)
    stat = next(s for s in view.headline.stats if s.label == "compute roofline")
    c = d["environment"]["ceilings"]
    rate = 2 * c["matmul_n"] ** 3 / c["timing"][f"matmul_{shape['dtype']}"]["min_ms"] / 1e9   # fastest repeat
    expect = 5e9 / (rate * 1e12) * 1e3 / recommend.recommend(shape).median_ms
    assert stat.value == f"{expect:.0%}" and f"{rate:,.1f} TFLOP/s" in stat.detail


def test_three_inline_svg_charts_per_shape_plus_the_sweep(doc, rendered):
    page = rendered[1]["rmsnorm.html"]
    for sid, sec in sections(page).items():
        svgs = re.findall(r"<svg\b.*?</svg>", sec, re.S)
        assert len(svgs) == 3, sid
        for svg in svgs:
            assert len(svg) < 150_000 and "<script" not in svg
        assert sec.count("<figure") == 3
    assert page.count("<svg") == 3 * len(doc["shapes"]) + 1         # + the per-shape sweep chart
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        'xmlns:xlink="http://www.w3.org/1999/xlink"', "")           # nothing fetched from anywhere
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))                                 # charts share one id space


def test_rendering_is_deterministic(tmp_path, rendered):
    again = report.render([FIX], tmp_path, replayed=True)
    assert {p.name: p.read_text() for p in again} == rendered[1]


def test_failed_and_incorrect_variants_are_listed_with_their_reason(doc, rendered):
    sec = sections(rendered[1]["rmsnorm.html"])["odd"]
    seed = next(v for v in next(s for s in doc["shapes"] if s["id"] == "odd")["variants"]
                if v["name"] == "seed_2d_tiles")
    assert seed["status"] == "incorrect"
    groups = re.findall(r'<tbody class="([^"]*)">(.*?)</tbody>', sec, re.S)
    css, group = next(g for g in groups if 'data-sort="seed_2d_tiles"' in g[1])
    assert css == "bad" and ">incorrect</td>" in group
    assert html.escape(f"incorrect: {seed['error']}") in group
    assert "incorrect" in sec.split("<figure")[1]                    # and in the time chart, not hidden


def test_links_resolve_to_existing_files(rendered):
    out, pages = rendered
    hrefs = re.findall(r'href="([^"#]+)"', pages["rmsnorm.html"])
    reps = [h for h in hrefs if h.endswith(".ncu-rep")]
    assert len(reps) >= 2 * 2 and any(h.endswith("results.json") for h in hrefs)
    for h in hrefs:
        assert (out / h).resolve().is_file(), h
    assert "rmsnorm.html" in pages["index.html"]


def test_view_model_is_plain_dataclasses(doc, tmp_path):
    page = report.op_page(doc, FIX, tmp_path, replayed=True)

    def walk(x, path):
        if dataclasses.is_dataclass(x):
            for f in dataclasses.fields(x):
                walk(getattr(x, f.name), f"{path}.{f.name}")
        elif isinstance(x, (list, tuple)):
            for i, y in enumerate(x):
                walk(y, f"{path}[{i}]")
        else:
            assert x is None or isinstance(x, (str, int, float, bool)), f"{path} is {type(x).__name__}"

    walk(page, "page")
    index = viewmodel.IndexPage("", [page])
    walk(index, "index")


def test_hostile_variant_name_renders_as_text(doc, tmp_path):
    d = copy.deepcopy(doc)
    shape = d["shapes"][0]
    rec = recommend.recommend(shape)
    victim = next(v for v in shape["variants"] if v["name"] == rec.variant["name"])
    victim["name"] = victim["stem"] = HOSTILE                       # headline, table and every chart
    path = tmp_path / "profiles" / "gpu" / "rmsnorm" / "results.json"
    results.save(path, d)
    pages = report.render([path], tmp_path / "reports", replayed=False)
    for p in pages:
        text = p.read_text()
        assert HOSTILE not in text
        assert text.count("<script") == 1                            # the page's own sort script only
    page = (tmp_path / "reports" / "rmsnorm.html").read_text().replace("<wbr>", "")
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert f"Recommended for {shape['id']}: <strong>{escaped}</strong>" in page
    svgs = "".join(re.findall(r"<svg\b.*?</svg>", page, re.S))
    assert escaped in svgs                                           # matplotlib escaped the chart labels
    assert escaped in (tmp_path / "reports" / "index.html").read_text().replace("<wbr>", "")


def test_replay_note_only_for_replayed_data(doc, tmp_path, rendered):
    note = f"Replayed data: recorded on {doc['environment']['gpu_name']} on {doc['created'][:10]}, " \
           "not measured on this machine."
    assert note in rendered[1]["rmsnorm.html"] and note in rendered[1]["index.html"]
    live = report.render([FIX], tmp_path, replayed=False)
    assert all("Replayed data" not in p.read_text() for p in live)


def test_cli_summary_reads_the_shape_view(doc):
    view = shapeview.shape_view(doc["shapes"][0], doc["environment"], FIX.parent, FIX.parent)
    rec = recommend.recommend(doc["shapes"][0])
    assert view.headline.name == rec.variant["name"] and view.headline.vs_reference.endswith("×")
    assert view.charts == [] and [r.name for r in view.rows if r.recommended] == [rec.variant["name"]]


def test_environment_and_exact_ncu_commands_are_on_the_page(doc, rendered):
    page = rendered[1]["rmsnorm.html"]
    env = doc["environment"]
    for value in (env["gpu_name"], str(env["sm_count"]), env["driver"], env["ncu_version"], env["torch"],
                  env["triton"], env["ncu_settings"]["clock_control"], env["ncu_settings"]["replay_mode"]):
        assert html.escape(value) in page, value
    for shape in doc["shapes"]:
        assert str(markupsafe.escape(shlex.join(shape["ncu"]["command"]))) in page     # Jinja's escaping
    for key in analysis.THRESHOLDS:
        assert f"<code>{key}</code>" in page
    assert "@media print" in page


def test_a_pass_with_a_kept_job_file_gets_a_command_that_runs_it_again(doc, tmp_path):
    """Its argv is the recorded one but for the job file (the kept one, named from the project root, where the
    recorded path was the run's scratch folder) and the output (the current folder, not over the report)."""
    shape = copy.deepcopy(doc["shapes"][0])
    ran = shape["ncu"]["command"]
    assert shapeview.shape_view(shape, doc["environment"], FIX.parent, tmp_path).commands[0].again == ""
    shape["ncu"]["job"] = "20261206T092259.ncu.job.json"
    (c,) = shapeview.shape_view(shape, doc["environment"], FIX.parent, tmp_path).commands
    argv, at = shlex.split(c.again), ran.index("-o") + 1
    assert c.command == shlex.join(ran) and len(argv) == len(ran)
    assert [a for i, a in enumerate(argv) if a != ran[i]] == [argv[at], argv[-1]]
    assert argv[-1] == display.results_file(FIX.parent, c.job_name) and argv[-1].startswith("profiles/")
    assert argv[at] == ran[at].rsplit("/", 1)[-1].lstrip(".") + ".again" and "/" not in argv[at]
    assert c.job_href.endswith("/" + c.job_name)


def test_a_shape_with_no_correct_variant_and_no_ceilings_still_renders(doc, tmp_path, recwarn):
    d = copy.deepcopy(doc)
    for v in d["shapes"][0]["variants"]:
        v.update(status="crashed", error="worker died: SIGSEGV", compiled=[])
        v.pop("timing"), v.pop("ncu", None)
    for key in ("copy", "reference", "min_bytes"):
        d["shapes"][1].pop(key)
    d["environment"].pop("ceilings")
    path = tmp_path / "profiles" / "gpu" / "rmsnorm" / "results.json"
    results.save(path, d)
    report.render([path], tmp_path / "reports", replayed=False)
    page = sections((tmp_path / "reports" / "rmsnorm.html").read_text())
    first, second = page[d["shapes"][0]["id"]], page[d["shapes"][1]["id"]]
    assert "No correct variant at this shape" in first and first.count("crashed: worker died: SIGSEGV") == 33
    assert first.count("<svg") == 3 and second.count("<svg") == 3
    assert "n/a (no measured copy bandwidth or minimal bytes)" in second
    assert not [w for w in recwarn if "matplotlib" in str(w.filename)]


def test_unchanged_inputs_are_not_rendered_again(tmp_path):
    import shutil
    shutil.copytree(FIX.parent, tmp_path / "rmsnorm")
    path = tmp_path / "rmsnorm" / "results.json"
    first = report.render([path], tmp_path / "reports", False)
    stamp = {p: p.stat().st_mtime_ns for p in first}
    assert report.up_to_date([path], tmp_path / "reports", False)
    assert report.render([path], tmp_path / "reports", False) == first
    assert {p: p.stat().st_mtime_ns for p in first} == stamp                       # nothing rewritten
    assert not report.up_to_date([path], tmp_path / "reports", True)              # replayed: other pages
    doc = results.load(path)
    doc["shapes"] = doc["shapes"][:1]
    results.save(path, doc)
    assert not report.up_to_date([path], tmp_path / "reports", False)
    report.render([path], tmp_path / "reports", False)
    assert report.up_to_date([path], tmp_path / "reports", False)


def test_one_op_recorded_on_two_gpus_gets_a_page_per_gpu(tmp_path):
    """<gpu>/<op>/results.json: the H100 fixture and the H200 sample of rmsnorm are both rendered, neither
    overwrites the other, and the index links each GPU's page under its GPU's name."""
    paths = [FIX, FIXTURES / "samples-h200" / "nvidia-h200" / "rmsnorm" / "results.json"]
    pages = report.render(paths, tmp_path, replayed=True)
    names = sorted(p.name for p in pages)
    assert names == ["index.html", "rmsnorm.gpus.html", "rmsnorm.nvidia-h100-80gb-hbm3.html",
                     "rmsnorm.nvidia-h200.html"]
    index = (tmp_path / "index.html").read_text()
    for p in paths:
        gpu = results.load(p)["environment"]["gpu_name"]
        page = (tmp_path / f"rmsnorm.{results.slug(gpu)}.html").read_text()
        assert gpu in page and f"recorded on {gpu}" in index
        assert f'<a href="rmsnorm.{results.slug(gpu)}.html">rmsnorm</a> <small>{gpu}' in index
    assert report.page_names([results.load(paths[0])]) == ["rmsnorm.html"]   # one GPU: the plain name


def test_cluster_launch_shows_its_cluster_dims(tmp_path):
    """H200 sample: a shape won by a cluster launch says so beside the grid; the others do not."""
    sample = FIXTURES / "samples-h200" / "nvidia-h200" / "rmsnorm" / "results.json"
    page = sections(report.render([sample], tmp_path, replayed=True)[1].read_text())
    seen = 0
    for shape in results.load(sample)["shapes"]:
        rec = recommend.recommend(shape)
        headline = page[shape["id"]].split('<div class="headline">')[1].split("</div>\n</div>")[0]
        k = analysis.dominant_kernel(rec.variant)
        dims = [int(analysis.m(k, f"launch__cluster_dim_{a}")) for a in "xyz"]
        if any(dims):
            assert f"in clusters of <strong>({dims[0]}, {dims[1]}, {dims[2]})</strong>" in headline
            seen += 1
        else:
            assert "in clusters of" not in headline
    assert seen
