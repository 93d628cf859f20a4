"""One client connection: split its requests, forward them, keep replies in order.

A session starts on the shared link. Its requests are cut into commands only
to find the few named in ``commands.py``; runs of ordinary commands go
upstream as the original bytes. Replies come back in request order; replies
the proxy makes itself (KVCLOUD, QUIT, errors) wait in ``order`` behind the
batches sent before them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, cast

from kvproxy.proxy import commands
from kvproxy.proxy.batch import Batch
from kvproxy.proxy.link import Link, SetupReply, UpstreamUnavailable
from kvproxy.proxy.replies import OK, error
from kvproxy.proxy.resp import (
    INCOMPLETE,
    STOP_DONE,
    STOP_ERROR,
    STOP_INCOMPLETE,
    STOP_INLINE,
    Chunk,
    ProtocolError,
    RequestTracker,
    command_args,
    command_end,
    command_need,
    inline_args,
    inline_end,
    scan_run,
    slice_of,
)

if TYPE_CHECKING:
    from kvproxy.proxy.server import Proxy

log = logging.getLogger("kvproxy.session")

# What the scan loop does after a command it had to look at: count it into
# the current run, answer it here, send it as a batch of its own, wait for a
# link switch, or stop reading this client.
_FORWARD, _HANDLED, _OWN_BATCH, _BLOCK, _STOP, _WAITING = range(6)



#: An incomplete command this large is followed chunk by chunk (RequestTracker).
LARGE_REQUEST = 256 * 1024


#: What the proxy answers itself: bytes, or bytes to come (KVCLOUD ... WAIT).
LocalReply = bytes | Awaitable[bytes]


def _discard(data: bytes | bytearray | memoryview) -> None:
    """Where replies go once their client has gone."""


def encode_command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class Session(asyncio.Protocol):
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.link: Link = proxy.shared
        self.dedicated: Link | None = None
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        #: Replies still to come, in request order: batches the upstream
        #: answers, and the proxy's own replies (ready, or made in turn).
        self.order: deque[Batch | bytes | Callable[[], LocalReply] | asyncio.Future[bytes]] = (
            deque())
        #: Received bytes not forwarded yet, kept as they came (joined once
        #: ``need`` bytes are there, so a large value is copied only once).
        self.pending: list[bytes] = []
        self.pending_len = 0
        self.need = 0
        self.tracker: RequestTracker | None = None
        self.blocked = False
        #: The KVCLOUD reply (its maker, then its future) the client waits for.
        self.awaited: object = None
        self.closing = False
        self.closed = False
        self.raw = False
        self.resp3 = False
        self.pauses: set[str] = set()
        self.drained: asyncio.Future[None] | None = None
        password = proxy.config["upstream_password"]
        #: Whether the server would let this connection run commands.
        self.authenticated = password is None
        #: Names the scanner must stop at (None: every command, until AUTH).
        self.special: frozenset[bytes] | None = commands.SPECIAL if password is None else None
        self.max_bulk_len = proxy.max_bulk_len
        #: Whether it authenticated with the proxy's own password (KVCLOUD).
        self.admin = password is None
        #: Authenticated by an AUTH the proxy answered from the shared link.
        self.auth_local = False
        #: Connection metadata set while shared, sent again on a dedicated link.
        self.replay: list[bytes] = []

    # ---- connection events -----------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.write = self.transport.write  # type: ignore[method-assign]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.proxy.sessions.add(self)
        log.debug("client %s connected", self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.write = _discard  # type: ignore[method-assign]
        self.proxy.sessions.discard(self)
        if self.dedicated is not None:
            self.dedicated.close()
        if self.drained is not None and not self.drained.done():
            self.drained.cancel()
        log.debug("client %s disconnected", self.peer)

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.pending or self.blocked:
            self.pending.append(data)
            self.pending_len += len(data)
            if self.blocked:
                return
            if self.tracker is not None:
                if not self.tracker.feed(data):
                    return
            elif self.pending_len < self.need:
                return
            data = self._take_pending()
        self._process(data)

    def _take_pending(self) -> bytes:
        data = b"".join(self.pending) if len(self.pending) > 1 else self.pending[0]
        self.pending = []
        self.pending_len = self.need = 0
        self.tracker = None
        return data

    def _keep(self, buf: bytes | bytearray, pos: int, need: int = 0) -> None:
        """Hold ``buf[pos:]`` until ``need`` bytes (at least) are there."""
        rest = bytes(buf[pos:]) if pos or not isinstance(buf, bytes) else buf
        self.pending = [rest]
        self.pending_len = len(rest)
        self.need = need
        if len(rest) > LARGE_REQUEST and rest[:1] == b"*":
            self.tracker = RequestTracker()
            if self.tracker.feed(rest):
                self.tracker = None

    def eof_received(self) -> bool | None:
        self.closing = True
        self._close_if_done()
        return True

    # ---- the scan loop -----------------------------------------------------

    def _process(self, buf: bytes | bytearray) -> None:
        n = len(buf)
        pos = 0
        max_bulk = self.max_bulk_len
        while pos < n:
            end, count, stop, message = scan_run(buf, pos, max_bulk, self.special)
            if end > pos:
                self._forward(buf if end - pos == n else slice_of(buf, pos, end), count)
                pos = end
            if stop in (STOP_DONE, STOP_INCOMPLETE):
                break
            if stop == STOP_ERROR:
                self._protocol_error(message or "invalid request")
                return
            pos = self._one_command(buf, pos, stop == STOP_INLINE)
            if pos < 0:
                return
        if pos < n:
            self._keep(buf, pos, command_need(buf, pos))
        if self.link.write_paused:
            self._pause("upstream")
            self.link.paused_sessions.add(self)

    def _one_command(self, buf: bytes | bytearray, pos: int, inline: bool) -> int:
        """Deal with the one command at ``pos`` the scanner stopped at.

        Returns where scanning goes on, or -1 when this call has dealt with the
        rest of the buffer itself: kept it (an incomplete inline command, a
        link switch) or dropped it (QUIT, a protocol error).
        """
        try:
            if inline:
                end = inline_end(buf, pos)
                if end == INCOMPLETE:
                    self._keep(buf, pos)
                    return -1
                args = inline_args(buf[pos:end])
                if not args:  # an empty line gets no reply from the server
                    return end
            else:
                end, _ = command_end(buf, pos, self.max_bulk_len)
                args = command_args(buf, pos, end)
        except ProtocolError as exc:
            self._protocol_error(str(exc))
            return -1
        upper = args[0].upper()
        action = self._special(upper, args, inline)
        if action == _FORWARD:
            self._forward(buf[pos:end], 1)
        elif action == _OWN_BATCH:
            self._forward(buf[pos:end], 1, self._observed_batch(upper, args, buf[pos:end]))
        elif action == _BLOCK:
            self._keep(buf, pos)
            self._block_end = end - pos
            return -1
        elif action == _STOP:
            return -1
        elif action == _WAITING:
            if end < len(buf):
                self._keep(buf, end)
            return -1
        return end

    _block_end = 0

    def _forward(self, data: Chunk, count: int, batch: Batch | None = None) -> None:
        if self.raw or not count:
            self.link.send_raw(data)
            return
        self.order.append(batch or Batch(count))
        self.link.send(self, data)

    def _special(self, upper: bytes, args: list[bytes], inline: bool) -> int:  # noqa: C901
        if upper == commands.KVCLOUD:
            # Answered when its turn comes, so it sees what earlier commands did (AUTH).
            kvcloud, sub_args = self.proxy.kvcloud, args[1:]
            waits = not self.raw and kvcloud.answers_later(sub_args)
            def make() -> LocalReply:
                return kvcloud.handle(self, sub_args)

            if waits:  # like a blocking command: read nothing more until it is answered
                self.blocked = True
                self._pause("wait")
                self.awaited = make
            self.reply_later(make)
            # Refused at once (no I/O after all): the wait is already over.
            return _WAITING if waits and self.awaited is not None else _HANDLED
        if self.raw:
            return _FORWARD  # QUIT too: the server answers it after what is in flight
        if upper == commands.QUIT:
            self.reply(OK)
            self.closing = True
            self._close_if_done()
            return _STOP
        if self.dedicated is None:
            if upper == commands.AUTH and len(args) == 2 and self._proxy_auth(args[1]):
                self.authenticated = self.admin = self.auth_local = True
                self.special = commands.SPECIAL
                self.reply(OK)
                return _HANDLED
            if (self.authenticated and upper == commands.CLIENT and len(args) > 2
                    and args[1].upper() == b"SETINFO"):
                return _OWN_BATCH  # client metadata: shared, and replayed if it pins later
            self._start_switch(self._pin())
            return _BLOCK
        if upper == commands.AUTH or upper == commands.HELLO:
            return _OWN_BATCH
        if inline:
            return _FORWARD
        if upper in commands.RAW or (
            upper == commands.CLIENT and len(args) > 1 and args[1].upper() == b"REPLY"
        ):
            self._start_switch(self._go_raw())
            return _BLOCK
        return _FORWARD

    # ---- authentication ----------------------------------------------------

    def _proxy_auth(self, candidate: bytes) -> bool:
        """AUTH the proxy may answer itself: its own password, known good upstream."""
        return self.proxy.shared_auth_ok is True and self._is_proxy_password(candidate)

    def _is_proxy_password(self, candidate: bytes) -> bool:
        password = self.proxy.config["upstream_password"]
        if password is None:
            return False
        return hmac.compare_digest(candidate, password.encode())

    def _observed_batch(self, upper: bytes, args: list[bytes], raw: bytes | bytearray) -> Batch:
        """A command whose outcome, which only the server knows, changes the session."""
        if upper == commands.CLIENT:
            command = bytes(raw)

            def remember(reply: bytes) -> None:
                if reply[:1] != b"-":
                    self.replay.append(command)

            return Batch(1, remember)
        password: bytes | None = None
        protocol: int | None = None
        if upper == commands.AUTH:
            password = args[-1] if len(args) in (2, 3) else None
        else:
            rest = list(args[1:])
            if rest and rest[0].isdigit():
                protocol = int(rest.pop(0))
            while rest:
                option = rest.pop(0).upper()
                if option == b"AUTH" and len(rest) >= 2:
                    password = rest[1]
                    del rest[:2]
                elif option == b"SETNAME" and rest:
                    rest.pop(0)

        def observe(reply: bytes) -> None:
            if reply[:1] == b"-":
                return
            if protocol is not None:
                self.resp3 = protocol == 3
            if password is not None:
                self.authenticated = True
                self.admin = self._is_proxy_password(password)

        return Batch(1, observe)

    # ---- switching links ---------------------------------------------------

    def _start_switch(self, switch: Coroutine[None, None, None]) -> None:
        self.blocked = True
        self._pause("switch")
        task = asyncio.get_running_loop().create_task(switch)
        self.proxy.tasks.add(task)
        task.add_done_callback(self.proxy.tasks.discard)

    async def _wait_drained(self) -> None:
        if self.order:
            self.drained = asyncio.get_running_loop().create_future()
            await self.drained
            self.drained = None

    async def _pin(self) -> None:
        """Move to a connection of its own once earlier replies are in."""
        link = Link(self.proxy.upstream_address, self.proxy.connect_timeout, "dedicated",
                    self.proxy.gate)
        link.owner = self
        setup = self.proxy.auth_setup() if self.auth_local else []
        setup += [(command, SetupReply()) for command in self.replay]
        if setup:
            link.setup = lambda: setup
        try:
            await link.connect()
        except UpstreamUnavailable:
            if self.closed:
                return
            self.reply(link.unavailable_error())
            self._keep(self._take_pending(), self._block_end)
            self._unblock()
            return
        try:
            await self._wait_drained()
        except asyncio.CancelledError:
            link.close()
            return
        if self.closed:
            link.close()
            return
        self.link = self.dedicated = link
        self.special = commands.DEDICATED_SPECIAL
        log.debug("client %s pinned to a dedicated upstream connection", self.peer)
        self._unblock()

    async def _go_raw(self) -> None:
        try:
            await self._wait_drained()
        except asyncio.CancelledError:
            return
        if self.closed or self.dedicated is None:
            return
        self.raw = True
        self.special = commands.LOCAL
        self.dedicated.raw_sink = self
        self._unblock()

    def _unblock(self) -> None:
        self.blocked = False
        self._unpause("switch")
        if self.pending and not self.closing:
            self._process(self._take_pending())

    # ---- replies -----------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Replaced by the transport's own write while the client is connected."""

    def reply_later(self, make: Callable[[], LocalReply]) -> None:
        """A reply of the proxy's own, made when every earlier reply has gone out.

        ``make`` may return an awaitable (KVCLOUD ... WAIT): the reply is then
        written when it completes, and nothing queued behind it goes first.
        """
        self.order.append(make)
        if len(self.order) == 1:
            self._write_ready()

    def reply(self, data: bytes) -> None:
        """A reply of the proxy's own, in its place among the upstream's."""
        if self.order and not self.raw:
            self.order.append(data)
        else:
            self.write(data)

    def batch_done(self) -> None:
        order = self.order
        order.popleft()
        if order:
            if order[0].__class__ is not Batch:
                self._write_ready()
        elif self.drained is not None or self.closing:
            self._drain_event()

    def _write_ready(self) -> None:
        """Write the proxy's own replies that are now at the head of the order."""
        order = self.order
        while order and not isinstance(order[0], Batch):
            item = order[0]
            if isinstance(item, asyncio.Future):
                if not item.done():
                    return
                order.popleft()
                self.write(item.result() if not item.cancelled() else b"")
                self._waited(item)
                continue
            if not isinstance(item, bytes):
                made = item()
                if not isinstance(made, bytes):
                    waiting = asyncio.ensure_future(made)
                    if self.awaited is item:
                        self.awaited = waiting
                    order[0] = waiting
                    waiting.add_done_callback(lambda _: self._write_ready())
                    return
                order.popleft()
                self.write(made)
                self._waited(item)  # a refusal made at once still ends the wait
                continue
            order.popleft()
            self.write(item)
        if not order:
            self._drain_event()

    def _waited(self, reply: object) -> None:
        """A reply the client waited for went out: read its next commands."""
        if reply is not self.awaited:
            return
        self.awaited = None
        if self.blocked and "wait" in self.pauses:
            self.blocked = False
            self._unpause("wait")
            if self.pending and not self.closing:
                self._process(self._take_pending())

    def batch_failed(self, error_reply: bytes) -> None:
        order = self.order
        for index, item in enumerate(order):
            if isinstance(item, Batch):
                order[index] = error_reply * item.remaining
                break
        self._write_ready()

    def _drain_event(self) -> None:
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)
        self._close_if_done()

    def link_lost(self) -> None:
        """The server went away with replies of ours outstanding: end like it would."""
        self.order.clear()
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def _protocol_error(self, reason: str) -> None:
        log.warning("client %s: protocol error: %s", self.peer, reason)
        self.reply(error(f"ERR Protocol error: {reason}"))
        self.closing = True
        self.pending = []
        self._close_if_done()

    def _close_if_done(self) -> None:
        if self.closing and not self.order and self.transport is not None:
            self.transport.close()

    # ---- flow control ------------------------------------------------------

    def _pause(self, why: str) -> None:
        if not self.pauses and self.transport is not None:
            self.transport.pause_reading()
        self.pauses.add(why)

    def _unpause(self, why: str) -> None:
        self.pauses.discard(why)
        if not self.pauses and not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def resume_upstream(self) -> None:
        self._unpause("upstream")

    def pause_writing(self) -> None:
        self._pause("client")
        if self.dedicated is not None and self.dedicated.transport is not None:
            self.dedicated.transport.pause_reading()

    def resume_writing(self) -> None:
        self._unpause("client")
        if self.dedicated is not None and self.dedicated.transport is not None:
            self.dedicated.transport.resume_reading()
