"""The listening proxy: owns the config, the shared link and the sessions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from kvproxy import logs
from kvproxy.config import Config, Provider
from kvproxy.jobs.backup import run_backup
from kvproxy.jobs.registry import Registry
from kvproxy.jobs.status import JobStatus
from kvproxy.proxy.flow import OutputLimit
from kvproxy.proxy.kvcloud import KvCloud
from kvproxy.proxy.link import Gate, SetupReply, Sink
from kvproxy.proxy.pool import Pool
from kvproxy.proxy.replies import encode_command
from kvproxy.proxy.session import Session
from kvproxy.storage.providers import open_store
from kvproxy.upstream.control import Control
from kvproxy.upstream.managed import ManagedServer
from kvproxy.upstream.snapshot import Snapshot, take_snapshot

log = logging.getLogger("kvproxy")


#: What clients get for each command while a swap restore holds the server down.
LOADING = b"-LOADING restore in progress\r\n"


class Proxy:
    def __init__(self, config: Config, managed: ManagedServer | None = None) -> None:
        self.config = config
        #: The server this proxy started and supervises (``managed = yes``), if any.
        self.managed = managed
        self.sessions: set[Session] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.gate = Gate()
        password = config["upstream_password"]
        self.pool = Pool(self.upstream_address, self.connect_timeout,
                         int(config["upstream_connections"]), int(config["spare_connections"]),
                         self.gate, self._shared_setup,
                         self.auth_setup if password is not None else None)
        #: Whether the server accepted upstream_password on the shared link
        #: (None until it answered): only then may the proxy answer AUTH itself.
        self.shared_auth_ok: bool | None = None
        #: Whether the server wants a password the config does not give.
        self.upstream_requires_auth = False
        self.jobs = Registry(Path(config["state_dir"]))
        self.kvcloud = KvCloud(self)
        self.server: asyncio.Server | None = None
        self.stopping = asyncio.Event()

    @property
    def upstream_address(self) -> tuple[str, int]:
        return self.config["upstream"]  # type: ignore[no-any-return]

    @property
    def connect_timeout(self) -> float:
        return float(self.config["connect_timeout"])

    @property
    def max_bulk_len(self) -> int:
        return int(self.config["max_bulk_len"])

    @property
    def output_limit(self) -> OutputLimit:
        limit: OutputLimit = self.config["client_output_limit"]
        return limit

    @property
    def config_path(self) -> Path | None:
        return self.config.path

    async def backup(self, providers: list[Provider], status: JobStatus) -> None:
        """KVCLOUD UPLOAD's job: a fresh snapshot from the upstream, to each provider."""
        config = self.config

        async def take(staging: Path) -> Snapshot:
            async with Control(self.upstream_address, config["upstream_password"]) as control:
                return await take_snapshot(control, config["source"], staging)

        await run_backup(config, providers, status, take, open_store)

    @contextlib.asynccontextmanager
    async def upstream_held(self, drain_timeout: float = 5.0) -> AsyncIterator[None]:
        """Clients get ``-LOADING`` while the body runs; pass-through resumes after.

        Replies already on their way are let through first (up to
        ``drain_timeout``), then the links close on purpose. A client with a
        dedicated connection loses it, as it would if the server restarted:
        its connection state (MULTI, SUBSCRIBE, ...) does not survive a restart.
        """
        self.gate.reply = LOADING
        for link in self.pool.links:
            link.ready = False  # new batches meet the gate; replies due still arrive
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + drain_timeout
            while self.pool.busy() and loop.time() < deadline:
                await asyncio.sleep(0.01)
            self.pool.close()
            for session in list(self.sessions):
                if session.dedicated is not None:
                    session.dedicated.close()
            yield
        finally:
            self.gate.reply = None

    def reconfigure(self, config: Config) -> None:
        """Take a reloaded config: what can change while running changes now."""
        self.config = config
        logs.setup(config["log_format"], config["log_level"])
        self.pool.reconfigure(self.connect_timeout)

    def auth_setup(self) -> list[tuple[bytes, Sink]]:
        password = self.config["upstream_password"].encode()
        return [(encode_command(b"AUTH", password), SetupReply(self._auth_outcome))]

    def _shared_setup(self) -> list[tuple[bytes, Sink]]:
        """First words on a new shared connection: AUTH, or a PING to learn if one is needed."""
        if self.config["upstream_password"] is not None:
            return self.auth_setup()
        return [(encode_command(b"PING"), SetupReply(self._probe_outcome))]

    def _auth_outcome(self, reply: bytes) -> None:
        ok = not reply.startswith(b"-")
        if not ok and self.shared_auth_ok is not False:
            log.warning("upstream rejected upstream_password from kvcloud.conf")
        self.shared_auth_ok = ok

    def _probe_outcome(self, reply: bytes) -> None:
        self.upstream_requires_auth = reply.startswith(b"-NOAUTH")
        if self.upstream_requires_auth:
            log.warning("upstream requires a password: set upstream_password in kvcloud.conf "
                        "(KVCLOUD is refused until then)")

    async def start(self) -> None:
        host, port = self.config["listen"]
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: Session(self), host, port, reuse_address=True, backlog=1024
        )
        log.info(
            "kvproxy listening on %s:%d, upstream %s:%d", host, port, *self.upstream_address
        )
        self.pool.start()  # and learn early whether the server takes our password

    def request_stop(self) -> None:
        self.stopping.set()

    async def run_until_stopped(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self.stopping.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Stop accepting, let in-flight replies reach their clients, then close."""
        log.info("kvproxy stopping")
        if self.server is not None:
            self.server.close()
        deadline = asyncio.get_running_loop().time() + float(self.config["shutdown_timeout"])
        while any(s.replies.order for s in self.sessions):
            if asyncio.get_running_loop().time() > deadline:
                log.warning("stopping with replies still outstanding")
                break
            await asyncio.sleep(0.01)
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.close()
        self.pool.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.sleep(0)
