"""Jobs: one at a time, every ending recorded, records survive a restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from kvproxy.jobs.registry import Busy, JobFailed, Registry
from kvproxy.jobs.status import JobStatus


def test_one_job_at_a_time_and_every_ending(tmp_path: Path) -> None:
    async def scenario() -> None:
        registry = Registry(tmp_path)
        gate = asyncio.Event()

        async def slow(status: JobStatus) -> None:
            status.bytes_done = 10
            await gate.wait()

        first = registry.start("upload", ["aws"], slow)
        with pytest.raises(Busy, match=first.job_id):
            registry.start("upload", ["aws"], slow)
        assert registry.latest() is first and first.state == "running"
        gate.set()
        assert (await registry.wait(first.job_id)).state == "succeeded"

        async def broken(status: JobStatus) -> None:
            raise JobFailed("provider aws: no credentials")

        failed = registry.start("upload", ["aws"], broken)
        await registry.wait(failed.job_id)
        assert (failed.state, failed.error) == ("failed", "provider aws: no credentials")

        async def forever(status: JobStatus) -> None:
            await asyncio.Event().wait()

        cancelled = registry.start("upload", ["aws"], forever)
        await asyncio.sleep(0)
        assert registry.cancel(cancelled.job_id)
        await registry.wait(cancelled.job_id)
        assert cancelled.state == "cancelled" and cancelled.finished_at

    asyncio.run(scenario())
    again = Registry(tmp_path)
    assert sorted(job.state for job in again.jobs.values()) == [
        "cancelled", "failed", "succeeded"]


def test_a_job_running_when_the_proxy_stopped_reads_back_as_failed(tmp_path: Path) -> None:
    record = JobStatus("upload-x", "upload", ["aws"]).to_record()
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "upload-x.json").write_text(json.dumps(record))
    (tmp_path / "jobs" / "garbage.json").write_text("{not json")
    job = Registry(tmp_path).get("upload-x")
    assert job is not None and job.state == "failed" and "interrupted" in job.error


def test_a_cancel_that_comes_too_late_leaves_the_finished_work_standing(tmp_path: Path) -> None:
    """A worker past its last check finishes: the job says so instead of 'cancelled'."""
    import threading

    from kvproxy.jobs.threads import run_stoppable

    async def scenario() -> None:
        registry = Registry(tmp_path)
        entered, release = threading.Event(), threading.Event()

        def committed(stop: threading.Event) -> str:
            entered.set()
            release.wait(30)
            return "done"  # never looks at stop again: like a rename already made

        def stops(stop: threading.Event) -> str:
            entered.set()
            release.wait(30)
            if stop.is_set():
                raise RuntimeError("stopped")
            return "done"

        for work, expected in ((committed, "succeeded"), (stops, "cancelled")):
            entered.clear()
            release.clear()

            async def job(status: JobStatus, work=work) -> None:  # type: ignore[no-untyped-def]
                status.backup_id = await run_stoppable(work)

            started = registry.start("restore", ["local"], job)
            await asyncio.to_thread(entered.wait, 30)
            assert registry.cancel(started.job_id)
            await asyncio.sleep(0)  # the job takes the cancellation, sets stop
            release.set()
            final = await registry.wait(started.job_id)
            assert final.state == expected
            assert (final.backup_id == "done") == (expected == "succeeded")

    asyncio.run(scenario())
