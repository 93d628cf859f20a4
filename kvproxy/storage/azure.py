"""Azure Blob Storage (and Azurite) through adlfs."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from kvproxy.storage.credentials import Resolution
from kvproxy.storage.store import FS_OPTIONS, AccessDenied, StorageError


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
    import adlfs

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
        return adlfs.AzureBlobFileSystem(connection_string=connection, **options), container
    if not account:
        raise AccessDenied(f"{label}: no credentials: tried {', '.join(found.tried)} "
                           "(the SDK default chain needs account_name)")
    options.update(account_name=account, anon=False)
    if endpoint:
        parts = urlsplit(url)
        options["account_host"] = f"{parts.netloc}{parts.path}"
    return adlfs.AzureBlobFileSystem(**options), container
