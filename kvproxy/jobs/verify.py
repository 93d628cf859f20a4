"""Read a backup back and check everything, writing nothing: KVCLOUD VERIFY, kvrocks-cloud verify.

The same read path as a restore (chunks fetched in file order a bounded
window ahead, every chunk through the codec, every file against its
SHA-256), so a backup that verifies is one that restores, and verifying a
file of any size takes no more memory than restoring it.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

from kvproxy.config import Config, Provider
from kvproxy.jobs.assemble import fetch_ahead
from kvproxy.jobs.backup import StoreOpener
from kvproxy.jobs.registry import JobFailed
from kvproxy.jobs.restore import RestoreError, open_for_reading, resolve_backup_id
from kvproxy.jobs.status import JobStatus
from kvproxy.jobs.threads import run_stoppable
from kvproxy.repo.errors import CorruptObject, RepoError
from kvproxy.repo.repository import Repository
from kvproxy.storage import StorageError


def verify_backup(repo: Repository, backup_id: str, parallelism: int, status: JobStatus,
                  stop: threading.Event) -> list[str]:
    """Every problem found, by object or file name; empty when the backup is sound."""
    try:
        manifest = repo.read_manifest(backup_id)
    except RepoError as exc:
        return [str(exc)]
    problems: list[str] = []
    status.files += len(manifest.files)
    status.bytes_total += sum(entry.size for entry in manifest.files)
    with ThreadPoolExecutor(parallelism, thread_name_prefix="kvcloud-verify") as pool:
        for entry in manifest.files:
            digest = hashlib.sha256()
            size = 0
            damaged = False
            for future in fetch_ahead(repo, pool, parallelism, entry.chunks, stop):
                try:
                    data = future.result()
                except CorruptObject as exc:
                    problems.append(str(exc))
                    damaged = True
                    continue
                digest.update(data)
                size += len(data)
                status.bytes_done += len(data)
            if not damaged and (size != entry.size or digest.hexdigest() != entry.sha256):
                problems.append(f"{entry.name}: content does not match the manifest")
    return problems


async def run_verify(config: Config, provider: Provider, wanted: str, every: bool,
                     status: JobStatus, open_store: StoreOpener) -> None:
    """KVCLOUD VERIFY's job: fails, listing every problem, unless all is sound."""

    def work(stop: threading.Event) -> list[str]:
        repo = open_for_reading(config, provider, open_store)
        ids = repo.list_backups() if every else [resolve_backup_id(repo, wanted, provider.name)]
        status.backup_id = ", ".join(ids)
        return [f"{backup_id}: {problem}" for backup_id in ids
                for problem in verify_backup(repo, backup_id, int(config["parallelism"]),
                                             status, stop)]

    try:
        problems = await run_stoppable(work)
    except (RestoreError, RepoError, StorageError) as exc:
        status.results[provider.name] = f"failed: {exc}"
        raise JobFailed(f"provider {provider.name}: {exc}") from None
    status.results[provider.name] = "sound" if not problems else f"{len(problems)} problem(s)"
    if problems:
        raise JobFailed("; ".join(problems))
