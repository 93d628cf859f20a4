"""Apply the retention policy and delete what no backup needs: KVCLOUD PRUNE, kvrocks-cloud prune.

In this order (docs/format.md, section 8 rule 5 and section 11):

1. write our prune lock, then list the locks: another fresh prune lock makes
   us refuse; a fresh backup lock (or one we cannot read) means manifests
   only, no chunk is deleted this time;
2. read every manifest and decide which backups stay (``repo.retention``);
   a manifest that cannot be read stops the prune before anything is deleted;
3. delete the dropped manifests;
4. list the manifests again and collect every chunk they reference;
5. delete, ``parallelism`` at a time, every chunk referenced by none: the
   dropped backups' own chunks and the strays of interrupted backups;
6. remove stale locks, then ours.

A dry run writes nothing (not even its lock): it lists the locks, reads the
manifests and reports what steps 3 to 6 would delete.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from kvproxy.config import Config, Provider
from kvproxy.jobs.backup import StoreOpener, key_source, provider_store
from kvproxy.jobs.registry import JobFailed
from kvproxy.jobs.status import JobStatus
from kvproxy.jobs.threads import run_stoppable
from kvproxy.jobs.upload import Stopped
from kvproxy.repo import locks
from kvproxy.repo.errors import RepoError
from kvproxy.repo.manifest import Manifest, backup_time
from kvproxy.repo.repository import BackupNotFound, Repository
from kvproxy.repo.retention import Backup, Decision, Policy, RetentionError, decide
from kvproxy.storage import StorageError

log = logging.getLogger("kvproxy.prune")

#: Chunks deleted between two checks of our lock and of a cancel.
BATCH_PER_WORKER = 16


class PruneError(Exception):
    """The prune cannot go on (or must not start); the message says why and what to do."""


@dataclass
class PruneReport:
    """What a prune of one provider did, or with ``dry_run`` would do."""

    provider: str
    policy: str
    dry_run: bool
    #: Newest first: {"backup_id", "created", "reasons": [...]}.
    kept: list[dict[str, Any]] = field(default_factory=list)
    #: Newest first: {"backup_id", "created"}.
    deleted: list[dict[str, Any]] = field(default_factory=list)
    chunks_total: int = 0
    chunks_deleted: int = 0
    #: Object bytes of the deleted chunks, as listed by the provider.
    bytes_freed: int = 0
    #: Why no chunk was deleted ("" when chunks were collected).
    chunks_skipped: str = ""
    stale_locks_removed: list[str] = field(default_factory=list)
    note: str = ""

    def summary(self) -> str:
        """One line for STATUS ``results`` and the CLI."""
        if self.note:
            return self.note
        would = "would " if self.dry_run else ""
        plural = "" if len(self.deleted) == 1 else "s"
        text = f"kept {len(self.kept)}, {would}delete{'' if would else 'd'} " \
               f"{len(self.deleted)} backup{plural}"
        if self.chunks_skipped:
            return f"{text}; no chunk {would}deleted: {self.chunks_skipped}"
        return (f"{text} and {self.chunks_deleted} of {self.chunks_total} chunks "
                f"({self.bytes_freed} bytes {'would be ' if would else ''}freed)")

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary()}


def retention_policy(config: Config) -> Policy:
    """The configured policy; PruneError if it cannot be used to prune."""
    text = config["retention"]
    try:
        policy = Policy.parse(text)
    except RetentionError as exc:
        raise PruneError(f"retention: {exc}") from None
    if policy.empty:
        raise PruneError(f"the retention policy {text!r} keeps no backup: prune refuses to "
                         f"delete every backup; set e.g. retention = last=7 daily=7 in "
                         f"kvcloud.conf")
    return policy


def created_at(manifest: Manifest) -> datetime:
    """A backup's time: the manifest's ``created``, else the time in its id."""
    try:
        return datetime.strptime(manifest.created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return backup_time(manifest.backup_id)


def prune_repository(repo: Repository, policy: Policy, parallelism: int, status: JobStatus,
                     stop: threading.Event, *, dry_run: bool = False,
                     clock: locks.Clock = time.time, provider: str = "") -> PruneReport:
    """Prune one repository (blocking: run it in a thread)."""
    if policy.empty:
        raise PruneError("the retention policy keeps no backup: refusing to delete every backup")
    report = PruneReport(provider or repo.store.name, str(policy), dry_run)
    own = None
    if not dry_run:
        own = locks.RepoLock(repo.store, locks.PRUNE, job=status.job_id, clock=clock).acquire()
    try:
        blockers, stale = _look_at_locks(repo, own, clock)
        manifests = _read_manifests(repo, parallelism)
        decision = decide(policy, [Backup(backup_id, created_at(manifest))
                                   for backup_id, manifest in manifests.items()])
        _record(report, decision, manifests)
        status.backup_id = ", ".join(filter(None, (status.backup_id, *decision.drop)))
        if not dry_run:
            for backup_id in decision.drop:
                _check(stop, own)
                repo.delete_backup(backup_id)
        if blockers:
            report.chunks_skipped = ("a backup is running (" + "; ".join(
                lock.describe() for lock in blockers) + "); prune again when it ended")
        else:
            _collect_chunks(repo, manifests, decision, parallelism, status, stop, own, report)
        report.stale_locks_removed = [lock.key for lock in stale]
        if not dry_run:
            for lock in stale:
                repo.store.delete(lock.key)
    finally:
        if own is not None:
            own.release()
    return report


def _look_at_locks(repo: Repository, own: locks.RepoLock | None, clock: locks.Clock,
                   ) -> tuple[list[locks.LockInfo], list[locks.LockInfo]]:
    """(fresh locks that forbid deleting chunks, stale locks); PruneError if another
    prune runs."""
    others = [lock for lock in locks.list_locks(repo.store, clock)
              if own is None or lock.key != own.key]
    fresh = [lock for lock in others if not lock.stale]
    pruning = [lock for lock in fresh if lock.kind == locks.PRUNE]
    if pruning:
        raise PruneError(f"another prune is running: {pruning[0].describe()}; try again when "
                         f"it ended (a lock left by a process that died is ignored after "
                         f"{locks.STALE_AFTER:.0f} s)")
    return fresh, [lock for lock in others if lock.stale]


def _read_manifests(repo: Repository, parallelism: int) -> dict[str, Manifest]:
    ids = repo.list_backups()
    with ThreadPoolExecutor(parallelism, thread_name_prefix="kvcloud-prune") as pool:
        read = list(pool.map(functools.partial(_read_or_none, repo), ids))
    return {backup_id: manifest for backup_id, manifest in zip(ids, read, strict=True)
            if manifest is not None}


def _read_or_none(repo: Repository, backup_id: str) -> Manifest | None:
    try:
        return repo.read_manifest(backup_id)
    except BackupNotFound:  # deleted since the listing
        return None
    except RepoError as exc:
        raise PruneError(f"cannot read backup {backup_id}: {exc}. Prune deletes nothing "
                         f"while a manifest cannot be read: its chunks are unknown (check "
                         f"with kvrocks-cloud verify; remove a manifest beyond repair by "
                         f"hand)") from None


def _record(report: PruneReport, decision: Decision, manifests: dict[str, Manifest]) -> None:
    report.kept = [{"backup_id": backup_id, "created": manifests[backup_id].created,
                    "reasons": list(decision.reasons[backup_id])}
                   for backup_id in decision.keep]
    report.deleted = [{"backup_id": backup_id, "created": manifests[backup_id].created}
                      for backup_id in decision.drop]


def _referenced(repo: Repository, manifests: dict[str, Manifest], decision: Decision,
                dry_run: bool) -> set[str]:
    """Every chunk id a remaining manifest names. After a real deletion the manifests
    are listed again, and whatever is listed counts (a dropped one that is still
    there, or one that appeared since, keeps its chunks)."""
    remaining = list(decision.keep) if dry_run else repo.list_backups()
    referenced: set[str] = set()
    for backup_id in remaining:
        manifest = manifests.get(backup_id) or _read_or_none(repo, backup_id)
        if manifest is not None:
            referenced.update(ref.id for entry in manifest.files for ref in entry.chunks)
    return referenced


def _collect_chunks(repo: Repository, manifests: dict[str, Manifest], decision: Decision,
                    parallelism: int, status: JobStatus, stop: threading.Event,
                    own: locks.RepoLock | None, report: PruneReport) -> None:
    referenced = _referenced(repo, manifests, decision, own is None)
    sizes = repo.chunk_sizes()
    garbage = sorted(set(sizes) - referenced)
    report.chunks_total = len(sizes)
    freed = sum(sizes[chunk_id] or 0 for chunk_id in garbage)
    status.bytes_total += freed
    if own is None:  # dry run
        report.chunks_deleted = len(garbage)
        report.bytes_freed = freed
        return
    batch = max(1, parallelism * BATCH_PER_WORKER)
    with ThreadPoolExecutor(parallelism, thread_name_prefix="kvcloud-prune") as pool:
        for start in range(0, len(garbage), batch):
            _check(stop, own)
            part = garbage[start:start + batch]
            delete = functools.partial(_delete_chunk, repo, own)
            for chunk_id, _ in zip(part, pool.map(delete, part), strict=True):
                size = sizes[chunk_id] or 0
                report.chunks_deleted += 1
                report.bytes_freed += size
                status.bytes_done += size


def _delete_chunk(repo: Repository, own: locks.RepoLock, chunk_id: str) -> None:
    own.check()  # not one delete once our lock may look stale to a backup
    repo.delete_chunk(chunk_id)


def _check(stop: threading.Event, own: locks.RepoLock | None) -> None:
    if stop.is_set():
        raise Stopped("cancelled")
    if own is not None:
        own.check()


def prune_provider(config: Config, provider: Provider, policy: Policy, dry_run: bool,
                   status: JobStatus, stop: threading.Event,
                   open_store: StoreOpener) -> PruneReport:
    """Prune the provider's repository under ``prefix`` (blocking)."""
    store = provider_store(config, provider, open_store)
    if not Repository.exists(store):
        return PruneReport(provider.name, str(policy), dry_run,
                           note="no repository here yet: nothing to prune")
    repo = Repository.open(store, key_source(config), allow_unencrypted=True)
    return prune_repository(repo, policy, int(config["parallelism"]), status, stop,
                            dry_run=dry_run, provider=provider.name)


async def run_prune(config: Config, providers: list[Provider], dry_run: bool,
                    status: JobStatus, open_store: StoreOpener) -> None:
    """KVCLOUD PRUNE's job: each provider in turn; fails naming each provider that did."""
    try:
        policy = retention_policy(config)
    except PruneError as exc:
        raise JobFailed(str(exc)) from None
    failures = []
    for provider in providers:
        work = functools.partial(prune_provider, config, provider, policy, dry_run, status,
                                 open_store=open_store)
        try:
            report = await run_stoppable(work)
        except (PruneError, RepoError, StorageError) as exc:
            status.results[provider.name] = f"failed: {exc}"
            failures.append(f"provider {provider.name}: {exc}")
            continue
        status.results[provider.name] = report.summary()
        _log(report)
    if failures:
        raise JobFailed("; ".join(failures))


def _log(report: PruneReport) -> None:
    verb = "would delete" if report.dry_run else "deleted"
    for kept in report.kept:
        log.info("prune %s: keep %s (%s)", report.provider, kept["backup_id"],
                 ", ".join(kept["reasons"]))
    for gone in report.deleted:
        log.info("prune %s: %s %s", report.provider, verb, gone["backup_id"])
    log.info("prune %s (%s): %s", report.provider, report.policy, report.summary())
