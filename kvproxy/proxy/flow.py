"""What one client may make the proxy hold, and when its reading pauses.

Reading from a client pauses for as long as any reason holds (hysteresis is
the transport's: ``pause_writing`` above its high-water mark, ``resume_writing``
below the low one). Replies the client does not read are bounded like Redis'
``client-output-buffer-limit``: above the hard limit, or above the soft limit
for longer than its time, the client is disconnected. The check runs only
while the client is already behind (its transport above high water), so a
client that keeps up costs nothing.
"""

from __future__ import annotations

import asyncio
import enum
import re
import time
from collections.abc import Callable
from dataclasses import dataclass


class Pause(enum.Enum):
    """Why the proxy stopped reading a client."""

    #: The client does not read its replies (its transport is above high water).
    CLIENT = "client"
    #: The upstream link its commands go to cannot take more bytes now.
    UPSTREAM = "upstream"
    #: Input is held (a link switch, an awaited KVCLOUD reply) and what came
    #: meanwhile reached HELD_INPUT_LIMIT.
    HELD = "held"
    #: The client has client_pipeline_limit commands in flight.
    PIPELINE = "pipeline"


#: Bytes read and kept while a client's input is held, before reading pauses.
HELD_INPUT_LIMIT = 1024 * 1024

_SIZE = re.compile(r"^(\d+)(b|k|kb|m|mb|g|gb)?$")
_UNITS = {None: 1, "b": 1, "k": 1000, "kb": 1024, "m": 1000**2, "mb": 1024**2,
          "g": 1000**3, "gb": 1024**3}


def parse_size(text: str) -> int:
    """A byte count as Redis writes them: 64mb, 1gb, 512k, 1048576."""
    match = _SIZE.match(text.strip().lower())
    if match is None:
        raise ValueError("expected a size such as 0, 512kb, 64mb or 1gb")
    return int(match.group(1)) * _UNITS[match.group(2)]


@dataclass(frozen=True)
class OutputLimit:
    """Unread reply bytes a client may leave with the proxy; 0 turns a limit off."""

    hard: int
    soft: int
    soft_seconds: float

    @classmethod
    def parse(cls, text: str) -> OutputLimit:
        """``<hard> <soft> <seconds>``, as the normal class of client-output-buffer-limit."""
        words = text.split()
        if len(words) != 3:
            raise ValueError("expected <hard> <soft> <seconds>, e.g. 256mb 64mb 60")
        hard, soft = parse_size(words[0]), parse_size(words[1])
        if not words[2].isdigit():
            raise ValueError("expected whole seconds as the third value")
        return cls(hard, soft, float(words[2]))

    def __str__(self) -> str:
        return f"{self.hard} {self.soft} {self.soft_seconds:g}"


class ClientFlow:
    """Reading pauses and output limits of one client connection."""

    __slots__ = ("transport", "limit", "clock", "reasons", "soft_since")

    def __init__(self, transport: asyncio.Transport, limit: OutputLimit,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.transport = transport
        self.limit = limit
        self.clock = clock
        self.reasons: set[Pause] = set()
        self.soft_since: float | None = None

    def pause(self, reason: Pause) -> None:
        if not self.reasons:
            self.transport.pause_reading()
        self.reasons.add(reason)

    def resume(self, reason: Pause) -> None:
        if reason not in self.reasons:
            return
        self.reasons.discard(reason)
        if not self.reasons and not self.transport.is_closing():
            self.transport.resume_reading()

    def over_limit(self) -> str | None:
        """Why the unread replies are over a limit, or None."""
        size = self.transport.get_write_buffer_size()
        limit = self.limit
        if limit.hard and size > limit.hard:
            return f"{size} bytes of unread replies, over the hard limit of {limit.hard}"
        if limit.soft and size > limit.soft:
            now = self.clock()
            if self.soft_since is None:
                self.soft_since = now
            elif now - self.soft_since >= limit.soft_seconds:
                return (f"{size} bytes of unread replies, over the soft limit of {limit.soft} "
                        f"for {limit.soft_seconds:g}s")
        else:
            self.soft_since = None
        return None
