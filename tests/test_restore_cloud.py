"""Round trips through real cloud emulators: a server's data, backed up, restored into a
new directory, and found again by a fresh server started on it.

Through the proxy (KVCLOUD UPLOAD / RESTORE) for S3, GCS and Azure, Redis and Kvrocks;
through kvrocks-cloud alone (no proxy anywhere) for an RDB file and a checkpoint
directory.
"""

# ruff: noqa: F811 - the emulator fixtures are imported by name

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.dataset import (
    assert_same_data,
    change,
    cloud,
    contents,
    fill,
    restored_contents,
    upload_change_restore,
)
from tests.emulators import (  # noqa: F401
    Emulator,
    azurite,
    emulator,
    fake_gcs,
    kvcloud_conf,
    moto_s3,
    no_cloud_credentials,
)
from tests.servers import Proxy, Upstream


def test_proxy_round_trip_through_each_cloud(emulator: Emulator, key: Path, make_upstream,  # type: ignore[no-untyped-def]
                                             make_proxy, tmp_path: Path) -> None:
    server: Upstream = make_upstream()
    client = server.client()
    fill(client)
    before = contents(client)
    bucket = emulator.make_bucket()
    proxy: Proxy = make_proxy(server.port, kvcloud_conf(emulator, bucket, key))
    target = tmp_path / "restored"
    final = upload_change_restore(client, proxy.client(), "cloud", target)
    assert f"restored into {target}" in final[b"results"].decode()
    assert sorted(p.name for p in target.iterdir()) == ["dump.rdb"]
    assert_same_data(before, restored_contents(target))
    # The live server keeps what was written after the backup.
    assert client.get("new-key") == b"made after the backup"


def test_kvrocks_round_trip_through_s3(moto_s3: Emulator, key: Path, make_upstream,  # type: ignore[no-untyped-def]
                                       make_proxy, tmp_path: Path) -> None:
    server: Upstream = make_upstream("kvrocks")  # skipped, saying why, without a binary
    client = server.client()
    fill(client)
    before = contents(client)
    bucket = moto_s3.make_bucket()
    proxy: Proxy = make_proxy(server.port, kvcloud_conf(moto_s3, bucket, key,
                                                        "source = kvrocks-local\n"))
    target = tmp_path / "restored"
    final = upload_change_restore(client, proxy.client(), "cloud", target)
    assert f"start the server with: kvrocks --dir {target}" in final[b"results"].decode()
    assert sorted(p.name for p in target.iterdir()) == ["db"]
    assert (target / "db" / "CURRENT").is_file()
    assert_same_data(before, restored_contents(target, "kvrocks"))
    assert client.get("new-key") == b"made after the backup"


def _s3_environment(moto_s3: Emulator) -> dict[str, str]:
    """Credentials for the command-line provider (-p s3 -b NAME) from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return dict(env, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing",
                AWS_EC2_METADATA_DISABLED="true")


def _cli_backup(moto_s3: Emulator, bucket: str, key: Path, source: Path) -> None:
    """kvrocks-cloud backup with the provider given on the command line."""
    result = cloud("backup", "-p", "s3", "-b", bucket, "--endpoint-url", moto_s3.endpoint_url,
                   "-d", str(source), "--key-file", str(key), "--prefix", "prod-1", "--json",
                   env=_s3_environment(moto_s3))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "succeeded"


def _cli_restore(moto_s3: Emulator, bucket: str, key: Path, tmp_path: Path,
                 target: Path) -> str:
    """kvrocks-cloud restore of the latest backup with a kvcloud.conf; its output."""
    conf = tmp_path / "kvcloud.conf"
    conf.write_text(kvcloud_conf(moto_s3, bucket, key))
    result = cloud("restore", "--conf", str(conf), "--to", str(target))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.glob(f".{target.name}.restoring-*"))
    return result.stdout


def test_cli_round_trip_of_an_rdb_through_s3(moto_s3: Emulator, key: Path, make_upstream,  # type: ignore[no-untyped-def]
                                             tmp_path: Path) -> None:
    server: Upstream = make_upstream()
    client = server.client()
    fill(client)
    before = contents(client)
    client.save()
    bucket = moto_s3.make_bucket()
    _cli_backup(moto_s3, bucket, key, server.directory / "dump.rdb")
    change(client)
    target = tmp_path / "restored"
    output = _cli_restore(moto_s3, bucket, key, tmp_path, target)
    assert f"redis-server --dir {target} --dbfilename dump.rdb" in output
    assert_same_data(before, restored_contents(target))


def test_cli_round_trip_of_a_checkpoint_directory_through_s3(moto_s3: Emulator, key: Path,
                                                             tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    files = {"CURRENT": (b"MANIFEST-000005\n", 0o644),
             "MANIFEST-000005": (os.urandom(4096), 0o600),
             "OPTIONS-000007": (b"[Version]\n" * 100, 0o640),
             "000012.sst": (os.urandom(3 << 20) + b"\x00" * (2 << 20), 0o644),
             "000013.log": (b"", 0o644)}  # an empty file has no chunks
    for name, (data, mode) in files.items():
        (checkpoint / name).write_bytes(data)
        (checkpoint / name).chmod(mode)
    bucket = moto_s3.make_bucket()
    _cli_backup(moto_s3, bucket, key, checkpoint)
    target = tmp_path / "restored"
    output = _cli_restore(moto_s3, bucket, key, tmp_path, target)
    assert f"kvrocks --dir {target}" in output
    db = target / "db"
    assert sorted(p.name for p in db.iterdir()) == sorted(files)
    for name, (data, mode) in files.items():
        assert (db / name).read_bytes() == data, name
        assert (db / name).stat().st_mode & 0o7777 == mode, name


def test_restore_from_s3_reads_each_object_with_one_get(moto_s3: Emulator, key: Path,
                                                       tmp_path: Path) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "CURRENT").write_bytes(b"MANIFEST-000001\n")
    (checkpoint / "000001.sst").write_bytes(os.urandom(6 << 20))
    bucket = moto_s3.make_bucket()
    _cli_backup(moto_s3, bucket, key, checkpoint)
    chunks = f"/{bucket}/prod-1/chunks/"
    stored = moto_s3.client().list_objects_v2(Bucket=bucket, Prefix="prod-1/chunks/")
    before = len(moto_s3.log())
    _cli_restore(moto_s3, bucket, key, tmp_path, tmp_path / "restored")
    requests = [line for line in moto_s3.log()[before:].splitlines() if chunks in line]
    # No HEAD before each GET (s3fs' check for objects worth splitting into ranges).
    assert not [line for line in requests if "HEAD " in line], requests[:3]
    assert len([line for line in requests if "GET " in line]) == stored["KeyCount"] >= 3
