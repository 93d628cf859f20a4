"""Bytes a client sent that are not forwarded yet.

Kept as they came and joined once: when an incomplete command has all the
bytes it needs (so a large value is copied only once), or when held input
is let go. A command larger than ``LARGE_REQUEST`` is followed piece by piece
(``RequestTracker``) instead of being rescanned on every read.
"""

from __future__ import annotations

from kvproxy.proxy.resp import RequestTracker

#: An incomplete command this large is followed chunk by chunk.
LARGE_REQUEST = 256 * 1024


class PendingInput:
    __slots__ = ("parts", "size", "need", "tracker")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        #: Bytes the incomplete command at the start needs at least.
        self.need = 0
        self.tracker: RequestTracker | None = None

    def __bool__(self) -> bool:
        return self.size > 0

    def add(self, data: bytes) -> bool:
        """Keep ``data``; True once the command at the start may be complete."""
        self.parts.append(data)
        self.size += len(data)
        if self.tracker is not None:
            return self.tracker.feed(data)
        return self.size >= self.need

    def take(self) -> bytes:
        data = b"".join(self.parts) if len(self.parts) > 1 else self.parts[0]
        self.clear()
        return data

    def keep(self, buf: bytes | bytearray, pos: int, need: int = 0) -> None:
        """Hold ``buf[pos:]`` until ``need`` bytes (at least) are there."""
        rest = bytes(buf[pos:]) if pos or not isinstance(buf, bytes) else buf
        self.parts = [rest]
        self.size = len(rest)
        self.need = need
        self.tracker = None
        if len(rest) > LARGE_REQUEST and rest[:1] == b"*":
            self.tracker = RequestTracker()
            if self.tracker.feed(rest):
                self.tracker = None

    def clear(self) -> None:
        self.parts = []
        self.size = self.need = 0
        self.tracker = None
