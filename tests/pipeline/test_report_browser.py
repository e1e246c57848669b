"""The report in a real headless browser: what the DOM holds after loading, no injected script, sorting.

Needs `chromium` on PATH (Debian: `apt-get install -y chromium`); skipped without it. The screenshots in docs/
come from test_report_pages.py.
"""
import copy
import os
import re
import shutil
import subprocess

import pytest

from testenv import FIXTURES, REPO
from pipeline import recommend, report, results

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SAMPLE = FIXTURES / "samples-h200" / "nvidia-h200" / "rmsnorm" / "results.json"
HOSTILE = "<script>alert(1)</script>"

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install -y chromium)")


def chromium(tmp_path, *args):
    profile = tmp_path / "chromium-profile"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports")
    report.render([SAMPLE], out, replayed=True)
    return out / "rmsnorm.html", results.load(SAMPLE)


def test_dom_holds_the_recommendation_and_the_charts(sample, tmp_path):
    page, doc = sample
    dom = chromium(tmp_path, "--dump-dom", page.as_uri()).replace("<wbr>", "")
    for shape in doc["shapes"]:
        rec = recommend.recommend(shape)
        assert f"Recommended for {shape['id']}: <strong>{rec.variant['name']}</strong>" in dom
    assert dom.count("<svg") == 3 * len(doc["shapes"]) + 1
    assert f"Replayed data: recorded on {doc['environment']['gpu_name']}" in dom


def test_hostile_name_shows_as_text_and_runs_nothing(tmp_path):
    d = copy.deepcopy(results.load(SAMPLE))
    d["shapes"] = d["shapes"][:1]
    rec = recommend.recommend(d["shapes"][0])
    next(v for v in d["shapes"][0]["variants"] if v["name"] == rec.variant["name"])["name"] = HOSTILE
    path = tmp_path / "profiles" / "gpu" / "rmsnorm" / "results.json"
    results.save(path, d)
    report.render([path], tmp_path / "reports", replayed=False)
    dom = chromium(tmp_path, "--dump-dom", (tmp_path / "reports" / "rmsnorm.html").as_uri()).replace("<wbr>", "")
    # an injected <script> would be an element in the parsed DOM; the text stays escaped text
    assert dom.count("<script") == 1
    assert "Recommended for L1-36: <strong>&lt;script&gt;alert(1)&lt;/script&gt;</strong>" in dom


def test_clicking_a_header_sorts_the_variant_table(sample, tmp_path):
    page, doc = sample
    probe = """<script>
    var t = document.querySelector("table.variants"), th = t.querySelectorAll("thead th")[2];
    function order() { return Array.prototype.map.call(t.tBodies, function (b) { return b.rows[0].cells[0].dataset.sort; }); }
    th.click(); document.body.dataset.asc = order().join("|");
    th.click(); document.body.dataset.desc = order().join("|");
    </script></body>"""
    probed = tmp_path / "probe.html"
    probed.write_text(page.read_text().replace("</body>", probe))
    dom = chromium(tmp_path, "--dump-dom", probed.as_uri())
    shape = doc["shapes"][0]
    timed = sorted((v for v in shape["variants"] if v.get("timing")), key=lambda v: v["timing"]["median_ms"])
    names = [v["name"] for v in timed]
    asc = re.search(r'data-asc="([^"]*)"', dom).group(1).split("|")
    desc = re.search(r'data-desc="([^"]*)"', dom).group(1).split("|")
    median = {v["name"]: v["timing"]["median_ms"] for v in timed}
    up, down = [median[n] for n in asc[:len(names)]], [median[n] for n in desc[:len(names)]]
    assert set(asc[:len(names)]) == set(names) == set(desc[:len(names)])   # timed rows first, either way
    assert up == sorted(up) and down == sorted(down, reverse=True)          # equal medians may swap places


def test_the_detail_section_and_the_roofline_load_in_the_browser(tmp_path):
    """The detail pass recorded on the H100 (tests/fixtures/detail): its sentences, tables and two charts per
    shape, and matmul's roofline, as the browser parses them."""
    detail = FIXTURES / "detail" / "nvidia-h100-80gb-hbm3"
    out = tmp_path / "reports"
    report.render([detail / op / "results.json" for op in ("rmsnorm", "matmul")], out, replayed=True)
    dom = chromium(tmp_path, "--dump-dom", (out / "rmsnorm.html").as_uri()).replace("<wbr>", "")
    doc = results.load(detail / "rmsnorm" / "results.json")
    assert dom.count("Why the winner wins") == len(doc["shapes"])
    assert dom.count("<h3>Stall breakdown</h3>") == dom.count("<h3>Memory traffic</h3>") == len(doc["shapes"])
    text = re.sub(r"<[^>]+>", "", dom)
    assert re.search(r"seed_2d_tiles moves [\d.]+× the DRAM read bytes \[dram__bytes_read\.sum\]", text)
    matmul = chromium(tmp_path, "--dump-dom", (out / "matmul.html").as_uri())
    assert matmul.count("<h3>Roofline</h3>") == len(results.load(detail / "matmul" / "results.json")["shapes"])


ONLY_WHY = """<script>
(function () {
  // the first shape's "why the winner wins" section alone: from its heading to the end of its shape's section
  var h = document.querySelector('h3[id^="why-"]'), keep = [];
  for (var n = h; n; n = n.nextSibling) { keep.push(n); }
  document.body.replaceChildren.apply(document.body, keep);
})();
</script></body>"""


def test_screenshot_of_the_detail_section(tmp_path):
    """docs/report-why.png: rmsnorm L1-36's detail section (tests/fixtures/detail), cut from the page by a script
    (headless Chromium ignores a #fragment when it takes a screenshot). PIPELINE_REPORT_SCREENSHOTS=docs refreshes
    it."""
    out = tmp_path / "reports"
    report.render([FIXTURES / "detail" / "nvidia-h100-80gb-hbm3" / "rmsnorm" / "results.json"], out, replayed=True)
    page = out / "rmsnorm.html"
    cut = page.with_name("why-" + page.name)
    cut.write_text(page.read_text().replace("</body>", ONLY_WHY))
    dom = chromium(tmp_path, "--dump-dom", cut.as_uri())
    body = dom.split("<body", 1)[1]
    assert "Why the winner wins" in body and "<h3>Stall breakdown</h3>" in body and "Recommended for" not in body
    shot = tmp_path / "report-why.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1600", "--hide-scrollbars", cut.as_uri())
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000       # a rendered section, not a blank page
    target = os.environ.get("PIPELINE_REPORT_SCREENSHOTS")
    if target:
        shutil.copyfile(shot, REPO / target / shot.name)
