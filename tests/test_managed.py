"""The README's run command: the proxy starts its own upstream and stops it on exit."""

from __future__ import annotations

import shutil
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


def test_a_managed_server_that_dies_is_restarted(tmp_path: Path) -> None:
    import os
    import time

    import redis

    conf = (f"[kvcloud]\nmanaged = yes\nserver_binary = {shutil.which('redis-server')}\n"
            f"server_dir = {tmp_path / 'srv'}\n")
    proxy = Proxy(tmp_path / "proxy", free_port(), conf).start()
    try:
        client = proxy.client()
        client.set("kept", "on disk")
        client.save()
        first = int(client.info("server")["process_id"])
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:  # the proxy restarts it after its backoff; clients see errors meanwhile
            try:
                second = int(client.info("server")["process_id"])
                break
            except redis.RedisError:
                assert time.monotonic() < deadline, proxy.log()
                time.sleep(0.1)
        assert second != first
        assert client.get("kept") == b"on disk"
        assert "exited with status" in proxy.log() and "restarting" in proxy.log()
    finally:
        proxy.stop()


def test_server_config_is_passed_first_and_the_proxy_settings_win(tmp_path: Path) -> None:
    own = tmp_path / "redis.conf"
    own.write_text("maxmemory-policy allkeys-lru\nport 1\n")
    conf = (f"[kvcloud]\nmanaged = yes\nserver_binary = {shutil.which('redis-server')}\n"
            f"server_dir = {tmp_path / 'srv'}\nserver_config = {own}\n")
    proxy = Proxy(tmp_path / "proxy", free_port(), conf).start()
    try:
        client = proxy.client()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        assert client.config_get("port") == {"port": str(proxy.upstream_port)}
    finally:
        proxy.stop()
