"""RetryingStore: a Store that tries again when the provider failed for a moment.

Transient failures (connection refused or reset, timeouts, 5xx, throttling:
``errors.is_transient``) are retried with exponential backoff and full jitter
(AWS architecture blog, "Exponential Backoff And Jitter"): before attempt
``n + 1`` it sleeps a random time in ``[0, min(max_delay, base_delay * 2**(n-1))]``.
NotFound, a missing bucket, bad keys and access denied are raised at once.
Every operation of a Store is idempotent (a write replaces the whole object),
so repeating one is safe.

The SDKs retry on their own underneath (botocore and s3fs a few times within
~8 s, gcsfs 6 times within ~30 s, azure-storage-blob 3 times within ~80 s);
this layer adds retries across those, with a policy kvproxy controls.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from kvproxy.storage.errors import is_transient
from kvproxy.storage.store import Store

log = logging.getLogger("kvproxy.storage")

T = TypeVar("T")


class RetryingStore(Store):
    """``inner`` with retries; same interface and attributes (name, root, bucket, ...)."""

    def __init__(self, inner: Store, attempts: int = 5, base_delay: float = 0.5,
                 max_delay: float = 30.0, sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random) -> None:
        if attempts < 1 or base_delay < 0 or max_delay < 0:
            raise ValueError("attempts must be at least 1, delays not negative")
        super().__init__(inner.fs, inner.root, inner.name)
        self.local = inner.local
        self.bucket = inner.bucket
        self.bucket_noun = inner.bucket_noun
        self.credentials = inner.credentials
        self.tried = inner.tried
        self.secrets = inner.secrets
        self.inner = inner
        self.attempts = attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.sleep = sleep
        self.jitter = jitter

    def delay(self, failed: int) -> float:
        """Seconds to wait after the ``failed``-th failed attempt (1-based)."""
        ceiling = min(self.max_delay, self.base_delay * 2.0 ** (failed - 1))
        return self.jitter() * ceiling

    def _call(self, call: Callable[[], T]) -> T:
        failed = 0
        while True:
            try:
                return call()
            except Exception as exc:
                failed += 1
                if failed >= self.attempts or not is_transient(exc):
                    raise
                wait = self.delay(failed)
                log.warning("%s (attempt %d of %d; trying again in %.1fs)",
                            exc, failed, self.attempts, wait)
                self.sleep(wait)

    def path(self, key: str) -> str:
        return self.inner.path(key)

    def read(self, key: str) -> bytes:
        return self._call(lambda: self.inner.read(key))

    def write(self, key: str, data: bytes) -> None:
        self._call(lambda: self.inner.write(key, data))

    def exists(self, key: str) -> bool:
        return self._call(lambda: self.inner.exists(key))

    def list(self, prefix: str) -> list[str]:
        return self._call(lambda: self.inner.list(prefix))

    def delete(self, key: str) -> None:
        self._call(lambda: self.inner.delete(key))

    def probe(self) -> None:
        self._call(self.inner.probe)
