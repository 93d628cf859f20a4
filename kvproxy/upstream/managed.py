"""A server the proxy starts and stops itself (``managed = yes``).

It lets the proxy run on a fresh machine with nothing else set up: Kvrocks
when a binary is found, redis-server otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger("kvproxy.managed")


class ManagedServerError(Exception):
    pass


def find_server_binary() -> str | None:
    """Kvrocks first (KVROCKS_BIN, then PATH), redis-server as the fallback."""
    for candidate in (os.environ.get("KVROCKS_BIN"), shutil.which("kvrocks"),
                      shutil.which("redis-server")):
        if candidate:
            return candidate
    return None


def is_kvrocks(binary: str) -> bool:
    return "kvrocks" in Path(binary).name


def server_command(binary: str, host: str, port: int, directory: Path, extra: str,
                   config_file: str | None = None) -> list[str]:
    """The server's command line: the operator's config file, then what the proxy must own.

    Address and data directory come last so they win over the file; both
    servers take ``--name value`` overrides after their config file.
    """
    owned = ["--bind", host, "--port", str(port), "--dir", str(directory), "--daemonize", "no"]
    if is_kvrocks(binary):
        if config_file is None:
            config_file = str(directory / "kvrocks.conf")
            Path(config_file).write_text("# written by kvproxy: managed = yes\n")
        return [binary, "-c", config_file, *owned, *shlex.split(extra)]
    return [binary, *([config_file] if config_file else []), *owned, *shlex.split(extra)]


#: First wait before restarting a server that died; doubled per failure in a row.
RESTART_DELAY = 0.5
RESTART_DELAY_MAX = 30.0
#: A server that ran this long before dying counts as healthy: the wait starts over.
STABLE_AFTER = 60.0


class ManagedServer:
    def __init__(self, binary: str | None, address: tuple[str, int], directory: str,
                 extra_args: str = "", config_file: str | None = None) -> None:
        found = binary or find_server_binary()
        if not found:
            raise ManagedServerError(
                "managed = yes but no server binary: set server_binary, KVROCKS_BIN, "
                "or install redis-server"
            )
        self.binary = found
        self.kvrocks = is_kvrocks(found)
        self.address = address
        self.directory = Path(directory).resolve()
        self.extra_args = extra_args
        self.config_file = str(Path(config_file).resolve()) if config_file else None
        self.process: asyncio.subprocess.Process | None = None
        self.supervisor: asyncio.Task[None] | None = None
        self.restarts = 0

    @property
    def name(self) -> str:
        return Path(self.binary).name

    async def start(self, ready_timeout: float = 30.0) -> None:
        """Start and wait until it answers; from then on restart it whenever it dies."""
        await self._launch(ready_timeout)
        self.supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def _launch(self, ready_timeout: float) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        host, port = self.address
        command = server_command(self.binary, host, port, self.directory, self.extra_args,
                                 self.config_file)
        log_file = open(self.directory / "server.log", "ab")  # noqa: SIM115 - owned by the child
        try:
            self.process = await asyncio.create_subprocess_exec(
                *command, stdout=log_file, stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL, start_new_session=True,
            )
        except OSError as exc:
            raise ManagedServerError(f"cannot start {self.binary}: {exc.strerror}") from None
        finally:
            log_file.close()
        log.info("started %s (pid %d) on %s:%d, data in %s",
                 self.name, self.process.pid, host, port, self.directory)
        try:
            await self._wait_ready(ready_timeout)
        except ManagedServerError:
            await self._terminate()
            raise

    async def _supervise(self) -> None:
        """Restart the server when it dies on its own, waiting longer after each failure."""
        delay = RESTART_DELAY
        loop = asyncio.get_running_loop()
        while True:
            process = self.process
            if process is None:
                return
            started = loop.time()
            status = await process.wait()
            if loop.time() - started >= STABLE_AFTER:
                delay = RESTART_DELAY
            log.warning("%s exited with status %d; restarting in %gs (see %s)",
                        self.name, status, delay, self.directory / "server.log")
            while True:
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_DELAY_MAX)
                try:
                    await self._launch(30.0)
                except ManagedServerError as exc:
                    log.warning("restart failed: %s; next try in %gs", exc, delay)
                    continue
                self.restarts += 1
                break

    async def _wait_ready(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if self.process is not None and self.process.returncode is not None:
                raise ManagedServerError(
                    f"{self.binary} exited with status {self.process.returncode}; "
                    f"see {self.directory / 'server.log'}"
                )
            try:
                reader, writer = await asyncio.open_connection(*self.address)
                writer.write(b"PING\r\n")
                reply = await asyncio.wait_for(reader.readline(), 1.0)
                writer.close()
                if reply.startswith((b"+PONG", b"-NOAUTH")):
                    return
            except (TimeoutError, OSError):
                pass
            await asyncio.sleep(0.05)
        raise ManagedServerError(f"{self.binary} did not answer on {self.address} in {timeout}s")

    async def stop(self, timeout: float = 10.0,
                   shutdown: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stop on purpose (no restart): ``shutdown`` first if given, else SIGTERM."""
        if self.supervisor is not None:
            self.supervisor.cancel()
            self.supervisor = None
        process = self.process
        if process is None or process.returncode is not None:
            return
        if shutdown is not None:
            try:
                await shutdown()
                await asyncio.wait_for(process.wait(), timeout)
            except Exception as exc:  # noqa: BLE001 - SIGTERM is the fallback for any failure
                log.warning("SHUTDOWN did not stop %s (%s); sending SIGTERM", self.name, exc)
        await self._terminate(timeout)
        log.info("stopped %s", self.name)

    async def _terminate(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
