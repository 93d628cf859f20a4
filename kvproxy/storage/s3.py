"""S3 and S3-compatible stores (MinIO, moto) through s3fs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kvproxy.storage.credentials import Resolution
from kvproxy.storage.store import FS_OPTIONS


def build(values: Mapping[str, Any], found: Resolution, label: str) -> tuple[Any, str]:
    """An S3FileSystem with the credentials found, and the bucket."""
    import s3fs

    creds = found.values
    options: dict[str, Any] = dict(FS_OPTIONS)
    if values.get("endpoint_url"):
        options["endpoint_url"] = values["endpoint_url"]
    if creds.get("access_key_id"):
        options.update(key=creds["access_key_id"], secret=creds["secret_access_key"],
                       token=creds.get("session_token"))
    elif creds.get("profile"):
        options["profile"] = creds["profile"]
    if creds.get("region"):
        options["client_kwargs"] = {"region_name": creds["region"]}
    return s3fs.S3FileSystem(**options), str(values["bucket"])
