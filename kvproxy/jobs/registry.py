"""One job at a time, and the last ones kept on disk for STATUS after a restart."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

from kvproxy.jobs.status import CANCELLED, FAILED, RUNNING, SUCCEEDED, JobStatus, new_job_id

log = logging.getLogger("kvproxy.jobs")

KEEP = 20


class Busy(Exception):
    """A job is already running; its id is in the message."""


class JobFailed(Exception):
    """Raised inside a job to end it as failed with a clear message."""


class Registry:
    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / "jobs"
        self.jobs: dict[str, JobStatus] = {}
        self.running: JobStatus | None = None
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self._load()

    def _load(self) -> None:
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("*.json")):
            try:
                status = JobStatus.from_record(json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("ignoring unreadable job record %s: %s", path.name, exc)
                continue
            self.jobs[status.job_id] = status

    def latest(self) -> JobStatus | None:
        if self.running is not None:
            return self.running
        if not self.jobs:
            return None
        return max(self.jobs.values(), key=lambda job: (job.started_at, job.job_id))

    def get(self, job_id: str) -> JobStatus | None:
        return self.jobs.get(job_id)

    def start(self, operation: str, providers: list[str],
              work: Callable[[JobStatus], Awaitable[None]]) -> JobStatus:
        """Run ``work`` as the one job; raises Busy while another runs."""
        if self.running is not None:
            raise Busy(f"job {self.running.job_id} ({self.running.operation}) is running")
        status = JobStatus(new_job_id(operation), operation, providers)
        status.results = dict.fromkeys(providers, RUNNING)
        self.jobs[status.job_id] = status
        self.running = status
        self.save(status)
        self.tasks[status.job_id] = asyncio.get_running_loop().create_task(
            self._run(status, work))
        return status

    async def wait(self, job_id: str) -> JobStatus:
        task = self.tasks.get(job_id)
        if task is not None:
            await asyncio.shield(task)
        return self.jobs[job_id]

    def cancel(self, job_id: str) -> bool:
        task = self.tasks.get(job_id)
        if task is None or task.done():
            return False
        task.cancel()
        return True

    async def _run(self, status: JobStatus, work: Callable[[JobStatus], Awaitable[None]]) -> None:
        try:
            await work(status)
            status.finish(SUCCEEDED)
        except asyncio.CancelledError:
            for name, result in status.results.items():
                if result == RUNNING:
                    status.results[name] = CANCELLED
            status.finish(CANCELLED, "cancelled")
        except JobFailed as exc:
            status.finish(FAILED, str(exc))
        except Exception as exc:  # noqa: BLE001 - a job must end with a reason, never vanish
            log.exception("job %s failed unexpectedly", status.job_id)
            status.finish(FAILED, f"{type(exc).__name__}: {exc}")
        finally:
            if status.state != SUCCEEDED:
                log.warning("job %s %s: %s", status.job_id, status.state, status.error)
            else:
                log.info("job %s succeeded", status.job_id)
            self.running = None
            self.tasks.pop(status.job_id, None)
            self.save(status)
            self._trim()

    def save(self, status: JobStatus) -> None:
        """Write the record atomically: a crash leaves the old one or the new one."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{status.job_id}.json"
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(status.to_record(), indent=1))
            os.replace(temporary, path)
        except OSError as exc:
            log.warning("cannot save job record in %s: %s", self.directory, exc)

    def _trim(self) -> None:
        finished = sorted((job for job in self.jobs.values() if job.state != RUNNING),
                          key=lambda job: (job.started_at, job.job_id))
        for job in finished[:-KEEP]:
            self.jobs.pop(job.job_id, None)
            (self.directory / f"{job.job_id}.json").unlink(missing_ok=True)


__all__ = ["Busy", "JobFailed", "Registry", "FAILED"]
