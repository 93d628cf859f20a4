"""Backups into real emulators: moto S3, fake-gcs-server, Azurite; CLI and proxy."""

# ruff: noqa: F811 - the emulator fixtures are imported by name

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from kvproxy.repo.repository import Repository
from tests.emulators import (  # noqa: F401
    Emulator,
    azurite,
    emulator,
    fake_gcs,
    moto_s3,
    no_cloud_credentials,
    repository,
)
from tests.emulators import kvcloud_conf as conf
from tests.servers import Proxy, Upstream

MARKER = b"kvrocks-plaintext-marker-91c2"


def assert_restorable_and_sealed(repo: Repository, originals: dict[str, bytes]) -> None:
    (backup_id,) = repo.list_backups()
    manifest = repo.read_manifest(backup_id)
    assert manifest.encrypted
    assert {entry.name for entry in manifest.files} == set(originals)
    for entry in manifest.files:
        data = b"".join(repo.get_chunk(ref.id) for ref in entry.chunks)
        assert hashlib.sha256(data).hexdigest() == entry.sha256
        assert data == originals[entry.name]
    for name in repo.store.list(""):
        assert MARKER not in repo.store.read(name), name
        assert b"user:" not in repo.store.read(name), name


def test_cli_uploads_a_checkpoint(emulator: Emulator, key: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    originals = {"CURRENT": b"MANIFEST-000003\n",
                 "000003.sst": (os.urandom(1000) + MARKER) * 3000,
                 "OPTIONS-000005": b"[Version]\n" + MARKER}
    for name, data in originals.items():
        (checkpoint / name).write_bytes(data)
    bucket = emulator.make_bucket()
    conf_file = tmp_path / "kvcloud.conf"
    conf_file.write_text(conf(emulator, bucket, key))
    result = subprocess.run(
        [sys.executable, "-m", "kvproxy.cloud_cli", "backup", "--conf", str(conf_file),
         "-p", "cloud", "-d", str(checkpoint), "--json"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "succeeded"
    assert_restorable_and_sealed(repository(emulator, bucket, key), originals)


def test_proxy_uploads_a_redis_rdb(emulator: Emulator, key: Path, make_upstream,  # type: ignore[no-untyped-def]
                                   make_proxy) -> None:
    server: Upstream = make_upstream()
    server.client().mset({f"user:{i}": MARKER for i in range(3000)})
    bucket = emulator.make_bucket()
    proxy: Proxy = make_proxy(server.port, conf(emulator, bucket, key))
    final = proxy.client().execute_command("KVCLOUD", "UPLOAD", "cloud", "WAIT")
    fields = dict(zip(final[0::2], final[1::2], strict=True))
    assert fields[b"state"] == b"succeeded", fields
    rdb = (server.directory / "dump.rdb").read_bytes()
    assert_restorable_and_sealed(repository(emulator, bucket, key), {"dump.rdb": rdb})


def test_incremental_uploads_of_a_redis_rdb(moto_s3: Emulator, key: Path, make_upstream,  # type: ignore[no-untyped-def]
                                            make_proxy) -> None:
    server: Upstream = make_upstream()
    client = server.client()
    for batch in range(10):  # about 50 MiB of incompressible values: a dozen chunks
        client.mset({f"k:{batch}:{i}": os.urandom(1000) for i in range(5000)})
    bucket = moto_s3.make_bucket()
    proxy: Proxy = make_proxy(server.port, conf(moto_s3, bucket, key))

    def upload() -> dict[bytes, object]:
        final = proxy.client().execute_command("KVCLOUD", "UPLOAD", "WAIT")
        fields = dict(zip(final[0::2], final[1::2], strict=True))
        assert fields[b"state"] == b"succeeded", fields
        return fields

    first = upload()
    unchanged = upload()
    # Only the RDB's own header (save time) and checksum trailer changed: its edge chunks.
    assert unchanged[b"bytes_uploaded"] < first[b"bytes_uploaded"] / 100  # type: ignore[operator]
    assert unchanged[b"bytes_deduplicated"] > 0.99 * first[b"bytes_done"]  # type: ignore[operator]
    client.mset({"k:3:17": b"changed", "k:7:4000": b"changed too"})
    changed = upload()
    # Each changed key costs about one chunk (~5 MiB on average) out of ~50 MiB.
    assert 0 < changed[b"bytes_uploaded"] < first[b"bytes_uploaded"] / 2  # type: ignore[operator]
    print(f"first upload {first[b'bytes_uploaded']} bytes, unchanged "
          f"{unchanged[b'bytes_uploaded']}, after 2 changed keys {changed[b'bytes_uploaded']}")
    assert len(repository(moto_s3, bucket, key).list_backups()) == 3
