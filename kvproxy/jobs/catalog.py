"""What backups a provider holds: KVCLOUD LIST and kvrocks-cloud list."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvproxy.config import Config, Provider
from kvproxy.jobs.backup import key_source
from kvproxy.repo.errors import RepoError
from kvproxy.repo.repository import Repository
from kvproxy.storage import StorageError, Store


class CatalogError(Exception):
    """A provider could not be listed; the message names it and why."""


def list_backups(config: Config, providers: list[Provider],
                 open_store: Callable[[Provider, str], Store]) -> list[dict[str, Any]]:
    """One row per backup, newest first, for every provider (blocking: run in a thread).

    A manifest is sealed like a chunk, so listing an encrypted repository
    needs its key. Sizes: ``bytes`` is the data backed up, ``stored_bytes``
    what that backup added to the bucket (new chunks, after compression).
    """
    rows: list[dict[str, Any]] = []
    for provider in providers:
        try:
            store = open_store(provider, config["prefix"])
            if not Repository.exists(store):
                continue
            repo = Repository.open(store, key_source(config), allow_unencrypted=True)
            for backup_id in repo.list_backups():
                manifest = repo.read_manifest(backup_id)
                totals = manifest.totals
                rows.append({
                    "provider": provider.name,
                    "backup_id": manifest.backup_id,
                    "created": manifest.created,
                    "source": manifest.source,
                    "server_version": manifest.server_version,
                    "files": totals.files,
                    "bytes": totals.bytes,
                    "stored_bytes": totals.stored_bytes,
                    "chunks": totals.chunks,
                    "encrypted": "yes" if manifest.encrypted else "no",
                })
        except (StorageError, RepoError) as exc:
            raise CatalogError(f"provider {provider.name}: {exc}") from None
    rows.sort(key=lambda row: (row["backup_id"], row["provider"]), reverse=True)
    return rows
