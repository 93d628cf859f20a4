"""One conformance suite for every Store: a local directory, fsspec's memory
filesystem, and S3, GCS and Azure through their real emulators (moto,
fake-gcs-server, Azurite) with the filesystems open_store builds for them."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from kvproxy import config
from kvproxy.storage import BucketNotFound, NotFound, StorageError, Store
from kvproxy.storage.azure import account_url as azure_account_url
from kvproxy.storage.providers import check, open_store
from tests.emulators import (  # noqa: F401 - fixtures
    azurite,
    fake_gcs,
    moto_s3,
    no_cloud_credentials,
)

# Credentials of the machine running the tests (GOOGLE_APPLICATION_CREDENTIALS, say)
# would outrank the emulators' anonymous access.
pytestmark = pytest.mark.usefixtures("no_cloud_credentials")

EMULATOR_FIXTURE = {"s3": "moto_s3", "gcs": "fake_gcs", "azure": "azurite"}
#: The fsspec protocol each real backend must have: never the memory filesystem.
PROTOCOL = {"file": "file", "memory": "memory", "s3": "s3", "gcs": "gs", "azure": "abfs"}


def file_provider(path: Path, name: str = "local") -> config.Provider:
    return config.parse(f"[provider {name}]\ntype = file\npath = {path}\n").providers[0]


@pytest.fixture(params=["file", "memory", "s3", "gcs", "azure"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    kind = request.param
    if kind == "file":
        made = open_store(file_provider(tmp_path / "backups"), "kvrocks/test")
    elif kind == "memory":
        made = Store(MemoryFileSystem(), f"/conformance-{uuid.uuid4().hex}", "memory")
    else:
        emulator = request.getfixturevalue(EMULATOR_FIXTURE[kind])
        made = open_store(emulator.provider(), "kvrocks/test")
    protocols = made.fs.protocol if isinstance(made.fs.protocol, tuple) else (made.fs.protocol,)
    assert PROTOCOL[kind] in protocols, f"{kind} store runs on {made.fs!r}"
    return made


def test_round_trip_binary(store: Store) -> None:
    data = bytes(range(256)) * 16 + b"\x00\r\n\xff"
    store.write("a/b/c.bin", data)
    assert store.read("a/b/c.bin") == data
    store.write("empty", b"")
    assert store.read("empty") == b""


def test_round_trip_20_mib(store: Store) -> None:
    data = os.urandom(20 << 20)
    store.write("chunks/big", data)
    assert store.read("chunks/big") == data


def test_overwrite_replaces_the_whole_object(store: Store) -> None:
    store.write("repo.json", b"first version, longer than the second")
    store.write("repo.json", b"second")
    assert store.read("repo.json") == b"second"


def test_exists(store: Store) -> None:
    assert not store.exists("backups/x.manifest")
    store.write("backups/x.manifest", b"m")
    assert store.exists("backups/x.manifest")
    store.delete("backups/x.manifest")
    assert not store.exists("backups/x.manifest")


def test_list_nested_prefixes(store: Store) -> None:
    assert store.list("") == []
    keys = ["backups/20261124T101500Z-3f9a.manifest", "chunks/ab/ab01", "chunks/ab/ab02",
            "chunks/cd/cd01", "repo.json"]
    for key in reversed(keys):
        store.write(key, key.encode())
    assert store.list("") == keys
    assert store.list("chunks") == keys[1:4]
    assert store.list("chunks/") == keys[1:4]
    assert store.list("chunks/ab") == keys[1:3]
    assert store.list("chunks/a") == []  # a directory, not a string prefix
    assert store.list("nothing") == []
    assert store.list("backups") == keys[:1]


def test_delete(store: Store) -> None:
    store.write("chunks/ab/ab01", b"1")
    store.write("chunks/ab/ab02", b"2")
    store.delete("chunks/ab/ab01")
    assert store.list("chunks") == ["chunks/ab/ab02"]
    store.delete("chunks/ab/ab01")  # already gone: fine
    store.delete("never/was/there")


def test_read_missing_key_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound, match="no object 'backups/missing'"):
        store.read("backups/missing")
    assert issubclass(NotFound, StorageError)


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "/absolute", "a/.."])
def test_keys_that_escape_are_refused(store: Store, key: str) -> None:
    with pytest.raises(ValueError, match="bad storage key"):
        store.read(key)
    with pytest.raises(ValueError):
        store.write(key, b"x")
    with pytest.raises(ValueError):
        store.exists(key)
    with pytest.raises(ValueError):
        store.delete(key)
    if key != "/absolute":  # a leading '/' is stripped from a list prefix
        with pytest.raises(ValueError):
            store.list(key)


def test_probe_on_an_empty_and_a_used_prefix(store: Store) -> None:
    store.probe()
    check(store)
    store.write("repo.json", b"{}")
    store.probe()


def test_file_store_leaves_no_temporary_files(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(file_provider(tmp_path / "backups"), "/kvrocks//prod-1/")
    assert store.root == str(tmp_path / "backups" / "kvrocks" / "prod-1")
    for number in range(20):
        store.write(f"chunks/{number % 3}/{number}", b"x" * number)
    store.write("repo.json", b"1")
    store.write("repo.json", b"2")

    def fail(source: str, target: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(StorageError, match="cannot write 'repo.json': .*No space left"):
        store.write("repo.json", b"3")
    monkeypatch.undo()
    names = [name for _, dirs, files in os.walk(tmp_path) for name in dirs + files]
    assert not [name for name in names if name.startswith(".tmp-")]
    assert store.read("repo.json") == b"2"
    assert len(store.list("chunks")) == 20


def test_file_provider_creates_its_directory(tmp_path: Path) -> None:
    store = open_store(file_provider(tmp_path / "new" / "dir"), "")
    assert (tmp_path / "new" / "dir").is_dir()
    store.probe()
    with pytest.raises(StorageError, match="bad prefix"):
        open_store(file_provider(tmp_path), "a/../b")


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_missing_bucket_is_named(kind: str, request: pytest.FixtureRequest) -> None:
    emulator = request.getfixturevalue(EMULATOR_FIXTURE[kind])
    store = open_store(emulator.provider("backup", bucket="no-such-bucket"), "kvrocks/test")
    noun = "container" if kind == "azure" else "bucket"
    message = f"provider backup \\({kind}\\): {noun} 'no-such-bucket' does not exist"
    with pytest.raises(BucketNotFound, match=message):
        check(store)
    with pytest.raises(BucketNotFound, match=message):
        store.list("")
    with pytest.raises(BucketNotFound, match=message):
        store.write("repo.json", b"{}")
    with pytest.raises(BucketNotFound, match=message):
        store.read("repo.json")
    assert not isinstance(BucketNotFound("x"), NotFound)


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure"])
def test_prefix_is_a_folder_in_the_bucket(kind: str, request: pytest.FixtureRequest) -> None:
    emulator = request.getfixturevalue(EMULATOR_FIXTURE[kind])
    provider = emulator.provider("p")
    bucket = provider.values.get("bucket") or provider.values["container"]
    one = open_store(provider, "servers/one")
    whole = open_store(provider, "")
    assert one.root == f"{bucket}/servers/one" and whole.root == bucket
    one.write("repo.json", b"1")
    assert whole.list("") == ["servers/one/repo.json"]
    assert whole.read("servers/one/repo.json") == b"1"


def test_azure_account_url() -> None:
    assert azure_account_url(None, "acct") == "https://acct.blob.core.windows.net"
    assert azure_account_url("http://127.0.0.1:10000", "dev") == "http://127.0.0.1:10000/dev"
    assert azure_account_url("http://localhost:10000/", "dev") == "http://localhost:10000/dev"
    assert azure_account_url("http://127.0.0.1:10000/other", "dev") == \
        "http://127.0.0.1:10000/other"
    assert azure_account_url("https://acct.blob.example.net", "acct") == \
        "https://acct.blob.example.net"


class _FailingFs:
    protocol = "s3"

    def __init__(self, exc: Exception) -> None:
        self.exc = exc

    def cat_file(self, path: str) -> bytes:
        raise self.exc


def test_secrets_are_scrubbed_from_error_messages() -> None:
    from kvproxy.storage.credentials import Resolution
    from kvproxy.storage.providers import _secrets

    sas = "sv=2024-11-04&sp=rl&sig=abc%2Bdef%3D"
    found = Resolution({"connection_string": "BlobEndpoint=x;AccountKey=c2VjcmV0a2V5",
                        "sas_token": sas}, "kvcloud.conf [provider az]", [])
    secrets = _secrets(found)
    assert {"c2VjcmV0a2V5", sas, "abc+def=", "abc%2Bdef%3D"} <= set(secrets)
    store = Store(_FailingFs(RuntimeError("key c2VjcmV0a2V5 and sig abc+def= rejected")),
                  "bucket", "provider az (azure)")
    store.secrets = secrets
    with pytest.raises(StorageError) as caught:
        store.read("k")
    assert str(caught.value) == "provider az (azure): cannot read 'k': key *** and sig *** rejected"
