"""One fsspec filesystem per provider type, behind a Store.

``open_store`` turns a ``[provider NAME]`` section of kvcloud.conf into a
Store rooted at ``<bucket, container or path>/<prefix>``: it resolves the
credentials (``credentials.resolve_credentials``), builds the filesystem
(s3fs, gcsfs, adlfs, or a local directory), and tells the Store where its
credentials came from so errors can say so. Nothing here talks to the
network except the GCS default chain; ``check`` makes the first request.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, quote

from kvproxy.config import Provider
from kvproxy.storage import azure, gcs, s3
from kvproxy.storage.credentials import (
    Credentials,
    Resolution,
    load_sources,
    resolve_credentials,
)
from kvproxy.storage.errors import reason
from kvproxy.storage.store import StorageError, Store

__all__ = ["Credentials", "check", "open_store"]

log = logging.getLogger("kvproxy.storage")

Builder = Callable[[Mapping[str, Any], Resolution, str], tuple[Any, str]]


def open_store(provider: Provider, prefix: str, overrides: Credentials | None = None) -> Store:
    """A Store for ``provider`` rooted at ``prefix``; StorageError if it cannot be built.

    ``overrides`` are credentials from the command line. No request is made
    (except for GCS' default chain): call ``check`` to fail fast on wrong
    credentials or a missing bucket.
    """
    kind = provider.type
    label = f"provider {provider.name} ({kind})"
    prefix = _clean_prefix(prefix, label)
    if kind == "file":
        return _file_store(provider.values, prefix, label)
    sources = load_sources(kind, provider.values, overrides, provider.name)
    resolution = resolve_credentials(kind, provider.values, sources, provider.name)
    if resolution.method == "command line" and sources.cli.secret_flags():
        log.warning("%s: using the secret given on the command line (%s); other users of "
                    "this machine can read command lines: prefer a credentials file or "
                    "the environment", label, ", ".join(sources.cli.secret_flags()))
    log.info("%s: credentials from %s", label, resolution.method)
    builders: dict[str, Builder] = {"s3": s3.build, "gcs": gcs.build, "azure": azure.build}
    secrets = _secrets(resolution)
    try:
        fs, bucket = builders[kind](provider.values, resolution, label)
    except StorageError:
        raise
    except Exception as exc:  # noqa: BLE001 - each SDK raises its own
        text = reason(exc)
        for secret in secrets:
            text = text.replace(secret, "***")
        raise StorageError(f"{label}: cannot set up the client "
                           f"(credentials from {resolution.method}): {text}") from None
    store = Store(fs, f"{bucket}/{prefix}" if prefix else bucket, label)
    store.bucket = bucket
    store.bucket_noun = "container" if kind == "azure" else "bucket"
    store.credentials = resolution.method
    store.tried = tuple(resolution.tried)
    store.secrets = secrets
    return store


def check(store: Store) -> None:
    """One cheap real request; raises AccessDenied, BucketNotFound or Unavailable."""
    store.probe()


def _clean_prefix(prefix: str, label: str) -> str:
    parts = [part for part in prefix.split("/") if part]
    if any(part in (".", "..") for part in parts):
        raise StorageError(f"{label}: bad prefix {prefix!r}: '.' and '..' are not allowed")
    return "/".join(parts)


def _file_store(values: Mapping[str, Any], prefix: str, label: str) -> Store:
    from fsspec.implementations.local import LocalFileSystem

    root = os.path.abspath(os.path.expanduser(str(values["path"])))
    if prefix:
        root = os.path.join(root, prefix)
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as exc:
        raise StorageError(f"{label}: cannot create directory {root}: "
                           f"{exc.strerror or type(exc).__name__}") from None
    return Store(LocalFileSystem(), root, label)


def _secrets(found: Resolution) -> tuple[str, ...]:
    """Every secret value and its parts that an SDK message might quote."""
    secrets = list(found.secrets)
    for value in list(secrets):
        for part in value.split(";"):  # a connection string's AccountKey, SharedAccessSignature
            name, sep, rest = part.partition("=")
            if sep and name.strip() in ("AccountKey", "SharedAccessSignature") and rest:
                secrets.append(rest)
        for signature in parse_qs(value.lstrip("?")).get("sig", []):  # SAS token
            secrets.extend([signature, quote(signature, safe="")])
    return tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))
