"""Pages beside the op pages: one op across GPUs (does the winning layout change?) and the diff against a
baseline results set (Δ per variant, the gate's verdict where repeats are stored), with `report --baseline`."""
import html
import subprocess
import sys

from testenv import FIXTURES, slowed_copy
from pipeline import analysis, compare, recommend, report, results

SAMPLE = FIXTURES / "samples-h200" / "nvidia-h200" / "rmsnorm" / "results.json"
GATE = FIXTURES / "gate"
BASE, REGRESSED = GATE / "base", GATE / "regressed"       # candidate recorded ~10 % slower on the same H100


def cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def scaled(doc, family, factor, gpu):
    return slowed_copy(doc, family, factor, gpu)


def test_a_winner_that_changes_within_noise_is_said_to_be_within_noise(tmp_path):
    doc = results.load(SAMPLE)
    other = scaled(doc, "flat_1d", 1.005, "Other GPU")        # L1-36: flat_1d 0.5 % slower, grid_2d now first
    l136 = [recommend.recommend(s) for s in other["shapes"] if s["id"] == "L1-36"][0]
    assert l136.variant["stem"] == "grid_2d" and any(n.startswith("flat_1d") for n in l136.ties)
    page = report.compare_page("rmsnorm", [(doc, "a.html"), (other, "b.html")], replayed=False)
    shape = next(s for s in page.shapes if s.id == "L1-36")
    assert shape.changed and shape.verdict == (
        "the winning layout changes: NVIDIA H200: flat_1d, Other GPU: grid_2d "
        "(within noise: each GPU's winning family ties the winner on the others)")
    same = next(s for s in page.shapes if s.id == "C4096")
    assert not same.changed and same.verdict == "same layout family on every GPU: cluster_c (the same variant)"
    fam = dict(shape.families)
    assert fam["flat_1d"][0] == "recommended" and fam["flat_1d"][1].startswith("tied, +")
    assert [c.href for c in shape.cells] == ["a.html#shape-l1-36", "b.html#shape-l1-36"]


def test_the_cross_gpu_page_goes_when_one_gpu_s_results_go(tmp_path):
    other = tmp_path / "profiles" / "other" / "rmsnorm" / "results.json"
    results.save(other, scaled(results.load(SAMPLE), "grid_2d", 1.1, "Other GPU"))
    out = tmp_path / "reports"
    written = report.render([SAMPLE, other], out, replayed=True)
    assert out / "rmsnorm.gpus.html" in written
    index = (out / "index.html").read_text()
    assert '<a class="page" href="rmsnorm.gpus.html">rmsnorm on 2 GPUs</a>' in index
    assert 'href="rmsnorm.gpus.html">this op on every GPU</a>' in (out / "rmsnorm.nvidia-h200.html").read_text()
    report.render([SAMPLE], out, replayed=True)
    assert not (out / "rmsnorm.gpus.html").exists()


def test_the_diff_page_gives_the_median_delta_without_stored_repeats(tmp_path):
    out = tmp_path / "reports"
    cur = results.find_all(REGRESSED)
    written = report.render(cur, out, replayed=True, baseline=BASE)
    page = out / "rmsnorm.diff.html"
    assert page in written
    old, new = (results.load(results.find_all(d)[0])["shapes"][0] for d in (BASE, REGRESSED))
    o, n = (next(v for v in s["variants"] if v["name"] == "candidate")["timing"] for s in (old, new))
    assert "samples" not in o and not recommend.tied(o, n)
    text = page.read_text()
    row = text.split('<td class="l name">candidate</td>')[1].split("</tr>")[0]
    assert f"<td>{o['median_ms']:.4g}</td><td>{n['median_ms']:.4g}</td>" in row
    assert f"<td>{(n['median_ms'] / o['median_ms'] - 1) * 100:+.1f} %</td>" in row
    assert "median Δ only (no stored repeats): slower, outside the noise" in row
    assert '<tr class="bad"><td class="l name">candidate</td>' in text
    assert '<a class="page" href="rmsnorm.diff.html">' in (out / "index.html").read_text()
    assert 'href="rmsnorm.diff.html">against the baseline</a>' in (out / "rmsnorm.html").read_text()


def test_the_diff_page_uses_the_gate_s_verdict_where_repeats_are_stored(tmp_path):
    old, new = (results.load(results.find_all(d)[0]) for d in (BASE, REGRESSED))
    for doc in (old, new):
        for v in doc["shapes"][0]["variants"]:
            # repeats spread ±0.6 % around each run's recorded median (10 % apart)
            v["timing"]["samples"] = [v["timing"]["median_ms"] * (1 + (i % 7 - 3) * 0.002) for i in range(60)]
    paths = []
    for name, doc in (("base", old), ("cur", new)):
        p = tmp_path / name / "nvidia-h100-80gb-hbm3" / "rmsnorm" / "results.json"
        results.save(p, doc)
        paths.append(p)
    report.render([paths[1]], tmp_path / "reports", replayed=False, baseline=paths[0])
    shape, old_shape = new["shapes"][0], old["shapes"][0]
    v, ov = shape["variants"][0], old_shape["variants"][0]
    shift = compare.compare_timings(old_shape, ov["timing"], shape, v["timing"],
                                    analysis.classify(v, shape, new["environment"]).kind)
    assert shift is not None and shift.verdict == "slower"
    text = (tmp_path / "reports" / "rmsnorm.diff.html").read_text()
    assert html.escape(shift.text()) in text and "median Δ only" not in text


def test_report_baseline_on_the_command_line(tmp_path):
    out = tmp_path / "reports"
    proc = cli("report", "--profiles-dir", REGRESSED, "--reports-dir", out, "--baseline", BASE, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (out / "rmsnorm.diff.html").is_file()
    other_gpu = cli("report", "--profiles-dir", REGRESSED, "--reports-dir", tmp_path / "r2", "--baseline",
                    SAMPLE, cwd=tmp_path)                       # an H200 baseline for H100 results: no diff
    assert other_gpu.returncode == 0 and not list((tmp_path / "r2").glob("*.diff.html"))
    missing = cli("report", "--profiles-dir", REGRESSED, "--reports-dir", out, "--baseline", tmp_path / "none",
                  cwd=tmp_path)
    assert missing.returncode == 2 and "--baseline" in missing.stderr and "no such results" in missing.stderr
