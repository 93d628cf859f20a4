"""Ordinary traffic through the proxy behaves exactly as it does directly."""

from __future__ import annotations

import socket
import subprocess
import threading
import time

import pytest
import redis

from kvproxy.proxy.resp import reply_end
from tests.servers import Proxy, Upstream, cmd, raw_exchange

# Direct and proxied runs of a case must see the same state: each cleans up after itself.
SCRIPTS = {
    "strings": cmd("DEL", "s1") + cmd("SET", "s1", "hello") + cmd("GET", "s1")
    + cmd("INCR", "s1") + cmd("GET", "no"),
    "lists": cmd("DEL", "l1") + cmd("RPUSH", "l1", "a", "b", "c") + cmd("LRANGE", "l1", "0", "-1"),
    "errors": cmd("NOSUCHCMD42") + cmd("GET", "") + cmd("GET"),
    "nested": cmd("DEL", "h1") + cmd("HSET", "h1", "f", "v") + cmd("SCAN", "0", "MATCH", "h1"),
}
CLEANUP = cmd("DEL", "s1", "l1", "h1")


@pytest.mark.parametrize("case", sorted(SCRIPTS))
def test_replies_are_byte_identical(upstream: Upstream, proxy: Proxy, case: str) -> None:
    direct = raw_exchange(upstream.port, SCRIPTS[case] + CLEANUP)
    proxied = raw_exchange(proxy.port, SCRIPTS[case] + CLEANUP)
    assert direct  # the server answered at all
    assert proxied == direct


def test_pipeline_of_10000_commands(proxy: Proxy) -> None:
    client = proxy.client()
    pipe = client.pipeline(transaction=False)
    for i in range(10_000):
        pipe.set(f"pipe:{i}", i)
        pipe.get(f"pipe:{i}")
    results = pipe.execute()
    assert results[0::2] == [True] * 10_000
    assert results[1::2] == [str(i).encode() for i in range(10_000)]


def test_many_clients_interleaved(proxy: Proxy) -> None:
    errors: list[str] = []

    def worker(n: int) -> None:
        client = proxy.client()
        for i in range(300):
            client.set(f"w{n}:{i}", f"{n}-{i}")
            value = client.get(f"w{n}:{i}")
            if value != f"{n}-{i}".encode():
                errors.append(f"worker {n} got {value!r}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_multi_exec_discard_and_watch_conflict(proxy: Proxy) -> None:
    client = proxy.client()
    pipe = client.pipeline(transaction=True)
    pipe.set("tx:a", 1).incr("tx:a").get("tx:a")
    assert pipe.execute() == [True, 2, b"2"]

    raw = proxy.client()
    raw.execute_command("MULTI")
    raw.execute_command("SET", "tx:b", "x")
    assert raw.execute_command("DISCARD") == b"OK"
    assert client.get("tx:b") is None

    watcher = proxy.client()
    other = proxy.client()
    with watcher.pipeline(transaction=True) as pipe:
        pipe.watch("tx:w")
        other.set("tx:w", "changed")  # another client touches the watched key
        pipe.multi()
        pipe.set("tx:w", "mine")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert client.get("tx:w") == b"changed"


def test_subscribe_receives_messages_while_idle(proxy: Proxy) -> None:
    subscriber = proxy.client().pubsub()
    subscriber.subscribe("news")
    subscriber.psubscribe("alerts.*")
    assert subscriber.get_message(timeout=2)["type"] == "subscribe"
    assert subscriber.get_message(timeout=2)["type"] == "psubscribe"
    time.sleep(0.3)  # the subscriber sends nothing while the messages arrive
    publisher = proxy.client()
    assert publisher.publish("news", "one") == 1
    assert publisher.publish("alerts.disk", "two") == 1
    first = subscriber.get_message(timeout=2)
    second = subscriber.get_message(timeout=2)
    assert (first["channel"], first["data"]) == (b"news", b"one")
    assert (second["type"], second["channel"], second["data"]) == (
        "pmessage", b"alerts.disk", b"two")
    subscriber.close()


def test_blpop_times_out_and_is_woken(proxy: Proxy) -> None:
    client = proxy.client()
    client.delete("bl:q")
    assert raw_exchange(proxy.port, b"*3\r\n$5\r\nBLPOP\r\n$4\r\nbl:q\r\n$3\r\n0.2\r\n",
                        settle=1.0) in (b"*-1\r\n", b"$-1\r\n")
    result: list[object] = []
    waiter = threading.Thread(target=lambda: result.append(proxy.client().blpop(["bl:q"], 5)))
    waiter.start()
    time.sleep(0.3)
    client.rpush("bl:q", "wake")
    waiter.join(6)
    assert result == [(b"bl:q", b"wake")]


def test_hello_3_and_resp3_replies(upstream: Upstream, proxy: Proxy) -> None:
    """Kvrocks needs resp3-enabled yes for this; tests/servers.py sets it."""
    hello = b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n"
    script = hello + b"*4\r\n$4\r\nHSET\r\n$2\r\nr3\r\n$1\r\nf\r\n" b"$1\r\nv\r\n" \
        b"*2\r\n$7\r\nHGETALL\r\n$2\r\nr3\r\n*2\r\n$3\r\nGET\r\n$4\r\nnone\r\n" \
        b"*2\r\n$3\r\nDEL\r\n$2\r\nr3\r\n"
    direct = raw_exchange(upstream.port, script)
    proxied = raw_exchange(proxy.port, script)
    assert proxied.startswith(b"%")  # a RESP3 map answers HELLO 3
    # HELLO reports the connection id, which differs; everything after must match.
    assert proxied[reply_end(proxied, 0):] == direct[reply_end(direct, 0):]
    assert proxied.endswith(b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n_\r\n:1\r\n")
    client = proxy.client(protocol=3)
    client.hset("r3", "g", "w")
    assert client.hgetall("r3") == {b"g": b"w"}


def test_client_setname_getname(proxy: Proxy) -> None:
    client = proxy.client(single_connection_client=True)
    client.client_setname("kvproxy-test")
    assert client.client_getname() in ("kvproxy-test", b"kvproxy-test")


def test_binary_safe_keys_and_values(proxy: Proxy) -> None:
    client = proxy.client()
    key = b"bin\r\n\x00key\xff"
    value = b"\x00\r\n*3\r\n$3\r\nSET\r\n" + bytes(range(256))
    client.set(key, value)
    assert client.get(key) == value
    assert client.exists(key) == 1


def test_64_mib_value(proxy: Proxy) -> None:
    client = proxy.client()
    value = bytes(range(256)) * (64 * 1024 * 1024 // 256)
    client.set("big:64m", value)
    assert client.strlen("big:64m") == len(value)
    assert client.get("big:64m") == value
    client.delete("big:64m")


def test_inline_commands_typed_by_hand(upstream: Upstream, proxy: Proxy) -> None:
    script = b"PING\r\nSET inline:k v\r\nGET inline:k\n\r\nECHO hi\r\n"
    proxied = raw_exchange(proxy.port, script)
    assert proxied == raw_exchange(upstream.port, script)
    assert proxied.startswith(b"+PONG\r\n+OK\r\n$1\r\nv\r\n")


def test_quit_closes_after_reply(proxy: Proxy) -> None:
    reply = raw_exchange(proxy.port, b"*1\r\n$4\r\nPING\r\n*1\r\n$4\r\nQUIT\r\n"
                         b"*1\r\n$4\r\nPING\r\n", expect_close=True)
    assert reply == b"+PONG\r\n+OK\r\n"


def test_redis_cli_through_the_proxy(proxy: Proxy) -> None:
    def cli(*args: str, data: str | None = None) -> str:
        return subprocess.run(["redis-cli", "-p", str(proxy.port), *args], input=data,
                              capture_output=True, text=True, timeout=30, check=True).stdout

    assert cli("SET", "cli:k", "v 1") == "OK\n"
    assert cli("GET", "cli:k") == "v 1\n"
    assert cli("--no-raw", "LRANGE", "none", "0", "-1") == "(empty array)\n"
    piped = "".join(f"SET cli:p{i} {i}\n" for i in range(1000))
    assert "errors: 0, replies: 1000" in cli("--pipe", data=piped)
    assert cli("GET", "cli:p999") == "999\n"


def test_upstream_shutdown_closes_client_and_proxy_recovers(
        make_upstream, make_proxy) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    proxy: Proxy = make_proxy(server.port)
    bystander = socket.create_connection(("127.0.0.1", proxy.port))
    bystander.sendall(b"*1\r\n$4\r\nPING\r\n")
    assert bystander.recv(100) == b"+PONG\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"*2\r\n$8\r\nSHUTDOWN\r\n$6\r\nNOSAVE\r\n")
        assert sock.recv(100) == b""  # closed without a reply, as the server does
    server.wait_stopped()
    assert proxy.alive()
    # While the server is down, a command gets a clear error instead of hanging.
    down = raw_exchange(proxy.port, b"*1\r\n$4\r\nPING\r\n", settle=1.0)
    assert down.startswith(b"-ERR upstream 127.0.0.1:%d unavailable: " % server.port)
    server.start()
    time.sleep(0.6)  # past the proxy's quick-fail window after a failed connect
    assert proxy.client().ping() is True
    bystander.close()


def test_unsubscribe_with_many_channels_keeps_other_clients_replies(
        upstream: Upstream, proxy: Proxy) -> None:
    script = cmd("UNSUBSCRIBE", "a", "b", "c") + cmd("PUNSUBSCRIBE", "x.*", "y.*")
    assert raw_exchange(proxy.port, script) == raw_exchange(upstream.port, script)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as other:
        for _ in range(20):  # replies to the UNSUBSCRIBEs must never reach this client
            raw_exchange(proxy.port, cmd("UNSUBSCRIBE", "a", "b"), settle=0.05)
            other.sendall(cmd("ECHO", "mine"))
            assert other.recv(100) == b"$4\r\nmine\r\n"


def test_quit_in_subscribe_mode_comes_after_pending_replies(proxy: Proxy) -> None:
    reply = raw_exchange(proxy.port, cmd("SUBSCRIBE", "q1") + cmd("QUIT"), expect_close=True)
    assert reply.startswith(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nq1\r\n:1\r\n")
    assert reply.endswith(b"+OK\r\n")


def test_large_array_reply_of_many_values(proxy: Proxy) -> None:
    client = proxy.client()
    values = {f"mget:{i}": bytes([i % 256]) * (1000 + i) for i in range(3000)}
    client.mset(values)
    big = b"x" * (3 * 1024 * 1024)
    client.set("mget:big", big)
    keys = [*values, "mget:big", "mget:missing"]
    result = client.mget(keys)
    assert result[:-2] == list(values.values())
    assert result[-2:] == [big, None]
    assert client.lrange("mget:none", 0, -1) == []
