"""Damage in the bucket, and the wrong key: RESTORE and VERIFY fail, saying which object
(or that the key is wrong), and nothing is left behind or touched.

The backup lives in moto's S3 server; objects are damaged there with plain S3 calls,
as anyone with access to the bucket could. Each case is tried through the proxy
(KVCLOUD RESTORE, KVCLOUD VERIFY) and kvrocks-cloud (restore, verify) with one
kvcloud.conf.
"""

# ruff: noqa: F811 - the emulator fixtures are imported by name

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.dataset import assert_same_data, cloud, contents, fields, fill
from tests.emulators import MotoS3, kvcloud_conf, moto_s3  # noqa: F401
from tests.servers import Proxy, Upstream


@dataclass
class Backup:
    """One backup of a filled redis-server in a moto bucket, and the proxy that made it."""

    server: Upstream
    proxy: Proxy
    moto: MotoS3
    bucket: str
    backup_id: str
    key: Path
    live: dict[bytes, Any]  # the server's data, which nothing here may change

    def objects(self, under: str) -> dict[str, int]:
        """S3 keys under ``prod-1/<under>`` with their sizes."""
        listing = self.moto.client().list_objects_v2(Bucket=self.bucket, Prefix=f"prod-1/{under}")
        return {item["Key"]: item["Size"] for item in listing.get("Contents", [])}

    def truncate(self, s3_key: str, size: int) -> None:
        client = self.moto.client()
        data = client.get_object(Bucket=self.bucket, Key=s3_key)["Body"].read()
        assert len(data) > size
        client.put_object(Bucket=self.bucket, Key=s3_key, Body=data[:size])


@pytest.fixture
def backup(moto_s3: MotoS3, key: Path, make_upstream, make_proxy) -> Backup:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    fill(server.client())
    bucket = moto_s3.make_bucket()
    proxy: Proxy = make_proxy(server.port, kvcloud_conf(moto_s3, bucket, key))
    upload = fields(proxy.client().execute_command("KVCLOUD", "UPLOAD", "WAIT"))
    assert upload[b"state"] == b"succeeded", upload
    return Backup(server, proxy, moto_s3, bucket, upload[b"backup_id"].decode(), key,
                  contents(server.client()))


def truncated_chunk(backup: Backup) -> list[str]:
    """The largest chunk, cut in half: its tag no longer matches."""
    chunks = backup.objects("chunks/")
    assert len(chunks) >= 3
    s3_key = max(chunks, key=chunks.__getitem__)
    backup.truncate(s3_key, chunks[s3_key] // 2)
    return [f"corrupt object {s3_key.removeprefix('prod-1/')} in {WHERE}"]


def truncated_manifest(backup: Backup) -> list[str]:
    """The manifest cut to 30 bytes: shorter than a header and a tag."""
    s3_key = f"prod-1/backups/{backup.backup_id}.manifest"
    backup.truncate(s3_key, 30)
    return [f"corrupt object {s3_key.removeprefix('prod-1/')} in {WHERE}", "truncated"]


def wrong_key(backup: Backup) -> list[str]:
    """Another raw key in the key file both the proxy and the CLI read."""
    backup.key.write_bytes(os.urandom(32))
    return ["wrong encryption key for repository prod-1", str(backup.key)]


#: How messages name the repository: the provider, then the prefix.
WHERE = "provider cloud (s3):prod-1"

DAMAGE = {"truncated-chunk": truncated_chunk, "truncated-manifest": truncated_manifest,
          "wrong-key": wrong_key}


def assert_names_it(message: str, expected: list[str], key_bytes: list[bytes]) -> None:
    for text in expected:
        assert text in message, (text, message)
    assert "Traceback" not in message
    for secret in key_bytes:
        assert secret.hex() not in message


@pytest.mark.parametrize("damage", DAMAGE)
def test_damage_fails_restore_and_verify_and_leaves_nothing(backup: Backup, damage: str,
                                                            tmp_path: Path) -> None:
    keys = [backup.key.read_bytes()]
    expected = DAMAGE[damage](backup)
    keys.append(backup.key.read_bytes())
    admin = backup.proxy.client()
    restores = tmp_path / "restores"
    restores.mkdir()
    absent, empty = restores / "absent", restores / "empty"
    empty.mkdir()

    for target in (absent, empty):
        final = fields(admin.execute_command("KVCLOUD", "RESTORE", "cloud", backup.backup_id,
                                             "TO", str(target), "WAIT"))
        assert final[b"state"] == b"failed", final
        assert_names_it(final[b"error"].decode(), expected, keys)
    verified = fields(admin.execute_command("KVCLOUD", "VERIFY", "cloud", "WAIT"))
    assert verified[b"state"] == b"failed", verified
    assert_names_it(verified[b"error"].decode(), expected, keys)

    conf = str(backup.proxy.conf_path)
    restored = cloud("restore", "--conf", conf, backup.backup_id, "--to", str(absent))
    assert restored.returncode == 1, restored.stdout
    assert_names_it(restored.stderr, expected, keys)
    checked = cloud("verify", "--conf", conf)
    assert checked.returncode == 1, checked.stdout
    assert_names_it(checked.stdout + checked.stderr, expected, keys)

    # No target, the empty one still empty, no staging directory beside them.
    assert sorted(p.name for p in restores.iterdir()) == ["empty"]
    assert not any(empty.iterdir())
    # The live server and its data are untouched.
    assert_same_data(backup.live, contents(backup.server.client()))
    assert backup.proxy.alive()
    print(f"{damage}: {final[b'error'].decode()}")
