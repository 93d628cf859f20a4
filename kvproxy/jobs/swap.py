"""Swap a restored database in under a managed server, and take it back out.

Order of a swap, each step reversible until the check passes:

1. restore and verify the backup into a directory beside the live data
   (same filesystem, so every move below is a rename);
2. hold clients (``-LOADING``), ``SHUTDOWN`` the server;
3. move the live database aside to ``<name>.before-<backup-id>``, move the
   restored one in;
4. start the server and check it answers and holds the backup's key count;
5. on any failure: stop it, move the restored database out and the old one
   back, start it again, and fail the job with the reason.

The old database stays until ``KEEP`` (deleted), ``REVERT`` (swapped back the
same way) or ``RETAIN`` (left to the operator); ``swap.json`` in
``state_dir`` remembers it across proxy restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

from kvproxy.config import Config, Provider
from kvproxy.jobs.backup import StoreOpener
from kvproxy.jobs.registry import JobFailed
from kvproxy.jobs.restore import fetch_backup
from kvproxy.jobs.status import JobStatus
from kvproxy.upstream.control import Control, ControlError
from kvproxy.upstream.keycount import KeyCount, as_record, count_keys, count_or_none, from_record
from kvproxy.upstream.managed import ManagedServer, ManagedServerError
from kvproxy.upstream.snapshot import KVROCKS_CHECKPOINT, REDIS_RDB

log = logging.getLogger("kvproxy.swap")

#: How long a swapped-in server may take to load its data and answer.
READY_TIMEOUT = 600.0


class Holder(Protocol):
    """What a swap needs of the proxy: the managed server, and a way to hold clients."""

    managed: ManagedServer | None

    def upstream_held(self) -> AbstractAsyncContextManager[None]: ...


@dataclass(frozen=True)
class SwapRecord:
    """A swap awaiting KEEP, REVERT or RETAIN."""

    backup_id: str
    live: str
    previous: str
    #: The old server's key count before the swap, for REVERT's check.
    previous_keys: dict[str, int] | None

    @staticmethod
    def path(config: Config) -> Path:
        return Path(config["state_dir"]) / "swap.json"

    @classmethod
    def load(cls, config: Config) -> SwapRecord | None:
        try:
            return cls(**json.loads(cls.path(config).read_text()))
        except FileNotFoundError:
            return None

    def save(self, config: Config) -> None:
        path = self.path(config)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(asdict(self), indent=1))
        os.replace(temporary, path)

    @classmethod
    def clear(cls, config: Config) -> None:
        cls.path(config).unlink(missing_ok=True)


class SwapError(Exception):
    """Refused before anything was touched; the message says what to do."""


def check_can_swap(holder: Holder, config: Config) -> ManagedServer:
    """The managed server, if a new swap may start now."""
    if holder.managed is None:
        raise SwapError("RESTORE ... SWAP needs managed = yes (the proxy must start the "
                        "server itself); restore TO a directory instead")
    pending = SwapRecord.load(config)
    if pending is not None:
        raise SwapError(f"backup {pending.backup_id} is swapped in and {pending.previous} "
                        "kept: KVCLOUD RESTORE KEEP, REVERT or RETAIN first")
    return holder.managed


def pending_swap(config: Config) -> SwapRecord:
    record = SwapRecord.load(config)
    if record is None:
        raise SwapError("no swapped restore is waiting: KEEP, REVERT and RETAIN follow a "
                        "RESTORE ... SWAP")
    return record


async def run_swap(holder: Holder, config: Config, provider: Provider, wanted: str,
                   status: JobStatus, open_store: StoreOpener) -> None:
    try:
        managed = check_can_swap(holder, config)
    except SwapError as exc:
        raise JobFailed(str(exc)) from None
    password = config["upstream_password"]
    async with Control(managed.address, password) as control:
        live = await live_data(control, managed.kvrocks)
        before = await count_or_none(control, managed.kvrocks)
    workdir = live.parent / f".restore-{status.job_id}"
    try:
        manifest, restored_dir = await fetch_backup(config, provider, wanted, status,
                                                    open_store, lambda _: workdir)
        expected_source = KVROCKS_CHECKPOINT if managed.kvrocks else REDIS_RDB
        if manifest.source != expected_source:
            raise JobFailed(f"backup {manifest.backup_id} is a {manifest.source}; the managed "
                            f"{managed.name} needs a {expected_source}")
        incoming = (restored_dir / "db" if managed.kvrocks
                    else restored_dir / manifest.files[0].name)
        aside = live.with_name(f"{live.name}.before-{manifest.backup_id}")
        if aside.exists():
            raise JobFailed(f"{aside} already exists: move it away first")
        async with holder.upstream_held():
            found = await exchange(managed, password, live, incoming, aside,
                                   from_record(manifest.keys))
    finally:
        await asyncio.to_thread(shutil.rmtree, workdir, True)
    SwapRecord(manifest.backup_id, str(live), str(aside), as_record(before)).save(config)
    status.results[provider.name] = (
        f"swapped in {manifest.backup_id} ({found}); the previous database is at {aside}: "
        "KVCLOUD RESTORE KEEP deletes it, REVERT swaps it back, RETAIN keeps both")
    log.info("backup %s swapped in; previous database kept at %s", manifest.backup_id, aside)


async def run_revert(holder: Holder, config: Config, status: JobStatus) -> None:
    try:
        record = pending_swap(config)
    except SwapError as exc:
        raise JobFailed(str(exc)) from None
    if holder.managed is None:
        raise JobFailed("REVERT needs managed = yes")
    live, previous = Path(record.live), Path(record.previous)
    if not previous.exists():
        raise JobFailed(f"{previous} is gone: nothing to revert to")
    status.backup_id = record.backup_id
    outgoing = live.with_name(f"{live.name}.reverted-{record.backup_id}")
    async with holder.upstream_held():
        found = await exchange(holder.managed, config["upstream_password"], live, previous,
                               outgoing, from_record(record.previous_keys))
    await asyncio.to_thread(_remove, outgoing)
    SwapRecord.clear(config)
    status.results["revert"] = f"the database from before {record.backup_id} is back ({found})"


async def keep(config: Config) -> str:
    """Delete the database a swap moved aside."""
    record = pending_swap(config)
    await asyncio.to_thread(_remove, Path(record.previous))
    SwapRecord.clear(config)
    return f"deleted {record.previous}; backup {record.backup_id} stays in place"


def retain(config: Config) -> str:
    """Keep both; the old database is the operator's from now on."""
    record = pending_swap(config)
    SwapRecord.clear(config)
    return record.previous


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


async def live_data(control: Control, kvrocks: bool) -> Path:
    """Where the running server keeps its data: ``<dir>/db``, or its RDB file."""
    directory = Path(await control.config_get("dir"))
    if kvrocks:
        return directory / "db"
    if (await control.config_get("appendonly")).lower() == "yes":
        raise JobFailed("the server has appendonly yes, and Redis loads the AOF instead of a "
                        "restored RDB: turn AOF off or restore TO a directory")
    return directory / await control.config_get("dbfilename")


async def exchange(managed: ManagedServer, password: str | None, live: Path, incoming: Path,
                   outgoing: Path, expected: KeyCount | None) -> str:
    """Stop, put ``live`` at ``outgoing`` and ``incoming`` at ``live``, start and check.

    Any failure puts everything back as it was, starts the old server again,
    and raises JobFailed with the reason.
    """
    await managed.stop(shutdown=lambda: _shutdown(managed, password))
    had_live = live.exists()
    if had_live:
        os.rename(live, outgoing)
    os.rename(incoming, live)
    try:
        await managed.start(READY_TIMEOUT)
        return await check_serving(managed, password, expected)
    except (ManagedServerError, ControlError, SwapError) as exc:
        log.warning("swapped-in database failed: %s; putting the previous one back", exc)
        await managed.stop()
        os.rename(live, incoming)
        if had_live:
            os.rename(outgoing, live)
        try:
            await managed.start(READY_TIMEOUT)
        except ManagedServerError as again:
            raise JobFailed(f"{exc}; the previous database is back in {live} but did not "
                            f"start either: {again}") from None
        raise JobFailed(f"{exc}; the previous database is back in place and serving") from None


async def _shutdown(managed: ManagedServer, password: str | None) -> None:
    """SHUTDOWN (Redis: SAVE, so the data moved aside is the latest); no reply comes."""
    command = ("SHUTDOWN",) if managed.kvrocks else ("SHUTDOWN", "SAVE")
    async with Control(managed.address, password) as control:
        try:
            await control.call(*command)
        except ControlError as exc:
            if "closed" not in str(exc).lower() and "connection" not in str(exc).lower():
                raise


async def check_serving(managed: ManagedServer, password: str | None,
                        expected: KeyCount | None) -> str:
    """The server answers, has loaded, and holds the key count the backup recorded."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + READY_TIMEOUT
    async with Control(managed.address, password) as control:
        while True:
            try:
                found = await count_keys(control, managed.kvrocks)
                break
            except ControlError as exc:
                if "LOADING" not in str(exc) or loop.time() > deadline:
                    raise
                await asyncio.sleep(0.1)
    if expected is None:
        return f"{found.keys} keys; the backup recorded no key count to compare"
    if not expected.admits(found.keys):
        raise SwapError(f"the server holds {found.keys} keys but the backup has "
                        f"{expected.describe()}")
    return f"{found.keys} keys, as the backup recorded"
