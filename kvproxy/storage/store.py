"""The one place that talks to a bucket.

Every provider (S3, GCS, Azure, a local directory, fsspec's memory
filesystem in unit tests) is an fsspec filesystem; a Store puts a root
prefix in front of it and gives the rest of the code a few operations with one
not-found exception. Keys are '/'-separated paths relative to the root.

Every other failure is a StorageError naming the provider and the key, of a
kind callers can act on: AccessDenied (no or wrong credentials), BucketNotFound,
Unavailable (worth retrying: ``retry.RetryingStore``). ``probe`` makes one
cheap request to find these out before any work starts.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from typing import Any

from kvproxy.storage.errors import classify, reason

#: Options for every object-store filesystem behind a Store: an instance of its own
#: (credentials differ per provider) and no listing cache (list must see every write,
#: including another writer's).
FS_OPTIONS: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}

#: Seconds an SDK waits for a new connection to a provider. Each SDK is also told to
#: make one attempt per request (s3.py, gcs.py, azure.py): ``retry.RetryingStore`` is
#: the one retry policy, so a provider that is down fails an operation at once instead
#: of after the SDK's own retries (~8 s for s3fs, ~33 s gcsfs, ~85 s adlfs).
CONNECT_TIMEOUT = 5.0


class StorageError(Exception):
    """The provider failed; the message names the provider and the key."""


class NotFound(StorageError):
    """No object under that key."""


class BucketNotFound(StorageError):
    """The bucket (or Azure container) itself does not exist: not an empty one."""


class AccessDenied(StorageError):
    """No credentials, or the provider refused the ones given; retrying will not help."""


class Unavailable(StorageError):
    """The connection or the service failed (refused, reset, timeout, 5xx, throttled)."""


class Store:
    """Objects under ``root`` in ``fs``; ``name`` is the provider's name for messages."""

    #: Set by ``kvproxy.storage.providers.open_store``; used only in messages.
    bucket: str = ""  # first part of root for object stores, "" otherwise
    bucket_noun: str = "bucket"  # "container" for Azure
    credentials: str = ""  # where the credentials came from, e.g. "environment"
    tried: tuple[str, ...] = ()  # every credential source looked at, in order
    secrets: tuple[str, ...] = ()  # values that must never appear in a message

    def __init__(self, fs: Any, root: str, name: str) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self.name = name
        self.local = "file" in _protocols(fs)

    def path(self, key: str) -> str:
        if key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"bad storage key {key!r}")
        return f"{self.root}/{key}" if self.root else key

    def read(self, key: str) -> bytes:
        path = self.path(key)
        try:
            return bytes(self.fs.cat_file(path))
        except Exception as exc:  # noqa: BLE001 - every backend raises its own
            error = self._error("read", key, exc)
            if isinstance(error, NotFound):
                self._check_bucket()  # GCS answers 404 alike for a missing bucket
            raise error from exc

    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` whole under ``key``: readers never see part of it."""
        path = self.path(key)
        try:
            if self.local:
                _write_local_atomically(self.fs, path, data)
            else:
                self.fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all
        except Exception as exc:  # noqa: BLE001
            error = self._error("write", key, exc)
            if isinstance(error, NotFound):
                self._check_bucket()
                error = StorageError(f"{self.name}: cannot write {key!r}: not found")
            raise error from exc

    def exists(self, key: str) -> bool:
        """Whether ``key`` exists; in a missing bucket that is False (``probe`` tells)."""
        path = self.path(key)
        try:
            return bool(self.fs.exists(path))
        except Exception as exc:  # noqa: BLE001
            raise self._error("check", key, exc) from exc

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (a '/'-separated directory, recursively), sorted;
        empty if there are none."""
        return sorted(self._find(prefix, detail=False))

    def sizes(self, prefix: str) -> dict[str, int | None]:
        """The keys of ``list(prefix)`` with their sizes in bytes (None where the
        provider did not say), from the same single listing."""
        return dict(sorted(self._find(prefix, detail=True).items()))

    def _find(self, prefix: str, detail: bool) -> dict[str, int | None]:
        prefix = prefix.strip("/")
        base = self.path(prefix) if prefix else self.root
        try:
            found = self.fs.find(base, detail=True) if detail else self.fs.find(base)
        except Exception as exc:  # noqa: BLE001
            error = self._error("list", prefix, exc)
            if not isinstance(error, NotFound):
                raise error from exc
            found = []
        if not found:
            self._check_bucket()  # Azure lists a missing container as empty
        root = _strip_protocol(self.fs, self.root)
        keys: dict[str, int | None] = {}
        for path in found:
            relative = posixpath.relpath(_strip_protocol(self.fs, path), root) if root else path
            if posixpath.basename(relative).startswith(".tmp-"):
                continue
            if not prefix or relative == prefix or relative.startswith(prefix + "/"):
                size = found[path].get("size") if detail else None
                keys[relative] = size if isinstance(size, int) else None
        return keys

    def delete(self, key: str) -> None:
        """Remove ``key``; a key that is not there is fine."""
        path = self.path(key)
        try:
            self.fs.rm_file(path)
        except Exception as exc:  # noqa: BLE001
            error = self._error("delete", key, exc)
            if isinstance(error, NotFound):
                return
            raise error from exc

    def probe(self) -> None:
        """One cheap real request (a listing of the root), so callers can fail fast.

        Raises AccessDenied (no or wrong credentials), BucketNotFound or
        Unavailable with a message that says what to fix; an empty or not yet
        existing prefix is fine.
        """
        try:
            self.fs.ls(self.root, detail=False)
            return
        except Exception as exc:  # noqa: BLE001
            error = self._error("list", "", exc)
            if not isinstance(error, NotFound):
                raise error from exc
        self._check_bucket()

    def _check_bucket(self) -> None:
        """BucketNotFound if the bucket is missing; nothing if it is there, or if the
        credentials may not list its top level (they may be limited to the prefix)."""
        if not self.bucket:
            return
        try:
            self.fs.ls(self.bucket, detail=False)
        except Exception as exc:  # noqa: BLE001
            error = self._error("list", "", exc)
            if isinstance(error, NotFound):
                raise self._missing_bucket() from exc
            if not isinstance(error, AccessDenied):
                raise error from exc

    def _missing_bucket(self) -> BucketNotFound:
        return BucketNotFound(f"{self.name}: {self.bucket_noun} {self.bucket!r} does not exist")

    def _error(self, action: str, key: str, exc: BaseException) -> StorageError:
        kind = "not_found" if isinstance(exc, NotFound) else classify(exc, self.bucket)
        if kind == "not_found":
            return NotFound(f"{self.name}: no object {key!r}")
        if kind == "bucket_missing":
            return self._missing_bucket()
        tried = ", ".join(self.tried)
        if kind == "no_credentials":
            tried = tried or "the SDK default chain"
            return AccessDenied(f"{self.name}: no credentials: tried {tried}")
        target = repr(key) if key else repr(self.root)
        what = f"cannot {action} {target}: {self._scrub(reason(exc))}"
        if kind == "denied":
            source = f"credentials from {self.credentials}" if self.credentials else ""
            if tried:
                source += f"{'; ' if source else ''}looked at, in order: {tried}"
            return AccessDenied(f"{self.name}: access denied: {what}"
                                + (f" ({source})" if source else ""))
        if kind == "transient":
            return Unavailable(f"{self.name}: {what}")
        return StorageError(f"{self.name}: {what}")

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            if secret:
                text = text.replace(secret, "***")
        return text


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = getattr(fs, "protocol", ())
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


def _strip_protocol(fs: Any, path: str) -> str:
    return str(fs._strip_protocol(path)).rstrip("/")


def _write_local_atomically(fs: Any, path: str, data: bytes) -> None:
    """Temporary file, fsync, rename, fsync the directory: as Litestream's file client."""
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    temporary = os.path.join(directory, f".tmp-{uuid.uuid4().hex}")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    descriptor = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
