"""Swap restore under a managed redis-server: KEEP, REVERT, RETAIN, rollback, -LOADING.

The proxy runs as its own process and starts its own redis-server, as the
README's run command does; the bucket is a local directory.
"""

from __future__ import annotations

import shutil
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.servers import Proxy, free_port, kvrocks_binary
from tests.test_restore import cloud, contents, fill


def managed_proxy(tmp_path: Path, binary: str | None = None) -> Proxy:
    binary = binary or shutil.which("redis-server")
    assert binary, "redis-server is installed by scripts/setup"
    key = tmp_path / "backup.key"
    assert cloud("keygen", str(key)).returncode == 0
    source = "kvrocks-local" if "kvrocks" in Path(binary).name else "redis"
    conf = (f"[kvcloud]\nmanaged = yes\nserver_binary = {binary}\n"
            f"server_dir = {tmp_path / 'srv'}\nsource = {source}\n"
            f"encryption_key_file = {key}\nstate_dir = {tmp_path / 'state'}\n"
            f"[provider local]\ntype = file\npath = {tmp_path / 'bucket'}\n")
    return Proxy(tmp_path / "proxy", free_port(), conf).start()


def admin(proxy: Proxy) -> redis.Redis:
    """No silent retries: redis-py re-sends a command after a dropped connection or a
    -LOADING reply, which would hide exactly what these tests look at."""
    return proxy.client(retry=Retry(NoBackoff(), 0), socket_timeout=120)


def status(client: redis.Redis, *words: str) -> dict[str, Any]:
    reply = client.execute_command("KVCLOUD", *words)
    return {k.decode(): v.decode() if isinstance(v, bytes) else v
            for k, v in zip(reply[::2], reply[1::2], strict=True)}


def back_up_then_change(client: redis.Redis) -> tuple[Any, dict[str, Any], Any]:
    """The data as backed up, the UPLOAD's final STATUS, and the data changed since."""
    fill(client)
    backed_up = contents(client)
    upload = status(client, "UPLOAD", "WAIT")
    assert upload["state"] == "succeeded", upload
    client.set("str", "changed after the backup")
    client.delete("hash")
    client.set("new", "only after the backup")
    return backed_up, upload, contents(client)


@pytest.fixture
def swapped(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Data backed up, then changed, then the backup swapped in."""
    proxy = managed_proxy(tmp_path)
    try:
        client = admin(proxy)
        backed_up, upload, changed = back_up_then_change(client)
        swap = status(client, "RESTORE", "SWAP", "WAIT")
        assert swap["state"] == "succeeded", swap
        assert "swapped in " + upload["backup_id"] in swap["results"]
        assert "as the backup recorded" in swap["results"]
        yield proxy, client, backed_up, changed, upload["backup_id"]
    finally:
        proxy.stop()


def same(now: dict[bytes, Any], then: dict[bytes, Any]) -> bool:
    """Equal by type and value, TTLs within a minute (they count down)."""
    if now.keys() != then.keys():
        return False
    for key, (kind, value, ttl) in now.items():
        kind_then, value_then, ttl_then = then[key]
        if (kind, value) != (kind_then, value_then) or (ttl == -1) != (ttl_then == -1):
            return False
        if ttl != -1 and abs(ttl - ttl_then) > 60_000:
            return False
    return True


def test_swap_then_keep(swapped, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proxy, client, backed_up, changed, backup_id = swapped
    assert same(contents(client), backed_up)
    previous = tmp_path / "srv" / f"dump.rdb.before-{backup_id}"
    assert previous.is_file()
    kept = status(client, "RESTORE", "KEEP")
    assert kept["status"] == "kept" and str(previous) in kept["result"]
    assert not previous.exists()
    with pytest.raises(redis.ResponseError, match="no swapped restore is waiting"):
        client.execute_command("KVCLOUD", "RESTORE", "KEEP")
    assert same(contents(client), backed_up)


def test_swap_then_revert(swapped, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proxy, client, backed_up, changed, backup_id = swapped
    with pytest.raises(redis.ResponseError, match="KEEP, REVERT or RETAIN first"):
        client.execute_command("KVCLOUD", "RESTORE", "SWAP")
    reverted = status(client, "RESTORE", "REVERT", "WAIT")
    assert reverted["state"] == "succeeded", reverted
    assert same(contents(client), changed)
    assert not list((tmp_path / "srv").glob("dump.rdb.*"))


def test_swap_then_retain(swapped, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    proxy, client, backed_up, changed, backup_id = swapped
    retained = status(client, "RESTORE", "RETAIN")
    previous = Path(retained["previous"])
    assert retained["status"] == "retained"
    assert previous == tmp_path / "srv" / f"dump.rdb.before-{backup_id}" and previous.is_file()
    with pytest.raises(redis.ResponseError, match="no swapped restore is waiting"):
        client.execute_command("KVCLOUD", "RESTORE", "REVERT")
    assert previous.is_file() and same(contents(client), backed_up)


def test_a_restored_database_that_does_not_start_is_rolled_back(tmp_path: Path) -> None:
    proxy = managed_proxy(tmp_path)
    try:
        client = admin(proxy)
        fill(client)
        live = contents(client)
        broken = tmp_path / "broken" / "dump.rdb"
        broken.parent.mkdir()
        broken.write_bytes(b"REDIS0011" + bytes(range(256)) * 64)  # a header, then garbage
        conf = proxy.conf_path
        assert conf is not None
        made = cloud("backup", "--conf", str(conf), "-d", str(broken), "--json")
        assert made.returncode == 0, made.stderr
        swap = status(client, "RESTORE", "SWAP", "WAIT")
        assert swap["state"] == "failed"
        assert "exited" in swap["error"] and "previous database is back" in swap["error"]
        assert same(contents(client), live)
        assert not list((tmp_path / "srv").glob("dump.rdb.*"))
        assert not list((tmp_path / "srv").glob(".restore-*"))
        with pytest.raises(redis.ResponseError, match="no swapped restore is waiting"):
            client.execute_command("KVCLOUD", "RESTORE", "KEEP")
    finally:
        proxy.stop()


class Hammer(threading.Thread):
    """GET over a raw socket as fast as replies come, recording each reply's first line."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.replies: list[bytes] = []
        self.failure: BaseException | None = None
        self.done = threading.Event()

    def run(self) -> None:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                reader = sock.makefile("rb")
                while not self.done.is_set():
                    sock.sendall(b"*2\r\n$3\r\nGET\r\n$3\r\nstr\r\n")
                    line = reader.readline()
                    if line.startswith(b"$") and line != b"$-1\r\n":
                        reader.readline()
                    self.replies.append(line)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.failure = exc


def test_clients_get_loading_during_the_swap_then_work_again(tmp_path: Path) -> None:
    proxy = managed_proxy(tmp_path)
    try:
        client = admin(proxy)
        fill(client)
        assert status(client, "UPLOAD", "WAIT")["state"] == "succeeded"
        hammer = Hammer(proxy.port)
        hammer.start()
        swap = status(client, "RESTORE", "SWAP", "WAIT")
        hammer.done.set()
        hammer.join(10)
        assert swap["state"] == "succeeded", swap
        assert hammer.failure is None, f"client connection broke: {hammer.failure!r}"
        kinds = {line[:8] for line in hammer.replies}
        assert b"-LOADING" in kinds, "no command arrived while the server was down"
        assert kinds <= {b"$5\r\n", b"-LOADING"}, kinds
        assert b"-LOADING restore in progress\r\n" in hammer.replies
        assert hammer.replies[-1] == b"$5\r\n"  # pass-through resumed on the same connection
        assert client.get("str") == b"plain"
    finally:
        proxy.stop()


def test_swap_needs_a_managed_server(pair_proxy) -> None:  # type: ignore[no-untyped-def]
    client = pair_proxy.client()
    with pytest.raises(redis.ResponseError, match="SWAP needs managed = yes"):
        client.execute_command("KVCLOUD", "RESTORE", "SWAP")
    with pytest.raises(redis.ResponseError, match="no swapped restore is waiting"):
        client.execute_command("KVCLOUD", "RESTORE", "REVERT")


def test_kvrocks_swap_then_revert(tmp_path: Path) -> None:
    binary = kvrocks_binary()
    if binary is None:
        pytest.skip("no Kvrocks binary: set KVROCKS_BIN or put kvrocks on PATH")
    proxy = managed_proxy(tmp_path, binary)
    try:
        client = admin(proxy)
        backed_up, upload, changed = back_up_then_change(client)
        swap = status(client, "RESTORE", "SWAP", "WAIT")
        assert swap["state"] == "succeeded", swap
        assert "as the backup recorded" in swap["results"]
        assert same(contents(client), backed_up)
        assert (tmp_path / "srv" / f"db.before-{upload['backup_id']}" / "CURRENT").is_file()
        reverted = status(client, "RESTORE", "REVERT", "WAIT")
        assert reverted["state"] == "succeeded", reverted
        assert same(contents(client), changed)
        assert not list((tmp_path / "srv").glob("db.*"))
    finally:
        proxy.stop()
