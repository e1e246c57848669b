"""The lane's worker process on the CPU: one process runs job after job, and a killed one is replaced."""

from pipeline.config import TimingConfig
from pipeline.supervise import Worker, WorkerRun


def ceilings_job() -> dict:
    cfg = TimingConfig(warmup=1, min_reps=2, max_reps=2)
    return {"mode": "ceilings", "op": "", "variants": [], "device": "cpu", "timing": vars(cfg).copy()}


def follow(worker: Worker, tmp_path, tag: str, limit: float = 300.0) -> tuple[WorkerRun, list[dict]]:
    run = WorkerRun(worker, ceilings_job(), tmp_path, tag, tmp_path / f"{tag}.log", {"default": limit})
    return run, list(run.events())


def test_one_process_runs_job_after_job(tmp_path):
    worker = Worker()
    try:
        first, events1 = follow(worker, tmp_path, "a")
        second, events2 = follow(worker, tmp_path, "b")
        assert first.ended and second.ended
        assert [e["event"] for e in events1] == ["ceilings", "end"] == [e["event"] for e in events2]
        assert events1[0]["ceilings"]["copy_gbs"] > 0
        assert first.proc.pid == second.proc.pid and worker.alive()
        # each job's output goes to its own log, after the parent's header line
        assert (tmp_path / "b.log").read_text().startswith("--- worker b: ceilings")
    finally:
        worker.close()
    assert not worker.alive()


def test_a_job_past_its_limit_kills_the_process_and_the_next_job_gets_a_fresh_one(tmp_path):
    worker = Worker()
    try:
        killed, _ = follow(worker, tmp_path, "slow", limit=0.01)   # killed long before the job can end
        assert not killed.ended and "killed after" in killed.why()
        assert killed.proc.poll() is not None
        fresh, events = follow(worker, tmp_path, "next")
        assert fresh.ended and events[-1]["event"] == "end"
        assert fresh.proc.pid != killed.proc.pid
    finally:
        worker.close()


def test_a_worker_that_cannot_start_says_why_in_the_job_log(tmp_path, monkeypatch):
    import sys

    broken = tmp_path / "python"          # an interpreter that fails before it reads any job
    broken.write_text("#!/bin/sh\necho 'ImportError: no module named torch' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(broken))
    worker = Worker()
    try:
        run, events = follow(worker, tmp_path, "broken")
        assert events == [] and not run.ended
        assert "code 1" in run.why() and "no module named torch" in run.why()
    finally:
        worker.close()
