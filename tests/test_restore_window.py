"""Restore's and verify's read path: bounded memory, and a file checked as a whole.

Unit tests on fsspec's memory filesystem (nothing here claims to talk to a cloud):
a file of many small chunks, a repository whose ``get_chunk`` records how far the
downloads ran ahead of what the caller had already consumed, and a manifest whose
file hash does not match its (sound) chunks.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from kvproxy.jobs.restore import RestoreError, restore_backup
from kvproxy.jobs.status import JobStatus
from kvproxy.jobs.verify import verify_backup
from kvproxy.repo.manifest import ChunkRef, FileEntry, Manifest
from kvproxy.repo.repository import Repository
from kvproxy.storage.store import Store

CHUNK = 1024
CHUNKS = 200
PARALLELISM = 4


def backup_of_many_chunks(repo: Repository, sha256: str | None = None) -> tuple[str, bytes]:
    """One file of CHUNKS chunks; ``sha256`` replaces its true hash in the manifest."""
    data = os.urandom(CHUNK * CHUNKS)
    refs = []
    for offset in range(0, len(data), CHUNK):
        piece = data[offset:offset + CHUNK]
        chunk_id = repo.chunk_id(piece)
        repo.put_chunk(chunk_id, piece)
        refs.append(ChunkRef(chunk_id, len(piece)))
    entry = FileEntry("dump.rdb", len(data), 0o600, sha256 or hashlib.sha256(data).hexdigest(),
                      tuple(refs))
    manifest = Manifest.new(source="redis-rdb", server_version="7.0", encrypted=False,
                            compression="none", files=[entry], new_chunks=CHUNKS,
                            stored_bytes=0)
    return repo.write_manifest(manifest), data


def watch_ahead(repo: Repository, status: JobStatus) -> list[int]:
    """Each get_chunk call records chunks fetched minus chunks the caller consumed."""
    lock = threading.Lock()
    fetched = [0]
    ahead: list[int] = []
    fetch: Callable[[str], bytes] = repo.get_chunk

    def counting(chunk_id: str) -> bytes:
        with lock:
            fetched[0] += 1
            ahead.append(fetched[0] - status.bytes_done // CHUNK)
        return fetch(chunk_id)

    repo.get_chunk = counting  # type: ignore[method-assign]
    return ahead


@pytest.mark.parametrize("operation", ["restore", "verify"])
def test_downloads_stay_a_bounded_window_ahead(store: Store, tmp_path: Path,
                                               operation: str) -> None:
    repo = Repository.create(store, "window", "none", "none")
    backup_id, data = backup_of_many_chunks(repo)
    status = JobStatus("job", operation, ["memory"])
    ahead = watch_ahead(repo, status)
    stop = threading.Event()
    if operation == "restore":
        restore_backup(repo, backup_id, tmp_path / "restored", PARALLELISM, status, stop)
        assert (tmp_path / "restored" / "dump.rdb").read_bytes() == data
    else:
        assert verify_backup(repo, backup_id, PARALLELISM, status, stop) == []
    assert len(ahead) == CHUNKS and status.bytes_done == len(data)
    assert max(ahead) <= PARALLELISM + 1, max(ahead)


def test_a_file_whose_chunks_are_sound_but_not_the_manifests_is_refused(store: Store,
                                                                        tmp_path: Path) -> None:
    repo = Repository.create(store, "window", "none", "none")
    backup_id, _ = backup_of_many_chunks(repo, sha256="0" * 64)
    status = JobStatus("job", "restore", ["memory"])
    with pytest.raises(RestoreError, match="dump.rdb: restored content does not match"):
        restore_backup(repo, backup_id, tmp_path / "restored", PARALLELISM, status,
                       threading.Event())
    assert list(tmp_path.iterdir()) == []  # no target, no staging directory
    problems = verify_backup(repo, backup_id, PARALLELISM, JobStatus("job", "verify", []),
                             threading.Event())
    assert problems == ["dump.rdb: content does not match the manifest"]
