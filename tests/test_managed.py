"""The README's run command: the proxy starts its own upstream and stops it on exit."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import pytest

from tests.servers import Proxy, free_port


def test_managed_upstream_starts_serves_and_stops(tmp_path: Path) -> None:
    server_port = free_port()
    conf = (Path(__file__).resolve().parent.parent / "conf" / "kvcloud.conf").read_text()
    conf = conf.replace("server_dir = kvproxy-data/server", f"server_dir = {tmp_path / 'srv'}")
    proxy = Proxy(tmp_path / "proxy", server_port, conf).start()
    try:
        client = proxy.client()
        assert client.set("managed", "yes") is True
        assert client.get("managed") == b"yes"
        assert (tmp_path / "srv" / "server.log").exists()
        proxy.signal(signal.SIGTERM)
        assert proxy.process is not None and proxy.process.wait(20) == 0
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", server_port), timeout=1)
    finally:
        proxy.stop()


def test_managed_without_any_server_binary_fails_clearly(tmp_path: Path) -> None:
    conf = "[kvcloud]\nmanaged = yes\nserver_binary = /nonexistent/kvrocks\n" \
        f"server_dir = {tmp_path / 'srv'}\n"
    proxy = Proxy(tmp_path / "proxy", free_port(), conf)
    with pytest.raises(RuntimeError, match="exited"):
        proxy.start()
    assert proxy.process is not None and proxy.process.wait(10) == 1
    assert "/nonexistent/kvrocks" in proxy.log() and "Traceback" not in proxy.log()
