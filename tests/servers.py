"""Real servers for the tests: redis-server, Kvrocks and kvproxy itself.

Each runs on a free 127.0.0.1 port with its data in a temporary directory and
is stopped by the fixture that started it.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes] | None = None,
                  timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before listening")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def terminate(process: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    """SIGTERM, then SIGKILL if it does not go; returns the exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def kvrocks_binary() -> str | None:
    return os.environ.get("KVROCKS_BIN") or shutil.which("kvrocks")


class Upstream:
    """A Redis or Kvrocks server the tests can stop and start again on its port."""

    kind = "redis"

    def __init__(self, directory: Path, password: str | None = None,
                 extra: list[str] | None = None) -> None:
        self.directory = directory
        self.password = password
        self.extra = extra or []
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        directory.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port),
               "--dir", str(self.directory), "--save", "", "--appendonly", "no",
               "--daemonize", "no", "--proto-max-bulk-len", "512mb"]
        if self.password:
            cmd += ["--requirepass", self.password]
        return cmd + self.extra

    def start(self) -> Upstream:
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for_port(self.port, self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)

    def wait_stopped(self, timeout: float = 10.0) -> None:
        assert self.process is not None
        self.process.wait(timeout)

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis(port=self.port, password=self.password, **kwargs)  # type: ignore[arg-type]


class Kvrocks(Upstream):
    kind = "kvrocks"

    def command(self) -> list[str]:
        conf = self.directory / "kvrocks.conf"
        lines = ["bind 127.0.0.1", f"port {self.port}", f"dir {self.directory}",
                 "daemonize no", "workers 2", "resp3-enabled yes"]
        if self.password:
            lines.append(f"requirepass {self.password}")
        conf.write_text("\n".join(lines) + "\n")
        return [kvrocks_binary() or "kvrocks", "-c", str(conf), *self.extra]


class Proxy:
    """kvproxy as its users run it: the console script in its own process."""

    def __init__(self, directory: Path, upstream_port: int, conf: str | None = None,
                 args: list[str] | None = None) -> None:
        self.directory = directory
        self.port = free_port()
        self.upstream_port = upstream_port
        self.conf_path: Path | None = None
        directory.mkdir(parents=True, exist_ok=True)
        if conf is not None:
            self.conf_path = directory / "kvcloud.conf"
            self.conf_path.write_text(conf)
        self.args = args or []
        self.log_path = directory / "proxy.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Proxy:
        cmd = [sys.executable, "-m", "kvproxy", "--listen", f"127.0.0.1:{self.port}",
               "--upstream", f"127.0.0.1:{self.upstream_port}", *self.args]
        if self.conf_path is not None:
            cmd += ["--conf", str(self.conf_path)]
        log = open(self.log_path, "ab")  # noqa: SIM115
        # Run where relative paths of the config (state_dir) land in the test's directory.
        self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                        cwd=self.directory)
        log.close()
        wait_for_port(self.port, self.process)
        return self

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> int | None:
        return None if self.process is None else terminate(self.process)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss_kib(self) -> int:
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs: object) -> redis.Redis:
        """RESP2 unless asked: redis-py 8 would send HELLO 3, which pins the connection."""
        kwargs.setdefault("protocol", 2)
        return redis.Redis(port=self.port, **kwargs)  # type: ignore[arg-type]


def cmd(*args: bytes | str) -> bytes:
    """One command in RESP, as a client library would encode it."""
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in parts)


def raw_exchange(port: int, payload: bytes, expect_close: bool = False,
                 timeout: float = 5.0, settle: float = 0.3) -> bytes:
    """Send bytes in one write and collect what comes back until quiet or closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout
        sock.settimeout(settle if not expect_close else timeout)
        while time.monotonic() < deadline:
            try:
                data = sock.recv(1 << 16)
            except TimeoutError:
                if expect_close:
                    raise AssertionError("connection was not closed") from None
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)
