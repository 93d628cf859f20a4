"""Restore a backup into a fresh directory, never touching anything that exists.

Everything is written into a staging directory beside the target: each file
from its chunks (``assemble``: every chunk checked by the codec, every file
by its SHA-256, fsynced); Kvrocks' ``CURRENT`` last. Only when all of it is verified
is the staging directory renamed into place, so a failed or cancelled
restore leaves no target at all.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvproxy.config import Config, Provider
from kvproxy.jobs.assemble import Mismatch, assemble
from kvproxy.jobs.backup import StoreOpener, key_source, provider_store
from kvproxy.jobs.registry import JobFailed
from kvproxy.jobs.status import JobStatus
from kvproxy.jobs.threads import run_stoppable
from kvproxy.jobs.upload import Stopped
from kvproxy.repo.errors import RepoError
from kvproxy.repo.manifest import FileEntry, Manifest
from kvproxy.repo.repository import Repository
from kvproxy.storage import StorageError
from kvproxy.upstream.snapshot import KVROCKS_CHECKPOINT, REDIS_RDB


class RestoreError(Exception):
    """The restore cannot go on; the message names the file, object or directory."""


@dataclass(frozen=True)
class Placement:
    entry: FileEntry
    relative: str  # where under the target, '/'-separated


def plan(manifest: Manifest) -> list[Placement]:
    """Where each file goes: Kvrocks under ``db/`` (``kvrocks --dir``), others as named.

    Refuses names that could leave the target; ``CURRENT`` comes last, so a
    RocksDB directory is never complete before all its files are.
    """
    base = "db/" if manifest.source == KVROCKS_CHECKPOINT else ""
    placements = []
    for entry in manifest.files:
        name = entry.name
        parts = name.split("/")
        if (not name or name.startswith("/") or "\\" in name or ".." in parts
                or "" in parts or "." in parts):
            raise RestoreError(f"manifest entry {name!r} would leave the target: refused")
        placements.append(Placement(entry, posixpath.normpath(base + name)))
    placements.sort(key=lambda p: posixpath.basename(p.relative) == "CURRENT")
    return placements


def start_command(manifest: Manifest, target: Path) -> str:
    """The command that starts a server on the restored directory."""
    if manifest.source == KVROCKS_CHECKPOINT:
        return f"kvrocks --dir {target}"
    if manifest.source == REDIS_RDB and manifest.files:
        return f"redis-server --dir {target} --dbfilename {manifest.files[0].name}"
    return f"(files restored in {target})"


def restore_backup(repo: Repository, backup_id: str, target: Path, parallelism: int,
                   status: JobStatus, stop: threading.Event) -> Manifest:
    """Restore ``backup_id`` into ``target``, which must not exist or be empty.

    Blocking: run it in a thread. Every failure, the file system's included
    (disk full, a path that cannot be made), is a RestoreError naming what
    failed, and leaves neither ``target`` nor the staging directory behind.
    """
    manifest = repo.read_manifest(backup_id)
    placements = plan(manifest)
    target = target.resolve()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise RestoreError(f"{target} is not empty: restore into a new directory")
    status.files = len(placements)
    status.bytes_total = sum(p.entry.size for p in placements)
    staging = _make_staging(target, backup_id)
    try:
        assemble([(p.entry, staging / p.relative) for p in placements], repo, parallelism,
                 status, stop)
        _fsync_tree(staging)
        if stop.is_set():  # the last moment a cancel can still leave nothing behind
            raise Stopped("cancelled")
        if target.exists():
            target.rmdir()
        os.rename(staging, target)
        _fsync_directory(target.parent)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, Mismatch):
            raise RestoreError(str(exc)) from None
        if isinstance(exc, OSError):
            raise RestoreError(f"cannot restore into {target}: {_os_problem(exc)}") from None
        raise
    return manifest


def _make_staging(target: Path, backup_id: str) -> Path:
    """``.<target>.restoring-<backup-id>`` beside ``target``, new and empty."""
    staging = target.parent / f".{target.name}.restoring-{backup_id}"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
    except FileExistsError:
        if not target.parent.is_dir():
            raise RestoreError(f"cannot restore into {target}: {target.parent} is not a "
                               "directory") from None
        raise RestoreError(f"{staging} exists: another restore into {target} is running, "
                           "or one was interrupted; if none is running, remove that "
                           "directory and try again") from None
    except OSError as exc:
        raise RestoreError(f"cannot restore into {target}: {_os_problem(exc)}") from None
    return staging


def _os_problem(exc: OSError) -> str:
    """An OSError as one line: what the system said, and about which file."""
    what = exc.strerror or str(exc)
    return f"{what}: {exc.filename}" if exc.filename else what


def _fsync_tree(root: Path) -> None:
    """Every directory (the files were fsynced as they were finished)."""
    for directory, _, _ in os.walk(root):
        _fsync_directory(Path(directory))


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def resolve_backup_id(repo: Repository, wanted: str, provider: str) -> str:
    """``LATEST`` (any letter case) or an id the repository holds."""
    if wanted.upper() != "LATEST":
        return wanted
    backups = repo.list_backups()
    if not backups:
        raise RestoreError(f"provider {provider} holds no backup")
    return backups[-1]


def open_for_reading(config: Config, provider: Provider, open_store: StoreOpener) -> Repository:
    """The provider's repository as restore and verify read it (proxy and CLI alike).

    Retries as configured, one real request first (a missing bucket or a
    refused credential fails here), any cipher the repository was made with,
    and messages that name objects as ``<key> in <provider>:<prefix>``.
    """
    store = provider_store(config, provider, open_store)
    return Repository.open(store, key_source(config), label=config["prefix"] or None,
                           allow_unencrypted=True)


async def fetch_backup(config: Config, provider: Provider, wanted: str, status: JobStatus,
                       open_store: StoreOpener, place: Callable[[str], Path],
                       ) -> tuple[Manifest, Path]:
    """Restore ``wanted`` into ``place(backup_id)``; returns the manifest and the directory."""

    def work(stop: threading.Event) -> tuple[Manifest, Path]:
        repo = open_for_reading(config, provider, open_store)
        backup_id = resolve_backup_id(repo, wanted, provider.name)
        status.backup_id = backup_id
        where = place(backup_id).resolve()
        return restore_backup(repo, backup_id, where, int(config["parallelism"]), status,
                              stop), where

    try:
        return await run_stoppable(work)
    except (RestoreError, RepoError, StorageError) as exc:
        status.results[provider.name] = f"failed: {exc}"
        raise JobFailed(f"provider {provider.name}: {exc}") from None


async def run_restore(config: Config, provider: Provider, wanted: str, target: Path | None,
                      status: JobStatus, open_store: StoreOpener) -> None:
    """KVCLOUD RESTORE's job: into ``target``, or ``restore_dir``/<backup-id>."""
    manifest, where = await fetch_backup(
        config, provider, wanted, status, open_store,
        lambda backup_id: target or Path(config["restore_dir"]) / backup_id)
    status.results[provider.name] = (f"restored into {where}; start the server with: "
                                      f"{start_command(manifest, where)}")
