"""A backup job: one snapshot, uploaded to each chosen provider in turn.

The proxy (KVCLOUD UPLOAD) and the CLI (kvrocks-cloud backup) both run this.
Every provider gets the same pinned snapshot, in its own repository under
``prefix``; one provider failing does not stop the others, and the job
fails naming each provider that did.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

from kvproxy.config import Config, Provider
from kvproxy.jobs.registry import JobFailed
from kvproxy.jobs.status import JobStatus
from kvproxy.jobs.threads import run_stoppable
from kvproxy.jobs.upload import upload_snapshot
from kvproxy.repo.errors import RepoError
from kvproxy.repo.keys import KeySource
from kvproxy.repo.repository import Repository
from kvproxy.storage import StorageError, Store
from kvproxy.storage.providers import check
from kvproxy.storage.retry import RetryingStore
from kvproxy.upstream.snapshot import Snapshot, SnapshotError

log = logging.getLogger("kvproxy.backup")

#: Opens a provider's Store; the CLI passes one that knows its credential flags.
StoreOpener = Callable[[Provider, str], Store]
#: Takes the snapshot (BGSAVE and pin, or a directory on disk).
SnapshotTaker = Callable[[Path], Awaitable[Snapshot]]


def key_source(config: Config) -> KeySource:
    return KeySource.from_environment(config["encryption_key_file"])


def open_repository(store: Store, config: Config, keys: KeySource) -> Repository:
    """Open the provider's repository, or create it on the first backup."""
    if Repository.exists(store):
        return Repository.open(store, keys, label=store.name, compression=config["compression"],
                               allow_unencrypted=config["encryption"] == "none")
    if config["encryption"] == "none":
        log.warning("%s: backups are NOT encrypted (encryption = none)", store.name)
    return Repository.create(store, store.name, config["encryption"], config["compression"],
                             keys)


async def run_backup(config: Config, providers: list[Provider], status: JobStatus,
                     take: SnapshotTaker, open_store: StoreOpener) -> None:
    staging = Path(config["state_dir"]) / "staging" / status.job_id
    try:
        snapshot = await take(staging)
    except SnapshotError as exc:
        raise JobFailed(f"snapshot: {exc}") from None
    try:
        sizes = [(snapshot.root / name).stat().st_size for name in snapshot.files]
        status.files = len(snapshot.files)
        status.bytes_total = sum(sizes) * len(providers)
        failures = []
        for provider in providers:
            try:
                backup_id = await _to_provider(config, provider, snapshot, status, open_store)
            except (StorageError, RepoError, OSError) as exc:
                reason = str(exc)
                status.results[provider.name] = f"failed: {reason}"
                named = reason.startswith(f"provider {provider.name}")
                failures.append(reason if named else f"provider {provider.name}: {reason}")
                continue
            status.results[provider.name] = f"succeeded ({backup_id})"
            status.backup_id = status.backup_id or backup_id
        if failures:
            raise JobFailed("; ".join(failures))
    finally:
        snapshot.release()


def provider_store(config: Config, provider: Provider, open_store: StoreOpener) -> Store:
    """The provider's store behind the retry policy, checked with one real request."""
    store = RetryingStore(open_store(provider, config["prefix"]),
                          attempts=int(config["retries"]),
                          base_delay=float(config["retry_delay"]))
    check(store)  # a missing bucket or a refused credential fails here, clearly
    return store


async def _to_provider(config: Config, provider: Provider, snapshot: Snapshot,
                       status: JobStatus, open_store: StoreOpener) -> str:
    def work(stop: threading.Event) -> str:
        store = provider_store(config, provider, open_store)
        repo = open_repository(store, config, key_source(config))
        return upload_snapshot(repo, snapshot, int(config["parallelism"]), status, stop)

    return await run_stoppable(work)
