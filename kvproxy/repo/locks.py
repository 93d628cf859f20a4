"""Lock objects in the bucket, so that a prune never deletes a chunk a running backup uses.

A backup checks which chunks exist once, at its start, and from then on
relies on them until its manifest is written; a prune deletes chunks that
no manifest references. Both run anywhere (the proxy, ``kvrocks-cloud`` on
another host), so they meet only in the bucket:

- a **backup** writes ``locks/backup-<token>.json`` before it looks at any
  chunk, then lists ``locks/``; while a fresh prune lock is there it waits
  (polling every ``WAIT_POLL`` seconds) before it lists the chunks. It
  removes its lock when it ends, also on failure;
- a **prune** writes ``locks/prune-<token>.json``, then lists ``locks/``; if
  a fresh backup lock is there it deletes manifests only, no chunk.

One of the two lock objects was written first, and the other party's
listing, made after its own write, sees it: S3, GCS and Azure Blob list
what was written before with strong read-after-write consistency (and a
local directory trivially does). So either the prune sees the backup and
keeps every chunk, or the backup sees the prune and waits until it is done.

Holders rewrite their lock every ``REFRESH_EVERY`` seconds. A lock whose
time is ``STALE_AFTER`` seconds old is stale: its holder died (or hung), and
it is ignored (a prune removes it). A holder that could not rewrite its lock
for ``LOST_AFTER`` seconds stops: a backup fails before writing its manifest,
a prune stops deleting chunks. Times are the writer's clock in UTC and the
reader's clock decides freshness, so hosts' clocks must agree to well within
``STALE_AFTER - LOST_AFTER`` (5 minutes).

The format is in docs/format.md (section "Locks"); readers of backups ignore
``locks/`` entirely.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType

from kvproxy.repo import layout
from kvproxy.repo.errors import RepoError
from kvproxy.storage.store import NotFound, Store

log = logging.getLogger("kvproxy.locks")

#: Seconds between two writes of a held lock.
REFRESH_EVERY = 60.0
#: A lock not rewritten for this long is stale: ignored, and removed by prune.
STALE_AFTER = 600.0
#: A holder that could not rewrite its lock for this long gives up (LockLost).
LOST_AFTER = 300.0
#: Seconds between two looks at the locks while a backup waits for a prune.
WAIT_POLL = 5.0

BACKUP, PRUNE = "backup", "prune"
KINDS = (BACKUP, PRUNE)

Clock = Callable[[], float]


class LockLost(RepoError):
    """Our lock was not rewritten for LOST_AFTER seconds: another process may consider it
    stale, so the work that relied on it cannot be trusted."""


@dataclass(frozen=True)
class LockInfo:
    """One lock object as listed. ``kind`` is empty when the object cannot be read."""

    key: str
    kind: str
    host: str
    pid: int
    job: str
    time: datetime | None
    stale: bool

    def describe(self) -> str:
        if not self.kind:
            return f"unreadable lock {self.key}"
        when = f"{self.time:%Y-%m-%dT%H:%M:%SZ}" if self.time else "?"
        job = f", job {self.job}" if self.job else ""
        return (f"{self.kind} lock {self.key} (host {self.host}, pid {self.pid}{job}, "
                f"refreshed {when})")


def list_locks(store: Store, clock: Clock = time.time) -> list[LockInfo]:
    """Every lock object under the repository, fresh or stale, by key.

    An object that is not a lock (bad JSON, unknown kind, no time) is listed
    with an empty kind and as fresh: whoever reads it cannot tell what it
    guards, so it is not ignored.
    """
    now = clock()
    found = []
    for key in store.list(layout.LOCKS):
        if not key.endswith(".json"):
            continue
        try:
            data = store.read(key)
        except NotFound:  # released between the listing and the read
            continue
        found.append(_parse(key, data, now))
    return found


def _parse(key: str, data: bytes, now: float) -> LockInfo:
    try:
        raw = json.loads(data)
        kind, host, pid = str(raw["kind"]), str(raw.get("host", "")), int(raw.get("pid", 0))
        written = datetime.strptime(str(raw["time"]), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
    except (ValueError, KeyError, TypeError, AttributeError):
        return LockInfo(key, "", "", 0, "", None, stale=False)
    stale = now - written.timestamp() >= STALE_AFTER
    return LockInfo(key, kind, host, pid, str(raw.get("job", "")), written, stale)


class RepoLock:
    """Our own lock object: written by ``acquire``, rewritten in a thread, removed by
    ``release``. Use as a context manager."""

    def __init__(self, store: Store, kind: str, *, job: str = "", clock: Clock = time.time,
                 refresh_every: float = REFRESH_EVERY) -> None:
        if kind not in KINDS:
            raise ValueError(f"lock kind must be one of {KINDS}, got {kind!r}")
        self.store = store
        self.kind = kind
        self.job = job
        self.clock = clock
        self.refresh_every = refresh_every
        self.key = f"{layout.LOCKS}/{kind}-{secrets.token_hex(8)}.json"
        self.created = ""
        self._written: float | None = None
        self._lost = False
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> RepoLock:
        """Write the lock object (retried by the store), then keep it fresh in a thread."""
        self._write()
        self._thread = threading.Thread(target=self._refresh_loop, daemon=True,
                                        name=f"kvcloud-lock-{self.kind}")
        self._thread.start()
        return self

    def release(self) -> None:
        """Stop refreshing and remove the lock; a failure to remove it is logged (it goes
        stale after STALE_AFTER seconds)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        if self._written is None:
            return
        try:
            self.store.delete(self.key)
        except Exception as exc:  # noqa: BLE001 - the work is done; the lock only goes stale
            log.warning("%s: cannot remove lock %s (it goes stale in %.0f s): %s",
                        self.store.name, self.key, STALE_AFTER, exc)

    def check(self) -> None:
        """LockLost unless the lock was rewritten within LOST_AFTER seconds all along."""
        if self._written is None:
            raise LockLost(f"{self.store.name}: lock {self.key} was never written")
        silent = self.clock() - self._written
        if self._lost or silent >= LOST_AFTER:
            raise LockLost(f"{self.store.name}: the {self.kind} lock {self.key} could not be "
                           f"rewritten for {LOST_AFTER:.0f} s or more, so another process may "
                           f"have taken it for stale; run the {self.kind} again")

    def _write(self) -> None:
        now = self.clock()
        stamp = f"{datetime.fromtimestamp(now, UTC):%Y-%m-%dT%H:%M:%SZ}"
        self.created = self.created or stamp
        document = {"kind": self.kind, "host": socket.gethostname(), "pid": os.getpid(),
                    "job": self.job, "created": self.created, "time": stamp}
        self.store.write(self.key, json.dumps(document, sort_keys=True).encode() + b"\n")
        if self._written is not None and now - self._written >= LOST_AFTER:
            self._lost = True
        self._written = now

    def _refresh_loop(self) -> None:
        while not self._stopping.wait(self.refresh_every):
            try:
                self._write()
            except Exception as exc:  # noqa: BLE001 - tried again next time; check() decides
                log.warning("%s: cannot refresh lock %s: %s", self.store.name, self.key, exc)

    def __enter__(self) -> RepoLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def wait_for_prune(store: Store, own: RepoLock, stop: threading.Event,
                   poll: float | None = None) -> bool:
    """A backup, its lock written: wait while a fresh prune lock exists.

    Returns False when ``stop`` was set while waiting, True when no fresh
    prune lock is left (the prune ended, or its lock went stale).
    """
    announced: set[str] = set()
    while True:
        pruning = [lock for lock in list_locks(store, own.clock)
                   if lock.kind == PRUNE and not lock.stale and lock.key != own.key]
        if not pruning:
            return True
        for lock in pruning:
            if lock.key not in announced:
                announced.add(lock.key)
                log.info("%s: waiting for a prune to end before touching chunks: %s",
                         store.name, lock.describe())
        if stop.wait(WAIT_POLL if poll is None else poll):
            return False
