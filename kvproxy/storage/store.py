"""The one place that talks to a bucket.

Every provider (S3, GCS, Azure, a local directory, fsspec's memory
filesystem in unit tests) is an fsspec filesystem; a Store puts a root
prefix in front of it and gives the rest of the code five operations with one
not-found exception. Keys are '/'-separated paths relative to the root.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from typing import Any


class StorageError(Exception):
    """The provider failed; the message names the provider and the key."""


class NotFound(StorageError):
    """No object under that key."""


def _not_found(exc: BaseException) -> bool:
    return isinstance(exc, FileNotFoundError | NotFound)


class Store:
    """Objects under ``root`` in ``fs``; ``name`` is the provider's name for messages."""

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
        try:
            return bytes(self.fs.cat_file(self.path(key)))
        except Exception as exc:  # noqa: BLE001 - every backend raises its own
            raise self._error("read", key, exc) from exc

    def write(self, key: str, data: bytes) -> None:
        """Store ``data`` whole under ``key``: readers never see part of it."""
        path = self.path(key)
        try:
            if self.local:
                _write_local_atomically(self.fs, path, data)
            else:
                self.fs.pipe_file(path, data)  # one PUT: the object appears whole or not at all
        except Exception as exc:  # noqa: BLE001
            raise self._error("write", key, exc) from exc

    def exists(self, key: str) -> bool:
        try:
            return bool(self.fs.exists(self.path(key)))
        except Exception as exc:  # noqa: BLE001
            raise self._error("check", key, exc) from exc

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (recursively), sorted; empty if there are none."""
        base = self.path(prefix.rstrip("/")) if prefix else self.root
        try:
            found = self.fs.find(base)
        except FileNotFoundError:
            return []
        except Exception as exc:  # noqa: BLE001
            raise self._error("list", prefix, exc) from exc
        root = _strip_protocol(self.fs, self.root)
        keys = []
        for path in found:
            relative = posixpath.relpath(_strip_protocol(self.fs, path), root) if root else path
            if not posixpath.basename(relative).startswith(".tmp-"):
                keys.append(relative)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.fs.rm_file(self.path(key))
        except Exception as exc:  # noqa: BLE001
            if _not_found(exc):
                return
            raise self._error("delete", key, exc) from exc

    def _error(self, action: str, key: str, exc: BaseException) -> StorageError:
        if _not_found(exc):
            return NotFound(f"{self.name}: no object {key!r}")
        reason = str(exc) or type(exc).__name__
        return StorageError(f"{self.name}: cannot {action} {key!r}: {reason}")


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
