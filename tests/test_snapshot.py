"""Snapshots from real servers: BGSAVE waited for, files pinned, backup-dir untouched."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from kvproxy.upstream.control import Control
from kvproxy.upstream.keycount import KeyCount
from kvproxy.upstream.snapshot import (
    KVROCKS_CHECKPOINT,
    REDIS_RDB,
    SnapshotError,
    directory_snapshot,
    take_snapshot,
)
from tests.servers import Upstream


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def snapshot_of(server: Upstream, staging: Path, source: str = "auto"):  # type: ignore[no-untyped-def]
    async with Control(("127.0.0.1", server.port), server.password) as control:
        return await take_snapshot(control, source, staging)


def test_redis_rdb_is_saved_and_pinned(make_upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    client = server.client()
    client.mset({f"snap:{i}": i for i in range(1000)})
    client.set("snap:ttl", 1, ex=3600)
    snapshot = asyncio.run(snapshot_of(server, tmp_path / "staging"))
    assert snapshot.kind == REDIS_RDB
    assert snapshot.keys == KeyCount(1001, 1)  # nothing written during the save
    assert snapshot.files == ["dump.rdb"]
    pinned = snapshot.root / "dump.rdb"
    original = server.directory / "dump.rdb"
    assert os.path.samefile(pinned, original)  # a hard link, not a copy
    before = digest(pinned)
    client.set("snap:changed", "yes")
    client.bgsave()  # replaces dump.rdb with a new file
    asyncio.run(asyncio.sleep(0.5))
    assert digest(pinned) == before
    assert snapshot.server_version.startswith("7.")
    snapshot.release()
    assert not (tmp_path / "staging").exists()
    assert original.exists()


def test_waits_for_a_save_already_running(make_upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    client = server.client()
    client.set("before", "1")
    client.bgsave()
    first = client.lastsave()
    snapshot = asyncio.run(snapshot_of(server, tmp_path / "staging", "redis"))
    assert client.lastsave() > first  # our own save ran after the one in progress
    snapshot.release()


def test_failed_bgsave_is_reported(make_upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream(extra=["--enable-protected-configs", "yes"])
    gone = tmp_path / "gone"
    gone.mkdir()
    client = server.client()
    client.config_set("dir", str(gone))
    gone.rmdir()
    with pytest.raises(SnapshotError, match="BGSAVE failed"):
        asyncio.run(snapshot_of(server, tmp_path / "staging", "redis"))
    assert not (tmp_path / "staging").exists()


def test_kvrocks_checkpoint_pinned_against_the_next_bgsave(make_upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream("kvrocks")
    client = server.client()
    client.mset({f"kv:{i}": "x" * 100 for i in range(2000)})
    client.set("kv:ttl", 1, ex=3600)
    snapshot = asyncio.run(snapshot_of(server, tmp_path / "staging"))
    assert snapshot.kind == KVROCKS_CHECKPOINT
    assert snapshot.keys == KeyCount(2001, 1)  # counted by a DBSIZE SCAN after the save
    assert "CURRENT" in snapshot.files
    assert any(name.startswith("MANIFEST-") for name in snapshot.files)
    backup_dir = Path(snapshot.details["backup_dir"])
    assert sorted(p.name for p in backup_dir.iterdir()) == snapshot.files  # nothing added
    digests = {name: digest(snapshot.root / name) for name in snapshot.files}
    client.set("kv:new", "y")
    client.execute_command("BGSAVE")  # deletes the old checkpoint, builds a new one
    asyncio.run(asyncio.sleep(1.0))
    assert {name: digest(snapshot.root / name) for name in snapshot.files} == digests
    snapshot.release()


def test_directory_snapshot(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "CURRENT").write_text("MANIFEST-000001\n")
    (checkpoint / "000001.sst").write_bytes(b"x" * 10)
    snapshot = directory_snapshot(checkpoint)
    assert snapshot.kind == KVROCKS_CHECKPOINT and snapshot.files == ["000001.sst", "CURRENT"]
    assert snapshot.pinned is None
    rdb = tmp_path / "dump.rdb"
    rdb.write_bytes(b"REDIS0011")
    assert directory_snapshot(rdb).files == ["dump.rdb"]
    with pytest.raises(SnapshotError, match="no such file"):
        directory_snapshot(tmp_path / "missing")
