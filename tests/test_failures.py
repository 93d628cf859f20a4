"""Bad input and bad days: clear errors, nothing lost, the proxy stays up."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.servers import Proxy, Upstream, free_port, raw_exchange

PING = b"*1\r\n$4\r\nPING\r\n"


@pytest.fixture
def pair(make_upstream, make_proxy) -> tuple[Upstream, Proxy]:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    return server, make_proxy(server.port)


def test_unreachable_upstream_answers_with_the_reason(make_proxy) -> None:  # type: ignore[no-untyped-def]
    dead_port = free_port()
    proxy: Proxy = make_proxy(dead_port)
    for _ in range(3):  # and it keeps accepting
        reply = raw_exchange(proxy.port, PING + PING, settle=1.0)
        error = b"-ERR upstream 127.0.0.1:%d unavailable: " % dead_port
        assert reply.startswith(error)
        assert reply.count(error) == 2
        assert b"refused" in reply.lower()
    assert proxy.alive()


MALFORMED = {
    "huge multibulk count": (b"*99999999999\r\n", b"invalid multibulk length"),
    "non-numeric count": (b"*abc\r\n", b"invalid multibulk length"),
    "negative bulk length": (b"*1\r\n$-5\r\n", b"invalid bulk length"),
    "absurd bulk length": (b"*1\r\n$99999999999\r\n", b"invalid bulk length"),
    "bulk length beyond the limit": (b"*1\r\n$600000000\r\n", b"invalid bulk length"),
    "missing dollar": (b"*1\r\nPING\r\n", b"expected '$', got 'P'"),
    "unterminated bulk": (b"*1\r\n$4\r\nPINGxx", b"bulk string not terminated"),
    "endless header": (b"*" + b"9" * 100, b"invalid multibulk length"),
    "endless inline": (b"X" * 70_000, b"too big inline request"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_resp_is_refused_and_closed(pair: tuple[Upstream, Proxy], case: str) -> None:
    _, proxy = pair
    bystander = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
    payload, reason = MALFORMED[case]
    reply = raw_exchange(proxy.port, PING + payload, expect_close=True)
    assert reply.startswith(b"+PONG\r\n-ERR Protocol error: ")
    assert reason in reply
    bystander.sendall(PING)
    assert bystander.recv(100) == b"+PONG\r\n"
    bystander.close()


def test_truncated_command_then_close_is_harmless(pair: tuple[Upstream, Proxy]) -> None:
    server, proxy = pair
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"*3\r\n$3\r\nSET\r\n$9\r\ntruncated\r\n$5\r\nva")
    time.sleep(0.2)
    assert server.client().exists("truncated") == 0
    assert proxy.client().ping() is True


def test_declared_lengths_reserve_no_memory(pair: tuple[Upstream, Proxy]) -> None:
    _, proxy = pair
    before = proxy.rss_kib()
    socks = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        sock.sendall(b"*2147483647\r\n$536870912\r\nabc")
        socks.append(sock)
    time.sleep(0.3)
    assert proxy.client().ping() is True
    grown_mib = (proxy.rss_kib() - before) / 1024
    assert grown_mib < 64, f"proxy grew by {grown_mib:.0f} MiB on declared lengths alone"
    for sock in socks:
        sock.close()


def test_random_bytes_never_bring_the_proxy_down(pair: tuple[Upstream, Proxy]) -> None:
    _, proxy = pair
    rng = random.Random(20261124)
    valid = b"*3\r\n$3\r\nSET\r\n$4\r\nfuzz\r\n$5\r\nvalue\r\n"
    for _ in range(150):
        kind = rng.random()
        if kind < 0.4:  # a valid command with a few bytes changed
            data = bytearray(valid)
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            payload = bytes(data)
        elif kind < 0.7:  # a valid command cut short
            payload = valid[: rng.randrange(len(valid))]
        else:  # noise starting like RESP
            payload = b"*" + rng.randbytes(rng.randint(1, 200))
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(2)
            try:
                while sock.recv(65536):
                    pass
            except (TimeoutError, ConnectionResetError):
                pass
    assert proxy.alive()
    client = proxy.client()
    assert client.set("after-fuzz", "ok") is True
    assert client.get("after-fuzz") == b"ok"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_finishes_in_flight_replies_then_exits_0(
        pair: tuple[Upstream, Proxy], sig: signal.Signals) -> None:
    _, proxy = pair
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"*3\r\n$5\r\nBLPOP\r\n$5\r\nempty\r\n$3\r\n0.7\r\n")
        time.sleep(0.2)  # the BLPOP is now waiting in the server
        proxy.signal(sig)
        reply = sock.recv(100)
        assert reply in (b"*-1\r\n", b"$-1\r\n")
    assert proxy.process is not None
    assert proxy.process.wait(10) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1)


def test_shutdown_wait_is_bounded(make_upstream, make_proxy) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    proxy: Proxy = make_proxy(server.port, "[kvcloud]\nshutdown_timeout = 0.5\n")
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"*3\r\n$5\r\nBLPOP\r\n$5\r\nnever\r\n$1\r\n0\r\n")
        time.sleep(0.2)
        proxy.signal(signal.SIGTERM)
        assert proxy.process is not None
        assert proxy.process.wait(10) == 0
        assert sock.recv(100) == b""


def test_bad_config_file_is_refused_at_start(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conf = tmp_path / "kvcloud.conf"
    conf.write_text("[kvcloud]\nlisten = nowhere\n")
    result = subprocess.run([sys.executable, "-m", "kvproxy", "--conf", str(conf)],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "listen" in result.stderr and "HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr
