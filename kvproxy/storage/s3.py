"""S3 and S3-compatible stores (MinIO, moto) through s3fs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvproxy.storage.credentials import Resolution
from kvproxy.storage.store import CONNECT_TIMEOUT, FS_OPTIONS

#: botocore makes one attempt per request (its default is up to 5 with backoff)
#: and gives up on a connection after CONNECT_TIMEOUT; RetryingStore retries.
#: It checks a response's CRC32 only where S3 requires it: every object is sealed
#: (AEAD tag or SHA-256, and a chunk's id), so the SDK's second pass over each
#: downloaded byte, in the one thread that does all the I/O, bought nothing.
CLIENT_CONFIG: dict[str, Any] = {"retries": {"total_max_attempts": 1},
                                 "connect_timeout": CONNECT_TIMEOUT,
                                 "response_checksum_validation": "when_required"}

#: s3fs sends a HEAD before every GET to see whether the object is worth splitting
#: into parallel range requests (objects over 50 MiB). Chunks and manifests are
#: far smaller and are already fetched in parallel, so one request per read.
READ_CONCURRENCY = 1


def build(values: Mapping[str, Any], found: Resolution, label: str) -> tuple[Any, str]:
    """An S3FileSystem with the credentials found, and the bucket."""
    import s3fs

    creds = found.values
    options: dict[str, Any] = dict(FS_OPTIONS, config_kwargs=dict(CLIENT_CONFIG),
                                   max_concurrency=READ_CONCURRENCY)
    if values.get("endpoint_url"):
        options["endpoint_url"] = values["endpoint_url"]
    if creds.get("access_key_id"):
        options.update(key=creds["access_key_id"], secret=creds["secret_access_key"],
                       token=creds.get("session_token"))
    elif creds.get("profile"):
        options["profile"] = creds["profile"]
    if creds.get("region"):
        options["client_kwargs"] = {"region_name": creds["region"]}
    fs = s3fs.S3FileSystem(**options)
    # s3fs wraps each call in a retry loop of its own (5 attempts for timeouts and
    # dropped connections); it has no option for it, only this attribute.
    fs.retries = 1
    return fs, str(values["bucket"])
