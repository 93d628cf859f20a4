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


def server_command(binary: str, host: str, port: int, directory: Path, extra: str) -> list[str]:
    if is_kvrocks(binary):
        conf = directory / "kvrocks.conf"
        conf.write_text(f"bind {host}\nport {port}\ndir {directory}\ndaemonize no\n")
        return [binary, "-c", str(conf), *shlex.split(extra)]
    return [binary, "--bind", host, "--port", str(port), "--dir", str(directory),
            "--daemonize", "no", *shlex.split(extra)]


class ManagedServer:
    def __init__(self, binary: str | None, address: tuple[str, int], directory: str,
                 extra_args: str = "") -> None:
        found = binary or find_server_binary()
        if not found:
            raise ManagedServerError(
                "managed = yes but no server binary: set server_binary, KVROCKS_BIN, "
                "or install redis-server"
            )
        self.binary = found
        self.address = address
        self.directory = Path(directory).resolve()
        self.extra_args = extra_args
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, ready_timeout: float = 30.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        host, port = self.address
        command = server_command(self.binary, host, port, self.directory, self.extra_args)
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
                 Path(self.binary).name, self.process.pid, host, port, self.directory)
        await self._wait_ready(ready_timeout)

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

    async def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
        log.info("stopped %s", Path(self.binary).name)
