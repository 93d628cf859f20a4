"""Clients that hang up mid-command, never read, or send garbage, on real servers.

Each resource the proxy holds for a client is released when the client goes,
and no client slows another.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from tests.servers import Proxy, Upstream, cmd, raw_exchange

BIG = 1024 * 1024


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Poll a condition the test cannot be told about."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.02)


def fd_count(proxy: Proxy) -> int:
    assert proxy.process is not None
    return len(list(Path(f"/proc/{proxy.process.pid}/fd").iterdir()))


def info_int(server: Upstream, section: str, field: str) -> int:
    return int(server.client().info(section).get(field, 0))


def read_reply_bytes(sock: socket.socket, expected: bytes) -> bytes:
    data = b""
    while len(data) < len(expected):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


@pytest.fixture(params=["redis", "kvrocks"])
def pair(request: pytest.FixtureRequest, make_upstream: Callable[..., Upstream],
         make_proxy: Callable[..., Proxy]) -> tuple[Upstream, Proxy]:
    upstream = make_upstream(request.param)
    proxy = make_proxy(upstream.port)
    proxy.client().ping()  # the pool and the spares connect
    return upstream, proxy


def settled_fds(proxy: Proxy) -> int:
    """The proxy's descriptors once its spare connections are all open again."""
    counts: list[int] = []

    def steady() -> bool:
        counts.append(fd_count(proxy))
        return len(counts) >= 5 and len(set(counts[-5:])) == 1

    wait_until(steady, what="a steady descriptor count")
    return counts[-1]


@pytest.mark.parametrize("how", ["close", "half-close"])
def test_blocked_clients_that_hang_up_leave_the_items_and_no_descriptor(
        pair: tuple[Upstream, Proxy], how: str) -> None:
    server, proxy = pair
    baseline = settled_fds(proxy)
    blocked_before = info_int(server, "clients", "blocked_clients")
    socks = [socket.create_connection(("127.0.0.1", proxy.port)) for _ in range(5)]
    for sock in socks:
        sock.sendall(cmd("BLPOP", "hangup:q", "0"))
    wait_until(lambda: info_int(server, "clients", "blocked_clients") == blocked_before + 5,
               what="five blocked clients")
    for sock in socks:
        if how == "close":
            sock.close()
        else:
            sock.shutdown(socket.SHUT_WR)
    if how == "half-close":  # the proxy closes its side too
        for sock in socks:
            sock.settimeout(10)
            assert sock.recv(100) == b""
            sock.close()
    wait_until(lambda: info_int(server, "clients", "blocked_clients") == blocked_before,
               what="the server to end the blocking commands")
    direct = server.client()
    direct.rpush("hangup:q", *[f"item{n}" for n in range(5)])
    assert direct.llen("hangup:q") == 5
    wait_until(lambda: fd_count(proxy) <= baseline, what="the proxy's descriptors to be freed")


def test_commands_before_a_half_close_are_still_answered(pair: tuple[Upstream, Proxy]) -> None:
    server, proxy = pair
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        # SELECT pins the client; the SET after it must still run and answer.
        sock.sendall(cmd("SELECT", "0") + cmd("SET", "halfclose:k", "v")
                     + cmd("GET", "halfclose:k"))
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data == b"+OK\r\n+OK\r\n$1\r\nv\r\n"
    assert server.client().get("halfclose:k") == b"v"


def test_a_client_over_its_hard_output_limit_is_disconnected_and_logged_once(
        make_upstream: Callable[..., Upstream], make_proxy: Callable[..., Proxy]) -> None:
    server = make_upstream()
    proxy = make_proxy(server.port, "[kvcloud]\nclient_output_limit = 8mb 0 0\n")
    server.client().set("big", b"x" * BIG)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", proxy.port))
    sock.sendall(cmd("GET", "big") * 200)  # 200 MiB of replies, never read
    wait_until(lambda: "over the hard limit" in proxy.log(), what="the limit to be hit")
    # Drain: what arrives ends with the connection closed by the proxy.
    sock.settimeout(10)
    received = 0
    try:
        while chunk := sock.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        pass
    sock.close()
    assert received < 200 * BIG
    assert proxy.log().count("over the hard limit") == 1
    assert proxy.client().get("big") == b"x" * BIG  # others are served


def test_a_slow_reader_keeps_memory_bounded_and_others_served(
        make_upstream: Callable[..., Upstream], make_proxy: Callable[..., Proxy]) -> None:
    limit = 32 * BIG
    server = make_upstream()
    proxy = make_proxy(server.port, "[kvcloud]\nclient_output_limit = 32mb 16mb 3600\n")
    server.client().set("big", b"x" * BIG)
    other = proxy.client()
    other.ping()
    rss_before = proxy.rss_kib() * 1024
    peak = [rss_before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proxy.rss_kib() * 1024)
            time.sleep(0.01)

    sampler = threading.Thread(target=sample)
    sampler.start()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", proxy.port))
    sock.settimeout(1.0)
    sent = 0
    try:
        # Keep sending until the proxy stops reading us (or drops us): never read.
        while sent < 50_000:
            sock.sendall(cmd("GET", "big") * 100)
            sent += 100
            assert other.ping() is True  # everyone else is answered meanwhile
    except (TimeoutError, ConnectionError):
        pass
    for _ in range(20):
        assert other.ping() is True
        assert other.get("big") == b"x" * BIG
    sock.close()
    stop.set()
    sampler.join()
    assert sent < 50_000, "the proxy read without bound from a client that never reads"
    assert peak[0] < rss_before + limit + 64 * BIG, (peak[0], rss_before)


def test_a_client_that_sends_faster_than_it_reads_is_paused_and_loses_nothing(
        pair: tuple[Upstream, Proxy]) -> None:
    server, proxy = pair
    server.client().set("small", b"y" * 1000)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.connect(("127.0.0.1", proxy.port))
    sock.settimeout(1.0)
    batch = cmd("GET", "small") * 1000
    sent = 0
    # 44 MB of requests, far beyond socket buffers, for 2 GB of replies.
    with pytest.raises(TimeoutError):  # sendall blocks: the proxy stopped reading us
        while sent < 2_000_000:
            sock.sendall(batch)
            sent += 1000
    assert sent < 2_000_000
    # Nothing was dropped: every GET fully sent is answered once the client reads.
    sock.settimeout(30)
    reply = b"$1000\r\n" + b"y" * 1000 + b"\r\n"
    got = 0
    buffer = b""
    while got < sent:
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed before every reply arrived"
        buffer += chunk
        whole = len(buffer) // len(reply)
        got += whole
        buffer = buffer[whole * len(reply):]
    sock.close()
    assert got >= sent


def test_after_subscribe_a_protocol_error_comes_after_the_confirmation(
        pair: tuple[Upstream, Proxy]) -> None:
    _, proxy = pair
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(cmd("SUBSCRIBE", "news") + b"*2\r\n!3\r\nGET\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n"), data
    assert data.endswith(b"-ERR Protocol error: expected '$', got '!'\r\n"), data


def test_protocol_error_warnings_are_rate_limited(pair: tuple[Upstream, Proxy]) -> None:
    _, proxy = pair
    for _ in range(40):
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
            sock.sendall(b"*1\r\n!bad\r\n")
            while sock.recv(1024):
                pass
    assert proxy.log().count("protocol error") <= 10


@pytest.fixture
def redis_pair(make_upstream: Callable[..., Upstream],
               make_proxy: Callable[..., Proxy]) -> Iterator[tuple[Upstream, Proxy]]:
    upstream = make_upstream("redis")
    proxy = make_proxy(upstream.port)
    proxy.client().ping()
    yield upstream, proxy


def test_script_kill_through_the_proxy_stops_an_endless_script(
        redis_pair: tuple[Upstream, Proxy]) -> None:
    server, proxy = redis_pair
    server.client().config_set("busy-reply-threshold", 100)
    runner = socket.create_connection(("127.0.0.1", proxy.port), timeout=30)
    runner.sendall(cmd("EVAL", "while true do end", "0"))
    other = proxy.client()

    def busy() -> bool:
        try:
            other.get("anything")
        except redis.exceptions.BusyLoadingError:
            return False
        except redis.exceptions.ResponseError as exc:
            return str(exc).startswith("BUSY")
        return False

    wait_until(busy, what="-BUSY for other clients, as directly")
    assert proxy.client().execute_command("SCRIPT", "KILL") == b"OK"
    reply = read_reply_bytes(runner, b"-ERR")
    runner.close()
    assert reply.startswith(b"-ERR") and b"killed" in reply.lower(), reply
    assert other.ping() is True


def test_client_kill_of_the_proxys_connections_shows_no_client_an_error(
        redis_pair: tuple[Upstream, Proxy]) -> None:
    _, proxy = redis_pair
    bystander = proxy.client()
    bystander.set("kill:k", "v")
    killer = proxy.client()
    for _ in range(10):
        killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        assert bystander.get("kill:k") == b"v"


def test_a_paused_write_holds_up_only_writes(redis_pair: tuple[Upstream, Proxy]) -> None:
    _, proxy = redis_pair
    proxy.client().set("pause:k", "before")
    admin = proxy.client()
    admin.execute_command("CLIENT", "PAUSE", "20000", "WRITE")
    try:
        writer = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
        writer.sendall(cmd("SET", "pause:k", "after"))
        reader = proxy.client()
        for _ in range(20):
            assert reader.get("pause:k") == b"before"
        writer.setblocking(False)
        with pytest.raises(BlockingIOError):
            writer.recv(100)  # the write is still paused
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    writer.setblocking(True)
    assert read_reply_bytes(writer, b"+OK\r\n") == b"+OK\r\n"
    writer.close()
    assert proxy.client().get("pause:k") == b"after"


def test_a_client_with_its_pipeline_limit_in_flight_is_not_read_further(
        make_upstream: Callable[..., Upstream], make_proxy: Callable[..., Proxy]) -> None:
    server = make_upstream()
    proxy = make_proxy(server.port, "[kvcloud]\nclient_pipeline_limit = 10\n")
    admin = proxy.client()
    admin.execute_command("CLIENT", "PAUSE", "60000", "WRITE")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sock.connect(("127.0.0.1", proxy.port))
    one = cmd("SET", "pipelined", "v")
    stream = memoryview(one * 1_000_000)
    offset = 0
    try:
        # No reply can come while writes are paused: only the limit stops the reading.
        sock.setblocking(False)
        idle_since = time.monotonic()
        while offset < len(stream) and time.monotonic() - idle_since < 1.0:
            try:
                offset += sock.send(stream[offset:offset + 65536])
                idle_since = time.monotonic()
            except BlockingIOError:
                time.sleep(0.01)
        assert offset < len(stream), "the proxy read every command of a client it should pause"
        whole, part = divmod(offset, len(one))
        sent = whole + (1 if part else 0)
    finally:
        admin.execute_command("CLIENT", "UNPAUSE")
    sock.setblocking(True)
    if part:
        sock.sendall(one[part:])  # complete the command cut in the middle
    sock.settimeout(30)
    received = b""
    while received.count(b"+OK\r\n") < sent:
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed before every reply arrived"
        received += chunk
    sock.close()
    assert received == b"+OK\r\n" * sent


def test_a_slow_client_and_fast_ones_each_get_their_own_replies(
        pair: tuple[Upstream, Proxy]) -> None:
    """A looping slow command moves between links (slow lanes) while others keep going."""
    server, proxy = pair
    members = 100_000
    direct = server.client()
    direct.delete("slowlane:big")
    pipe = direct.pipeline(transaction=False)
    for start in range(0, members, 5000):
        pipe.zadd("slowlane:big", {f"m{n:06d}": n for n in range(start, start + 5000)})
    pipe.execute()
    expected = [f"m{n:06d}".encode() for n in range(members)]
    stop = threading.Event()
    slow_runs: list[int] = []
    failures: list[str] = []

    def slow() -> None:
        client = proxy.client()
        runs = 0
        while not stop.is_set():
            if client.zrange("slowlane:big", 0, -1) != expected:
                failures.append("a ZRANGE reply was wrong")
            runs += 1
        slow_runs.append(runs)

    def fast(n: int) -> None:
        client = proxy.client()
        for i in range(300):
            client.set(f"slowlane:{n}", i)
            if client.get(f"slowlane:{n}") != str(i).encode():
                failures.append(f"client {n} read another value")

    looping = threading.Thread(target=slow)
    looping.start()
    workers = [threading.Thread(target=fast, args=(n,)) for n in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    looping.join()
    assert not failures, failures[:3]
    assert slow_runs[0] >= 1


@pytest.mark.parametrize("garbage", [b"*-0\r\n", b"*01\r\n", b"*1\r\n$04\r\nPING\r\n"])
def test_lengths_redis_refuses_are_refused_by_the_proxy_and_reach_no_one_else(
        pair: tuple[Upstream, Proxy], garbage: bytes) -> None:
    server, proxy = pair
    proxied = raw_exchange(proxy.port, cmd("PING") + garbage, expect_close=True)
    assert proxied.startswith(b"+PONG\r\n-ERR Protocol error: "), proxied
    if server.kind == "redis":  # Kvrocks itself is laxer; the proxy is as strict as Redis
        assert proxied == raw_exchange(server.port, cmd("PING") + garbage, expect_close=True)
    assert proxy.client().echo("still fine") == b"still fine"


def test_a_protocol_error_names_the_offending_byte_as_redis_does(
        redis_pair: tuple[Upstream, Proxy]) -> None:
    server, proxy = redis_pair
    payload = cmd("PING") + cmd("ECHO", "x") + b"*2\r\n\xff3\r\nGET\r\n"
    direct = raw_exchange(server.port, payload, expect_close=True)
    proxied = raw_exchange(proxy.port, payload, expect_close=True)
    assert proxied == direct == (b"+PONG\r\n$1\r\nx\r\n"
                                 b"-ERR Protocol error: expected '$', got '\xff'\r\n")


def test_a_blocked_client_that_sent_garbage_and_left_leaves_no_descriptor(
        pair: tuple[Upstream, Proxy]) -> None:
    server, proxy = pair
    baseline = settled_fds(proxy)
    blocked_before = info_int(server, "clients", "blocked_clients")
    for _ in range(10):
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            sock.sendall(cmd("BLPOP", "garbage:q", "0") + b"*x\r\n")
    wait_until(lambda: info_int(server, "clients", "blocked_clients") == blocked_before,
               what="the server to end the blocking commands")
    wait_until(lambda: fd_count(proxy) <= baseline, what="the proxy's descriptors to be freed")
