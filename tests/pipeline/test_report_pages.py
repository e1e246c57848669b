"""The rendered pages at a glance, in headless Chromium: they fit a 768 px and a desktop window, the headline
states why the winner wins (and what the baseline's failure is), ties are called ties, torch's wins get a red
banner, compute-bound ops are shown through TFLOP/s, and the charts' labels stay apart.

Every expectation is derived from the committed samples with recommend and analysis: the H200's
(tests/fixtures/samples-h200/nvidia-h200/), and for the cross-GPU pages and the screenshots the H100's (profiles/).
Needs `chromium` on PATH (Debian: `apt-get install -y chromium`); skipped without it. Set
PIPELINE_REPORT_SCREENSHOTS=docs to refresh the screenshots in docs/.
"""
import copy
import html
import json
import os
import re
import shutil
import subprocess

import pytest

from testenv import FIXTURES, REPO
from pipeline import analysis, chartstyle, recommend, report, results, shapeview

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SAMPLES = FIXTURES / "samples-h200"
OPS = ("rmsnorm", "softmax", "matmul", "attn_scores")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")

PROBE = """<script>
(function () {
  var W = window.innerWidth, out = {inner: W, scroll: document.documentElement.scrollWidth, loose: [], overlaps: []};
  // anything wider than the window must sit in a horizontally scrolling box
  document.querySelectorAll("table, pre, code, .headline, .stat, .alert, figure, p, h1, h2, li").forEach(function (e) {
    if (e.getBoundingClientRect().right > W + 1 && !e.closest(".scroll")) {
      out.loose.push(e.tagName + "." + e.className + ": " + (e.textContent || "").slice(0, 80));
    }
  });
  // the time chart of each shape: no two labels drawn over each other
  document.querySelectorAll("section.shape").forEach(function (sec) {
    var svg = sec.querySelector("figure svg");
    if (!svg) { return; }
    var boxes = Array.prototype.map.call(svg.querySelectorAll("text"), function (t) {
      return [t.getBoundingClientRect(), t.textContent];
    }).filter(function (b) { return b[0].width > 0; });
    for (var i = 0; i < boxes.length; i++) {
      for (var j = i + 1; j < boxes.length; j++) {
        var a = boxes[i][0], b = boxes[j][0];
        if (Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1 &&
            Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1) {
          out.overlaps.push(sec.id + ": " + boxes[i][1] + " / " + boxes[j][1]);
        }
      }
    }
  });
  function texts(sel) {
    return Array.prototype.map.call(document.querySelectorAll(sel), function (e) { return e.innerText; });
  }
  out.text = document.body.innerText;
  out.all_text = document.body.textContent;
  out.answers = texts(".headline .answer");
  out.summaries = texts(".headline .summary");
  out.bad = Array.prototype.map.call(document.querySelectorAll("section.shape"), function (s) {
    return [s.id, Array.prototype.map.call(s.querySelectorAll(".alert.bad"), function (e) { return e.innerText; })];
  });
  out.headline_right = Math.max.apply(null, [0].concat(Array.prototype.map.call(
    document.querySelectorAll(".headline .answer strong, .headline .summary, .stat"),
    function (e) { return e.getBoundingClientRect().right; })));
  out.folded = Array.prototype.map.call(document.querySelectorAll("details.folded"), function (d) {
    var row = d.querySelector("tbody tr");
    return [d.open, d.querySelector("summary").innerText, row ? row.checkVisibility() : null];
  });
  var pre = document.createElement("pre");
  pre.id = "probe-out";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script></body>"""


def chromium(tmp_path, *args):
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def probe(page, width, tmp_path):
    """What the page shows in a window `width` px wide (see PROBE)."""
    probed = page.with_name("probe-" + page.name)
    probed.write_text(page.read_text().replace("</body>", PROBE))
    dom = chromium(tmp_path, f"--window-size={width},1200", "--dump-dom", probed.as_uri())
    return json.loads(html.unescape(re.search(r'<pre id="probe-out">(.*?)</pre>', dom, re.S).group(1)))


H100 = REPO / "profiles" / "nvidia-h100-80gb-hbm3"
ON_BOTH = ("rmsnorm", "matmul")     # recorded on the H100 too (the samples under profiles/): cross-GPU pages


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The H200 samples rendered, with the rmsnorm and matmul samples of the H100 (profiles/) beside them:
    real records of two GPUs, for the cross-GPU pages."""
    root = tmp_path_factory.mktemp("site")
    profiles = root / "profiles"
    shutil.copytree(SAMPLES / "nvidia-h200", profiles / "nvidia-h200")
    for op in ON_BOTH:
        shutil.copytree(H100 / op, profiles / H100.name / op)
    report.render(results.find_all(profiles), root / "reports", replayed=True)
    docs = {op: results.load(SAMPLES / "nvidia-h200" / op / "results.json") for op in OPS}
    return root / "reports", docs, results.load(H100 / "rmsnorm" / "results.json")


def page_of(reports, op, gpu="nvidia-h200"):
    return reports / (f"{op}.{gpu}.html" if op in ON_BOTH else f"{op}.html")


def beaten(shape):
    """torch eager faster than the recommendation, outside the noise."""
    rec, ref = recommend.recommend(shape), shape["reference"]["timing"]
    return ref["median_ms"] < rec.median_ms and not recommend.tied(ref, rec.variant["timing"])


@pytest.mark.parametrize("width", [768, 1400])
def test_every_page_fits_the_window(site, width, tmp_path):
    reports = site[0]
    pages = ["index.html", "rmsnorm.gpus.html", *(page_of(reports, op).name for op in OPS)]
    for name in pages:
        seen = probe(reports / name, width, tmp_path)
        assert seen["inner"] == width
        assert seen["scroll"] <= width, (name, seen["scroll"])          # the page never scrolls sideways
        assert not seen["loose"], (name, seen["loose"][:3])           # wide tables scroll in their own box
        assert seen["headline_right"] <= width, name                  # long names break in headline and cards
        assert not seen["overlaps"], (name, seen["overlaps"][:3])      # time-chart labels stay apart


def test_no_page_prints_none_or_a_missing_baseline_time(site, tmp_path):
    reports = site[0]
    for name in ["index.html", "rmsnorm.gpus.html", *(page_of(reports, op).name for op in OPS)]:
        seen = probe(reports / name, 1400, tmp_path)
        for text in (seen["text"], seen["all_text"]):
            assert not re.search(r"\bNone\b", text), name
            assert "baseline time" not in text, name


def test_the_verdict_states_that_the_baseline_is_incorrect(site, tmp_path):
    reports, docs, _ = site
    seen = probe(page_of(reports, "rmsnorm"), 1400, tmp_path)
    checked = 0
    for shape, summary in zip(docs["rmsnorm"]["shapes"], seen["summaries"]):
        base = next(v for v in shape["variants"] if v.get("baseline"))
        if base["status"] == "ok":
            assert f"faster than the baseline {base['name']}" in summary
        else:
            assert f"the baseline {base['name']} is {base['status']} at this shape" in summary, summary
            checked += 1
    assert checked == 1                                       # odd-spatial: the seed's output has unwritten NaNs


def test_exact_ties_are_called_ties_in_headline_index_cards_and_tables(site, tmp_path):
    reports, docs, _ = site
    shape = next(s for s in docs["matmul"]["shapes"]
                 if any(v["timing"]["median_ms"] == recommend.recommend(s).median_ms
                        for v in recommend.ranked(s)[1:]))
    rec = recommend.recommend(shape)
    twin = next(v for v in recommend.ranked(shape)[1:] if v["timing"]["median_ms"] == rec.median_ms)
    assert twin["name"] in rec.ties
    seen = probe(page_of(reports, "matmul"), 1400, tmp_path)
    i = [s["id"] for s in docs["matmul"]["shapes"]].index(shape["id"])
    assert f"tied with {len(rec.ties)}" in seen["answers"][i]
    assert f"(tied with {len(rec.ties)} within noise)" in seen["summaries"][i]
    page = page_of(reports, "matmul").read_text().replace("<wbr>", "")
    sec = page.split(f'id="shape-{results.slug(shape["id"])}"')[1].split("</section>")[0]
    assert f"Tied exactly with {html.escape(twin['name'])}" in sec
    assert '<div class="k">time (tied with 3)</div>' in sec                                  # the time card
    fam = twin["stem"]
    assert f'<td class="l">{fam}</td><td class="l name">{html.escape(twin["name"])}</td>' in sec
    assert f'<td>{rec.median_ms:.4g}</td><td>tied, +0.0 %</td>' in sec                       # family table
    cells = re.findall(r'data-sort="[^"]*">(fastest[^<]*|tied, [^<]*)</td>', sec)
    assert cells.count("fastest, tied") == 1 and "fastest" not in cells                      # variants table
    assert "tied, +0.0 %" in cells
    time_svg = re.search(r"<svg\b.*?</svg>", sec, re.S).group(0)
    assert "tied, +0.0 %" in time_svg and re.search(r">[\d.]+ ms  fastest<", time_svg) is None
    index = probe(reports / "index.html", 1400, tmp_path)["text"]
    assert f"{fam} tied, +0.0 %" in index and f"{fam} fastest" not in index


def test_torch_faster_than_the_recommendation_gets_a_red_banner(site, tmp_path):
    reports, docs, _ = site
    expected = {op: [beaten(s) for s in docs[op]["shapes"]] for op in OPS}
    assert all(expected["matmul"]) and all(expected["attn_scores"])      # 0.82-0.96x and 0.59-0.79x eager
    assert not any(expected["rmsnorm"]) and not any(expected["softmax"])
    for op in OPS:
        seen = probe(page_of(reports, op), 1400, tmp_path)
        for shape, flag, (anchor, bad), answer in zip(docs[op]["shapes"], expected[op], seen["bad"], seen["answers"]):
            assert anchor == "shape-" + results.slug(shape["id"])
            if flag:
                assert len(bad) == 1 and bad[0].startswith("torch eager is faster than every Triton variant"), bad
                ref = shape["reference"]["timing"]["median_ms"]
                assert f"{ref:.4g} ms against {recommend.recommend(shape).median_ms:.4g} ms" in bad[0]
                assert answer.startswith(f"Best Triton variant for {shape['id']} (torch eager is faster)")
            else:
                assert not bad and answer.startswith(f"Recommended for {shape['id']}")
    index = probe(reports / "index.html", 1400, tmp_path)
    h100 = sum(beaten(s) for op in ON_BOTH for s in results.load(H100 / op / "results.json")["shapes"])
    assert index["text"].count("torch eager is faster than every Triton variant") == \
        sum(sum(flags) for flags in expected.values()) + h100


def test_torch_compile_from_bench_json_is_shown_where_measured(site, tmp_path):
    reports, docs, _ = site
    bench = json.loads((SAMPLES / "nvidia-h200" / "rmsnorm" / "bench.json").read_text())
    seen = probe(page_of(reports, "rmsnorm"), 1400, tmp_path)
    for row, summary in zip(bench["rows"], seen["summaries"]):
        ratio = row["median_ms"]["torch.compile"] / row["median_ms"]["recommended"]
        assert f"{ratio:.2f}× faster than torch.compile" in summary
    assert "torch.compile" not in probe(page_of(reports, "softmax"), 1400, tmp_path)["text"]   # no bench.json


def test_compute_bound_matmul_leads_with_tflops_and_the_compute_roofline(site, tmp_path):
    reports, docs, _ = site
    doc = docs["matmul"]
    env = doc["environment"]
    page = page_of(reports, "matmul").read_text()
    seen = probe(page_of(reports, "matmul"), 1400, tmp_path)
    for shape, summary in zip(doc["shapes"], seen["summaries"]):
        rec = recommend.recommend(shape)
        mem, comp = analysis.roofline_fractions(rec.variant, shape, env)
        assert comp > mem                                         # the rule that makes it compute-led
        tflops = shape["flops"] / rec.median_ms / 1e9
        assert f"{tflops:,.0f} TFLOP/s, {comp:.0%} of the compute roofline" in summary
        assert "memory roofline" not in summary
        sec = page.split(f'id="shape-{results.slug(shape["id"])}"')[1].split("</section>")[0]
        cards = re.findall(r'<div class="k">([^<]*)</div>', sec)
        assert cards[1:3] == ["compute roofline", "TFLOP/s"]
        heads = re.findall(r"<th [^>]*>([^<]*)</th>", sec.split('class="sortable variants')[1].split("</thead>")[0])
        assert heads.index("TFLOP/s") < heads.index("of compute roofline") < heads.index("DRAM %")
        floor_ms = analysis.roofline(shape, env).compute_ms
        time_svg = re.search(r"<svg\b.*?</svg>", sec, re.S).group(0)
        assert f"compute roofline: FLOPs at the measured matmul rate ({floor_ms:.4g} ms)" in time_svg
        assert "device copy of the minimal bytes" not in time_svg
    sweep = page.split('id="summary"')[1].split("</section>")[0]
    assert "fraction of the compute roofline" in sweep and "device copy time" not in sweep
    block = (reports / "index.html").read_text().split(f'<h2><a href="{page_of(reports, "matmul").name}">')[1].split("<h2>")[0]
    block = block.split("<tbody>")[1].split("</tbody>")[0]
    assert len(re.findall(r"<td>[\d,]+ TFLOP/s</td><td>\d+% compute</td>", block)) == len(doc["shapes"])
    assert "GB/s" not in block and "memory" not in block
    # attention declares FLOPs but is nearer its memory roofline: GB/s and memory, not TFLOP/s
    att = probe(page_of(reports, "attn_scores"), 1400, tmp_path)["summaries"]
    assert all("GB/s" in s and "of the memory roofline" in s and "TFLOP/s" not in s for s in att)


def test_dram_has_its_own_column_and_the_memory_system_its_name(site, tmp_path):
    reports, docs, _ = site
    page = page_of(reports, "rmsnorm").read_text()
    assert ">mem %<" not in page
    shape = docs["rmsnorm"]["shapes"][0]
    sec = page.split(f'id="shape-{results.slug(shape["id"])}"')[1].split("</section>")[0]
    heads = re.findall(r"<th [^>]*>([^<]*)</th>", sec.split('class="sortable variants')[1].split("</thead>")[0])
    rec = recommend.recommend(shape)
    row = re.search(r'<tbody class="rec">\s*<tr>(.*?)</tr>', sec, re.S).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    k = analysis.dominant_kernel(rec.variant)
    assert cells[heads.index("DRAM %")] == f"{analysis.m(k, analysis.DRAM):.1f}"
    assert cells[heads.index("L1/L2/DRAM (memory system) %")] == f"{analysis.m(k, analysis.MEM):.1f}"
    view = shapeview.shape_view(shape, docs["rmsnorm"]["environment"], SAMPLES, SAMPLES)
    assert next(r for r in view.rows if r.recommended).dram_pct == cells[heads.index("DRAM %")]   # = terminal


def test_failed_and_unsupported_rows_are_folded_and_suspect_ones_shown_as_bad(site, tmp_path):
    reports, docs, _ = site
    shapes = docs["rmsnorm"]["shapes"]
    seen = probe(page_of(reports, "rmsnorm"), 1400, tmp_path)
    unsupported = [sum(v["status"] == "unsupported" for v in s["variants"]) for s in shapes]
    folded = seen["folded"]
    assert len(folded) == sum(1 for n in unsupported if n)
    for n, (is_open, summary, visible) in zip([n for n in unsupported if n], folded):
        assert not is_open and summary.startswith(f"{n} variant") and f"{n} unsupported" in summary
        assert visible is False                                   # not drawn until opened
    d = copy.deepcopy(docs["rmsnorm"])
    d["shapes"] = d["shapes"][:1]
    victim = recommend.ranked(d["shapes"][0])[5]
    victim.update(status="suspect", error="kernels ran on another stream for 1.6x the events' time")
    path = tmp_path / "profiles" / "gpu" / "rmsnorm" / "results.json"
    results.save(path, d)
    report.render([path], tmp_path / "reports", replayed=False)
    page = tmp_path / "reports" / "rmsnorm.html"
    probed = page.with_name("color.html")
    probed.write_text(page.read_text().replace("</body>", """<script>
      var cell = document.querySelector('td[data-sort="%s"]'), reason = cell.closest("tbody").querySelector(".reason");
      document.body.dataset.color = getComputedStyle(cell).color + "|" + getComputedStyle(cell).backgroundColor;
      document.body.dataset.reason = reason ? reason.innerText : "";
      document.body.dataset.folded = cell.closest("details") ? "yes" : "no";
    </script></body>""" % html.escape(victim["name"])))
    dom = chromium(tmp_path, "--window-size=1400,1200", "--dump-dom", probed.as_uri())
    color, background = re.search(r'data-color="([^"]*)"', dom).group(1).split("|")
    assert color == "rgb(138, 31, 31)" and background == "rgb(253, 240, 240)"       # styled as bad
    assert html.unescape(re.search(r'data-reason="([^"]*)"', dom).group(1)) == f"suspect: {victim['error']}"
    assert 'data-folded="no"' in dom                                                  # in the main table


def test_each_profiled_variant_names_its_ncu_range_kernels_and_command(site):
    reports, docs, _ = site
    page = page_of(reports, "rmsnorm").read_text().replace("<wbr>", "")
    shape = docs["rmsnorm"]["shapes"][0]
    sec = page.split(f'id="shape-{results.slug(shape["id"])}"')[1].split("</section>")[0]
    profiled = [v for v in shape["variants"] if (v.get("ncu") or {}).get("range")]
    assert len(profiled) >= 11                                    # the fastest of each layout family
    for v in profiled:
        rng, rep = v["ncu"]["range"], v["ncu"]["report"]
        k = analysis.dominant_kernel(v)
        group = next(g for g in re.findall(r"<tbody[^>]*>(.*?)</tbody>", sec, re.S)
                     if f'data-sort="{html.escape(v["name"])}"' in g)
        cmd = f"ncu --import profiles/nvidia-h200/rmsnorm/{rep} --nvtx-include {rng} --page details"
        assert f"<code>{cmd}</code>" in group and f"ncu range <strong>{rng}</strong>" in group
        assert f"kernels {', '.join(x['name'] for x in v['ncu']['kernels'])} ·" in group
        assert f"ncu {analysis.m(k, 'launch__shared_mem_per_block'):,.0f} B" in group           # the longest kernel's
        assert f"ncu {sum(analysis.duration_us(x) for x in v['ncu']['kernels']):,.1f} µs" in group  # all kernels
    rec = recommend.recommend(shape)
    headline = sec.split('<div class="headline">')[1].split('<div class="cols">')[0]
    assert f"range <strong>{rec.variant['ncu']['range']}</strong>" in headline and "--nvtx-include" in headline


def test_more_than_ten_families_get_distinct_colour_and_marker(site):
    _, docs, _ = site
    fams = sorted({v["stem"] for s in docs["rmsnorm"]["shapes"] for v in s["variants"]})
    assert len(fams) > len(chartstyle.PALETTE)
    sty = chartstyle.styles(fams)
    assert len({(s.color, s.marker) for s in sty.values()}) == len(fams)


def test_tile_size_ticks_are_plain_numbers(site):
    reports = site[0]
    page = page_of(reports, "matmul").read_text()
    svgs = re.findall(r"<svg\b.*?</svg>", page, re.S)
    assert not any(re.search(r">[^<]*\de\+\d", s) for s in svgs)       # no 1.04858e+06 tick labels


def test_the_cross_gpu_page_says_where_the_winning_layout_changes(site, tmp_path):
    reports, docs, other = site
    seen = probe(reports / "rmsnorm.gpus.html", 1400, tmp_path)
    h200 = {s["id"]: s for s in docs["rmsnorm"]["shapes"]}
    both = [s for s in other["shapes"] if s["id"] in h200]
    changed = [s["id"] for s in both
               if recommend.recommend(s).variant["stem"] != recommend.recommend(h200[s["id"]]).variant["stem"]]
    assert changed and len(changed) < len(both)     # recorded: L1-36, odd-spatial and L1-36-bf16 change
    assert (f"{len(changed)} of the {len(both)} shapes recorded on more than one GPU change their "
            f"winning layout family between GPUs: {', '.join(changed)}.") in seen["text"]
    page = (reports / "rmsnorm.gpus.html").read_text()
    for shape in both:
        sec = page.split(f"<h2>{shape['id']}</h2>")[1].split("</section>")[0]
        assert ("the winning layout changes" in sec) == (shape["id"] in changed)
    assert 'class="page" href="rmsnorm.gpus.html"' in (reports / "index.html").read_text()


def test_screenshots(site, tmp_path):
    reports = site[0]
    shots = {"report-screenshot.png": page_of(reports, "rmsnorm", H100.name),
             "report-matmul.png": page_of(reports, "matmul", H100.name), "report-gpus.png": reports / "rmsnorm.gpus.html"}
    target = os.environ.get("PIPELINE_REPORT_SCREENSHOTS")
    for name, page in shots.items():
        shot = tmp_path / name
        chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,2000", page.as_uri())
        data = shot.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000       # a rendered page, not a blank one
        if target:
            shutil.copyfile(shot, REPO / target / name)
