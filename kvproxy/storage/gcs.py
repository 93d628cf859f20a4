"""Google Cloud Storage (and fake-gcs-server) through gcsfs."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from kvproxy.storage.credentials import Resolution
from kvproxy.storage.errors import reason
from kvproxy.storage.store import CONNECT_TIMEOUT, FS_OPTIONS, AccessDenied, StorageError

# gcsfs 2026.x otherwise probes every bucket over gRPC+TLS first (60 s against
# an emulator); it reads this when imported, so before the import in build().
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"


def build(values: Mapping[str, Any], found: Resolution, label: str) -> tuple[Any, str]:
    """A GCSFileSystem with the credentials found (anonymous, a key file, or the
    default chain), and the bucket."""
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
    options: dict[str, Any] = dict(FS_OPTIONS, token=token, project=project or "",
                                   requests_timeout=_timeout())
    if values.get("endpoint_url"):
        options["endpoint_url"] = values["endpoint_url"]
    return filesystem_class()(**options), str(values["bucket"])


def _timeout() -> Any:
    """Give up on a connection after CONNECT_TIMEOUT; no limit on the transfer itself
    (gcsfs passes this to every aiohttp request, where None means no limit at all)."""
    import aiohttp

    return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)


@functools.cache
def filesystem_class() -> Any:
    """GCSFileSystem making one attempt per request; RetryingStore retries.

    gcsfs has no option for this: its ``retry_request`` decorator is applied to
    ``_request`` with the class attribute ``retries = 6`` when the class is defined
    (~33 s of retries for a server that is down). The subclass wraps the undecorated
    ``_request`` again with one attempt. If a gcsfs version changes that, the stock
    class is used (and tests/test_backup_outage.py fails on the count of attempts).
    """
    import gcsfs
    from gcsfs.retry import retry_request

    base = gcsfs.GCSFileSystem
    undecorated = getattr(base._request, "__wrapped__", None)
    if undecorated is None:
        logging.getLogger("kvproxy.storage").warning(
            "gcsfs %s: cannot turn off its own retries; a failing request takes ~30 s",
            getattr(gcsfs, "__version__", "?"))
        return base
    # gcsfs logs every request it gives up on as an error with a traceback; the
    # failure reaches the caller (and RetryingStore's log) anyway.
    logging.getLogger("gcsfs").addFilter(_DropGiveUpTracebacks())
    return type("OneAttemptGCSFileSystem", (base,),
                {"retries": 1, "_request": retry_request(retries=1)(undecorated),
                 "__module__": __name__})


class _DropGiveUpTracebacks(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.funcName == "retry_request" and record.levelno >= logging.ERROR)


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
    """gcsfs (the stock class: see ``filesystem_class``) retries a failed token refresh
    for ~30 s as if it were a network error; a refusal that google-auth says is final
    (bad key, revoked account) is raised at once instead. A refresh google-auth calls
    retryable is transient for RetryingStore (``errors.classify``)."""
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
