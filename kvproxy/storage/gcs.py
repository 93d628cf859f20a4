"""Google Cloud Storage (and fake-gcs-server) through gcsfs."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from kvproxy.storage.credentials import Resolution
from kvproxy.storage.errors import reason
from kvproxy.storage.store import FS_OPTIONS, AccessDenied, StorageError

# gcsfs 2026.x otherwise probes every bucket over gRPC+TLS first (60 s against
# an emulator); it reads this when imported, so before the import in build().
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"


def build(values: Mapping[str, Any], found: Resolution, label: str) -> tuple[Any, str]:
    """A GCSFileSystem with the credentials found (anonymous, a key file, or the
    default chain), and the bucket."""
    import gcsfs
    import google.auth
    import google.auth.exceptions

    creds = found.values
    project = values.get("project_id")
    token: Any
    if creds.get("anonymous"):
        token = "anon"
    elif creds.get("service_account_key"):
        token, file_project = _key_file(creds["service_account_key"], found.method, label)
        project = project or file_project
    else:
        try:
            token, default_project = google.auth.default(scopes=[SCOPE])
        except google.auth.exceptions.DefaultCredentialsError:
            raise AccessDenied(f"{label}: no credentials: tried {', '.join(found.tried)}") from None
        project = project or default_project
    if token != "anon":
        _refresh_fails_fast(token)
    options: dict[str, Any] = dict(FS_OPTIONS, token=token, project=project or "")
    if values.get("endpoint_url"):
        options["endpoint_url"] = values["endpoint_url"]
    return gcsfs.GCSFileSystem(**options), str(values["bucket"])


def _key_file(path: str, method: str, label: str) -> tuple[Any, str | None]:
    """Credentials from a service-account key, or gcloud's authorized-user file."""
    from google.oauth2 import credentials as user_credentials
    from google.oauth2 import service_account

    full = os.path.expanduser(path)
    where = f"{label}: service account key {path} (from {method})"
    if not os.path.isfile(full):
        raise StorageError(f"{where} does not exist or is not a file")
    try:
        with open(full) as handle:
            info = json.load(handle)
        kind = info.get("type") if isinstance(info, dict) else None
        if kind == "service_account":
            loaded = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                info, scopes=[SCOPE])
        elif kind == "authorized_user":
            loaded = user_credentials.Credentials.from_authorized_user_info(  # type: ignore[no-untyped-call]
                info, scopes=[SCOPE])
        else:
            raise StorageError(f"{where} is not usable: type {kind!r} is not supported "
                               "(service_account or authorized_user)")
    except (OSError, ValueError) as exc:
        # the library's messages name missing fields, never the key material
        raise StorageError(f"{where} is not usable: {reason(exc)}") from None
    project = info.get("project_id") or info.get("quota_project_id")
    return loaded, str(project) if project else None


def _refresh_fails_fast(credentials: Any) -> None:
    """gcsfs retries a failed token refresh for ~30 s as if it were a network error;
    a refusal that google-auth says is final (bad key, revoked account) is raised
    at once instead."""
    from gcsfs.retry import NonRetryableError
    from google.auth.exceptions import RefreshError

    refresh = credentials.refresh

    def refresh_once(request: Any) -> None:
        try:
            refresh(request)
        except RefreshError as exc:
            if getattr(exc, "retryable", False):
                raise
            raise NonRetryableError(f"cannot get an access token: {reason(exc)}") from exc

    setattr(credentials, "refresh", refresh_once)  # noqa: B010 - mypy: assigning to a method
