"""Restore into a new directory: a real round trip, and damage that is caught."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from kvproxy.jobs.restore import RestoreError, plan
from kvproxy.repo.manifest import FileEntry, Manifest
from tests.dataset import (
    assert_same_data,
    change,
    cloud,
    contents,
    fields,
    fill,
    restored_contents,
)
from tests.servers import Upstream


@pytest.fixture
def backed_up(make_upstream, tmp_path: Path):  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    client = server.client()
    fill(client)
    before = contents(client)
    key = tmp_path / "backup.key"
    assert cloud("keygen", str(key)).returncode == 0
    conf = tmp_path / "kvcloud.conf"
    conf.write_text(f"[kvcloud]\nencryption_key_file = {key}\nstate_dir = {tmp_path / 's'}\n"
                    f"[provider local]\ntype = file\npath = {tmp_path / 'bucket'}\n")
    backup = cloud("backup", "--conf", str(conf), "--upstream", f"127.0.0.1:{server.port}")
    assert backup.returncode == 0, backup.stderr
    change(client)
    return conf, before, tmp_path


def test_round_trip_restores_the_data_as_of_the_backup(backed_up) -> None:  # type: ignore[no-untyped-def]
    conf, before, tmp_path = backed_up
    target = tmp_path / "restored"
    result = cloud("restore", "--conf", str(conf), "--to", str(target), "--json")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["state"] == "succeeded" and reply["directory"] == str(target)
    assert reply["start_command"] == f"redis-server --dir {target} --dbfilename dump.rdb"
    assert not list(tmp_path.glob(".restored.restoring-*"))

    assert_same_data(before, restored_contents(target))  # redis-server --dir target


def test_damage_is_caught_and_nothing_is_left(backed_up) -> None:  # type: ignore[no-untyped-def]
    conf, _, tmp_path = backed_up
    chunk = next(p for p in (tmp_path / "bucket").rglob("*") if p.parent.parent.name == "chunks")
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    target = tmp_path / "restored"
    result = cloud("restore", "--conf", str(conf), "--to", str(target))
    assert result.returncode == 1
    assert chunk.name in result.stderr and "Traceback" not in result.stderr
    assert not target.exists()
    assert not list(tmp_path.glob(".restored.restoring-*"))


def test_a_non_empty_target_is_refused(backed_up) -> None:  # type: ignore[no-untyped-def]
    conf, _, tmp_path = backed_up
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep-me").write_text("precious")
    result = cloud("restore", "--conf", str(conf), "--to", str(target))
    assert result.returncode == 1 and "not empty" in result.stderr
    assert (target / "keep-me").read_text() == "precious"


def test_a_leftover_staging_directory_is_named_not_a_traceback(backed_up) -> None:  # type: ignore[no-untyped-def]
    conf, _, tmp_path = backed_up
    backup_id = json.loads(cloud("list", "--conf", str(conf), "--json").stdout)[0]["backup_id"]
    # What a restore killed before it could clean up leaves behind.
    leftover = tmp_path / f".restored.restoring-{backup_id}"
    leftover.mkdir()
    (leftover / "dump.rdb").write_bytes(b"half written")
    result = cloud("restore", "--conf", str(conf), "--to", str(tmp_path / "restored"))
    assert result.returncode == 1
    assert f"{leftover} exists" in result.stderr and "interrupted" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "restored").exists()
    assert (leftover / "dump.rdb").read_bytes() == b"half written"  # not ours to delete


def test_a_target_that_cannot_be_made_is_named_not_a_traceback(backed_up) -> None:  # type: ignore[no-untyped-def]
    conf, _, tmp_path = backed_up
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for target in (blocker / "restored", blocker / "deeper" / "restored"):
        result = cloud("restore", "--conf", str(conf), "--to", str(target))
        assert result.returncode == 1
        assert f"cannot restore into {target}" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    assert blocker.read_text() == "not a directory"


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/../../x", "", "a//b", "./x"])
def test_names_that_leave_the_target_are_refused(name: str) -> None:
    entry = FileEntry(name, 1, 0o600, "0" * 64)
    manifest = Manifest("20261124T101500Z-3f9a", "2026-11-24T10:15:00Z", "redis-rdb", "7.0",
                        False, "none", (entry,), None)  # type: ignore[arg-type]
    with pytest.raises(RestoreError, match="would leave the target"):
        plan(manifest)


def test_kvcloud_restore_into_a_directory(make_upstream, make_proxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    fill(server.client())
    before = contents(server.client())
    key = tmp_path / "backup.key"
    assert cloud("keygen", str(key)).returncode == 0
    proxy = make_proxy(server.port, f"[kvcloud]\nencryption_key_file = {key}\n"
                       f"restore_dir = {tmp_path / 'restores'}\n"
                       f"[provider local]\ntype = file\npath = {tmp_path / 'bucket'}\n")
    admin = proxy.client()
    assert admin.execute_command("KVCLOUD", "UPLOAD", "WAIT")[1] == b"succeeded"
    final = fields(admin.execute_command("KVCLOUD", "RESTORE", "local", "LATEST", "WAIT"))
    assert final[b"state"] == b"succeeded", final
    backup_id = final[b"backup_id"].decode()
    target = tmp_path / "restores" / backup_id
    assert f"restored into {target}; start the server with: redis-server --dir {target}" \
        in final[b"results"].decode()
    assert_same_data(before, restored_contents(target))
    # The same target again is refused: nothing that exists is overwritten.
    again = fields(admin.execute_command("KVCLOUD", "RESTORE", backup_id, "TO", str(target),
                                         "WAIT"))
    assert again[b"state"] == b"failed" and b"not empty" in again[b"error"]
    with pytest.raises(redis.ResponseError, match="SWAP needs managed = yes"):
        admin.execute_command("KVCLOUD", "RESTORE", "local", backup_id, "SWAP")


def test_cli_verify_reports_each_damage_by_name(backed_up) -> None:  # type: ignore[no-untyped-def]
    conf, _, tmp_path = backed_up
    ok = cloud("verify", "--conf", str(conf), "--json")
    assert ok.returncode == 0, ok.stderr
    assert list(json.loads(ok.stdout)["backups"].values()) == [[]]

    chunks = sorted(p for p in (tmp_path / "bucket").rglob("*") if p.parent.parent.name == "chunks")
    assert len(chunks) >= 2
    flipped, deleted = chunks[0], chunks[-1]
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0x01
    flipped.write_bytes(bytes(data))
    deleted.unlink()
    bad = cloud("verify", "--conf", str(conf), "--all")
    assert bad.returncode == 1
    assert flipped.name in bad.stdout and deleted.name in bad.stdout
    assert "missing" in bad.stdout and "2 problem(s)" in bad.stdout

    manifest = next((tmp_path / "bucket").rglob("*.manifest"))
    sealed = bytearray(manifest.read_bytes())
    sealed[len(sealed) // 2] ^= 0x01
    manifest.write_bytes(bytes(sealed))
    broken = cloud("verify", "--conf", str(conf), "--all")
    assert broken.returncode == 1 and manifest.name.split(".")[0] in broken.stdout
    assert "Traceback" not in broken.stdout + broken.stderr


def test_kvcloud_verify_sound_then_damaged(make_upstream, make_proxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    fill(server.client())
    key = tmp_path / "backup.key"
    assert cloud("keygen", str(key)).returncode == 0
    proxy = make_proxy(server.port, f"[kvcloud]\nencryption_key_file = {key}\n"
                       f"[provider local]\ntype = file\npath = {tmp_path / 'bucket'}\n")
    admin = proxy.client()
    assert admin.execute_command("KVCLOUD", "UPLOAD", "WAIT")[1] == b"succeeded"
    sound = admin.execute_command("KVCLOUD", "VERIFY", "WAIT")
    assert fields(sound)[b"results"] == b"local: sound"
    chunk = next(p for p in (tmp_path / "bucket").rglob("*") if p.parent.parent.name == "chunks")
    chunk.unlink()
    damaged = fields(admin.execute_command("KVCLOUD", "VERIFY", "local", "ALL", "WAIT"))
    assert damaged[b"state"] == b"failed"
    assert chunk.name.encode() in damaged[b"error"] and b"missing" in damaged[b"error"]
