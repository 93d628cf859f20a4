"""Put one pinned snapshot into one repository: the backup pipeline.

chunk -> skip chunks the repository has -> seal (compress, encrypt) -> put,
with ``parallelism`` workers, then the manifest, last, all under a backup
lock (``kvproxy.repo.locks``) so a prune never deletes a chunk in use. At most
``parallelism + 1`` chunks are in memory at once, and a file is never read
whole. Hashing, compression and encryption release the GIL, so the workers
use both cores while the proxy's event loop keeps forwarding.
"""

from __future__ import annotations

import hashlib
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

from kvproxy.jobs.status import JobStatus
from kvproxy.repo import locks
from kvproxy.repo.manifest import ChunkRef, FileEntry, Manifest
from kvproxy.repo.repository import Repository
from kvproxy.upstream.keycount import as_record
from kvproxy.upstream.snapshot import Snapshot


class Stopped(Exception):
    """The job was cancelled; no manifest was written."""


@dataclass
class _Counters:
    new_chunks: int = 0
    stored_bytes: int = 0


class _Uploads:
    """The worker pool, its in-memory budget, and the first failure."""

    def __init__(self, repo: Repository, parallelism: int, status: JobStatus,
                 stop: threading.Event) -> None:
        self.repo = repo
        self.status = status
        self.stop = stop
        self.pool = ThreadPoolExecutor(parallelism, thread_name_prefix="kvcloud-put")
        self.slots = threading.BoundedSemaphore(parallelism + 1)
        self.lock = threading.Lock()
        self.counters = _Counters()
        self.failure: BaseException | None = None
        self.futures: list[Future[int]] = []

    def put(self, chunk_id: str, data: bytes) -> None:
        while not self.slots.acquire(timeout=0.1):
            self.check()
        future = self.pool.submit(self.repo.put_chunk, chunk_id, data)
        size = len(data)
        future.add_done_callback(lambda done: self._finished(done, size))
        self.futures.append(future)

    def _finished(self, future: Future[int], size: int) -> None:
        self.slots.release()
        if future.cancelled():  # the job is already failing or stopping
            return
        error = future.exception()
        with self.lock:
            if error is not None:
                self.failure = self.failure or error
                return
            stored = future.result()
            self.counters.new_chunks += 1
            self.counters.stored_bytes += stored
            self.status.bytes_uploaded += stored
            self.status.bytes_done += size

    def check(self) -> None:
        if self.stop.is_set():
            raise Stopped("cancelled")
        if self.failure is not None:
            raise self.failure

    def finish(self) -> None:
        for future in self.futures:
            while True:
                self.check()
                try:
                    future.result(timeout=0.1)
                    break
                except TimeoutError:
                    continue
                except Exception:  # noqa: BLE001 - reported through check()
                    break
        self.check()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def upload_snapshot(repo: Repository, snapshot: Snapshot, parallelism: int,
                    status: JobStatus, stop: threading.Event, *,
                    now: datetime | None = None) -> str:
    """Back ``snapshot`` up into ``repo``; returns the new backup id.

    Blocking: run it in a thread. Raises Stopped when ``stop`` is set, and
    the first storage error otherwise; either way no manifest exists.
    Holds a backup lock from before the chunks are listed until the manifest
    is written, waiting first while a prune runs (``repo.locks``). ``now``
    is the backup's time (default: when the manifest is made).
    """
    with locks.RepoLock(repo.store, locks.BACKUP, job=status.job_id) as lock:
        if not locks.wait_for_prune(repo.store, lock, stop):
            raise Stopped("cancelled")
        return _upload(repo, snapshot, parallelism, status, stop, lock, now)


def _upload(repo: Repository, snapshot: Snapshot, parallelism: int, status: JobStatus,
            stop: threading.Event, lock: locks.RepoLock, now: datetime | None) -> str:
    known = set(repo.list_chunks())
    chunker = repo.chunker()
    uploads = _Uploads(repo, parallelism, status, stop)
    files: list[FileEntry] = []
    try:
        for name in snapshot.files:
            path = snapshot.root / name
            stat = path.stat()
            digest = hashlib.sha256()
            refs: list[ChunkRef] = []
            for _offset, data in chunker.file_chunks(path):
                uploads.check()
                digest.update(data)
                chunk_id = repo.chunk_id(data)
                refs.append(ChunkRef(chunk_id, len(data)))
                if chunk_id in known:
                    status.bytes_deduplicated += len(data)
                    status.bytes_done += len(data)
                    continue
                known.add(chunk_id)
                uploads.put(chunk_id, data)
            files.append(FileEntry(name, stat.st_size, stat.st_mode & 0o7777,
                                   digest.hexdigest(), tuple(refs)))
        uploads.finish()
    finally:
        uploads.close()
    manifest = Manifest.new(
        source=snapshot.kind, server_version=snapshot.server_version,
        encrypted=repo.encrypted, compression=repo.compression, files=files,
        new_chunks=uploads.counters.new_chunks, stored_bytes=uploads.counters.stored_bytes,
        sequence=snapshot.sequence, keys=as_record(snapshot.keys), now=now)
    if stop.is_set():  # the last moment a cancel can still leave no backup
        raise Stopped("cancelled")
    lock.check()  # every chunk this backup relies on was protected all along
    return repo.write_manifest(manifest)
