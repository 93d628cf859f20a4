"""KVCLOUD LIST and kvrocks-cloud list: every backup, newest first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.servers import Proxy, Upstream, cmd, raw_exchange


def cloud(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvproxy.cloud_cli", *args], text=True,
                          capture_output=True, timeout=300)


@pytest.fixture
def listed(make_upstream, make_proxy, tmp_path: Path) -> tuple[Proxy, Path]:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    server.client().mset({f"l:{i}": os.urandom(100) for i in range(2000)})
    key = tmp_path / "backup.key"
    assert cloud("keygen", str(key)).returncode == 0
    conf = (f"[kvcloud]\nencryption_key_file = {key}\n"
            f"[provider local]\ntype = file\npath = {tmp_path / 'bucket'}\n")
    proxy: Proxy = make_proxy(server.port, conf)
    client = proxy.client()
    for _ in range(2):
        final = client.execute_command("KVCLOUD", "UPLOAD", "WAIT")
        assert final[1] == b"succeeded", final
    assert proxy.conf_path is not None
    return proxy, proxy.conf_path


def test_kvcloud_list_newest_first_in_resp2_and_resp3(listed) -> None:  # type: ignore[no-untyped-def]
    proxy, _ = listed
    rows = proxy.client().execute_command("KVCLOUD", "LIST")
    assert len(rows) == 2
    first = dict(zip(rows[0][0::2], rows[0][1::2], strict=True))
    second = dict(zip(rows[1][0::2], rows[1][1::2], strict=True))
    assert first[b"backup_id"] > second[b"backup_id"]
    assert first[b"provider"] == b"local" and first[b"source"] == b"redis-rdb"
    assert first[b"encrypted"] == b"yes" and first[b"bytes"] > 0
    assert first[b"stored_bytes"] > 0 and first[b"chunks"] >= 1
    resp3 = proxy.client(protocol=3).execute_command("KVCLOUD", "LIST", "local")
    assert [row[b"backup_id"] for row in resp3] == [first[b"backup_id"], second[b"backup_id"]]
    with pytest.raises(redis.ResponseError, match="unknown provider 'nope'"):
        proxy.client().execute_command("KVCLOUD", "LIST", "nope")


def test_list_keeps_its_place_in_a_pipeline(listed) -> None:  # type: ignore[no-untyped-def]
    proxy, _ = listed
    reply = raw_exchange(proxy.port, cmd("SET", "a", "1") + cmd("KVCLOUD", "LIST")
                         + cmd("GET", "a"), settle=1.0)
    assert reply.startswith(b"+OK\r\n*2\r\n*20\r\n")
    assert reply.endswith(b"$1\r\n1\r\n")


def test_cli_list(listed) -> None:  # type: ignore[no-untyped-def]
    proxy, conf = listed
    result = cloud("list", "--conf", str(conf), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [row["encrypted"] for row in rows] == ["yes", "yes"]
    table = cloud("list", "--conf", str(conf))
    assert table.stdout.splitlines()[0].split()[:3] == ["provider", "backup_id", "created"]
    assert len(table.stdout.splitlines()) == 3
