"""The backup pipeline on a local-directory repository: dedup, hashes, no plaintext."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import fsspec
import pytest

from kvproxy.jobs.status import JobStatus
from kvproxy.jobs.upload import Stopped, upload_snapshot
from kvproxy.repo.chunker import ChunkerParams
from kvproxy.repo.keys import KeySource
from kvproxy.repo.repository import Repository
from kvproxy.storage import Store
from kvproxy.upstream.snapshot import directory_snapshot

MARKER = b"plaintext-marker-7f3a"


def make_checkpoint(directory: Path, size: int = 12 * 1024 * 1024) -> None:
    directory.mkdir()
    (directory / "CURRENT").write_bytes(b"MANIFEST-000005\n")
    data = bytearray(os.urandom(size))
    for offset in range(0, size, 1024 * 1024):
        data[offset:offset + len(MARKER)] = MARKER
    (directory / "000010.sst").write_bytes(bytes(data))


def test_upload_dedups_and_commits_with_a_manifest(tmp_path: Path) -> None:
    store = Store(fsspec.filesystem("file"), str(tmp_path / "bucket" / "prefix"), "local")
    key = tmp_path / "key"
    key.write_bytes(os.urandom(32))
    # Small chunks, so that 12 MiB make dozens of them whatever the random data.
    small = ChunkerParams(min_size=64 * 1024, avg_size=256 * 1024, max_size=1024 * 1024)
    repo = Repository.create(store, "prefix", "aes-256-gcm", "zstd:3", KeySource(str(key)),
                             chunker=small)
    checkpoint = tmp_path / "ckpt"
    make_checkpoint(checkpoint)
    snapshot = directory_snapshot(checkpoint)

    first = JobStatus("j1", "upload", ["local"])
    backup_id = upload_snapshot(repo, snapshot, 4, first, threading.Event())
    manifest = repo.read_manifest(backup_id)
    for entry in manifest.files:
        data = (checkpoint / entry.name).read_bytes()
        assert entry.sha256 == hashlib.sha256(data).hexdigest()
        assert b"".join(repo.get_chunk(ref.id) for ref in entry.chunks) == data
    assert first.bytes_done == sum(e.size for e in manifest.files)
    assert first.bytes_uploaded > 0 and first.bytes_deduplicated == 0

    for path in (tmp_path / "bucket").rglob("*"):
        if path.is_file():
            assert MARKER not in path.read_bytes(), path

    second = JobStatus("j2", "upload", ["local"])
    upload_snapshot(repo, snapshot, 4, second, threading.Event())
    assert second.bytes_uploaded == 0
    assert second.bytes_deduplicated == second.bytes_done == first.bytes_done

    sst = checkpoint / "000010.sst"
    changed = bytearray(sst.read_bytes())
    changed[5_000_000:5_000_100] = os.urandom(100)
    sst.write_bytes(bytes(changed))
    third = JobStatus("j3", "upload", ["local"])
    upload_snapshot(repo, snapshot, 4, third, threading.Event())
    assert 0 < third.bytes_uploaded < first.bytes_uploaded / 10
    assert len(repo.list_backups()) == 3


def test_stop_leaves_no_manifest(tmp_path: Path) -> None:
    store = Store(fsspec.filesystem("file"), str(tmp_path / "bucket"), "local")
    repo = Repository.create(store, "p", "none", "zstd:3")
    make_checkpoint(tmp_path / "ckpt")
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        upload_snapshot(repo, directory_snapshot(tmp_path / "ckpt"), 2,
                        JobStatus("j", "upload", ["local"]), stop)
    assert repo.list_backups() == []
