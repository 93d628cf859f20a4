"""Files from their chunks: the read side of restore (and, without writing, of verify).

Three kinds of work overlap, because on a small machine a restore is bound
by CPU and by the disk, not by the network alone:

- ``parallelism`` threads download and open chunks (AEAD, zstd, chunk id),
  one stream in manifest order across all files, a bounded window ahead;
- the calling thread hashes each file in order (SHA-256 is sequential);
- one disk thread writes, then fsyncs and closes each finished file while
  the next one is being fetched (an fsync in the calling thread stopped
  every download for the length of a flush, once per file).

Memory stays bounded whatever the file sizes: ``window`` chunks fetched
ahead, ``DISK_QUEUE`` waiting to be written, one being hashed.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from io import BufferedWriter
from pathlib import Path
from typing import Protocol

from kvproxy.jobs.heap import limit_arenas
from kvproxy.jobs.status import JobStatus
from kvproxy.jobs.upload import Stopped
from kvproxy.repo.manifest import ChunkRef, FileEntry

#: Chunks handed to the disk thread and not yet written; the page cache takes them
#: far faster than they arrive, so a short queue keeps the disk busy.
DISK_QUEUE = 2


class ChunkSource(Protocol):
    def get_chunk(self, chunk_id: str) -> bytes: ...


class Mismatch(Exception):
    """A file's restored content differs from its manifest entry (size or SHA-256)."""


def fetch_ahead(repo: ChunkSource, pool: ThreadPoolExecutor, window: int,
                refs: Iterable[ChunkRef], stop: threading.Event) -> Iterator[Future[bytes]]:
    """Each chunk's download, in order, with up to ``window`` started ahead.

    The caller takes each result before asking for the next, so at most
    ``window + 1`` chunks are in memory however large the files.
    """
    pending: deque[Future[bytes]] = deque()
    upcoming = iter(refs)
    for ref in itertools.islice(upcoming, window):
        pending.append(pool.submit(repo.get_chunk, ref.id))
    while pending:
        if stop.is_set():
            raise Stopped("cancelled")
        yield pending.popleft()
        following = next(upcoming, None)
        if following is not None:
            pending.append(pool.submit(repo.get_chunk, following.id))


class _Disk:
    """The one thread that writes, fsyncs and closes files, in the order asked."""

    def __init__(self) -> None:
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="kvcloud-write")
        self.queued: deque[Future[None]] = deque()
        self.open: list[BufferedWriter] = []

    def write(self, handle: BufferedWriter, data: bytes) -> None:
        self.queued.append(self.thread.submit(_write, handle, data))
        while len(self.queued) > DISK_QUEUE:
            self.queued.popleft().result()

    def finish(self, handle: BufferedWriter, mode: int) -> None:
        self.queued.append(self.thread.submit(_finish, handle, mode))

    def wait(self) -> None:
        """Every write done; the first failure raised."""
        while self.queued:
            self.queued.popleft().result()

    def close(self) -> None:
        """After a failure too: nothing left running, every file closed."""
        self.thread.shutdown(wait=True, cancel_futures=True)
        for handle in self.open:
            handle.close()


def _write(handle: BufferedWriter, data: bytes) -> None:
    handle.write(data)


def _finish(handle: BufferedWriter, mode: int) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()
    os.chmod(handle.name, mode)


def assemble(entries: list[tuple[FileEntry, Path]], repo: ChunkSource, parallelism: int,
             status: JobStatus, stop: threading.Event) -> None:
    """Write each entry's file at its path from its chunks, every file checked and
    fsynced; Mismatch names a file whose content is not the manifest's."""
    limit_arenas()
    disk = _Disk()
    try:
        with ThreadPoolExecutor(parallelism, thread_name_prefix="kvcloud-get") as pool:
            refs = (ref for entry, _ in entries for ref in entry.chunks)
            chunks = fetch_ahead(repo, pool, parallelism, refs, stop)
            for entry, path in entries:
                path.parent.mkdir(parents=True, exist_ok=True)
                handle = open(path, "wb")  # noqa: SIM115 - the disk thread closes it
                disk.open.append(handle)
                digest = hashlib.sha256()
                size = 0
                for future in itertools.islice(chunks, len(entry.chunks)):
                    data = future.result()
                    digest.update(data)
                    size += len(data)
                    disk.write(handle, data)
                    status.bytes_done += len(data)
                if size != entry.size or digest.hexdigest() != entry.sha256:
                    raise Mismatch(f"{entry.name}: restored content does not match the "
                                   "manifest (size or SHA-256): the backup is damaged")
                disk.finish(handle, entry.mode & 0o7777 or 0o600)
        disk.wait()
    finally:
        disk.close()
