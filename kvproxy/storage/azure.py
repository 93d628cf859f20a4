"""Azure Blob Storage (and Azurite) through adlfs."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from kvproxy.storage.credentials import Resolution
from kvproxy.storage.store import CONNECT_TIMEOUT, FS_OPTIONS, AccessDenied, StorageError

#: For every BlobServiceClient: one attempt per request (azure-storage-blob's default
#: is 3 retries 15 s, 18 s and 24 s apart, ~85 s for a server that is down), and
#: CONNECT_TIMEOUT for a new connection; RetryingStore retries.
CLIENT_OPTIONS: dict[str, Any] = {"retry_total": 0, "connection_timeout": CONNECT_TIMEOUT}


def account_url(endpoint_url: str | None, account: str | None) -> str:
    """The blob service URL: the endpoint as given, with the account appended for an
    emulator-style ``http://127.0.0.1:10000``; the public cloud's URL without one."""
    if not endpoint_url:
        return f"https://{account}.blob.core.windows.net"
    parts = urlsplit(endpoint_url)
    path = parts.path.rstrip("/")
    if not path and account and _local_host(parts.hostname or ""):
        path = f"/{account}"
    return f"{parts.scheme}://{parts.netloc}{path}"


def _local_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def build(values: Mapping[str, Any], found: Resolution, label: str) -> tuple[Any, str]:
    """An AzureBlobFileSystem and the container. Keys and SAS tokens become a
    connection string: adlfs then reads none of its own environment variables,
    which would otherwise override the order of credentials.py."""
    creds = found.values
    container = str(values["container"])
    endpoint = values.get("endpoint_url")
    account = creds.get("account_name")
    if not account and endpoint and _local_host(urlsplit(endpoint).hostname or ""):
        account = urlsplit(endpoint).path.strip("/").split("/")[0] or None
    url = account_url(endpoint, account)
    connection = creds.get("connection_string")
    if not connection and (creds.get("account_key") or creds.get("sas_token")):
        if not account:
            raise StorageError(f"{label}: an account key or SAS token (from {found.method}) "
                               "needs account_name")
        if creds.get("account_key"):
            connection = (f"DefaultEndpointsProtocol={urlsplit(url).scheme};"
                          f"AccountName={account};AccountKey={creds['account_key']};"
                          f"BlobEndpoint={url}")
        else:
            sas = creds["sas_token"].lstrip("?")
            connection = f"BlobEndpoint={url};SharedAccessSignature={sas}"
    # The container is not checked before each write (a container SAS may not read
    # its properties); writing into a missing one fails with ContainerNotFound.
    options: dict[str, Any] = dict(FS_OPTIONS, assume_container_exists=True)
    if connection:
        return filesystem_class()(connection_string=connection, **options), container
    if not account:
        raise AccessDenied(f"{label}: no credentials: tried {', '.join(found.tried)} "
                           "(the SDK default chain needs account_name)")
    options.update(account_name=account, anon=False)
    if endpoint:
        parts = urlsplit(url)
        options["account_host"] = f"{parts.netloc}{parts.path}"
    return filesystem_class()(**options), container


@functools.cache
def filesystem_class() -> Any:
    """AzureBlobFileSystem whose BlobServiceClient gets CLIENT_OPTIONS.

    adlfs passes no options to the client it makes in ``do_connect``; this subclass
    makes it for the two ways ``build`` uses adlfs (a connection string, or an
    account with the credential adlfs found: DefaultAzureCredential), as adlfs does,
    plus the options. Anything else is left to adlfs.
    """
    import adlfs
    from fsspec.asyn import get_loop

    class OneAttemptAzureBlobFileSystem(adlfs.AzureBlobFileSystem):  # type: ignore[misc]
        def do_connect(self) -> None:
            try:
                client = self._one_attempt_client()
            except RuntimeError:  # no event loop in this thread: as adlfs does
                asyncio.set_event_loop(get_loop())
                client = self._one_attempt_client()
            except Exception as exc:  # noqa: BLE001 - as adlfs reports it
                raise ValueError(f"unable to connect to account for {exc}") from exc
            if client is None:
                super().do_connect()
            else:
                self.service_client = client

        def _one_attempt_client(self) -> Any:
            from azure.storage.blob.aio import BlobServiceClient

            agent = f"adlfs/{adlfs.__version__}"
            if self.connection_string:
                return BlobServiceClient.from_connection_string(
                    self.connection_string, user_agent=agent, **CLIENT_OPTIONS)
            if (self.account_name and self.credential is not None and not self.sas_token
                    and not self.account_key):
                host = getattr(self, "account_host", f"{self.account_name}.blob.core.windows.net")
                self.account_url = f"https://{host}"
                return BlobServiceClient(self.account_url, credential=self.credential,
                                         user_agent=agent, _location_mode=self.location_mode,
                                         **CLIENT_OPTIONS)
            return None

    OneAttemptAzureBlobFileSystem.__module__ = __name__
    return OneAttemptAzureBlobFileSystem
