"""RetryingStore: which failures are retried, how long it waits, when it gives up.

A fake Store fails a given number of times; sleeping is injected, so nothing
waits for real. One test cuts a real S3 emulator off and brings it back."""

# ruff: noqa: F811 - pytest fixtures imported from tests.emulators are redefined as arguments

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from kvproxy.storage import (
    AccessDenied,
    BucketNotFound,
    NotFound,
    StorageError,
    Store,
    Unavailable,
)
from kvproxy.storage.errors import classify, is_transient
from kvproxy.storage.providers import open_store
from kvproxy.storage.retry import RetryingStore
from tests.emulators import MotoS3, moto_s3  # noqa: F401 - fixture


class FlakyStore(Store):
    """Raises the queued exceptions one per call, then works (in memory)."""

    def __init__(self, failures: list[BaseException]) -> None:
        super().__init__(MemoryFileSystem(), f"/flaky-{id(self)}", "provider flaky (memory)")
        self.failures = list(failures)
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)

    def read(self, key: str) -> bytes:
        self._maybe_fail()
        return super().read(key)

    def write(self, key: str, data: bytes) -> None:
        self._maybe_fail()
        super().write(key, data)

    def exists(self, key: str) -> bool:
        self._maybe_fail()
        return super().exists(key)

    def list(self, prefix: str) -> list[str]:
        self._maybe_fail()
        return super().list(prefix)

    def delete(self, key: str) -> None:
        self._maybe_fail()
        super().delete(key)

    def probe(self) -> None:
        self._maybe_fail()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def retrying(inner: Store, sleeps: Sleeps, jitter: float = 1.0, **kwargs: Any) -> RetryingStore:
    return RetryingStore(inner, sleep=sleeps, jitter=lambda: jitter, **kwargs)


class BotoLikeError(Exception):
    """Shaped like botocore's ClientError."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(f"An error occurred ({code})")
        self.response = {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}


class AzureLikeError(Exception):
    def __init__(self, status: int, error_code: str) -> None:
        super().__init__(f"status {status}\nErrorCode:{error_code}")
        self.status_code = status
        self.error_code = error_code


class GcsHttpError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(f"HTTP {code}")
        self.code = code


def wrapped(exc: BaseException) -> OSError:
    """As s3fs does: an OSError raised from the SDK's error."""
    try:
        raise exc
    except BaseException as cause:
        try:
            raise OSError(121, "Remote I/O error") from cause
        except OSError as outer:
            return outer


TRANSIENT: list[Callable[[], BaseException]] = [
    lambda: ConnectionRefusedError(111, "Connection refused"),
    lambda: ConnectionResetError(104, "Connection reset by peer"),
    lambda: TimeoutError("timed out"),
    lambda: Unavailable("provider x: cannot read 'k': connection refused"),
    lambda: BotoLikeError("SlowDown", 503),
    lambda: wrapped(BotoLikeError("InternalError", 500)),
    lambda: AzureLikeError(503, "ServerBusy"),
    lambda: GcsHttpError(429),
    lambda: GcsHttpError(502),
]
PERMANENT: list[Callable[[], BaseException]] = [
    lambda: NotFound("provider x: no object 'k'"),
    lambda: AccessDenied("provider x: no credentials"),
    lambda: BucketNotFound("provider x: bucket 'b' does not exist"),
    lambda: PermissionError(13, "Forbidden"),
    lambda: BotoLikeError("SignatureDoesNotMatch", 403),
    lambda: AzureLikeError(403, "AuthorizationFailure"),
    lambda: GcsHttpError(401),
    lambda: ValueError("bad storage key '../x'"),
    lambda: StorageError("provider x: cannot write 'k': something else"),
]


@pytest.mark.parametrize("make", TRANSIENT)
def test_transient_failures_are_retried(make: Callable[[], BaseException]) -> None:
    inner = FlakyStore([make(), make()])
    sleeps = Sleeps()
    store = retrying(inner, sleeps, attempts=5)
    store.write("k", b"v")
    assert inner.calls == 3 and len(sleeps) == 2
    assert inner.read("k") == b"v"


@pytest.mark.parametrize("make", PERMANENT)
def test_permanent_failures_are_not_retried(make: Callable[[], BaseException]) -> None:
    error = make()
    inner = FlakyStore([error])
    sleeps = Sleeps()
    with pytest.raises(type(error)) as caught:
        retrying(inner, sleeps).read("k")
    assert caught.value is error
    assert inner.calls == 1 and sleeps == []


def test_gives_up_after_the_last_attempt_with_the_last_error() -> None:
    errors = [Unavailable(f"failure {n}") for n in range(10)]
    inner = FlakyStore(errors)
    sleeps = Sleeps()
    with pytest.raises(Unavailable, match="failure 3"):
        retrying(inner, sleeps, attempts=4).list("")
    assert inner.calls == 4 and len(sleeps) == 3


def test_exponential_backoff_capped_by_max_delay() -> None:
    inner = FlakyStore([TimeoutError()] * 6)
    sleeps = Sleeps()
    retrying(inner, sleeps, attempts=7, base_delay=0.5, max_delay=5.0).probe()
    assert sleeps == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_full_jitter_scales_the_whole_delay() -> None:
    inner = FlakyStore([TimeoutError()] * 3)
    sleeps = Sleeps()
    retrying(inner, sleeps, jitter=0.25, base_delay=2.0).exists("k")
    assert sleeps == [0.5, 1.0, 2.0]
    store = RetryingStore(FlakyStore([]), base_delay=1.0, max_delay=8.0)
    delays = [store.delay(4) for _ in range(200)]
    assert all(0 <= d <= 8.0 for d in delays) and max(delays) > 4.0 and min(delays) < 4.0


def test_results_and_attributes_pass_through() -> None:
    inner = FlakyStore([ConnectionResetError()])
    inner.bucket, inner.credentials = "b", "environment"
    store = retrying(inner, Sleeps())
    store.write("a/b", b"1")
    assert store.read("a/b") == b"1"
    assert store.exists("a/b") and store.list("a") == ["a/b"]
    store.delete("a/b")
    assert not store.exists("a/b")
    assert (store.name, store.root, store.bucket, store.credentials) == (
        inner.name, inner.root, "b", "environment")
    assert store.path("x") == inner.path("x")
    with pytest.raises(ValueError):
        RetryingStore(inner, attempts=0)


def test_each_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    inner = FlakyStore([])
    inner.write("k", b"v")
    inner.failures.append(Unavailable("provider x: cannot read 'k': reset"))
    with caplog.at_level(logging.WARNING, logger="kvproxy.storage"):
        assert retrying(inner, Sleeps(), jitter=0.5).read("k") == b"v"
    assert "provider x: cannot read 'k': reset (attempt 1 of 5; trying again in 0.2s)" in \
        caplog.text


def test_classification_of_raw_errors() -> None:
    assert classify(ConnectionRefusedError()) == "transient"
    assert classify(FileNotFoundError("k")) == "not_found"
    assert classify(wrapped(BotoLikeError("NoSuchBucket", 404))) == "bucket_missing"
    assert classify(FileNotFoundError("b/mybucket/o"), "mybucket") == "bucket_missing"
    assert classify(FileNotFoundError("b/mybucket/o/key"), "mybucket") == "not_found"
    assert classify(OSError("Forbidden: b/x/o\nno access")) == "denied"
    assert classify(type("NoCredentialsError", (Exception,), {})()) == "no_credentials"
    assert classify(RuntimeError("odd")) == "other"
    assert is_transient(wrapped(ConnectionResetError()))
    assert not is_transient(RuntimeError("odd"))


def test_a_stopped_emulator_is_unavailable_then_retried(
        moto_s3: MotoS3, caplog: pytest.LogCaptureFixture) -> None:
    """moto stopped: the SDK's own retries give up (~8 s) with a connection error,
    which is Unavailable; RetryingStore waits, the emulator is back on the same
    port (empty: in memory), and the next attempt gets an answer."""
    store = open_store(moto_s3.provider("aws"), "kv")
    store.write("before", b"lost at restart")
    port = moto_s3.port
    moto_s3.stop()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        moto_s3.start()

    try:
        with caplog.at_level(logging.WARNING, logger="kvproxy.storage"), \
                pytest.raises(NotFound):  # the second attempt: the restart lost the object
            RetryingStore(store, sleep=sleep).read("before")
    finally:
        moto_s3.ensure_running()
    assert len(waits) == 1 and moto_s3.port == port
    assert "provider aws (s3): cannot read 'before': Could not connect" in caplog.text
    store.write("after", b"written once it was back")
    assert store.read("after") == b"written once it was back"
