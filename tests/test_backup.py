"""Backups end to end: kvrocks-cloud and KVCLOUD UPLOAD into a local-directory provider."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import fsspec
import pytest
import redis

from kvproxy.repo.keys import KeySource
from kvproxy.repo.repository import Repository
from kvproxy.storage import Store
from tests.servers import Proxy, Upstream, cmd, raw_exchange

SECRET_VALUE = "value-that-must-not-leak-5d1e"


def cloud(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kvproxy.cloud_cli", *args], text=True,
                          capture_output=True, timeout=300, env=env)


def open_repo(bucket: Path, prefix: str, key: Path | None) -> Repository:
    store = Store(fsspec.filesystem("file"), str(bucket / prefix), "test")
    return Repository.open(store, KeySource(str(key)) if key else None,
                           allow_unencrypted=key is None)


def test_cli_backup_of_a_directory_dedups_the_second_time(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "CURRENT").write_text("MANIFEST-000001\n")
    (checkpoint / "000001.sst").write_bytes(os.urandom(3 * 1024 * 1024))
    key = tmp_path / "backup.key"
    assert cloud("keygen", str(key)).returncode == 0
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert cloud("keygen", str(key)).returncode == 2  # never overwrites a key

    args = ["backup", "-p", "file", "-b", str(tmp_path / "bucket"), "-d", str(checkpoint),
            "--key-file", str(key), "--prefix", "prod-1", "--json"]
    first = cloud(*args)
    assert first.returncode == 0, first.stderr
    status = json.loads(first.stdout)
    assert status["state"] == "succeeded" and status["files"] == 2
    second = json.loads(cloud(*args).stdout)
    assert second["bytes_uploaded"] == 0
    assert second["bytes_deduplicated"] == status["bytes_done"]

    repo = open_repo(tmp_path / "bucket", "prod-1", key)
    assert len(repo.list_backups()) == 2
    manifest = repo.read_manifest(repo.list_backups()[0])
    assert sorted(f.name for f in manifest.files) == ["000001.sst", "CURRENT"]


def test_cli_refuses_without_a_key_and_explains(tmp_path: Path) -> None:
    (tmp_path / "dump.rdb").write_bytes(b"REDIS0011" + os.urandom(100))
    result = cloud("backup", "-p", "file", "-b", str(tmp_path / "bucket"), "-d",
                   str(tmp_path / "dump.rdb"), env={k: v for k, v in os.environ.items()
                                                     if k != "KVCLOUD_ENCRYPTION_KEY"})
    assert result.returncode == 1
    assert "encrypt" in result.stderr and "Traceback" not in result.stderr
    usage = cloud("backup", "-p", "file", "-b", str(tmp_path / "bucket"))
    assert usage.returncode == 2 and "-d PATH" in usage.stderr


def conf_for(bucket: Path, key: Path, password: str | None = None) -> str:
    lines = ["[kvcloud]", "prefix = prod-1", f"encryption_key_file = {key}"]
    if password:
        lines.append(f"upstream_password = {password}")
    lines += ["[provider local]", "type = file", f"path = {bucket}",
              "[provider archive]", "type = file", f"path = {bucket}-archive",
              "actions = restore"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def backed(make_upstream, make_proxy, tmp_path: Path) -> tuple[Upstream, Proxy, Path, Path]:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    client = server.client()
    client.mset({f"user:{i}": SECRET_VALUE for i in range(5000)})
    key = tmp_path / "backup.key"
    assert cloud("keygen", str(key)).returncode == 0
    bucket = tmp_path / "bucket"
    proxy = make_proxy(server.port, conf_for(bucket, key))
    return server, proxy, bucket, key


def test_kvcloud_upload_wait_backs_up_the_server(backed) -> None:  # type: ignore[no-untyped-def]
    server, proxy, bucket, key = backed
    client = proxy.client()
    final = client.execute_command("KVCLOUD", "UPLOAD", "WAIT")
    fields = dict(zip(final[0::2], final[1::2], strict=True))
    assert fields[b"state"] == b"succeeded", fields
    assert fields[b"operation"] == b"upload" and fields[b"providers"] == b"local"
    assert fields[b"files"] == 1 and fields[b"bytes_uploaded"] > 0

    repo = open_repo(bucket, "prod-1", key)
    backup_id = repo.list_backups()[-1]
    assert fields[b"backup_id"] == backup_id.encode()
    manifest = repo.read_manifest(backup_id)
    assert manifest.source == "redis-rdb" and manifest.encrypted
    (entry,) = manifest.files
    data = b"".join(repo.get_chunk(ref.id) for ref in entry.chunks)
    assert data[:5] == b"REDIS"
    for path in bucket.rglob("*"):
        if path.is_file():
            content = path.read_bytes()
            assert SECRET_VALUE.encode() not in content and b"user:1" not in content

    status = client.execute_command("KVCLOUD", "STATUS")
    assert status[0:2] == [b"state", b"succeeded"]
    # The record outlives the proxy.
    job_id = fields[b"job_id"].decode()
    proxy.stop()
    proxy.start()
    again = proxy.client().execute_command("KVCLOUD", "STATUS", job_id)
    assert dict(zip(again[0::2], again[1::2], strict=True))[b"state"] == b"succeeded"


def test_upload_replies_a_job_id_and_refuses_a_second_one(backed) -> None:  # type: ignore[no-untyped-def]
    _, proxy, _, _ = backed
    reply = raw_exchange(proxy.port, cmd("KVCLOUD", "UPLOAD") + cmd("KVCLOUD", "UPLOAD"))
    first, second = reply.split(b"\r\n", 2)[1], reply.split(b"\r\n", 2)[2]
    assert first.startswith(b"upload-")
    assert second.startswith(b"-ERR job " + first + b" (upload) is running")
    client = proxy.client()
    for _ in range(600):
        if client.execute_command("KVCLOUD", "STATUS")[1] != b"running":
            break
        time.sleep(0.05)
    assert client.execute_command("KVCLOUD", "STATUS")[1] == b"succeeded"


def test_upload_refusals_name_the_setting(backed) -> None:  # type: ignore[no-untyped-def]
    _, proxy, _, _ = backed
    client = proxy.client()
    with pytest.raises(redis.ResponseError, match="provider archive does not allow upload "
                                                   "\\(actions = restore in kvcloud.conf\\)"):
        client.execute_command("KVCLOUD", "UPLOAD", "archive")
    with pytest.raises(redis.ResponseError, match="no provider of type s3"):
        client.execute_command("KVCLOUD", "UPLOAD", "AWS")


def test_pass_through_keeps_answering_during_an_upload(make_upstream, make_proxy,  # type: ignore[no-untyped-def]
                                                       tmp_path: Path) -> None:
    server: Upstream = make_upstream()
    client = server.client()
    for batch in range(8):  # about 100 MiB of barely compressible values
        client.mset({f"big:{batch}:{i}": os.urandom(64 * 1024) for i in range(200)})
    key = tmp_path / "backup.key"
    assert cloud("keygen", str(key)).returncode == 0
    proxy: Proxy = make_proxy(server.port, conf_for(tmp_path / "bucket", key))
    direct = proxy.client()
    job_id = direct.execute_command("KVCLOUD", "UPLOAD").decode()
    answered_while_running = 0
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        while direct.execute_command("KVCLOUD", "STATUS", job_id)[1] == b"running":
            sock.sendall(cmd("GET", "big:0:0"))
            reply = b""
            while not reply.endswith(b"\r\n") or len(reply) < 64 * 1024:
                reply += sock.recv(1 << 17)
            assert reply.startswith(b"$65536\r\n")
            answered_while_running += 1
    status = direct.execute_command("KVCLOUD", "STATUS", job_id)
    assert status[1] == b"succeeded", status
    assert answered_while_running > 0


def test_kvrocks_checkpoint_upload_survives_a_second_bgsave(make_upstream, make_proxy,  # type: ignore[no-untyped-def]
                                                           tmp_path: Path) -> None:
    server: Upstream = make_upstream("kvrocks")
    client = server.client()
    for batch in range(6):
        client.mset({f"kv:{batch}:{i}": os.urandom(2000) for i in range(5000)})
    key = tmp_path / "backup.key"
    assert cloud("keygen", str(key)).returncode == 0
    bucket = tmp_path / "bucket"
    proxy: Proxy = make_proxy(server.port, conf_for(bucket, key))
    admin = proxy.client()
    job_id = admin.execute_command("KVCLOUD", "UPLOAD").decode()
    backup_dir = Path(client.config_get("backup-dir")["backup-dir"])
    # As soon as the checkpoint is pinned, another BGSAVE deletes and rebuilds backup-dir.
    rebuilt = False
    while admin.execute_command("KVCLOUD", "STATUS", job_id)[1] == b"running":
        status = dict(zip(*[iter(admin.execute_command("KVCLOUD", "STATUS", job_id))] * 2,
                          strict=True))
        if status[b"bytes_total"]:
            client.set("kv:after", "1")
            client.execute_command("BGSAVE")
            rebuilt = True
            break
        time.sleep(0.01)
    for _ in range(2000):
        if admin.execute_command("KVCLOUD", "STATUS", job_id)[1] != b"running":
            break
        time.sleep(0.05)
    final = dict(zip(*[iter(admin.execute_command("KVCLOUD", "STATUS", job_id))] * 2,
                     strict=True))
    assert final[b"state"] == b"succeeded", final
    assert rebuilt, "the upload ended before a second BGSAVE could run during it"
    repo = open_repo(bucket, "prod-1", key)
    manifest = repo.read_manifest(repo.list_backups()[-1])
    assert manifest.source == "kvrocks-checkpoint"
    names = {entry.name for entry in manifest.files}
    assert "CURRENT" in names and any(n.startswith("MANIFEST-") for n in names)
    # The data (in SST files, or in the WAL RocksDB copied instead of flushing) came along.
    assert sum(entry.size for entry in manifest.files) > 30 * 1024 * 1024
    for entry in manifest.files:
        data = b"".join(repo.get_chunk(ref.id) for ref in entry.chunks)
        assert len(data) == entry.size
    assert backup_dir.is_dir()
    assert not [p for p in backup_dir.iterdir() if "kvproxy" in p.name]  # nothing of ours there


def test_cli_takes_a_fresh_bgsave_with_upstream(make_upstream, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    server.client().mset({f"cli:{i}": i for i in range(1000)})
    key = tmp_path / "backup.key"
    assert cloud("keygen", str(key)).returncode == 0
    conf = tmp_path / "kvcloud.conf"
    conf.write_text(f"[kvcloud]\nstate_dir = {tmp_path / 'state'}\n")
    result = cloud("backup", "--conf", str(conf), "--upstream", f"127.0.0.1:{server.port}",
                   "-p", "file", "-b", str(tmp_path / "bucket"), "--key-file", str(key),
                   "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "succeeded"
    repo = open_repo(tmp_path / "bucket", "kvrocks", key)
    manifest = repo.read_manifest(repo.list_backups()[0])
    assert manifest.source == "redis-rdb" and manifest.server_version.startswith("7.")
    assert not list((tmp_path / "state" / "staging").iterdir())  # the pinned copy is gone


def test_cli_unencrypted_is_said_and_recorded_and_a_wrong_key_is_refused(tmp_path: Path) -> None:
    (tmp_path / "dump.rdb").write_bytes(b"REDIS0011" + os.urandom(4000))
    plain = cloud("backup", "-p", "file", "-b", str(tmp_path / "plain"), "-d",
                  str(tmp_path / "dump.rdb"), "--no-encrypt")
    assert plain.returncode == 0, plain.stderr
    assert "NOT encrypted" in plain.stderr
    repo = open_repo(tmp_path / "plain", "kvrocks", None)
    assert repo.read_manifest(repo.list_backups()[0]).encrypted is False

    right, wrong = tmp_path / "right.key", tmp_path / "wrong.key"
    assert cloud("keygen", str(right)).returncode == 0
    assert cloud("keygen", str(wrong)).returncode == 0
    args = ["backup", "-p", "file", "-b", str(tmp_path / "sealed"), "-d",
            str(tmp_path / "dump.rdb")]
    assert cloud(*args, "--key-file", str(right)).returncode == 0
    refused = cloud(*args, "--key-file", str(wrong))
    assert refused.returncode == 1
    assert "wrong encryption key" in refused.stderr and "Traceback" not in refused.stderr
    downgrade = cloud(*args, "--no-encrypt")
    assert downgrade.returncode == 1 and "encrypted" in downgrade.stderr
    assert len(open_repo(tmp_path / "sealed", "kvrocks", right).list_backups()) == 1


def test_cli_progress_plain_lines_and_terminal_bar(tmp_path: Path) -> None:
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    (checkpoint / "CURRENT").write_text("MANIFEST-000001\n")
    (checkpoint / "000001.sst").write_bytes(os.urandom(40 * 1024 * 1024))
    base = ["backup", "-p", "file", "-d", str(checkpoint), "--no-encrypt"]
    env = dict(os.environ, KVCLOUD_PROGRESS_EVERY="0.01")
    plain = cloud(*base, "-b", str(tmp_path / "plain"), env=env)
    assert plain.returncode == 0, plain.stderr
    assert re.search(r"backup: \d+ of \d+ bytes, \d+ uploaded", plain.stderr)
    assert "\x1b[" not in plain.stdout + plain.stderr  # no terminal codes in a log

    import pty

    output = bytearray()

    def read(fd: int) -> bytes:
        data = os.read(fd, 65536)
        output.extend(data)
        return data

    argv = [sys.executable, "-m", "kvproxy.cloud_cli", *base, "-b", str(tmp_path / "tty")]
    status = pty.spawn(argv, read)
    assert os.waitstatus_to_exitcode(status) == 0, output.decode(errors="replace")
    assert b"\x1b[" in output  # rich drew on the terminal
    assert b"backup " in output
