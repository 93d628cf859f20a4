"""What the restore tests put into a server and how they compare two servers' data.

A restore is only proven by starting a real server on the restored files and
finding every key again, with its type, value and TTL. One data set (every
type, binary keys and values, TTLs, enough bulk for several chunks) and one
comparison serve every round trip: Redis or Kvrocks, a directory or a cloud
bucket, the proxy or the CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis

from tests.servers import Kvrocks, Upstream

#: Two snapshots of a key's remaining TTL differ by the time between them; a round trip
#: takes seconds, so anything within this many milliseconds is the same TTL.
TTL_TOLERANCE_MS = 120_000

READERS: dict[bytes, Any] = {
    b"string": lambda client, key: client.get(key),
    b"hash": lambda client, key: client.hgetall(key),
    b"list": lambda client, key: client.lrange(key, 0, -1),
    b"set": lambda client, key: client.smembers(key),
    b"zset": lambda client, key: client.zrange(key, 0, -1, withscores=True),
}


def cloud(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``kvrocks-cloud`` as an operator runs it: its own process, no proxy anywhere."""
    return subprocess.run([sys.executable, "-m", "kvproxy.cloud_cli", *args], text=True,
                          capture_output=True, timeout=300, env=env)


def fields(reply: list[Any]) -> dict[bytes, Any]:
    """A RESP2 flat field/value array (KVCLOUD STATUS and WAIT replies) as a dict."""
    return dict(zip(reply[0::2], reply[1::2], strict=True))


def fill(client: redis.Redis, bulk: int = 3000) -> None:
    """Every type, binary keys, members and values, TTLs in s and ms, and ``bulk``
    incompressible 1 kB values so the snapshot spans several chunks."""
    client.set("str", "plain")
    client.set(b"bin\x00\r\nkey", b"\xff\x00value\r\n")
    client.set(b"\x80\xfe\x00", bytes(range(256)))
    client.hset("hash", mapping={"a": "1", "b": "2", b"\x00field\xff": b"\xfe\x00"})
    client.rpush("list", "x", "y", "z", b"\x00\xff\r\n")
    client.sadd("set", "m1", "m2", b"\xc3\x28\x00")
    client.zadd("zset", {"low": 1.5, "high": 99, b"\x00neg\xff": -7.25})
    client.set("ttl", "expires", ex=3600)
    client.set(b"ttl-ms\x00", b"\x01soon", px=5_400_000)
    client.rpush("ttl-list", "a", "b")
    client.expire("ttl-list", 7200)
    client.mset({f"bulk:{i}": os.urandom(1000) for i in range(bulk)})


def change(client: redis.Redis) -> None:
    """Writes after the backup: none of them may show up in the restore."""
    client.set("str", "changed after the backup")
    client.delete("hash")
    client.rpush("list", "appended later")
    client.persist("ttl")
    client.set("new-key", "made after the backup")


def contents(client: redis.Redis) -> dict[bytes, Any]:
    """Every key by type and value, with its remaining TTL in ms (-1: none)."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        out[key] = (kind, READERS[kind](client, key), client.pttl(key))
    return out


def assert_same_data(before: dict[bytes, Any], after: dict[bytes, Any]) -> None:
    """The same keys, each with the same type and value, and a TTL exactly where there
    was one (within TTL_TOLERANCE_MS)."""
    assert set(after) == set(before), (sorted(set(before) - set(after))[:5],
                                       sorted(set(after) - set(before))[:5])
    for key, (kind, value, ttl) in before.items():
        assert after[key][:2] == (kind, value), key
        if ttl >= 0:
            assert after[key][2] > 0 and abs(after[key][2] - ttl) < TTL_TOLERANCE_MS, key
        else:
            assert after[key][2] == -1, key


def restored_contents(target: Path, kind: str = "redis") -> dict[bytes, Any]:
    """Start a fresh server the way the restore's reply says (redis-server ``--dir``
    on the RDB, ``kvrocks --dir`` on ``<dir>/db``), read everything, stop it."""
    if kind == "kvrocks":
        # Its config file lives elsewhere: the restored directory holds only what was restored.
        server: Upstream = Kvrocks(target.parent / f"{target.name}-conf",
                                   extra=["--dir", str(target)])
    else:
        server = Upstream(target)
    server.start()
    try:
        client = server.client()
        if kind == "kvrocks":
            client.execute_command("DBSIZE", "SCAN")  # Kvrocks' key count is cached
        return contents(client)
    finally:
        server.stop()


def upload_change_restore(client: redis.Redis, admin: redis.Redis, provider: str,
                          target: Path) -> dict[bytes, Any]:
    """Through the proxy: KVCLOUD UPLOAD, writes after it (``change``), then KVCLOUD
    RESTORE of that backup TO ``target``; returns the restore's final status."""
    upload = fields(admin.execute_command("KVCLOUD", "UPLOAD", provider, "WAIT"))
    assert upload[b"state"] == b"succeeded", upload
    change(client)
    final = fields(admin.execute_command("KVCLOUD", "RESTORE", provider, upload[b"backup_id"],
                                         "TO", str(target), "WAIT"))
    assert final[b"state"] == b"succeeded", final
    assert final[b"backup_id"] == upload[b"backup_id"]
    assert 0 < final[b"bytes_done"] == final[b"bytes_total"]
    assert not list(target.parent.glob(f".{target.name}.restoring-*"))
    return final
