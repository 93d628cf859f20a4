"""One client connection: split its requests, forward them, keep replies in order.

A session starts shared: its requests are cut into commands only to find the
few named in ``commands.py``; runs of ordinary commands go upstream as the
original bytes, to a link of the pool picked when the client has nothing in
flight. A client that turns stateful moves to a dedicated link (at once when
a spare is ready and nothing is in flight, else once its replies are in),
and to raw relay after commands whose replies are not one per command.

When the client leaves, what it began ends on the server too: a half-close
is passed on to its dedicated link (the server answers what came before,
then closes, ending a blocking command), a lost connection closes the link,
and replies still due on a shared link are read and dropped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from kvproxy import logs
from kvproxy.proxy import commands
from kvproxy.proxy.batch import Batch
from kvproxy.proxy.flow import HELD_INPUT_LIMIT, ClientFlow, Pause
from kvproxy.proxy.identity import Auth, Identity
from kvproxy.proxy.link import Link
from kvproxy.proxy.pending import PendingInput
from kvproxy.proxy.replies import OK
from kvproxy.proxy.replyqueue import ReplyQueue, discard
from kvproxy.proxy.resp import (
    INCOMPLETE,
    STOP_DONE,
    STOP_ERROR,
    STOP_INCOMPLETE,
    STOP_INLINE,
    Chunk,
    ProtocolError,
    command_args,
    command_end,
    command_need,
    inline_args,
    inline_end,
    scan_run,
    slice_of,
)
from kvproxy.proxy.states import Input, Mode
from kvproxy.proxy.switch import Switcher

if TYPE_CHECKING:
    from kvproxy.proxy.server import Proxy

log = logging.getLogger("kvproxy.session")
#: Hostile clients can each cause a warning; the log must not grow with them.
warnings = logs.Throttle(log)


# What the scan loop does after a command it had to look at.
_FORWARD, _HANDLED, _OWN_BATCH, _RESCAN, _STOP = range(5)


class Session(asyncio.Protocol):
    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.pool = proxy.pool
        self.mode = Mode.SHARED
        self.input = Input.OPEN
        #: The link the batches in flight are on (the dedicated one once pinned).
        self.link: Link | None = None
        self.dedicated: Link | None = None
        self.transport: asyncio.Transport | None = None
        self.flow: ClientFlow | None = None
        self.peer = "?"
        self.replies = ReplyQueue(self, int(proxy.config["client_pipeline_limit"]))
        self.pending = PendingInput()
        self.identity = Identity(proxy.config["upstream_password"])
        #: Names the scanner must stop at (None: every command, until authenticated).
        self.special: frozenset[bytes] | None = (
            commands.SPECIAL if self.identity.authenticated else None)
        self.max_bulk_len = proxy.max_bulk_len
        #: A protocol error in raw mode, sent once the server has answered what came before.
        self.last_words: bytes | None = None
        self.switch = Switcher(self)

    # ---- connection events -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.flow = ClientFlow(self.transport, self.proxy.output_limit)
        self.replies.write = self.transport.write
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.proxy.sessions.add(self)
        log.debug("client %s connected", self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.input = Input.GONE
        self.replies.write = discard
        self.pending.clear()
        self.proxy.sessions.discard(self)
        if self.dedicated is not None:
            self.dedicated.close()
        self.switch.cancel()
        log.debug("client %s disconnected", self.peer)

    def data_received(self, data: bytes) -> None:
        state = self.input
        if state is Input.OPEN:
            if self.pending:
                if not self.pending.add(data):
                    return
                data = self.pending.take()
            self._process(data)
        elif state is Input.HELD:
            self.pending.add(data)
            if self.pending.size > HELD_INPUT_LIMIT and self.flow is not None:
                self.flow.pause(Pause.HELD)

    def eof_received(self) -> bool:
        if self.input is Input.HELD:
            self.input = Input.HELD_ENDING
            return True
        if self.input is Input.OPEN:
            self._end_input()
        # Also after QUIT or a protocol error: a blocking command still due
        # must end on the server now that the client is gone.
        if self.dedicated is not None and self.last_words is None:
            self.dedicated.end_input()
        return True  # keep the transport: replies still due go out

    # ---- the scan loop -------------------------------------------------------

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
            self.pending.keep(buf, pos, command_need(buf, pos))
        link = self.link
        if link is not None and self.flow is not None:
            if link.write_paused:
                self.flow.pause(Pause.UPSTREAM)
                link.paused_sessions.add(self.replies)
            replies = self.replies
            if replies.commands >= replies.pipeline_limit:  # paused until half are answered
                replies.pipeline_full = True
                self.flow.pause(Pause.PIPELINE)

    def _one_command(self, buf: bytes | bytearray, pos: int, inline: bool) -> int:
        """Deal with the command at ``pos`` the scanner stopped at.

        Returns where scanning goes on, or -1 when the rest of the buffer is
        dealt with here: kept (an incomplete inline command, held input) or
        dropped (QUIT, a protocol error).
        """
        try:
            if inline:
                end = inline_end(buf, pos)
                if end == INCOMPLETE:
                    self.pending.keep(buf, pos)
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
            self._forward(buf[pos:end], 1, self.identity.observed(upper, args, buf[pos:end]))
        elif action == _RESCAN:
            if self.input is Input.HELD:  # a switch is under way: the command waits for it
                self.pending.keep(buf, pos)
                return -1
            return pos  # the same command, seen with the new mode's eyes
        elif action == _STOP:
            return -1
        if self.input is Input.HELD:  # an awaited KVCLOUD reply: read nothing more until it
            if end < len(buf):
                self.pending.keep(buf, end)
            return -1
        return end

    def _forward(self, data: Chunk, count: int, batch: Batch | None = None) -> None:
        mode = self.mode
        if mode is Mode.RAW or not count:
            if mode is not Mode.SHARED and self.link is not None:
                self.link.send_raw(data)  # empty commands on the shared links are dropped
            return
        replies = self.replies
        batch = batch or Batch(count)
        if mode is Mode.SHARED:
            if not replies.inflight:
                self.link = self.pool.pick(replies.slow)
            if replies.slow:
                batch.slow = True
                self.link.slow_inflight += 1  # type: ignore[union-attr]
        replies.add_batch(batch)
        self.link.send(replies, data)  # type: ignore[union-attr]

    def _special(self, upper: bytes, args: list[bytes], inline: bool) -> int:  # noqa: C901
        if upper == commands.KVCLOUD:
            # Answered when its turn comes, so it sees what earlier commands did (AUTH).
            kvcloud, sub_args = self.proxy.kvcloud, args[1:]
            waits = self.mode is not Mode.RAW and kvcloud.answers_later(sub_args)
            if waits:  # like a blocking command: read nothing more until it is answered
                self.input = Input.HELD
            self.replies.reply_later(lambda: kvcloud.handle(self.identity, sub_args), awaited=waits)
            return _HANDLED
        if self.mode is Mode.RAW:
            return _FORWARD  # QUIT too: the server answers it after what is in flight
        if upper == commands.QUIT:
            self.replies.reply(OK)
            self._end_input()
            return _STOP
        if self.mode is Mode.SHARED:
            identity = self.identity
            if (upper == commands.AUTH and len(args) == 2
                    and self.proxy.shared_auth_ok is True
                    and identity.is_proxy_password(args[1])):
                identity.auth = Auth.LOCAL
                self.special = commands.SPECIAL
                self.replies.reply(OK)
                return _HANDLED
            if identity.authenticated and commands.stays_shared(upper, args):
                return _OWN_BATCH if upper == commands.CLIENT else _FORWARD
            self.switch.pin()
            return _RESCAN
        if upper == commands.AUTH or upper == commands.HELLO:
            return _OWN_BATCH
        if inline:
            return _FORWARD
        if upper in commands.RAW or (
            upper == commands.CLIENT and len(args) > 1 and args[1].upper() == b"REPLY"
        ):
            self.switch.go_raw()
            return _RESCAN
        return _FORWARD

    def release(self) -> None:
        """Input held for a switch or an awaited reply may flow again."""
        ending = self.input is Input.HELD_ENDING
        self.input = Input.OPEN
        if self.flow is not None:
            self.flow.resume(Pause.HELD)
        if self.pending:
            self._process(self.pending.take())
        if ending:
            if self.input is Input.HELD:  # held again (another switch): end after that
                self.input = Input.HELD_ENDING
            else:
                self.eof_received()

    # ---- what the reply queue tells -------------------------------------------

    def replies_out(self) -> None:
        self.switch.replies_out()
        self._close_if_done()

    def waited_reply_out(self) -> None:
        if self.input is Input.HELD or self.input is Input.HELD_ENDING:
            self.release()

    def link_lost(self) -> None:
        """The server closed the connection with replies of ours due: end as it would."""
        self.replies.clear()
        self.input = Input.ENDED
        if self.transport is not None:
            if self.last_words is not None:
                self.transport.write(self.last_words)
            self.transport.close()

    def resume_upstream(self) -> None:
        if self.flow is not None:
            self.flow.resume(Pause.UPSTREAM)

    def pipeline_drained(self) -> None:
        if self.flow is not None:
            self.flow.resume(Pause.PIPELINE)

    # ---- ending ----------------------------------------------------------------

    def _end_input(self) -> None:
        self.input = Input.ENDED
        self.replies.watch_empty = True
        self.pending.clear()
        self._close_if_done()

    def _protocol_error(self, reason: str) -> None:
        warnings.warning("client %s: protocol error: %s", self.peer, reason)
        # Byte for byte as Redis: the offending byte in "got 'X'" goes out raw
        # (but never a CR or LF, which would break the reply's framing).
        text = reason.replace("\r", " ").replace("\n", " ").encode("latin-1", "replace")
        reply = b"-ERR Protocol error: " + text + b"\r\n"
        if self.mode is Mode.RAW and self.dedicated is not None:
            # Replies to what came before are not counted here: the server
            # answers them, sees the end, and closes; then the error goes out.
            self.last_words = reply
            self.input = Input.ENDED
            self.pending.clear()
            self.dedicated.end_input()
            return
        self.replies.reply(reply)
        self._end_input()

    def _close_if_done(self) -> None:
        if (self.input is Input.ENDED and not self.replies.order
                and self.transport is not None and self.last_words is None):
            self.transport.close()

    # ---- flow control (the client's transport) -------------------------------

    def pause_writing(self) -> None:
        if self.flow is None:
            return
        self.flow.pause(Pause.CLIENT)
        if self.input is not Input.GONE:
            self.replies.write = self._write_over_high_water
        if self.dedicated is not None and self.dedicated.transport is not None:
            self.dedicated.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.flow is None:
            return
        self.flow.resume(Pause.CLIENT)
        if self.input is not Input.GONE and self.transport is not None:
            self.replies.write = self.transport.write
        if self.dedicated is not None and self.dedicated.transport is not None:
            self.dedicated.transport.resume_reading()

    def _write_over_high_water(self, data: bytes | bytearray | memoryview) -> None:
        """The client is behind: each write checks its output limits."""
        assert self.transport is not None and self.flow is not None
        self.transport.write(data)
        reason = self.flow.over_limit()
        if reason is not None:
            warnings.warning("client %s: %s; disconnected", self.peer, reason)
            self.replies.write = discard
            self.transport.abort()
