"""Logs: one line per connection at debug, problems at warning, never a secret."""

from __future__ import annotations

import json
import logging
import signal

import pytest

from kvproxy import logs
from tests.servers import Proxy, Upstream, raw_exchange

PASSWORD = "log-secret-pw"


def test_json_lines_connection_events_and_no_secrets(make_upstream, make_proxy) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream(password=PASSWORD)
    proxy: Proxy = make_proxy(
        server.port, f"[kvcloud]\nupstream_password = {PASSWORD}\n",
        ["--log-format", "json", "--log-level", "debug"])
    client = proxy.client(password=PASSWORD)
    assert client.ping() is True
    client.close()
    raw_exchange(proxy.port, b"*2\r\n$4\r\nAUTH\r\n$13\r\nwrong-attempt\r\n")
    raw_exchange(proxy.port, b"*1\r\n$-7\r\n", expect_close=True)
    proxy.signal(signal.SIGTERM)
    assert proxy.process is not None and proxy.process.wait(10) == 0

    text = proxy.log()
    entries = [json.loads(line) for line in text.splitlines()]
    assert entries, "the proxy logged nothing"
    assert all({"time", "level", "logger", "message"} <= entry.keys() for entry in entries)
    messages = [(e["level"], e["message"]) for e in entries]
    assert any(level == "debug" and "connected" in m for level, m in messages)
    assert any(level == "debug" and "disconnected" in m for level, m in messages)
    assert any(level == "warning" and "protocol error" in m.lower() for level, m in messages)
    assert PASSWORD not in text and "wrong-attempt" not in text


def test_text_format_at_info_has_no_connection_lines(pair_proxy: Proxy) -> None:
    assert pair_proxy.client().ping() is True
    pair_proxy.signal(signal.SIGTERM)
    assert pair_proxy.process is not None and pair_proxy.process.wait(10) == 0
    text = pair_proxy.log()
    assert "kvproxy listening on" in text
    assert "connected" not in text


def test_throttle_lets_a_burst_through_then_counts_what_it_drops(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    throttle = logs.Throttle(logging.getLogger("kvproxy.test"), burst=3, interval=60,
                             clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="kvproxy.test"):
        for n in range(10):
            throttle.warning("client %d: protocol error", n)
        assert [r.getMessage() for r in caplog.records] == [
            "client 0: protocol error", "client 1: protocol error", "client 2: protocol error"]
        caplog.clear()
        now[0] = 61.0
        throttle.warning("client %d: protocol error", 10)
        assert [r.getMessage() for r in caplog.records] == [
            "7 similar warnings suppressed in the last 60s", "client 10: protocol error"]
