"""The proxy's upstream connections: shared links, and spare ones ready to be dedicated.

Kvrocks runs each connection on one of its worker threads, so a slow command
delays only the commands behind it on the same connection. The proxy keeps
that: stateless clients share a few links, and a client's next batch goes to
a link chosen when its earlier replies are all back (its order is kept,
because all its batches in flight are on one link). The choice, in order:

1. an idle link (nothing in flight): nothing can be ahead of the batch;
2. the busy link that answered most recently, if that was within
   ``STALL_AFTER``: it is moving, and batches that share a write and a read
   are cheaper for both sides;
3. a link not connected yet (it connects now);
4. the busy link that answered most recently, however long ago.

A link stuck behind a slow command (a long ZRANGE, a script, a paused write)
stops answering, so new batches go elsewhere once it has been quiet for
``STALL_AFTER``. A client whose last batch took longer than ``SLOW_BATCH``
(``link.py``) is known to be slow: its next batch goes to an idle link or to
the link already carrying another slow client's batch (a slow lane), and the
other clients keep off that link until it is answered, from the start
rather than after ``STALL_AFTER``.

Spare links are connected (and authenticated) ahead of need, so a client that
turns stateful (MULTI, BLPOP, SUBSCRIBE, ...) moves to a connection of its
own at once, in the same turn as its command: no other client's command
can overtake it while a connection opens.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from kvproxy.proxy.link import Gate, Link, Sink, UpstreamUnavailable

log = logging.getLogger("kvproxy.pool")

#: A busy link that answered nothing for this long is passed over.
STALL_AFTER = 0.002

Setup = Callable[[], list[tuple[bytes, Sink]]]


class Pool:
    def __init__(self, address: tuple[str, int], connect_timeout: float, size: int,
                 spares: int, gate: Gate, setup: Setup | None,
                 spare_setup: Setup | None) -> None:
        self.address = address
        self.connect_timeout = connect_timeout
        self.gate = gate
        self.links = [Link(address, connect_timeout, f"shared-{i}", gate) for i in range(size)]
        for link in self.links:
            link.setup = setup
        #: How many spare links to keep ready; 0 connects one per pinned client.
        self.spare_target = spares
        self.spare_setup = spare_setup
        self.spares: list[Link] = []
        self.refilling: asyncio.Task[None] | None = None

    def start(self) -> None:
        for link in self.links:
            link.ensure_connecting()
        self.refill()

    def pick(self, slow: bool = False) -> Link:
        """The link for a client's next batch (see the module docstring)."""
        if slow:
            return self._slow_lane()
        best: Link | None = None
        unconnected: Link | None = None
        lane: Link | None = None
        for link in self.links:
            if link.slow_inflight:
                lane = link
            elif not link.waiters:
                if link.ready:
                    return link
                if unconnected is None:
                    unconnected = link
            elif best is None or link.progress_at > best.progress_at:
                best = link
        if best is not None and (unconnected is None
                                 or time.monotonic() - best.progress_at < STALL_AFTER):
            return best
        chosen = unconnected or lane
        assert chosen is not None
        return chosen

    def _slow_lane(self) -> Link:
        """For a client whose last batch was slow: an idle link, or the slow lane."""
        lane: Link | None = None
        least: Link | None = None
        for link in self.links:
            if link.ready and not link.waiters:
                return link
            if link.slow_inflight:
                lane = lane or link
            elif least is None or len(link.waiters) < len(least.waiters):
                least = link
        chosen = lane or least
        assert chosen is not None
        return chosen

    # ---- spare links, to be dedicated ---------------------------------------

    def take_spare(self) -> Link | None:
        """A connected link for one client's own use, or None (connect one then)."""
        spare: Link | None = None
        while self.spares and spare is None:
            candidate = self.spares.pop()
            if candidate.ready and not candidate.waiters:
                spare = candidate
            else:
                candidate.close()
        self.refill()
        return spare

    def new_dedicated(self) -> Link:
        """A link that connects on first use, set up as a spare would be."""
        link = Link(self.address, self.connect_timeout, "dedicated", self.gate)
        link.setup = self.spare_setup
        return link

    def refill(self) -> None:
        if (len(self.spares) < self.spare_target and self.gate.reply is None
                and (self.refilling is None or self.refilling.done())):
            self.refilling = asyncio.get_running_loop().create_task(self._refill())

    async def _refill(self) -> None:
        while len(self.spares) < self.spare_target and self.gate.reply is None:
            link = self.new_dedicated()
            try:
                await link.connect()
            except UpstreamUnavailable:
                return  # tried again when a spare is next taken
            self.spares.append(link)

    # ---- the whole pool -----------------------------------------------------

    def busy(self) -> bool:
        return any(link.waiters for link in self.links)

    def close(self) -> None:
        for link in self.links:
            link.close()
        spares, self.spares = self.spares, []
        for link in spares:
            link.close()
        if self.refilling is not None:
            self.refilling.cancel()

    def reconfigure(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        for link in self.links:
            link.connect_timeout = connect_timeout
