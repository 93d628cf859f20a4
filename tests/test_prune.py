"""Prune: the retention policy, manifests before chunks, and locks against running backups.

Backups here get their time from the ``now`` of ``upload_snapshot``, never
from waiting; concurrency is made deterministic by a store wrapper that
stops one side at a chosen request until the test lets it go.
"""

# ruff: noqa: F811 - the emulator fixtures are imported by name

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec
import pytest
import redis

from kvproxy import config
from kvproxy.jobs.prune import PruneError, prune_repository, retention_policy
from kvproxy.jobs.restore import restore_backup
from kvproxy.jobs.status import JobStatus
from kvproxy.jobs.upload import upload_snapshot
from kvproxy.jobs.verify import verify_backup
from kvproxy.proxy.kvcloud import HELP
from kvproxy.repo import locks
from kvproxy.repo.chunker import ChunkerParams
from kvproxy.repo.keys import KeySource
from kvproxy.repo.repository import Repository
from kvproxy.repo.retention import Backup, Policy, RetentionError, decide
from kvproxy.storage import Store
from kvproxy.storage.providers import open_store
from kvproxy.storage.retry import RetryingStore
from kvproxy.upstream.snapshot import directory_snapshot
from tests.emulators import Emulator, azurite, fake_gcs, moto_s3, no_cloud_credentials  # noqa: F401
from tests.servers import Upstream

# -- the policy alone --------------------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


def backups(*times: str) -> list[Backup]:
    """Backups named after their time, so a test reads which ones stay."""
    return [Backup(f"{at(t):%Y%m%dT%H%M%SZ}-0000", at(t)) for t in times]


def kept(policy: str, *times: str) -> list[str]:
    decision = decide(Policy.parse(policy), backups(*times))
    return [f"{datetime.strptime(i[:16], '%Y%m%dT%H%M%SZ'):%Y-%m-%d %H:%M}" for i in decision.keep]


TIMES = ("2026-10-15 10:00", "2026-11-20 09:00", "2026-11-22 08:00", "2026-11-22 20:00",
         "2026-11-23 07:00", "2026-11-23 12:00")


def test_last_keeps_the_newest() -> None:
    assert kept("last=2", *TIMES) == ["2026-11-23 12:00", "2026-11-23 07:00"]
    assert kept("last=10", *TIMES) == sorted(TIMES, reverse=True)


def test_daily_keeps_the_newest_of_each_of_the_last_days_with_backups() -> None:
    # 2026-11-21 has no backup: it does not use up one of the three days.
    assert kept("daily=3", *TIMES) == ["2026-11-23 12:00", "2026-11-22 20:00", "2026-11-20 09:00"]


def test_hourly_weekly_monthly() -> None:
    times = ("2026-11-23 10:05", "2026-11-23 10:55", "2026-11-23 11:10", "2026-11-23 13:00")
    assert kept("hourly=2", *times) == ["2026-11-23 13:00", "2026-11-23 11:10"]
    assert kept("hourly=5", *times) == ["2026-11-23 13:00", "2026-11-23 11:10",
                                        "2026-11-23 10:55"]
    # ISO weeks: 2027-01-01 (Friday) is in 2026-W53, 2027-01-04 (Monday) starts 2027-W01.
    weeks = ("2026-12-27 09:00", "2026-12-28 09:00", "2027-01-01 09:00", "2027-01-04 09:00")
    assert kept("weekly=2", *weeks) == ["2027-01-04 09:00", "2027-01-01 09:00"]
    assert kept("weekly=3", *weeks) == ["2027-01-04 09:00", "2027-01-01 09:00",
                                        "2026-12-27 09:00"]
    assert kept("monthly=2", *TIMES) == ["2026-11-23 12:00", "2026-10-15 10:00"]


def test_rules_add_up_and_say_why() -> None:
    decision = decide(Policy.parse("last=1 daily=3 monthly=2"), backups(*TIMES))
    ids = {b.created.strftime("%m-%d %H"): b.backup_id for b in backups(*TIMES)}
    assert decision.keep == (ids["11-23 12"], ids["11-22 20"], ids["11-20 09"], ids["10-15 10"])
    assert decision.drop == (ids["11-23 07"], ids["11-22 08"])
    assert decision.reasons == {
        ids["11-23 12"]: ("last 1", "daily 2026-11-23", "monthly 2026-11"),
        ids["11-22 20"]: ("daily 2026-11-22",),
        ids["11-20 09"]: ("daily 2026-11-20",),
        ids["10-15 10"]: ("monthly 2026-10",),
    }


def test_same_time_is_ordered_by_backup_id() -> None:
    moment = at("2026-11-23 12:00")
    same = [Backup("20261123T120000Z-00aa", moment), Backup("20261123T120000Z-ff00", moment),
            Backup("20261123T120000Z-0b00", moment)]
    decision = decide(Policy(last=1, daily=1), same)
    assert decision.keep == ("20261123T120000Z-ff00",)
    assert decision.drop == ("20261123T120000Z-0b00", "20261123T120000Z-00aa")


def test_times_in_other_zones_are_bucketed_in_utc() -> None:
    from datetime import timedelta, timezone

    east = timezone(timedelta(hours=9))
    late = Backup("20261123T200000Z-0001", datetime(2026, 11, 24, 5, 0, tzinfo=east))
    early = Backup("20261123T010000Z-0002", datetime(2026, 11, 23, 10, 0, tzinfo=east))
    # Both are on 2026-11-23 in UTC: one day, one backup kept.
    assert decide(Policy(daily=2), [late, early]).keep == (late.backup_id,)


def test_parse_and_refuse() -> None:
    assert Policy.parse("last=7 daily=7 weekly=4") == Policy(last=7, daily=7, weekly=4)
    assert Policy.parse(" monthly=12, hourly=24 ") == Policy(hourly=24, monthly=12)
    assert str(Policy.parse("weekly=4 last=7")) == "last=7 weekly=4"
    assert Policy.parse("").empty and Policy.parse("last=0 daily=0").empty
    for bad, message in [("last=7 yearly=1", "unknown retention rule 'yearly'"),
                         ("last=-1", "expected rules like"), ("last", "expected rules like"),
                         ("daily=x", "expected rules like"), ("last=1 last=2", "given twice")]:
        with pytest.raises(RetentionError, match=message):
            Policy.parse(bad)
    with pytest.raises(RetentionError, match="keeps no backup"):
        decide(Policy(), backups(*TIMES))


def test_config_checks_the_policy_when_loaded() -> None:
    assert config.parse("[kvcloud]\nretention = last=3 weekly=4\n")["retention"] == \
        "last=3 weekly=4"
    with pytest.raises(config.ConfigError) as caught:
        config.parse("[kvcloud]\nretention = keep everything\n")
    assert "[kvcloud]: bad value for 'retention': expected rules like" in str(caught.value)
    empty = config.parse("[kvcloud]\nretention =\n")  # allowed: prune then refuses
    with pytest.raises(PruneError, match="keeps no backup"):
        retention_policy(empty)


# -- a real repository ---------------------------------------------------------------------

SMALL = ChunkerParams(min_size=64 * 1024, avg_size=256 * 1024, max_size=1024 * 1024)


def block(name: str) -> bytes:
    """Content named ``name``: files under min_size are one chunk each."""
    return random.Random(name).randbytes(3000)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "backup.key"
    path.write_bytes(os.urandom(32))
    return path


def local_store(tmp_path: Path) -> Store:
    return Store(fsspec.filesystem("file"), str(tmp_path / "bucket" / "prefix"), "local")


@pytest.fixture(params=["file", "moto_s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return local_store(tmp_path)
    emulator: Emulator = request.getfixturevalue(request.param)
    return open_store(emulator.provider("cloud"), "prune/test")


def create(store: Store, key: Path) -> Repository:
    return Repository.create(store, "prune-test", "aes-256-gcm", "zstd:3", KeySource(str(key)),
                             chunker=SMALL)


def back_up(repo: Repository, tmp_path: Path, when: str, *names: str) -> str:
    """A backup at ``when`` of a directory with one file per name (its content: block(name))."""
    directory = tmp_path / "snapshots" / f"{when}-{'-'.join(names)}".replace(" ", "_")
    directory.mkdir(parents=True)
    for name in names:
        (directory / name).write_bytes(block(name))
    return upload_snapshot(repo, directory_snapshot(directory), 2, job(), threading.Event(),
                           now=at(when))


def job(operation: str = "upload") -> JobStatus:
    return JobStatus(f"{operation}-test", operation, ["local"])


def chunks_of(repo: Repository, *backup_ids: str) -> set[str]:
    return {ref.id for backup_id in backup_ids
            for entry in repo.read_manifest(backup_id).files for ref in entry.chunks}


def prune(repo: Repository, policy: str, **kwargs: Any) -> Any:
    return prune_repository(repo, Policy.parse(policy), 4, job("prune"), threading.Event(),
                            **kwargs)


def everything(store: Store) -> dict[str, bytes]:
    return {name: store.read(name) for name in store.list("")}


def test_prune_keeps_what_the_policy_says_and_every_kept_backup_restores(
        store: Store, key: Path, tmp_path: Path) -> None:
    repo = create(store, key)
    ids = {when: back_up(repo, tmp_path, when, f"x{n}", "common", *extra)
           for n, (when, *extra) in enumerate([
               ("2026-10-15 10:00",), ("2026-11-20 09:00",), ("2026-11-22 08:00",),
               ("2026-11-22 20:00",), ("2026-11-23 07:00", "x5"), ("2026-11-23 12:00",)])}
    stray = block("interrupted")  # uploaded by a backup that never wrote its manifest
    repo.put_chunk(repo.chunk_id(stray), stray)
    before = everything(store)

    dry = prune(repo, "last=1 daily=3 monthly=2", dry_run=True)
    assert everything(store) == before  # a dry run writes nothing, not even a lock
    report = prune(repo, "last=1 daily=3 monthly=2")
    assert (dry.kept, dry.deleted) == (report.kept, report.deleted)
    assert (dry.chunks_deleted, dry.bytes_freed) == (report.chunks_deleted, report.bytes_freed)

    keep = [ids["2026-11-23 12:00"], ids["2026-11-22 20:00"], ids["2026-11-20 09:00"],
            ids["2026-10-15 10:00"]]
    assert repo.list_backups() == sorted(keep)
    assert [k["backup_id"] for k in report.kept] == keep
    assert [k["reasons"] for k in report.kept] == [
        ["last 1", "daily 2026-11-23", "monthly 2026-11"], ["daily 2026-11-22"],
        ["daily 2026-11-20"], ["monthly 2026-10"]]
    assert [d["backup_id"] for d in report.deleted] == [ids["2026-11-23 07:00"],
                                                         ids["2026-11-22 08:00"]]
    # Left: exactly the chunks the kept backups name. Gone: x2, x4 (only in dropped
    # backups) and the stray; x5 is kept by the newest backup too.
    assert set(repo.list_chunks()) == chunks_of(repo, *keep)
    gone = {repo.chunk_id(block(n)) for n in ("x2", "x4", "interrupted")}
    assert report.chunks_deleted == 3 and not gone & set(repo.list_chunks())
    assert report.bytes_freed > 3 * 3000 * 0.5  # random data: the objects are about as big
    assert report.chunks_total == 3 + len(chunks_of(repo, *keep))
    assert store.list("locks") == []

    for n, backup_id in enumerate(keep):
        assert verify_backup(repo, backup_id, 2, job("verify"), threading.Event()) == []
        target = tmp_path / f"restored-{n}"
        manifest = restore_backup(repo, backup_id, target, 2, job("restore"), threading.Event())
        for entry in manifest.files:
            assert (target / entry.name).read_bytes() == block(entry.name)

    again = prune(repo, "last=1 daily=3 monthly=2")
    assert again.deleted == [] and again.chunks_deleted == 0


def test_an_unreadable_manifest_stops_prune_before_it_deletes_anything(
        key: Path, tmp_path: Path) -> None:
    store = local_store(tmp_path)
    repo = create(store, key)
    first = back_up(repo, tmp_path, "2026-11-01 10:00", "a")
    back_up(repo, tmp_path, "2026-11-02 10:00", "b")
    path = tmp_path / "bucket" / "prefix" / "backups" / f"{first}.manifest"
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 1
    path.write_bytes(bytes(damaged))
    before = everything(store)
    with pytest.raises(PruneError, match=f"cannot read backup {first}"):
        prune(repo, "last=1")
    assert everything(store) == before


# -- locks ---------------------------------------------------------------------------------


class Gate(RetryingStore):
    """A real store that holds the calling thread at the first request matching ``stop_at``
    (an action and a key prefix) until ``go`` is set, and records every request."""

    def __init__(self, inner: Store, stop_at: tuple[str, str] | None = None) -> None:
        super().__init__(inner, attempts=1)
        self.stop_at = stop_at
        self.reached = threading.Event()
        self.go = threading.Event()
        self.calls: list[tuple[str, str]] = []
        self.changed = threading.Condition()

    def _seen(self, action: str, key: str) -> None:
        with self.changed:
            self.calls.append((action, key))
            self.changed.notify_all()
        if self.stop_at and action == self.stop_at[0] and key.startswith(self.stop_at[1]) \
                and not self.reached.is_set():
            self.reached.set()
            assert self.go.wait(120), "the test never let the request go"

    def wait_for(self, predicate: Callable[[list[tuple[str, str]]], bool]) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: predicate(self.calls), timeout=120)

    def write(self, key: str, data: bytes) -> None:
        self._seen("write", key)
        super().write(key, data)

    def delete(self, key: str) -> None:
        self._seen("delete", key)
        super().delete(key)

    def list(self, prefix: str) -> list[str]:
        self._seen("list", prefix)
        return super().list(prefix)


class Background:
    """Run ``work`` in a thread; ``result()`` re-raises what it raised."""

    def __init__(self, work: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.value = work()
            except BaseException as exc:  # noqa: BLE001 - handed to the test
                self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def result(self) -> Any:
        self.thread.join(120)
        assert not self.thread.is_alive(), "still running"
        if self.error is not None:
            raise self.error
        return self.value


@pytest.fixture(params=["file", "moto_s3", "fake_gcs", "azurite"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "file":
        return local_store(tmp_path)
    if request.param == "fake_gcs":
        request.getfixturevalue("no_cloud_credentials")
    emulator: Emulator = request.getfixturevalue(request.param)
    return open_store(emulator.provider("cloud"), "prune/locks")


def snapshot_of(tmp_path: Path, label: str, *names: str) -> Any:
    directory = tmp_path / "snapshots" / label
    directory.mkdir(parents=True)
    for name in names:
        (directory / name).write_bytes(block(name))
    return directory_snapshot(directory)


def test_a_backup_running_during_a_prune_loses_no_chunk(any_store: Store, key: Path,
                                                        tmp_path: Path) -> None:
    repo = create(any_store, key)
    old = back_up(repo, tmp_path, "2026-11-01 10:00", "a", "s")
    new = back_up(repo, tmp_path, "2026-11-02 10:00", "b")
    stray = block("t")  # left by an interrupted backup
    repo.put_chunk(repo.chunk_id(stray), stray)

    # A backup that dedups against a (soon unreferenced) chunk of ``old`` and the stray,
    # held just before it writes its manifest.
    gate = Gate(any_store, stop_at=("write", "backups/"))
    running = Repository.open(gate, KeySource(str(key)))
    snapshot = snapshot_of(tmp_path, "running", "a", "t", "c")
    upload = Background(lambda: upload_snapshot(running, snapshot, 2, job(), threading.Event(),
                                                now=at("2026-11-03 10:00")))
    assert gate.reached.wait(120)
    a, t = repo.chunk_id(block("a")), repo.chunk_id(stray)
    assert {a, t} <= set(repo.list_chunks())

    report = prune(repo, "last=1")
    assert [d["backup_id"] for d in report.deleted] == [old]
    assert repo.list_backups() == [new]
    # No manifest names ``a`` or the stray any more: without the lock they would be gone.
    assert not {a, t} & chunks_of(repo, new)
    assert report.chunks_deleted == 0 and "a backup is running" in report.chunks_skipped
    assert "backup lock locks/backup-" in report.chunks_skipped
    assert {a, t} <= set(repo.list_chunks())

    gate.go.set()
    latest = upload.result()
    assert verify_backup(repo, latest, 2, job("verify"), threading.Event()) == []
    assert any_store.list("locks") == []

    # Nothing runs now: the next prune collects what only ``old`` and ``new`` named.
    after = prune(repo, "last=1")
    assert [d["backup_id"] for d in after.deleted] == [new]
    assert after.chunks_deleted == 2 and after.bytes_freed > 2 * 3000 * 0.5  # s, b
    assert set(repo.list_chunks()) == chunks_of(repo, latest)
    assert repo.chunk_id(block("s")) not in set(repo.list_chunks())
    assert verify_backup(repo, latest, 2, job("verify"), threading.Event()) == []


def test_a_backup_waits_while_a_prune_deletes_chunks(key: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(locks, "WAIT_POLL", 0.01)
    store = local_store(tmp_path)
    repo = create(store, key)
    back_up(repo, tmp_path, "2026-11-01 10:00", "a", "s")
    new = back_up(repo, tmp_path, "2026-11-02 10:00", "b")

    # The prune saw no backup lock and is about to delete the chunks of the dropped backup.
    pruning_store = Gate(store, stop_at=("delete", "chunks/"))
    pruning = Repository.open(pruning_store, KeySource(str(key)))
    pruned = Background(lambda: prune(pruning, "last=1"))
    assert pruning_store.reached.wait(120)

    # A backup of the same content starts now: it must not list the chunks (and later
    # rely on ``a``) before the prune is done.
    backing_up = Gate(store)
    running = Repository.open(backing_up, KeySource(str(key)))
    snapshot = snapshot_of(tmp_path, "waiting", "a", "b")
    upload = Background(lambda: upload_snapshot(running, snapshot, 2, job(), threading.Event(),
                                                now=at("2026-11-03 10:00")))
    backing_up.wait_for(lambda calls: calls.count(("list", "locks")) >= 3)
    assert ("list", "chunks") not in backing_up.calls
    assert [c for c in backing_up.calls if c[0] == "write"][0][1].startswith("locks/backup-")

    pruning_store.go.set()
    report = pruned.result()
    assert report.chunks_deleted == 2 and report.chunks_skipped == ""
    latest = upload.result()
    assert backing_up.calls.index(("list", "chunks")) > 2
    assert set(repo.list_backups()) == {new, latest}
    assert verify_backup(repo, latest, 2, job("verify"), threading.Event()) == []
    assert store.list("locks") == []


def write_lock(store: Store, name: str, kind: str, when: datetime) -> str:
    key = f"locks/{name}.json"
    store.write(key, json.dumps({"kind": kind, "host": "gone", "pid": 4242,
                                 "time": f"{when:%Y-%m-%dT%H:%M:%SZ}"}).encode())
    return key


def test_a_stale_backup_lock_is_ignored_and_removed(key: Path, tmp_path: Path) -> None:
    store = local_store(tmp_path)
    repo = create(store, key)
    back_up(repo, tmp_path, "2026-11-01 10:00", "a")
    back_up(repo, tmp_path, "2026-11-02 10:00", "b")
    now = datetime.now(UTC).timestamp()
    dead = write_lock(store, "backup-dead", "backup", datetime.fromtimestamp(
        now - locks.STALE_AFTER - 1, UTC))

    dry = prune(repo, "last=1", dry_run=True)
    assert dry.stale_locks_removed == [dead] and store.list("locks") == [dead]
    report = prune(repo, "last=1", clock=lambda: now)
    assert report.chunks_deleted == 1 and report.chunks_skipped == ""
    assert report.stale_locks_removed == [dead]
    assert store.list("locks") == []


def test_fresh_and_unreadable_locks_keep_every_chunk(key: Path, tmp_path: Path) -> None:
    store = local_store(tmp_path)
    repo = create(store, key)
    back_up(repo, tmp_path, "2026-11-01 10:00", "a")
    back_up(repo, tmp_path, "2026-11-02 10:00", "b")
    now = datetime(2026, 11, 3, 10, 0, tzinfo=UTC).timestamp()
    fresh = write_lock(store, "backup-elsewhere", "backup",
                       datetime.fromtimestamp(now - locks.STALE_AFTER + 1, UTC))
    report = prune(repo, "last=1", clock=lambda: now)
    assert report.deleted and report.chunks_deleted == 0
    assert "host gone, pid 4242" in report.chunks_skipped
    store.delete(fresh)
    store.write("locks/garbage.json", b"not json")
    back_up(repo, tmp_path, "2026-11-03 11:00", "c")
    report = prune(repo, "last=1", clock=lambda: now)
    assert report.chunks_deleted == 0 and "unreadable lock locks/garbage.json" in \
        report.chunks_skipped
    assert store.list("locks") == ["locks/garbage.json"]


def test_another_prune_is_refused_a_stale_one_is_not(key: Path, tmp_path: Path) -> None:
    store = local_store(tmp_path)
    repo = create(store, key)
    back_up(repo, tmp_path, "2026-11-01 10:00", "a")
    with locks.RepoLock(store, locks.PRUNE):
        with pytest.raises(PruneError, match="another prune is running: prune lock locks/"):
            prune(repo, "last=1")
        with pytest.raises(PruneError, match="another prune is running"):
            prune(repo, "last=1", dry_run=True)
        # A backup would wait for it; with stop set, wait_for_prune says it did not get past.
        with locks.RepoLock(store, locks.BACKUP) as own:
            stopped = threading.Event()
            stopped.set()
            assert locks.wait_for_prune(store, own, stopped) is False
    old = datetime.now(UTC).timestamp() - locks.STALE_AFTER - 1
    write_lock(store, "prune-dead", "prune", datetime.fromtimestamp(old, UTC))
    with locks.RepoLock(store, locks.BACKUP) as own:
        assert locks.wait_for_prune(store, own, threading.Event()) is True
    assert prune(repo, "last=1").stale_locks_removed == ["locks/prune-dead.json"]


def test_a_lock_not_refreshed_in_time_is_lost(tmp_path: Path) -> None:
    store = local_store(tmp_path)
    now = [1_800_000_000.0]
    lock = locks.RepoLock(store, locks.BACKUP, clock=lambda: now[0], refresh_every=3600)
    with lock:
        (info,) = locks.list_locks(store, clock=lambda: now[0])
        assert (info.kind, info.stale, info.pid) == ("backup", False, os.getpid())
        now[0] += locks.LOST_AFTER - 1
        lock.check()
        now[0] += 1
        with pytest.raises(locks.LockLost, match="could not be rewritten"):
            lock.check()
        now[0] += locks.STALE_AFTER
        assert locks.list_locks(store, clock=lambda: now[0])[0].stale


def test_a_backup_whose_lock_was_lost_writes_no_manifest(key: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = local_store(tmp_path)
    repo = create(store, key)
    monkeypatch.setattr(locks, "LOST_AFTER", 0.0)
    with pytest.raises(locks.LockLost):
        back_up(repo, tmp_path, "2026-11-01 10:00", "a")
    assert repo.list_backups() == []
    assert store.list("locks") == []  # released on failure too


# -- KVCLOUD PRUNE and kvrocks-cloud prune -------------------------------------------------


def cloud(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvproxy.cloud_cli", *args], text=True,
                          capture_output=True, timeout=300)


def fields(reply: list[Any]) -> dict[bytes, Any]:
    return dict(zip(reply[0::2], reply[1::2], strict=True))


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_kvcloud_prune(make_upstream, make_proxy, key: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    client = server.client()
    bucket = tmp_path / "bucket"
    conf = (f"[kvcloud]\nencryption_key_file = {key}\nretention = last=1\n"
            f"[provider local]\ntype = file\npath = {bucket}\n"
            f"[provider mirror]\ntype = file\npath = {tmp_path / 'mirror'}\nactions = restore\n")
    proxy = make_proxy(server.port, conf)
    admin = proxy.client()
    for round_ in range(2):
        client.mset({f"p{round_}:{i}": os.urandom(200) for i in range(500)})
        assert admin.execute_command("KVCLOUD", "UPLOAD", "local", "WAIT")[1] == b"succeeded"
    listed = [fields(row)[b"backup_id"] for row in admin.execute_command("KVCLOUD", "LIST",
                                                                         "local")]
    assert len(listed) == 2
    before = files(bucket)

    dry = fields(admin.execute_command("KVCLOUD", "PRUNE", "DRYRUN", "WAIT"))
    assert dry[b"state"] == b"succeeded" and dry[b"operation"] == b"prune", dry
    assert dry[b"results"].startswith(b"local: kept 1, would delete 1 backup and ")
    assert dry[b"backup_id"] == listed[1]
    assert files(bucket) == before

    done = fields(admin.execute_command("KVCLOUD", "prune", "local", "wait"))
    assert done[b"state"] == b"succeeded", done
    assert done[b"results"].startswith(b"local: kept 1, deleted 1 backup and ")
    assert done[b"providers"] == b"local"
    rows = admin.execute_command("KVCLOUD", "LIST", "local")
    assert [fields(row)[b"backup_id"] for row in rows] == [listed[0]]
    assert fields(admin.execute_command("KVCLOUD", "VERIFY", "local", "ALL", "WAIT"))[
        b"results"] == b"local: sound"

    job_id = admin.execute_command("KVCLOUD", "PRUNE")
    assert job_id.startswith(b"prune-")
    with pytest.raises(redis.ResponseError, match="provider mirror does not allow upload"):
        admin.execute_command("KVCLOUD", "PRUNE", "mirror")
    assert proxy.conf_path is not None
    proxy.conf_path.write_text(conf.replace("retention = last=1", "retention = last=0"))
    assert admin.execute_command("KVCLOUD", "REFRESH")[1] == b"reloaded"
    with pytest.raises(redis.ResponseError, match="keeps no backup: prune refuses"):
        admin.execute_command("KVCLOUD", "PRUNE", "WAIT")
    assert "DRYRUN" in HELP["PRUNE"]


def test_cli_prune(key: Path, tmp_path: Path) -> None:
    bucket = tmp_path / "bucket"
    conf = tmp_path / "kvcloud.conf"
    conf.write_text(f"[kvcloud]\nencryption_key_file = {key}\nretention = last=3\n"
                    f"[provider local]\ntype = file\npath = {bucket}\n")
    for n in range(3):
        directory = tmp_path / f"snap{n}"
        directory.mkdir()
        (directory / "data").write_bytes(os.urandom(5000))
        result = cloud("backup", "--conf", str(conf), "-d", str(directory))
        assert result.returncode == 0, result.stderr
    before = files(bucket)

    kept_all = cloud("prune", "--conf", str(conf))
    assert kept_all.returncode == 0, kept_all.stderr
    assert "kept 3, deleted 0 backups" in kept_all.stdout

    dry = cloud("prune", "--conf", str(conf), "--retention", "last=1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run, nothing is deleted" in dry.stdout
    assert dry.stdout.count("would delete  ") == 2 and "last 1" in dry.stdout
    assert files(bucket) == before

    real = cloud("prune", "--conf", str(conf), "--retention", "last=1", "--json")
    assert real.returncode == 0, real.stderr
    (report,) = json.loads(real.stdout)
    assert report["provider"] == "local" and len(report["deleted"]) == 2
    assert report["kept"][0]["reasons"] == ["last 1"] and report["chunks_deleted"] >= 2
    listed = json.loads(cloud("list", "--conf", str(conf), "--json").stdout)
    assert [row["backup_id"] for row in listed] == [report["kept"][0]["backup_id"]]

    refused = cloud("prune", "--conf", str(conf), "--retention", "daily=0")
    assert refused.returncode == 2 and "keeps no backup" in refused.stderr
    bad = cloud("prune", "--conf", str(conf), "--retention", "yearly=1")
    assert bad.returncode == 2 and "unknown retention rule 'yearly'" in bad.stderr
    assert "Traceback" not in refused.stderr + bad.stderr


def test_prune_of_a_provider_without_a_repository(tmp_path: Path) -> None:
    conf = tmp_path / "kvcloud.conf"
    conf.write_text(f"[kvcloud]\n[provider local]\ntype = file\npath = {tmp_path / 'b'}\n")
    (tmp_path / "b").mkdir()
    result = cloud("prune", "--conf", str(conf))
    assert result.returncode == 0, result.stderr
    assert "nothing to prune" in result.stdout
