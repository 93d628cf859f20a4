"""One connection to the upstream server, carrying the batches of its sessions.

The shared link multiplexes every stateless client: batches are written in
the order they were queued (one write per event-loop turn) and the replies,
which the server sends in the same order, are cut with the reply scanner and
handed back batch by batch. A dedicated link does the same for one pinned
client, or, in raw mode, relays the byte stream untouched (pub/sub, MONITOR,
replication), where replies are not one per command.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast

from kvproxy.proxy.batch import Batch
from kvproxy.proxy.resp import Chunk, scan_replies, slice_of

log = logging.getLogger("kvproxy.link")

#: After a failed connect, further batches fail at once for this long instead
#: of each waiting for its own attempt.
RETRY_AFTER = 0.5

#: A batch answered this long after the one before it on its link (or after
#: it was sent to an idle link) marks its client slow, until one is quicker.
SLOW_BATCH = 0.005


class Sink(Protocol):
    """Who a link hands replies to: a client session, or the link's own setup."""

    #: The link only reads the head, a Batch while one of its batches is in flight.
    order: deque[Any]
    #: Whether its last batch took longer than SLOW_BATCH to answer (set by the link).
    slow: bool

    def write(self, data: bytes | bytearray | memoryview) -> None: ...
    def batch_done(self) -> None: ...
    def batch_failed(self, error: bytes) -> None: ...
    def link_lost(self) -> None: ...
    def resume_upstream(self) -> None: ...


class SetupReply:
    """Takes the reply to a command the link sends on its own (AUTH, replayed state)."""

    def __init__(self, on_reply: Callable[[bytes], None] | None = None) -> None:
        self.on_reply = on_reply
        self.order: deque[Any] = deque([Batch(1)])
        self.slow = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.on_reply is not None:
            self.on_reply(bytes(data))

    def batch_done(self) -> None:
        self.order.popleft()

    def batch_failed(self, error: bytes) -> None:
        self.order.clear()

    def link_lost(self) -> None:
        pass

    def resume_upstream(self) -> None:
        pass


class UpstreamUnavailable(Exception):
    pass


class Gate:
    """Closed while the proxy itself takes the server down (a swap restore).

    Every link of a proxy shares one: while ``reply`` is set, nothing is sent
    or connected, and each command is answered with it at once, so clients
    see ``-LOADING`` instead of a hang or a dropped connection.
    """

    def __init__(self) -> None:
        self.reply: bytes | None = None


class Link(asyncio.Protocol):
    def __init__(self, address: tuple[str, int], connect_timeout: float, name: str,
                 gate: Gate | None = None) -> None:
        self.address = address
        self.gate = gate or Gate()
        self.connect_timeout = connect_timeout
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[Sink] = deque()
        self.outbox: list[Chunk] = []
        self.flush_scheduled = False
        self.buf: bytes | bytearray = b""
        #: Where the reply scanner stopped inside a reply: items it still
        #: needs, whether it is a push, and payload bytes to pass through.
        self.resume_need = 0
        self.resume_push = False
        self.stream_left = 0
        self.raw_sink: Sink | None = None
        self.owner: Sink | None = None
        self.connecting: asyncio.Task[None] | None = None
        self.failed_at = 0.0
        self.failure = ""
        self.write_paused = False
        self.paused_sessions: set[Sink] = set()
        #: Commands the link sends first on every new connection (AUTH).
        self.setup: Callable[[], list[tuple[bytes, Sink]]] | None = None
        self.closing = False
        #: Connected and accepting batches (kept as a flag for the hot path).
        self.ready = False
        #: When the link last answered a batch, or went from idle to busy: a
        #: busy link whose progress is old is stuck behind a slow command.
        self.progress_at = 0.0
        #: Batches of slow clients in flight: other clients keep off this link.
        self.slow_inflight = 0

    # ---- connecting -------------------------------------------------------

    def unavailable_error(self) -> bytes:
        if self.gate.reply is not None:
            return self.gate.reply
        host, port = self.address
        return b"-ERR upstream %s:%d unavailable: %s\r\n" % (
            host.encode(),
            port,
            self.failure.encode(),
        )

    async def connect(self) -> None:
        """Open the connection; raises UpstreamUnavailable with the reason."""
        loop = asyncio.get_running_loop()
        host, port = self.address
        if self.gate.reply is not None:
            raise UpstreamUnavailable("the proxy holds the server down")
        try:
            await asyncio.wait_for(
                loop.create_connection(lambda: self, host, port), self.connect_timeout
            )
        except TimeoutError:
            self._failed(f"no answer within {self.connect_timeout:g}s")
        except OSError as exc:
            self._failed(exc.strerror or str(exc))
        if self.transport is None:
            raise UpstreamUnavailable(self.failure)

    def _failed(self, reason: str) -> None:
        self.failure = reason
        self.failed_at = time.monotonic()
        log.warning("upstream %s:%d unavailable: %s", *self.address, reason)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.ready = True
        self.closing = False  # the shared link is closed on purpose, then used again
        self.buf = b""
        self.stream_left = self.resume_need = 0
        self.resume_push = False
        log.debug("%s link to %s:%d open", self.name, *self.address)
        # Setup commands (AUTH) go before anything queued while connecting.
        if self.setup is not None:
            for data, sink in reversed(self.setup()):
                self.outbox.insert(0, data)
                self.waiters.appendleft(sink)
        if self.outbox:
            self._schedule_flush()

    def ensure_connecting(self) -> None:
        """Start a connect in the background (shared link, lazily)."""
        if self.connecting is None or self.connecting.done():
            self.connecting = asyncio.get_running_loop().create_task(self._connect_or_fail())

    async def _connect_or_fail(self) -> None:
        try:
            await self.connect()
        except UpstreamUnavailable:
            self._fail_waiters()

    def _fail_waiters(self) -> None:
        error = self.unavailable_error()
        self.outbox.clear()
        waiters = self.waiters
        while waiters:
            waiters.popleft().batch_failed(error)

    # ---- sending ----------------------------------------------------------

    def send(self, sink: Sink, data: Chunk) -> None:
        """Queue one batch; its sink already holds the Batch at its order's end."""
        if self.ready:
            if not self.waiters:
                self.progress_at = time.monotonic()
            self.outbox.append(data)
            self.waiters.append(sink)
            if not self.flush_scheduled:
                self._schedule_flush()
            return
        if self.gate.reply is not None:
            sink.batch_failed(self.gate.reply)
            return
        if self.connecting is not None and not self.connecting.done():
            self.outbox.append(data)
            self.waiters.append(sink)
            return
        if time.monotonic() - self.failed_at < RETRY_AFTER:
            sink.batch_failed(self.unavailable_error())
            return
        self.outbox.append(data)
        self.waiters.append(sink)
        self.ensure_connecting()

    def send_raw(self, data: Chunk) -> None:
        """Bytes that expect no counted reply (raw mode, empty commands)."""
        if self.ready:
            self.outbox.append(data)
            if not self.flush_scheduled:
                self._schedule_flush()

    def _schedule_flush(self) -> None:
        self.flush_scheduled = True
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self.flush_scheduled = False
        transport = self.transport
        if transport is None or not self.outbox:
            return
        if len(self.outbox) == 1:
            transport.write(self.outbox[0])
        else:
            transport.writelines(self.outbox)
        self.outbox = []

    # ---- receiving --------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.raw_sink is not None:
            self.raw_sink.write(data)
            return
        if self.stream_left:
            data = self._continue_stream(data)
            if not data:
                return
        waiters = self.waiters
        if self.buf:
            buf = self.buf
            buf += data  # a bytearray holding the start of an item header
        else:
            buf = data
        n = len(buf)
        pos = 0
        done = 0
        while waiters:
            sink = waiters[0]
            batch = sink.order[0]
            try:
                pos_after, got, self.resume_need, self.resume_push, blob_left = scan_replies(
                    buf, pos, batch.remaining, self.resume_need, self.resume_push
                )
            except ValueError:
                self._desync("unparseable reply")
                return
            if pos_after > pos:
                chunk = buf if pos_after - pos == n else slice_of(buf, pos, pos_after)
                sink.write(chunk)
                if batch.observer is not None:
                    batch.observer(bytes(chunk))
                    batch.observer = None
                pos = pos_after
            if got < batch.remaining:
                batch.remaining -= got
                self.stream_left = blob_left
                break
            waiters.popleft()
            if not done:  # the first batch answered in this read: how long it took
                now = time.monotonic()
                sink.slow = now - self.progress_at > SLOW_BATCH
            if batch.slow:
                self.slow_inflight -= 1
            sink.batch_done()
            done += 1
        if done:
            self.progress_at = now
        if pos == n:
            self.buf = b""
        else:
            self._keep_rest(buf, pos)

    def _continue_stream(self, data: bytes) -> bytes:
        """Pass on more of a string payload; returns what follows it."""
        sink = self.waiters[0]
        take = self.stream_left
        if take > len(data):
            self.stream_left -= len(data)
            sink.write(data)
            return b""
        sink.write(data[:take])
        self.stream_left = 0
        if self.resume_need == 0 and not self.resume_push:  # it was a reply's last item
            batch = sink.order[0]
            batch.remaining -= 1
            if not batch.remaining:
                self.waiters.popleft()
                now = time.monotonic()
                sink.slow = now - self.progress_at > SLOW_BATCH
                self.progress_at = now
                if batch.slow:
                    self.slow_inflight -= 1
                sink.batch_done()
        return data[take:]

    def _keep_rest(self, buf: bytes | bytearray, pos: int) -> None:
        """Bytes after the last complete reply: a partial reply, or pushes."""
        if not self.waiters:
            if self.owner is not None:  # out-of-band pushes on a dedicated link
                self.owner.write(buf[pos:])
                self.buf = b""
            else:
                self._desync("reply nobody asked for")
        elif pos or not isinstance(buf, bytearray):
            self.buf = bytearray(buf[pos:])

    def _desync(self, why: str) -> None:
        log.warning("%s link to %s:%d: %s; closing it", self.name, *self.address, why)
        if self.transport is not None:
            self.transport.abort()

    # ---- flow control and loss -------------------------------------------

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        paused, self.paused_sessions = self.paused_sessions, set()
        for sink in paused:
            sink.resume_upstream()

    def connection_lost(self, exc: Exception | None) -> None:
        log.debug("%s link to %s:%d closed", self.name, *self.address)
        self.transport = None
        self.ready = False
        self.buf = b""
        self.stream_left = self.resume_need = 0
        self.resume_push = False
        if not self.closing:
            # Not a failure to connect: the next batch connects again at once
            # (CLIENT KILL of the proxy's connections must not turn into errors).
            reason = str(exc) if exc else "connection closed by the server"
            log.debug("%s link to %s:%d ended: %s", self.name, *self.address, reason)
        self.outbox.clear()
        self.slow_inflight = 0
        lost, self.waiters = self.waiters, deque()
        seen: set[int] = set()
        for sink in lost:
            if id(sink) not in seen:
                seen.add(id(sink))
                sink.link_lost()
        if self.raw_sink is not None:
            self.raw_sink.link_lost()
        elif self.owner is not None and id(self.owner) not in seen:
            self.owner.link_lost()
        self.resume_writing()

    def close(self) -> None:
        """Close on purpose: not a failure, nothing to report."""
        self.closing = True
        self.ready = False
        if self.transport is not None:
            self.transport.close()

    def end_input(self) -> None:
        """The client hung up: the server sees it hang up too (after what it sent).

        The server answers what came before and then closes the connection,
        which ends a blocking command there, exactly as if the client had
        been connected to it directly.
        """
        transport = self.transport
        if transport is None:
            return
        if self.outbox:
            self._flush()
        if transport.can_write_eof():
            transport.write_eof()
        else:
            self.close()
