"""A consistent copy of the server's data, pinned so nothing can pull it away.

Kvrocks keeps exactly one checkpoint in ``backup-dir`` and the next BGSAVE
(anyone's, or its own ``bgsave-cron``) deletes it; Redis overwrites its RDB
file. So the moment a save ends, its files are hard-linked (copied when
linking fails) into a staging directory of the proxy's own, and the upload
reads only from there. Nothing is ever written inside ``backup-dir``: a
foreign file there makes Kvrocks' next BGSAVE fail after it already deleted
the old checkpoint.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kvproxy.upstream.control import Control, ControlError
from kvproxy.upstream.keycount import KeyCount, count_or_none

log = logging.getLogger("kvproxy.snapshot")

KVROCKS_CHECKPOINT = "kvrocks-checkpoint"
REDIS_RDB = "redis-rdb"
DIRECTORY = "directory"


class SnapshotError(Exception):
    """No snapshot could be taken; the message says why and what to change."""


@dataclass
class Snapshot:
    """Files to back up: ``root``/name for each of ``files``."""

    kind: str
    root: Path
    files: list[str]
    server_version: str = ""
    sequence: int | None = None
    #: The server's key count, when it is known to be the snapshot's own
    #: (no write between the save and the count).
    keys: KeyCount | None = None
    #: The staging directory this snapshot owns (None: files are the caller's).
    pinned: Path | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def release(self) -> None:
        """Drop the pinned copy; the server's own files are never touched."""
        if self.pinned is not None:
            shutil.rmtree(self.pinned, ignore_errors=True)
            self.pinned = None


@dataclass(frozen=True)
class SaveFields:
    """Where a server reports its background save in INFO persistence."""

    in_progress: str
    last_time: str
    status: str


KVROCKS_FIELDS = SaveFields("bgsave_in_progress", "last_bgsave_time", "last_bgsave_status")
REDIS_FIELDS = SaveFields("rdb_bgsave_in_progress", "rdb_last_save_time",
                          "rdb_last_bgsave_status")


async def detect_kind(control: Control) -> str:
    """``source = auto``: Kvrocks reports kvrocks_version in INFO server."""
    server = await control.info("server")
    return KVROCKS_CHECKPOINT if "kvrocks_version" in server else REDIS_RDB


async def take_snapshot(control: Control, source: str, staging: Path,
                        poll: float = 0.05, timeout: float = 3600.0) -> Snapshot:
    """BGSAVE, wait for it, pin its files under ``staging`` (which must not exist)."""
    kind = await detect_kind(control) if source == "auto" else _kind_of(source)
    server = await control.info("server")
    version = str(server.get("kvrocks_version") or server.get("redis_version") or "")
    if kind == KVROCKS_CHECKPOINT:
        written = await _sequence(control)
        await _bgsave(control, KVROCKS_FIELDS, poll, timeout)
        backup_dir = Path(await control.config_get("backup-dir"))
        names = _checkpoint_files(backup_dir)
        _pin(backup_dir, names, staging)
        count = await count_or_none(control, kvrocks=True)
        sequence = await _sequence(control)
        snapshot = Snapshot(kind, staging, names, version, sequence, count, staging,
                            {"backup_dir": str(backup_dir)})
        if sequence is None or sequence != written:  # written to while saving
            snapshot.keys = None
    else:
        before = await count_or_none(control, kvrocks=False)
        await _bgsave(control, REDIS_FIELDS, poll, timeout)
        directory = Path(await control.config_get("dir"))
        rdb = await control.config_get("dbfilename")
        if not (directory / rdb).is_file():
            raise SnapshotError(
                f"the server saved {directory / rdb}, which is not on this machine: run the "
                "proxy on the server's host")
        _pin(directory, [rdb], staging)
        after = await count_or_none(control, kvrocks=False)
        snapshot = Snapshot(kind, staging, [rdb], version, None,
                            after if after == before else None, staging,
                            {"rdb": str(directory / rdb)})
    log.info("snapshot pinned: %s, %d files in %s", kind, len(snapshot.files), staging)
    return snapshot


def directory_snapshot(path: Path) -> Snapshot:
    """``-d``: a checkpoint or RDB already on disk, read where it is."""
    if path.is_file():
        return Snapshot(REDIS_RDB, path.parent, [path.name])
    if not path.is_dir():
        raise SnapshotError(f"{path}: no such file or directory")
    names = sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())
    if not names:
        raise SnapshotError(f"{path}: nothing to back up (the directory is empty)")
    kind = KVROCKS_CHECKPOINT if "CURRENT" in names else DIRECTORY
    return Snapshot(kind, path, names)


def _kind_of(source: str) -> str:
    kinds = {"kvrocks-local": KVROCKS_CHECKPOINT, "redis": REDIS_RDB}
    if source not in kinds:
        raise SnapshotError(f"source = {source} cannot take a snapshot from the server "
                            "(use auto, kvrocks-local or redis)")
    return kinds[source]


async def _bgsave(control: Control, fields: SaveFields, poll: float, timeout: float) -> None:
    """Start a save of our own and wait until it is finished and fresh.

    A save already running is waited for first: its data may be older than
    the request. Save times have one-second resolution, so ours starts at
    least a second after the last one, or its end could not be told apart.
    """
    deadline = time.monotonic() + timeout
    info = await _wait_idle(control, fields, poll, deadline)
    before = int(info.get(fields.last_time, 0))
    while True:
        wait = before + 1 - time.time()
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            await control.call("BGSAVE")
            break
        except ControlError as exc:
            if "progress" not in str(exc):  # another save slipped in: wait for it
                raise SnapshotError(f"BGSAVE refused: {exc}") from None
            info = await _wait_idle(control, fields, poll, deadline)
            before = int(info.get(fields.last_time, 0))
    while True:
        info = await _wait_idle(control, fields, poll, deadline)
        if str(info.get(fields.status)) == "err":
            raise SnapshotError(f"BGSAVE failed on the server ({fields.status}:err); "
                                "see the server's log")
        if int(info.get(fields.last_time, 0)) > before:
            return
        await asyncio.sleep(poll)
        if time.monotonic() > deadline:
            raise SnapshotError(f"BGSAVE did not finish within {timeout:g}s")


async def _wait_idle(control: Control, fields: SaveFields, poll: float,
                     deadline: float) -> dict[str, Any]:
    while True:
        info = await control.info("persistence")
        if fields.in_progress not in info:
            raise SnapshotError(f"the server reports no {fields.in_progress} in INFO "
                                "persistence: wrong source for this server?")
        if not int(info[fields.in_progress]):
            return info
        if time.monotonic() > deadline:
            raise SnapshotError("a BGSAVE on the server did not finish in time")
        await asyncio.sleep(poll)


def _checkpoint_files(backup_dir: Path) -> list[str]:
    if not backup_dir.is_dir():
        raise SnapshotError(
            f"Kvrocks' backup-dir {backup_dir} is not on this machine: run the proxy on the "
            "Kvrocks host for source = kvrocks-local")
    names = sorted(p.name for p in backup_dir.iterdir() if p.is_file())
    if "CURRENT" not in names:
        raise SnapshotError(f"{backup_dir} holds no RocksDB checkpoint (no CURRENT file)")
    return names


def _pin(source: Path, names: list[str], staging: Path) -> None:
    """Hard links into ``staging`` (copies across filesystems); nothing written in ``source``."""
    staging.mkdir(parents=True)
    copied = 0
    try:
        for name in names:
            target = staging / name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source / name, target)
            except FileNotFoundError:
                raise SnapshotError(f"{source / name} vanished while pinning: another save "
                                    "replaced the checkpoint; try again") from None
            except OSError:
                shutil.copy2(source / name, target)
                copied += 1
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if copied:
        log.info("copied %d of %d files into %s: put state_dir on the server's filesystem "
                 "to pin with hard links instead", copied, len(names), staging)


async def _sequence(control: Control) -> int | None:
    """Kvrocks' WAL sequence number, for the manifest (None when not reported)."""
    try:
        keyspace = await control.info("keyspace")
    except ControlError:
        return None
    value = keyspace.get("sequence")
    return int(value) if value is not None else None
