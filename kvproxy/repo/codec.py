"""THE one place that turns plaintext into object bytes and back.

Like Borg's ``RepoObj``, nothing else in kvproxy compresses, encrypts,
decrypts or decompresses repository objects. An object is::

    offset  size  field
    0       4     magic b"KVC1"
    4       1     format version (1)
    5       1     kind (1 chunk, 2 manifest)
    6       1     compression (0 none, 1 zstd)
    7       1     cipher (0 none, 1 aes-256-gcm, 2 chacha20-poly1305)
    8       12    nonce (random per object; zeros when cipher is none)
    20      n     payload: AEAD ciphertext + 16-byte tag,
                  or (cipher none) the payload + 32-byte SHA-256 checksum

The associated data is the 20 header bytes followed by the object id
(ASCII), so an object cannot be renamed to another id, its kind changed or
its header edited without ``open`` failing. Unencrypted objects carry
SHA-256(header + id + payload) instead of a tag: it catches damage, not
forgery. A chunk's plaintext is then checked against its id as well.
Every failure raises ``CorruptObject``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from collections.abc import Callable
from enum import IntEnum

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from kvproxy.repo.compression import Compression, CompressionId, compress, decompress
from kvproxy.repo.errors import CorruptObject

MAGIC = b"KVC1"
VERSION = 1
NONCE_SIZE = 12
TAG_SIZE = 16
CHECKSUM_SIZE = 32
HEADER = struct.Struct(">4sBBBB12s")
HEADER_SIZE = HEADER.size  # 20
MAX_PLAINTEXT = 1 << 30  # no object may claim to decompress to more than 1 GiB


class Kind(IntEnum):
    """The kind byte: what the object holds."""

    CHUNK = 1
    MANIFEST = 2


class CipherId(IntEnum):
    """The cipher byte; the names are the ones kvcloud.conf and repo.json use."""

    NONE = 0
    AES_256_GCM = 1
    CHACHA20_POLY1305 = 2

    @classmethod
    def named(cls, name: str) -> CipherId:
        for cipher in cls:
            if cipher.label == name:
                return cipher
        raise ValueError(f"encryption must be aes-256-gcm, chacha20-poly1305 or none, "
                         f"not {name!r}")

    @property
    def label(self) -> str:
        return self.name.lower().replace("_", "-")


_AEADS: dict[CipherId, type[AESGCM] | type[ChaCha20Poly1305]] = {
    CipherId.AES_256_GCM: AESGCM,
    CipherId.CHACHA20_POLY1305: ChaCha20Poly1305,
}


class Codec:
    """Seals and opens objects of one repository: its cipher and key, a writer's compression.

    ``chunk_id`` computes the id of a chunk's plaintext (keyed or not); seal
    refuses a chunk whose id does not match, open reports it as corrupt.
    Instances are safe to share between threads.
    """

    def __init__(self, cipher: CipherId, key: bytes | None, compression: Compression,
                 chunk_id: Callable[[bytes], str]) -> None:
        if (cipher == CipherId.NONE) != (key is None):
            raise ValueError("a key is needed exactly when there is a cipher")
        self.cipher = cipher
        self.compression = compression
        self._chunk_id = chunk_id
        self._aead = _AEADS[cipher](key) if key is not None else None

    def seal(self, kind: Kind, object_id: str, plaintext: bytes) -> bytes:
        """The object bytes for ``plaintext`` stored as ``object_id``."""
        if len(plaintext) > MAX_PLAINTEXT:
            raise ValueError(f"{kind.name.lower()} {object_id}: larger than {MAX_PLAINTEXT}")
        if kind == Kind.CHUNK and not hmac.compare_digest(self._chunk_id(plaintext), object_id):
            raise ValueError(f"chunk id {object_id} does not match its data")
        compression_id, payload = compress(plaintext, self.compression)
        nonce = secrets.token_bytes(NONCE_SIZE) if self._aead else bytes(NONCE_SIZE)
        header = HEADER.pack(MAGIC, VERSION, kind, compression_id, self.cipher, nonce)
        associated = header + object_id.encode("ascii")
        if self._aead is None:
            return header + payload + hashlib.sha256(associated + payload).digest()
        return header + self._aead.encrypt(nonce, payload, associated)

    def open(self, kind: Kind, object_id: str, blob: bytes) -> bytes:
        """The plaintext of ``blob``, read as ``object_id``; CorruptObject if anything is off."""
        name = f"{kind.name.lower()} {object_id}"
        header, compression_id = self._check_header(name, kind, blob)
        associated = header + object_id.encode("ascii")
        if self._aead is None:
            payload, checksum = blob[HEADER_SIZE:-CHECKSUM_SIZE], blob[-CHECKSUM_SIZE:]
            digest = hashlib.sha256(associated)
            digest.update(payload)
            if not hmac.compare_digest(digest.digest(), checksum):
                raise CorruptObject(name, "checksum mismatch (object altered, damaged "
                                          "or stored under another id)")
        else:
            try:
                # A view, not a slice: a chunk is megabytes, and a copy of it per
                # object opened was one more buffer per download thread.
                payload = self._aead.decrypt(header[8:], memoryview(blob)[HEADER_SIZE:],
                                             associated)
            except InvalidTag:
                raise CorruptObject(name, "authentication failed (wrong key, or object "
                                          "altered, damaged or stored under another id)"
                                    ) from None
        try:
            plaintext = decompress(compression_id, payload, MAX_PLAINTEXT)
        except ValueError as exc:
            raise CorruptObject(name, f"decompression failed: {exc}") from None
        if kind == Kind.CHUNK and not hmac.compare_digest(self._chunk_id(plaintext), object_id):
            raise CorruptObject(name, "content does not match the chunk id")
        return plaintext

    def _check_header(self, name: str, kind: Kind, blob: bytes) -> tuple[bytes, CompressionId]:
        """The header bytes and compression, or CorruptObject naming the first thing wrong."""
        trailer = CHECKSUM_SIZE if self._aead is None else TAG_SIZE
        if len(blob) < HEADER_SIZE + trailer:
            raise CorruptObject(name, f"truncated: {len(blob)} bytes")
        magic, version, kind_byte, compression_byte, cipher_byte, _ = HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise CorruptObject(name, "bad magic: not a kvproxy repository object")
        if version != VERSION:
            raise CorruptObject(name, f"unknown object format version {version}")
        if kind_byte != kind:
            found = Kind(kind_byte).name.lower() if kind_byte in Kind._value2member_map_ else (
                f"kind {kind_byte}")
            raise CorruptObject(name, f"is a {found}, expected a {kind.name.lower()}")
        if cipher_byte != self.cipher:
            found = CipherId(cipher_byte).label if cipher_byte in CipherId._value2member_map_ \
                else f"unknown cipher {cipher_byte}"
            raise CorruptObject(name, f"sealed with {found}, the repository uses "
                                      f"{self.cipher.label}")
        if compression_byte not in CompressionId._value2member_map_:
            raise CorruptObject(name, f"unknown compression {compression_byte}")
        return blob[:HEADER_SIZE], CompressionId(compression_byte)
