"""Log setup: text for people, JSON lines for collectors."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

QUIET_LIBRARIES = ("azure", "botocore", "aiobotocore", "s3fs", "gcsfs", "adlfs", "fsspec",
                   "google", "urllib3")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup(log_format: str = "text", level: str = "info") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # The storage SDKs log every HTTP request at INFO: noise in our logs, and a
    # stalled stderr would stall their I/O thread with it.
    for chatty in QUIET_LIBRARIES:
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))


class Throttle:
    """At most ``burst`` lines per ``interval`` seconds from one source of repeated events.

    Hostile clients can produce a warning per connection (protocol errors,
    output limits); the log must not grow with them. Lines over the budget
    are counted and reported in one line when the next interval opens.
    """

    def __init__(self, logger: logging.Logger, burst: int = 10, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self.window_start = -interval
        self.used = 0
        self.suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = self.clock()
        if now - self.window_start >= self.interval:
            if self.suppressed:
                self.logger.warning("%d similar warnings suppressed in the last %gs",
                                    self.suppressed, self.interval)
            self.window_start, self.used, self.suppressed = now, 0, 0
        if self.used < self.burst:
            self.used += 1
            self.logger.warning(message, *args)
        else:
            self.suppressed += 1
