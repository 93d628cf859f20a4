"""Moving a client to a connection of its own, and from there to raw relay.

A client's batches in flight are all on one link, so a switch waits until
every reply it is due has arrived; meanwhile its input is held (read and
kept, not forwarded). When nothing is due and a spare connection is ready,
the switch happens at once, in the same turn as the command that asked for
it, so no other client's command can overtake that one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING

from kvproxy.proxy import commands
from kvproxy.proxy.identity import Auth
from kvproxy.proxy.link import Link, SetupReply, UpstreamUnavailable
from kvproxy.proxy.resp import command_end, inline_end
from kvproxy.proxy.states import Input, Mode

if TYPE_CHECKING:
    from kvproxy.proxy.session import Session

log = logging.getLogger("kvproxy.session")


class Switcher:
    __slots__ = ("session", "task", "drained")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.task: asyncio.Task[None] | None = None
        self.drained: asyncio.Future[None] | None = None

    def pin(self) -> None:
        """Move to a connection of its own: at once if a spare is ready and nothing is due."""
        session = self.session
        if not session.replies.order and session.identity.auth is not Auth.NONE:
            spare = session.proxy.pool.take_spare()
            if spare is not None:
                self._dedicate(spare)
                return
        self._hold(self._pin_later())

    def go_raw(self) -> None:
        if not self.session.replies.order:
            self._become_raw()
        else:
            self._hold(self._raw_later())

    def replies_out(self) -> None:
        drained = self.drained
        if drained is not None and not drained.done():
            drained.set_result(None)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    async def _pin_later(self) -> None:
        session = self.session
        proxy = session.proxy
        if session.identity.auth is Auth.NONE:  # the server itself must say -NOAUTH
            link = Link(proxy.upstream_address, proxy.connect_timeout, "dedicated", proxy.gate)
        else:
            link = proxy.pool.new_dedicated()
        try:
            await link.connect()
            await self._drain()
        except UpstreamUnavailable:
            if session.input is not Input.GONE:
                session.mode = Mode.SHARED
                # The pinning command fails; the client stays shared, the next one tries again.
                held = session.pending.take()
                session.replies.reply(link.unavailable_error())
                session.pending.keep(held, self._command_end(held))
                self._done()
            return
        except asyncio.CancelledError:  # the client left meanwhile
            link.close()
            raise
        if session.input is Input.GONE:
            link.close()
            return
        self._dedicate(link)
        self._done()

    async def _raw_later(self) -> None:
        await self._drain()
        if self.session.input is not Input.GONE:
            self._become_raw()
            self._done()

    def _command_end(self, held: bytes) -> int:
        """Where the (complete) command at the start of held input ends."""
        if held[:1] == b"*":
            return command_end(held, 0, self.session.max_bulk_len)[0]
        return inline_end(held, 0)

    def _dedicate(self, link: Link) -> None:
        session = self.session
        link.owner = session.replies
        link.name = "dedicated"
        for command in session.identity.replay:
            link.send(SetupReply(), command)
        session.link = session.dedicated = link
        session.mode = Mode.DEDICATED
        session.special = commands.DEDICATED_SPECIAL
        log.debug("client %s pinned to a dedicated upstream connection", session.peer)

    def _become_raw(self) -> None:
        session = self.session
        assert session.dedicated is not None
        session.mode = Mode.RAW
        session.special = commands.LOCAL
        session.dedicated.raw_sink = session.replies

    def _hold(self, switch: Coroutine[None, None, None]) -> None:
        session = self.session
        session.input = Input.HELD
        session.mode = Mode.SWITCHING
        task = asyncio.get_running_loop().create_task(switch)
        self.task = task
        session.proxy.tasks.add(task)
        task.add_done_callback(session.proxy.tasks.discard)

    async def _drain(self) -> None:
        session = self.session
        replies = session.replies
        while replies.order and session.input is not Input.GONE:
            replies.watch_empty = True
            self.drained = asyncio.get_running_loop().create_future()
            await self.drained
        self.drained = None
        replies.watch_empty = False  # a hang-up meanwhile turns it on again (_end_input)

    def _done(self) -> None:
        self.task = None
        self.session.release()
