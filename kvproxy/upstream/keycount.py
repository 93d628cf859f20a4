"""How many keys a server holds: recorded with a backup, checked after a swap restore.

The count is a plausibility check that the server really started on the
restored data (not on an empty directory, or an AOF that shadows the RDB).
Keys with a TTL may expire between the backup and the restore, so a
restored server is right when it holds between ``keys - expires`` and
``keys`` keys.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from kvproxy.upstream.control import Control, ControlError

#: Kvrocks' answer to a DBSIZE SCAN while one is still running.
SCANNING = "scanning the db now"


@dataclass(frozen=True)
class KeyCount:
    keys: int
    expires: int

    def admits(self, found: int) -> bool:
        return self.keys - self.expires <= found <= self.keys

    def describe(self) -> str:
        return f"{self.keys} keys ({self.expires} with a TTL)"


async def count_keys(control: Control, kvrocks: bool, poll: float = 0.05,
                     timeout: float = 600.0) -> KeyCount:
    """Every database's keys and expiring keys, as the server reports them now.

    Kvrocks caches its counts: a ``DBSIZE SCAN`` is started and waited for
    (a second one is refused with ``scanning the db now`` until the first
    ends), as DESIGN.md says a restore check must.
    """
    if kvrocks:
        await control.call("DBSIZE", "SCAN")
        await _scan_finished(control, poll, timeout)
    keyspace = await control.info("keyspace")
    keys = expires = 0
    for name, value in keyspace.items():
        if name.startswith("db") and isinstance(value, dict):
            keys += int(value.get("keys", 0))
            expires += int(value.get("expires", 0))
    return KeyCount(keys, expires)


async def _scan_finished(control: Control, poll: float, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        try:
            await control.call("DBSIZE", "SCAN")
        except ControlError as exc:
            if SCANNING not in str(exc):
                raise
            await asyncio.sleep(poll)
            continue
        return  # ours ended; the one just started only refreshes the same counts
    raise ControlError(f"DBSIZE SCAN did not finish within {timeout:g}s")


async def count_or_none(control: Control, kvrocks: bool) -> KeyCount | None:
    """A count for the manifest; a server that cannot count just leaves it out."""
    try:
        return await count_keys(control, kvrocks)
    except ControlError:
        return None


def as_record(count: KeyCount | None) -> dict[str, int] | None:
    """The manifest's ``keys`` field."""
    return None if count is None else {"keys": count.keys, "expires": count.expires}


def from_record(record: dict[str, int] | None) -> KeyCount | None:
    return None if record is None else KeyCount(record["keys"], record["expires"])
