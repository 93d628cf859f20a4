"""Objects in the bucket: round trips, compression, dedup, every kind of corruption."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kvproxy.repo.chunker import ChunkerParams
from kvproxy.repo.codec import HEADER, HEADER_SIZE, MAGIC, CipherId, Codec, Kind
from kvproxy.repo.compression import Compression, CompressionId
from kvproxy.repo.errors import (
    CorruptObject,
    ManifestError,
    RepoExists,
    RepoFormatError,
    RepoNotFound,
)
from kvproxy.repo.keys import ENV_VAR, KeySource, keygen
from kvproxy.repo.manifest import ChunkRef, FileEntry, Manifest
from kvproxy.repo.repository import BackupNotFound, Repository
from kvproxy.storage.store import Store

LABEL = "kvrocks/prod-1"
CIPHERS = ["aes-256-gcm", "chacha20-poly1305", "none"]
MARKER = b"PLAINTEXT-MARKER-0xC0FFEE"


@pytest.fixture
def source(tmp_path: Path) -> KeySource:
    path = tmp_path / "backup.key"
    keygen(path)
    return KeySource(file=str(path))


def create(store: Store, source: KeySource, cipher: str = "aes-256-gcm",
           compression: str = "zstd:3") -> Repository:
    return Repository.create(store, LABEL, cipher, compression,
                             source if cipher != "none" else KeySource())


def small_manifest(repo: Repository, files: list[tuple[str, bytes]]) -> Manifest:
    entries = []
    for name, data in files:
        chunk_id = repo.chunk_id(data)
        repo.put_chunk(chunk_id, data)
        entries.append(FileEntry(name, len(data), 0o644, hashlib.sha256(data).hexdigest(),
                                 (ChunkRef(chunk_id, len(data)),)))
    return Manifest.new(source="directory", server_version="7.0.0", encrypted=repo.encrypted,
                        compression=repo.compression, files=entries,
                        new_chunks=len(entries), stored_bytes=0)


# -- creating and opening ----------------------------------------------------------


def test_create_writes_repo_json(store: Store, source: KeySource) -> None:
    create(store, source)
    document = json.loads(store.read("repo.json"))
    assert document["format"] == "kvproxy-repository" and document["version"] == 1
    assert document["chunker"] == {"algorithm": "fastcdc2020", "min_size": 1 << 20,
                                   "avg_size": 4 << 20, "max_size": 16 << 20,
                                   "normalization": 1, "keyed": True,
                                   "edge_size": 64 << 10}
    assert document["compression"] == "zstd:3"
    assert document["encryption"]["cipher"] == "aes-256-gcm"
    assert document["encryption"]["kdf"] == {"name": "none"}
    assert len(document["encryption"]["key_check"]) == 64
    assert document["label"] == LABEL and len(document["repository_id"]) == 32


def test_create_refuses_an_existing_repository(store: Store, source: KeySource) -> None:
    create(store, source)
    before = store.read("repo.json")
    with pytest.raises(RepoExists, match="already exists"):
        create(store, source)
    assert store.read("repo.json") == before


def test_create_refuses_leftover_chunks_without_repo_json(store: Store,
                                                          source: KeySource) -> None:
    repo = create(store, source)
    repo.put_chunk(repo.chunk_id(b"x"), b"x")
    store.delete("repo.json")
    with pytest.raises(RepoExists, match="no repo.json"):
        create(store, source)


def test_open_without_repository(store: Store, source: KeySource) -> None:
    assert not Repository.exists(store)
    with pytest.raises(RepoNotFound, match="no repository at memory:/bucket/prefix"):
        Repository.open(store, source)


def test_open_refuses_a_newer_format(store: Store, source: KeySource) -> None:
    create(store, source)
    document = json.loads(store.read("repo.json"))
    document["version"] = 2
    store.write("repo.json", json.dumps(document).encode())
    with pytest.raises(RepoFormatError, match="upgrade kvproxy"):
        Repository.open(store, source)


def test_chunker_parameters_are_stored_and_used(store: Store, source: KeySource) -> None:
    params = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384, keyed=False)
    Repository.create(store, LABEL, "aes-256-gcm", "zstd:3", source, chunker=params)
    repo = Repository.open(store, source)
    assert repo.config.chunker.avg_size == 4096 and repo.config.chunker.keyed
    assert repo.chunker().params == repo.config.chunker


# -- round trips -----------------------------------------------------------------


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("compression", ["zstd:3", "none"])
def test_chunk_round_trip(store: Store, source: KeySource, cipher: str,
                          compression: str) -> None:
    create(store, source, cipher, compression)
    repo = Repository.open(store, source if cipher != "none" else KeySource())
    for data in (b"", b"a", MARKER * 1000, os.urandom(100_000)):
        chunk_id = repo.chunk_id(data)
        stored = repo.put_chunk(chunk_id, data)
        assert stored == len(store.read(f"chunks/{chunk_id[:2]}/{chunk_id}"))
        assert repo.get_chunk(chunk_id) == data


@pytest.mark.parametrize("cipher", CIPHERS)
def test_manifest_round_trip_and_listing(store: Store, source: KeySource, cipher: str) -> None:
    repo = create(store, source, cipher)
    first = small_manifest(repo, [("000012.sst", b"sst data"), ("CURRENT", b"MANIFEST-1\n")])
    assert repo.write_manifest(first) == first.backup_id
    assert store.exists(f"backups/{first.backup_id}.manifest")
    second = small_manifest(repo, [("dump.rdb", b"REDIS0011")])
    repo.write_manifest(second)
    assert repo.read_manifest(first.backup_id) == first
    assert repo.list_backups() == sorted([first.backup_id, second.backup_id])
    repo.delete_backup(first.backup_id)
    assert repo.list_backups() == [second.backup_id]


def test_manifest_writes_are_checked(store: Store, source: KeySource) -> None:
    repo = create(store, source)
    manifest = small_manifest(repo, [("f", b"data")])
    repo.write_manifest(manifest)
    with pytest.raises(ManifestError, match="already exists"):
        repo.write_manifest(manifest)
    with pytest.raises(ManifestError, match="encrypted"):
        repo.write_manifest(Manifest.new(
            source="directory", server_version="", encrypted=False, compression="none",
            files=[], new_chunks=0, stored_bytes=0))
    bad = small_manifest(repo, [("../escape", b"data")])
    with pytest.raises(ManifestError):
        repo.write_manifest(bad)
    assert not store.exists(f"backups/{bad.backup_id}.manifest")


def test_reading_unknown_backups(store: Store, source: KeySource) -> None:
    repo = create(store, source)
    with pytest.raises(BackupNotFound, match="no backup 20260101T000000Z-abcd"):
        repo.read_manifest("20260101T000000Z-abcd")
    with pytest.raises(BackupNotFound, match="not a backup id"):
        repo.read_manifest("../../repo")


def test_list_ignores_foreign_keys(store: Store, source: KeySource) -> None:
    repo = create(store, source)
    store.write("backups/notes.txt", b"x")
    store.write("chunks/zz/notachunk", b"x")
    assert repo.list_backups() == [] and repo.list_chunks() == []


# -- compression -------------------------------------------------------------------


def header_of(blob: bytes) -> tuple[bytes, int, int, int, int, bytes]:
    return HEADER.unpack_from(blob)


def test_compressible_data_is_compressed(store: Store, source: KeySource) -> None:
    repo = create(store, source)
    data = MARKER * 10_000
    chunk_id = repo.chunk_id(data)
    assert repo.put_chunk(chunk_id, data) < len(data) // 10
    assert header_of(store.read(f"chunks/{chunk_id[:2]}/{chunk_id}"))[3] == CompressionId.ZSTD


@pytest.mark.parametrize("cipher,trailer", [("aes-256-gcm", 16), ("none", 32)])
def test_incompressible_data_is_stored_raw(store: Store, source: KeySource, cipher: str,
                                           trailer: int) -> None:
    repo = create(store, source, cipher)
    data = os.urandom(200_000)
    chunk_id = repo.chunk_id(data)
    assert repo.put_chunk(chunk_id, data) == len(data) + HEADER_SIZE + trailer
    blob = store.read(f"chunks/{chunk_id[:2]}/{chunk_id}")
    assert header_of(blob)[3] == CompressionId.NONE
    assert repo.get_chunk(chunk_id) == data


def test_compression_none_and_override(store: Store, source: KeySource) -> None:
    create(store, source, compression="none")
    repo = Repository.open(store, source)
    data = MARKER * 1000
    chunk_id = repo.chunk_id(data)
    assert repo.put_chunk(chunk_id, data) == len(data) + HEADER_SIZE + 16
    other = MARKER * 1001
    faster = Repository.open(store, source, compression="zstd:1")
    assert faster.compression == "zstd:1"
    assert faster.put_chunk(faster.chunk_id(other), other) < len(other)
    assert repo.get_chunk(faster.chunk_id(other)) == other  # old settings read new objects


# -- chunk ids and dedup -------------------------------------------------------------


def test_chunk_ids_dedup(store: Store, source: KeySource) -> None:
    repo = create(store, source)
    data = b"the same content"
    chunk_id = repo.chunk_id(data)
    assert chunk_id == repo.chunk_id(bytes(data)) and len(chunk_id) == 64
    assert chunk_id != hashlib.sha256(data).hexdigest()  # keyed when encrypted
    assert not repo.has_chunk(chunk_id)
    repo.put_chunk(chunk_id, data)
    assert repo.has_chunk(chunk_id)
    assert Repository.open(store, source).chunk_id(data) == chunk_id
    assert repo.list_chunks() == [chunk_id]
    repo.delete_chunk(chunk_id)
    assert not repo.has_chunk(chunk_id)


def test_unencrypted_chunk_id_is_sha256(store: Store, source: KeySource) -> None:
    repo = create(store, source, "none")
    assert repo.chunk_id(b"abc") == hashlib.sha256(b"abc").hexdigest()


def test_put_chunk_refuses_a_wrong_id(store: Store, source: KeySource) -> None:
    repo = create(store, source)
    with pytest.raises(ValueError, match="does not match"):
        repo.put_chunk(repo.chunk_id(b"one"), b"two")


# -- corruption --------------------------------------------------------------------


def stored_chunk(repo: Repository, data: bytes = MARKER * 100) -> tuple[str, str, bytes]:
    chunk_id = repo.chunk_id(data)
    repo.put_chunk(chunk_id, data)
    key = f"chunks/{chunk_id[:2]}/{chunk_id}"
    return chunk_id, key, repo.store.read(key)


def flip(blob: bytes, offset: int) -> bytes:
    return blob[:offset] + bytes([blob[offset] ^ 0x01]) + blob[offset + 1:]


def assert_corrupt(repo: Repository, chunk_id: str, key: str, reason: str) -> None:
    with pytest.raises(CorruptObject, match=reason) as caught:
        repo.get_chunk(chunk_id)
    assert key in str(caught.value) and LABEL in str(caught.value)
    assert caught.value.name.startswith(key)


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305"])
@pytest.mark.parametrize("where,reason", [
    (0, "bad magic"),
    (4, "unknown object format version"),
    (5, "is a kind 0, expected a chunk"),
    (6, "authentication failed"),       # compression byte 1 -> 0, bound by the AD
    (7, "sealed with"),
    (8, "authentication failed"),       # first nonce byte
    (19, "authentication failed"),      # last nonce byte
    (HEADER_SIZE + 3, "authentication failed"),   # ciphertext
    (-1, "authentication failed"),      # tag
])
def test_flipped_byte_is_corrupt(store: Store, source: KeySource, cipher: str, where: int,
                                 reason: str) -> None:
    repo = create(store, source, cipher)
    chunk_id, key, blob = stored_chunk(repo)
    store.write(key, flip(blob, where % len(blob)))
    assert_corrupt(repo, chunk_id, key, reason)


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("length,reason", [
    (0, "truncated"), (10, "truncated"), (HEADER_SIZE + 15, "truncated"),
    (-1, "authentication failed|checksum mismatch"),
])
def test_truncated_object_is_corrupt(store: Store, source: KeySource, cipher: str,
                                     length: int, reason: str) -> None:
    repo = create(store, source, cipher)
    chunk_id, key, blob = stored_chunk(repo)
    store.write(key, blob[:length])
    assert_corrupt(repo, chunk_id, key, reason)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_object_swapped_under_another_id_is_corrupt(store: Store, source: KeySource,
                                                    cipher: str) -> None:
    repo = create(store, source, cipher)
    chunk_id, key, _ = stored_chunk(repo, b"first chunk")
    _, _, other = stored_chunk(repo, b"second chunk")
    store.write(key, other)
    assert_corrupt(repo, chunk_id, key, "authentication failed|checksum mismatch")


@pytest.mark.parametrize("cipher", CIPHERS)
def test_wrong_kind_is_corrupt(store: Store, source: KeySource, cipher: str) -> None:
    repo = create(store, source, cipher)
    manifest = small_manifest(repo, [("f", b"data")])
    repo.write_manifest(manifest)
    manifest_key = f"backups/{manifest.backup_id}.manifest"
    chunk_id, key, chunk_blob = stored_chunk(repo)
    store.write(key, store.read(manifest_key))
    assert_corrupt(repo, chunk_id, key, "is a manifest, expected a chunk")
    store.write(manifest_key, chunk_blob)
    with pytest.raises(CorruptObject, match="is a chunk, expected a manifest") as caught:
        repo.read_manifest(manifest.backup_id)
    assert manifest_key in str(caught.value)


def test_manifest_under_another_backup_id_is_corrupt(store: Store, source: KeySource) -> None:
    repo = create(store, source)
    one = small_manifest(repo, [("f", b"1")])
    two = small_manifest(repo, [("f", b"2")])
    repo.write_manifest(one)
    store.write(f"backups/{two.backup_id}.manifest",
                store.read(f"backups/{one.backup_id}.manifest"))
    with pytest.raises(CorruptObject, match="authentication failed"):
        repo.read_manifest(two.backup_id)


def test_missing_chunk_is_corrupt(store: Store, source: KeySource) -> None:
    repo = create(store, source)
    chunk_id, key, _ = stored_chunk(repo)
    store.delete(key)
    assert_corrupt(repo, chunk_id, key, "missing")


def test_unencrypted_flip_and_forged_checksum_are_caught(store: Store,
                                                         source: KeySource) -> None:
    repo = create(store, source, "none", "none")
    chunk_id, key, blob = stored_chunk(repo)
    store.write(key, flip(blob, HEADER_SIZE + 5))
    assert_corrupt(repo, chunk_id, key, "checksum mismatch")
    # Someone who recomputes the checksum still cannot change the content: the id is its hash.
    payload = bytearray(blob[HEADER_SIZE:-32])
    payload[5] ^= 1
    associated = blob[:HEADER_SIZE] + chunk_id.encode()
    forged = blob[:HEADER_SIZE] + bytes(payload) + hashlib.sha256(
        associated + bytes(payload)).digest()
    store.write(key, forged)
    assert_corrupt(repo, chunk_id, key, "content does not match the chunk id")


def test_decompression_failure_is_corrupt() -> None:
    key = bytes(range(32))
    codec = Codec(CipherId.AES_256_GCM, key, Compression.parse("zstd:3"), lambda d: "c" * 64)
    nonce = bytes(12)
    header = HEADER.pack(MAGIC, 1, Kind.CHUNK, CompressionId.ZSTD, CipherId.AES_256_GCM, nonce)
    blob = header + AESGCM(key).encrypt(nonce, b"not a zstd frame", header + b"c" * 64)
    with pytest.raises(CorruptObject, match="decompression failed"):
        codec.open(Kind.CHUNK, "c" * 64, blob)


# -- confidentiality -----------------------------------------------------------------


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305"])
@pytest.mark.parametrize("compression", ["none", "zstd:3"])
def test_no_plaintext_in_any_stored_object(store: Store, source: KeySource, cipher: str,
                                           compression: str) -> None:
    repo = create(store, source, cipher, compression)
    manifest = small_manifest(repo, [(MARKER.decode() + ".sst", MARKER * 50),
                                     ("CURRENT", MARKER)])
    repo.write_manifest(manifest)
    keys = store.list("")
    assert len(keys) == 4  # repo.json, two chunks, one manifest
    for key in keys:
        assert MARKER not in store.read(key), key
        assert MARKER[:12] not in store.read(key), key


def test_marker_test_would_see_plaintext(store: Store, source: KeySource) -> None:
    repo = create(store, source, "none", "none")
    repo.write_manifest(small_manifest(repo, [("f", MARKER)]))
    assert any(MARKER in store.read(key) for key in store.list("chunks"))


# -- a small backup and restore, as a job would do it ----------------------------------


def backup_directory(repo: Repository, directory: Path) -> Manifest:
    chunker = repo.chunker()
    entries, new_chunks, stored = [], 0, 0
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        refs, digest = [], hashlib.sha256()
        for _, data in chunker.file_chunks(path):
            chunk_id = repo.chunk_id(data)
            digest.update(data)
            if not repo.has_chunk(chunk_id):
                stored += repo.put_chunk(chunk_id, data)
                new_chunks += 1
            refs.append(ChunkRef(chunk_id, len(data)))
        entries.append(FileEntry(path.relative_to(directory).as_posix(), path.stat().st_size,
                                 path.stat().st_mode & 0o7777, digest.hexdigest(),
                                 tuple(refs)))
    manifest = Manifest.new(source="directory", server_version="test",
                            encrypted=repo.encrypted, compression=repo.compression,
                            files=entries, new_chunks=new_chunks, stored_bytes=stored)
    repo.write_manifest(manifest)
    return manifest


def test_backup_restore_and_incremental_dedup(store: Store, source: KeySource,
                                              tmp_path: Path) -> None:
    # Content-defined cuts alone (no edge chunks): what this test is about.
    params = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384, edge_size=0)
    Repository.create(store, LABEL, "aes-256-gcm", "zstd:3", source, chunker=params)
    repo = Repository.open(store, source)
    data_dir = tmp_path / "checkpoint"
    (data_dir / "sub").mkdir(parents=True)
    big = os.urandom(400_000)
    (data_dir / "000012.sst").write_bytes(big)
    (data_dir / "sub" / "CURRENT").write_bytes(b"MANIFEST-000005\n")
    first = backup_directory(repo, data_dir)
    assert first.totals.new_chunks == first.totals.chunks > 50

    (data_dir / "000012.sst").write_bytes(big[:200_000] + b"new key" + big[200_000:])
    second = backup_directory(Repository.open(store, source), data_dir)
    assert second.totals.new_chunks <= 3

    restored = Repository.open(store, source).read_manifest(second.backup_id)
    for entry in restored.files:
        data = b"".join(repo.get_chunk(ref.id) for ref in entry.chunks)
        assert hashlib.sha256(data).hexdigest() == entry.sha256
        assert data == (data_dir / entry.name).read_bytes()


def test_env_key_end_to_end(store: Store) -> None:
    source = KeySource.from_environment(None, {ENV_VAR: "hex:" + "42" * 32})
    repo = Repository.create(store, LABEL, "chacha20-poly1305", "zstd:3", source)
    chunk_id = repo.chunk_id(b"x")
    repo.put_chunk(chunk_id, b"x")
    assert Repository.open(store, source).get_chunk(chunk_id) == b"x"
