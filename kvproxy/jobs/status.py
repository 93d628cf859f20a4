"""What a job reports: KVCLOUD STATUS, `kvrocks-cloud --json`, and the saved record."""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

RUNNING, SUCCEEDED, FAILED, CANCELLED = "running", "succeeded", "failed", "cancelled"


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_job_id(operation: str) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{operation}-{stamp}-{secrets.token_hex(2)}"


@dataclass
class JobStatus:
    job_id: str
    operation: str
    providers: list[str]
    state: str = RUNNING
    backup_id: str = ""
    started_at: str = field(default_factory=utc_now)
    finished_at: str = ""
    files: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_uploaded: int = 0
    bytes_deduplicated: int = 0
    error: str = ""
    #: Per provider: "succeeded", "failed: <reason>", or "running".
    results: dict[str, str] = field(default_factory=dict)
    started_clock: float = field(default_factory=time.monotonic, repr=False)
    elapsed: float = 0.0

    def finish(self, state: str, error: str = "") -> None:
        self.state = state
        self.error = error
        self.finished_at = utc_now()
        self.elapsed = time.monotonic() - self.started_clock

    @property
    def throughput(self) -> int:
        """Bytes of snapshot processed per second, over the job so far."""
        elapsed = self.elapsed if self.finished_at else time.monotonic() - self.started_clock
        return int(self.bytes_done / elapsed) if elapsed > 0 else 0

    def fields(self) -> dict[str, Any]:
        """STATUS fields in their documented order."""
        return {
            "state": self.state,
            "job_id": self.job_id,
            "operation": self.operation,
            "providers": ", ".join(self.providers),
            "results": ", ".join(f"{name}: {result}" for name, result in self.results.items()),
            "backup_id": self.backup_id,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "files": self.files,
            "bytes_total": self.bytes_total,
            "bytes_done": self.bytes_done,
            "bytes_uploaded": self.bytes_uploaded,
            "bytes_deduplicated": self.bytes_deduplicated,
            "throughput": self.throughput,
            "error": self.error,
        }

    def to_record(self) -> dict[str, Any]:
        record = asdict(self)
        record.pop("started_clock")
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> JobStatus:
        known = {k: v for k, v in record.items() if k in cls.__dataclass_fields__}
        known.pop("started_clock", None)
        status = cls(**known)
        if status.state == RUNNING:  # the proxy stopped while it ran
            status.finish(FAILED, status.error or "interrupted: the proxy stopped during the job")
        return status
