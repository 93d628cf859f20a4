"""RetryingStore: a Store that tries again when the provider failed for a moment.

Transient failures (connection refused or reset, timeouts, 5xx, throttling:
``errors.is_transient``) are retried with exponential backoff and full jitter
(AWS architecture blog, "Exponential Backoff And Jitter"): before attempt
``n + 1`` it sleeps a random time in ``[0, min(max_delay, base_delay * 2**(n-1))]``.
NotFound, a missing bucket, bad keys and access denied are raised at once.
Every operation of a Store is idempotent (a write replaces the whole object),
so repeating one is safe.

This is the one retry policy: s3.py, gcs.py and azure.py tell each SDK to make
one attempt per request (by default they retry on their own for ~8 s, ~33 s
and ~85 s before giving up). kvcloud.conf sets it: ``retries`` (attempts per
operation, the first included) and ``retry_delay`` (``base_delay``); the
delay never exceeds ``max_delay`` (30 s). Each retry is logged at WARNING with
the provider, the key and the reason (secrets scrubbed); giving up adds the
number of attempts to the error.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from kvproxy.storage.errors import is_transient, reason
from kvproxy.storage.store import StorageError, Store, Unavailable

log = logging.getLogger("kvproxy.storage")

T = TypeVar("T")

#: Defaults of kvcloud.conf's ``retries`` and ``retry_delay``, and the longest wait.
ATTEMPTS = 5
BASE_DELAY = 0.5
MAX_DELAY = 30.0


class RetryingStore(Store):
    """``inner`` with retries; same interface and attributes (name, root, bucket, ...)."""

    def __init__(self, inner: Store, attempts: int = ATTEMPTS, base_delay: float = BASE_DELAY,
                 max_delay: float = MAX_DELAY, sleep: Callable[[float], None] = time.sleep,
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

    def _call(self, action: str, key: str, call: Callable[[], T]) -> T:
        failed = 0
        while True:
            try:
                return call()
            except Exception as exc:
                failed += 1
                if not is_transient(exc):
                    raise
                if failed >= self.attempts:
                    final = self._gave_up(exc, failed)
                    if final is exc:
                        raise
                    raise final from exc
                wait = self.delay(failed)
                log.warning("%s (attempt %d of %d; trying again in %.1fs)",
                            self._describe(action, key, exc), failed, self.attempts, wait)
                self.sleep(wait)

    def _describe(self, action: str, key: str, exc: BaseException) -> str:
        """What failed: the Store's own errors already name the provider, the key and
        the reason; anything else raised underneath gets them added."""
        if isinstance(exc, StorageError):
            return str(exc)
        target = repr(key) if key else repr(self.root)
        return f"{self.name}: cannot {action} {target}: {self._scrub(reason(exc))}"

    def _gave_up(self, exc: Exception, attempts: int) -> Exception:
        """The last error, saying how often it was tried (same type for a StorageError)."""
        if attempts < 2 or type(exc) not in _REWORDABLE:
            return exc
        return type(exc)(f"{exc} (gave up after {attempts} attempts)")

    def path(self, key: str) -> str:
        return self.inner.path(key)

    def read(self, key: str) -> bytes:
        return self._call("read", key, lambda: self.inner.read(key))

    def write(self, key: str, data: bytes) -> None:
        self._call("write", key, lambda: self.inner.write(key, data))

    def exists(self, key: str) -> bool:
        return self._call("check", key, lambda: self.inner.exists(key))

    def list(self, prefix: str) -> list[str]:
        return self._call("list", prefix, lambda: self.inner.list(prefix))

    def sizes(self, prefix: str) -> dict[str, int | None]:
        return self._call("list", prefix, lambda: self.inner.sizes(prefix))

    def delete(self, key: str) -> None:
        self._call("delete", key, lambda: self.inner.delete(key))

    def probe(self) -> None:
        self._call("list", "", self.inner.probe)


#: Errors rebuilt with "(gave up after N attempts)": the Store's, whose only argument
#: is the message.
_REWORDABLE = {StorageError, Unavailable}
