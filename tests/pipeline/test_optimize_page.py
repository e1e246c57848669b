"""The optimisation page (pipeline/optimize_page.py): an `optimize` run's history rendered beside its op's
page, from a run recorded on an H100 (tests/fixtures/optimize-run); test_optimize_cmd renders a CPU run."""
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
