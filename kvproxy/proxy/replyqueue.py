"""One client's replies, in request order.

The queue holds, in the order the client sent the commands, the batches an
upstream link still answers and the replies the proxy makes itself (KVCLOUD,
QUIT, errors), ready or still being made. It is what a link talks to (the
``Sink`` of ``link.py``): the link writes a batch's replies through it and
says when the batch is done; the queue then lets the proxy's own replies
that were waiting behind it go out.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from kvproxy.proxy.batch import Batch

#: What the proxy answers itself: bytes, or bytes to come (KVCLOUD ... WAIT).
LocalReply = bytes | Awaitable[bytes]

Item = Batch | bytes | Callable[[], LocalReply] | asyncio.Future[bytes]


class Owner(Protocol):
    """The session the queue belongs to: told when the queue empties or a waited reply left."""

    def replies_out(self) -> None: ...
    def pipeline_drained(self) -> None: ...
    def waited_reply_out(self) -> None: ...
    def link_lost(self) -> None: ...
    def resume_upstream(self) -> None: ...


def discard(data: bytes | bytearray | memoryview) -> None:
    """Where replies go once their client has gone: read and dropped."""


class ReplyQueue:
    __slots__ = ("order", "write", "inflight", "owner", "awaited", "slow", "commands",
                 "pipeline_limit", "pipeline_full", "watch_empty")

    def __init__(self, owner: Owner, pipeline_limit: int) -> None:
        self.order: deque[Item] = deque()
        #: The client's transport write, a checking write over the client's
        #: output limits, or ``discard`` once it is gone.
        self.write: Callable[[bytes | bytearray | memoryview], None] = discard
        #: Batches sent upstream and not answered yet (all on one link).
        self.inflight = 0
        self.owner = owner
        #: The local reply (its maker, then its future) the client waits for.
        self.awaited: object = None
        #: Its last batch was slow to answer (set by the link): it gets a lane of its own.
        self.slow = False
        #: Commands sent upstream and not answered yet; at ``pipeline_limit``
        #: the client is no longer read until half of them are answered.
        self.commands = 0
        self.pipeline_limit = pipeline_limit
        self.pipeline_full = False
        #: The owner wants ``replies_out`` when the queue empties (a switch
        #: waits for it, or the client is closing): off on the hot path.
        self.watch_empty = False

    # ---- what the session adds -------------------------------------------

    def add_batch(self, batch: Batch) -> None:
        self.order.append(batch)
        self.inflight += 1
        self.commands += batch.size

    def _answered(self, batch: Batch) -> None:
        self.inflight -= 1
        self.commands -= batch.size
        if self.pipeline_full and self.commands <= self.pipeline_limit // 2:
            self.pipeline_full = False
            self.owner.pipeline_drained()

    def _empty(self) -> None:
        if self.watch_empty:
            self.owner.replies_out()

    def reply(self, data: bytes) -> None:
        """A reply of the proxy's own, in its place among the upstream's."""
        if self.order:
            self.order.append(data)
        else:
            self.write(data)

    def reply_later(self, make: Callable[[], LocalReply], awaited: bool = False) -> None:
        """A reply made when every earlier reply has gone out.

        ``make`` may return an awaitable (KVCLOUD ... WAIT): the reply is then
        written when it completes, and nothing queued behind it goes first.
        ``awaited``: the client reads nothing more until this reply is out.
        """
        if awaited:
            self.awaited = make
        self.order.append(make)
        if len(self.order) == 1:
            self.write_ready()

    # ---- the link's side (Sink) --------------------------------------------

    def batch_done(self) -> None:
        order = self.order
        batch: Batch = order.popleft()  # type: ignore[assignment]
        self.inflight -= 1
        self.commands -= batch.size
        if self.pipeline_full and self.commands <= self.pipeline_limit // 2:
            self.pipeline_full = False
            self.owner.pipeline_drained()
        if order:
            if order[0].__class__ is not Batch:
                self.write_ready()
        elif self.watch_empty:
            self.owner.replies_out()

    def batch_failed(self, error_reply: bytes) -> None:
        order = self.order
        for index, item in enumerate(order):
            if isinstance(item, Batch):
                order[index] = error_reply * item.remaining
                self._answered(item)
                break
        self.write_ready()

    def link_lost(self) -> None:
        self.owner.link_lost()

    def resume_upstream(self) -> None:
        self.owner.resume_upstream()

    # ---- writing the proxy's own replies -------------------------------------

    def write_ready(self) -> None:
        """Write the proxy's own replies that are now at the head of the order."""
        order = self.order
        while order and not isinstance(order[0], Batch):
            item = order[0]
            if isinstance(item, asyncio.Future):
                if not item.done():
                    return
                order.popleft()
                self.write(item.result() if not item.cancelled() else b"")
                self._sent(item)
                continue
            if not isinstance(item, bytes):
                made = item()
                if not isinstance(made, bytes):
                    waiting = asyncio.ensure_future(made)
                    if self.awaited is item:
                        self.awaited = waiting
                    order[0] = waiting
                    waiting.add_done_callback(lambda _: self.write_ready())
                    return
                order.popleft()
                self.write(made)
                self._sent(item)  # a refusal made at once still ends the wait
                continue
            order.popleft()
            self.write(item)
        if not order:
            self._empty()

    def _sent(self, item: object) -> None:
        if item is self.awaited:
            self.awaited = None
            self.owner.waited_reply_out()

    def clear(self) -> None:
        self.order.clear()
        self.inflight = self.commands = 0
