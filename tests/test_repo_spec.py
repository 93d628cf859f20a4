"""docs/format.md is enough: read a repository with nothing but the page.

This reader uses hashlib, hmac, json, zstandard and cryptography's primitives
directly, following the document section by section; if the code and the
page ever disagree, this test fails.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
import zstandard
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pyfastcdc import FastCDC

from kvproxy.repo import ChunkerParams, ChunkRef, FileEntry, KeySource, Manifest, Repository, keygen
from kvproxy.storage.store import Store


def hkdf(master: bytes, salt: bytes, info: bytes, length: int) -> bytes:  # section 3.3
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(master)


class SpecReader:
    """An independent reader written from docs/format.md."""

    def __init__(self, store: Store, raw_key: bytes | None = None,
                 passphrase: bytes | None = None) -> None:
        self.store = store
        self.config: dict[str, Any] = json.loads(store.read("repo.json"))  # section 2
        assert self.config["format"] == "kvproxy-repository" and self.config["version"] == 1
        encryption = self.config["encryption"]
        self.cipher = {"none": 0, "aes-256-gcm": 1, "chacha20-poly1305": 2}[encryption["cipher"]]
        if self.cipher == 0:
            return
        kdf = encryption["kdf"]
        if kdf["name"] == "none":  # section 3.2
            assert raw_key is not None
            master = raw_key
        else:
            assert passphrase is not None
            master = hashlib.scrypt(passphrase, salt=bytes.fromhex(kdf["salt"]), n=kdf["n"],
                                    r=kdf["r"], p=kdf["p"], dklen=32, maxmem=64 << 20)
        salt = bytes.fromhex(self.config["repository_id"])
        self.enc_key = hkdf(master, salt, b"kvproxy/repo/v1/encryption", 32)
        self.id_key = hkdf(master, salt, b"kvproxy/repo/v1/chunk-id", 32)
        seed = int.from_bytes(hkdf(master, salt, b"kvproxy/repo/v1/chunker-seed", 8), "big") >> 1
        self.seed = seed or 1
        check_key = hkdf(master, salt, b"kvproxy/repo/v1/key-check", 32)
        bound = {"format": "kvproxy-repository", "version": 1,  # section 3.4
                 "repository_id": self.config["repository_id"],
                 "chunker": self.config["chunker"], "cipher": encryption["cipher"],
                 "kdf": kdf}
        canonical = json.dumps(bound, sort_keys=True, separators=(",", ":"),
                               ensure_ascii=True).encode()
        check = hmac.new(check_key, b"kvproxy key check v1\n" + canonical, hashlib.sha256)
        assert hmac.compare_digest(check.hexdigest(), encryption["key_check"])

    def chunk_id(self, data: bytes) -> str:  # section 4
        if self.cipher == 0:
            return hashlib.sha256(data).hexdigest()
        return hmac.new(self.id_key, data, hashlib.sha256).hexdigest()

    def open(self, key: str, kind: int, object_id: str) -> bytes:  # section 6
        blob = self.store.read(key)
        magic, version, kind_byte, compression, cipher, nonce = struct.unpack(
            ">4sBBBB12s", blob[:20])
        assert (magic, version, kind_byte, cipher) == (b"KVC1", 1, kind, self.cipher)
        ad = blob[:20] + object_id.encode("ascii")
        if cipher == 0:
            payload, checksum = blob[20:-32], blob[-32:]
            assert hashlib.sha256(ad + payload).digest() == checksum
        else:
            aead = AESGCM(self.enc_key) if cipher == 1 else ChaCha20Poly1305(self.enc_key)
            payload = aead.decrypt(nonce, blob[20:], ad)
        plaintext = payload if compression == 0 else zstandard.ZstdDecompressor().decompress(
            payload)
        if kind == 1:
            assert self.chunk_id(plaintext) == object_id
        return plaintext

    def restore(self) -> dict[str, bytes]:  # sections 1, 7
        out: dict[str, bytes] = {}
        for key in self.store.list("backups"):
            backup_id = key.removeprefix("backups/").removesuffix(".manifest")
            manifest = json.loads(self.open(key, 2, backup_id))
            assert manifest["backup_id"] == backup_id and manifest["format_version"] == 1
            for entry in manifest["files"]:
                data = b"".join(self.open(f"chunks/{c['id'][:2]}/{c['id']}", 1, c["id"])
                                for c in entry["chunks"])
                assert len(data) == entry["size"]
                assert hashlib.sha256(data).hexdigest() == entry["sha256"]
                out[f"{backup_id}/{entry['name']}"] = data
        return out


def write_backup(repo: Repository, files: dict[str, bytes]) -> str:
    chunker = repo.chunker()
    entries = []
    for name, content in files.items():
        refs = []
        for _, data in chunker.chunks(_BytesReader(content)):
            chunk_id = repo.chunk_id(data)
            if not repo.has_chunk(chunk_id):
                repo.put_chunk(chunk_id, data)
            refs.append(ChunkRef(chunk_id, len(data)))
        entries.append(FileEntry(name, len(content), 0o600,
                                 hashlib.sha256(content).hexdigest(), tuple(refs)))
    return repo.write_manifest(Manifest.new(
        source="kvrocks-checkpoint", server_version="2.10.1", encrypted=repo.encrypted,
        compression=repo.compression, files=entries, new_chunks=0, stored_bytes=0))


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._position = 0

    def readinto(self, buffer: memoryview) -> int:
        n = min(len(buffer), len(self._data) - self._position)
        buffer[:n] = self._data[self._position:self._position + n]
        self._position += n
        return n


FILES = {"000012.sst": os.urandom(50_000) + b"A" * 50_000, "CURRENT": b"MANIFEST-000005\n",
         "db/OPTIONS-000007": b"[Version]\n" * 500, "empty": b""}
SMALL = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384)


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "chacha20-poly1305", "none"])
def test_raw_key_repository_reads_from_the_document(store: Store, tmp_path: Path,
                                                    cipher: str) -> None:
    path = tmp_path / "key"
    keygen(path)
    repo = Repository.create(store, "kvrocks/prod-1", cipher, "zstd:3",
                             KeySource(file=str(path)), chunker=SMALL)
    backup_id = write_backup(repo, FILES)
    restored = SpecReader(store, raw_key=path.read_bytes()).restore()
    assert restored == {f"{backup_id}/{name}": data for name, data in FILES.items()}


def test_passphrase_repository_reads_from_the_document(store: Store) -> None:
    source = KeySource.from_environment(None, {"KVCLOUD_ENCRYPTION_KEY": "correct horse\n"})
    repo = Repository.create(store, "kvrocks/prod-1", "aes-256-gcm", "none", source,
                             chunker=SMALL)
    backup_id = write_backup(repo, FILES)
    restored = SpecReader(store, passphrase=b"correct horse").restore()
    assert restored[f"{backup_id}/000012.sst"] == FILES["000012.sst"]


def test_chunk_boundaries_follow_the_documented_seed(store: Store) -> None:
    source = KeySource.from_environment(None, {"KVCLOUD_ENCRYPTION_KEY": "hex:" + "07" * 32})
    repo = Repository.create(store, "kvrocks/prod-1", "aes-256-gcm", "zstd:3", source,
                             chunker=SMALL)
    reader = SpecReader(store, raw_key=bytes([7]) * 32)
    data = os.urandom(300_000)
    expected = [c.length for c in FastCDC(4096, min_size=1024, max_size=16384,
                                          normalized_chunking=1, seed=reader.seed).cut_buf(data)]
    assert [len(d) for _, d in repo.chunker().chunks(_BytesReader(data))] == expected
