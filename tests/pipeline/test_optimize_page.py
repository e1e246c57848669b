"""The optimisation page (pipeline/optimize_page.py): an `optimize` run's history rendered beside its op's
page, from a run recorded on an H100 (tests/fixtures/optimize-run) and from a CPU run made here."""
import html
import json
import shutil

from testenv import FIXTURES, REPO
from pipeline import optimize_page, report

RUN = FIXTURES / "optimize-run" / "20261206T043607"
RESULTS = REPO / "profiles" / "nvidia-h100-80gb-hbm3" / "rmsnorm" / "results.json"


def test_a_recorded_gpu_run_gets_its_page_linked_from_the_op_page(tmp_path):
    op_dir = tmp_path / "profiles" / "nvidia-h100-80gb-hbm3" / "rmsnorm"
    op_dir.mkdir(parents=True)
    shutil.copy(RESULTS, op_dir / "results.json")
    shutil.copytree(RUN, op_dir / "optimize" / RUN.name)
    reports = tmp_path / "reports"
    written = report.render([op_dir / "results.json"], reports, False)
    page = reports / optimize_page.page_name("rmsnorm.html", RUN.name)
    assert page in written
    assert f'href="{page.name}"' in (reports / "rmsnorm.html").read_text()
    text = html.unescape(page.read_text())
    log = json.loads((RUN / "log.json").read_text())
    assert len(log["steps"]) == 4 and text.count("at_roofline (memory roofline fraction = 96%)") == 4
    for step in log["steps"]:
        assert f"L1-36 {step['best_timing']['L1-36']['median_ms']:.4g} ms" in text
    assert "finished: every stage ran" in text and "0 of 16" in text
    # a changed history re-renders the pages (the run logs are among the digest's inputs)
    before = page.read_text()
    (op_dir / "optimize" / RUN.name / "log.json").write_text(
        (RUN / "log.json").read_text().replace('"every stage ran"', '"budget spent"'))
    report.render([op_dir / "results.json"], reports, False)
    assert page.read_text() != before and "finished: budget spent" in page.read_text()


def test_a_cpu_run_shows_each_candidate_its_verdict_and_the_time_per_step(tmp_path):
    import subprocess
    import sys
    root = tmp_path
    shutil.copytree(FIXTURES / "optimize" / "kernels", root / "kernels")
    (root / "pipeline.yaml").write_text("kernels_dir: kernels\nprofiles_dir: profiles\nreports_dir: reports\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--config", str(root / "pipeline.yaml"), "optimize",
                           "--op", "softmax_opt", "--device", "cpu", "--stages", "grid_and_parallel", "--from", "slow",
                           "--proposer", "cmd", "--proposer-cmd",
                           f"{sys.executable} {FIXTURES / 'optimize' / 'canned_proposer.py'}"],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (log,) = (root / "profiles").glob("*/softmax_opt/optimize/*/log.json")
    view = optimize_page.run_view(log, "x.html", "softmax_opt.html")
    steps = json.loads(log.read_text())["steps"]
    assert [s.wall for s in view.steps] == [f"{s['wall_s']:.1f} s" for s in steps]
    first = {c.name.removeprefix("grid_and_parallel_s1_"): c for c in view.steps[0].candidates}
    assert first["fast"].verdict == "promoted" and first["fast"].speedup.endswith("×")
    assert first["overfit"].verdict == "rejected" and "held-out shape wide: incorrect" in first["overfit"].reason
    assert first["broken"].verdict == "refused" and "SyntaxError" in first["broken"].reason
    assert view.steps[0].promoted.startswith("grid_and_parallel_s1_fast (")
    assert dict(view.verdicts) == {"promoted": 1, "refused": 2, "rejected": 3}
    page = report.environment().get_template("optimize.html").render(page=view)
    assert "held-out shape wide: incorrect" in html.unescape(page)
