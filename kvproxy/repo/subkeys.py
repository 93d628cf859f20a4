"""From what the user gave to the keys the format uses.

master key = the raw 32-byte key, or scrypt(passphrase, salt) with the
parameters stored in repo.json. Each use then gets its own key from
HKDF-SHA256(master, salt = repository id, info = a label), so the AEAD key,
the chunk-id MAC key, the chunker seed and the key check are independent:
learning one (say, from the key check) says nothing about another, and two
repositories sharing a key file still get unrelated chunk ids.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from kvproxy.repo.errors import RepoFormatError, RepoKeyError
from kvproxy.repo.keys import KEY_SIZE, KeyMaterial

SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SALT_SIZE = 16

LABEL_ENCRYPTION = b"kvproxy/repo/v1/encryption"
LABEL_CHUNK_ID = b"kvproxy/repo/v1/chunk-id"
LABEL_CHUNKER_SEED = b"kvproxy/repo/v1/chunker-seed"
LABEL_KEY_CHECK = b"kvproxy/repo/v1/key-check"
KEY_CHECK_PREFIX = b"kvproxy key check v1\n"


@dataclass(frozen=True)
class Kdf:
    """How the master key is made: ``none`` (raw key) or ``scrypt`` of a passphrase."""

    name: str
    n: int = 0
    r: int = 0
    p: int = 0
    salt: bytes = field(default=b"", repr=False)

    @classmethod
    def for_material(cls, material: KeyMaterial) -> Kdf:
        """The KDF a new repository gets: none for a raw key, fresh scrypt for a passphrase."""
        if material.raw is not None:
            return cls("none")
        return cls("scrypt", SCRYPT_N, SCRYPT_R, SCRYPT_P, secrets.token_bytes(SALT_SIZE))

    def to_json(self) -> dict[str, Any]:
        if self.name == "none":
            return {"name": "none"}
        return {"name": self.name, "n": self.n, "r": self.r, "p": self.p,
                "salt": self.salt.hex()}

    @classmethod
    def from_json(cls, value: Any) -> Kdf:
        if not isinstance(value, dict) or value.get("name") not in ("none", "scrypt"):
            raise RepoFormatError(f"unknown kdf {value!r}")
        if value["name"] == "none":
            return cls("none")
        try:
            n, r, p = (int(value[k]) for k in ("n", "r", "p"))
            salt = bytes.fromhex(value["salt"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RepoFormatError(f"bad scrypt parameters: {exc}") from None
        # Bounds keep a tampered repo.json from asking for gigabytes of memory.
        if not (2**14 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
                and len(salt) >= 16):
            raise RepoFormatError(f"scrypt parameters out of range: n={n} r={r} p={p}")
        return cls("scrypt", n, r, p, salt)

    def master_key(self, material: KeyMaterial, label: str) -> bytes:
        """The master key for a repository using this KDF; explains a raw/passphrase mix-up."""
        if self.name == "none":
            if material.raw is None:
                raise RepoKeyError(
                    f"repository {label} uses a raw 32-byte key (as written by keygen), "
                    f"but {material.origin} holds a passphrase")
            return material.raw
        if material.passphrase is None:
            raise RepoKeyError(f"repository {label} uses a passphrase, "
                               f"but {material.origin} holds a raw hex key")
        scrypt = Scrypt(salt=self.salt, length=KEY_SIZE, n=self.n, r=self.r, p=self.p)
        return scrypt.derive(material.passphrase)


@dataclass(frozen=True, repr=False)
class SubKeys:
    """The per-use keys of one repository, all derived from its master key."""

    encryption: bytes
    chunk_id: bytes
    chunker_seed: int
    key_check: bytes

    @classmethod
    def derive(cls, master: bytes, repository_id: bytes) -> SubKeys:
        # 63 bits: pyfastcdc's Cython code overflows on seeds of 2**63 and above.
        seed = int.from_bytes(_hkdf(master, repository_id, LABEL_CHUNKER_SEED, 8), "big") >> 1
        return cls(
            encryption=_hkdf(master, repository_id, LABEL_ENCRYPTION, KEY_SIZE),
            chunk_id=_hkdf(master, repository_id, LABEL_CHUNK_ID, KEY_SIZE),
            chunker_seed=seed or 1,  # the chunker reads 0 as "unkeyed"
            key_check=_hkdf(master, repository_id, LABEL_KEY_CHECK, KEY_SIZE),
        )

    def check_value(self, bound: dict[str, Any]) -> str:
        """HMAC of the repository's security settings: proves the key and pins the settings."""
        message = KEY_CHECK_PREFIX + canonical_json(bound)
        return hmac.new(self.key_check, message, hashlib.sha256).hexdigest()

    def __repr__(self) -> str:
        return "SubKeys(<secret>)"


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no spaces, ASCII only: the bytes every implementation must reproduce."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _hkdf(master: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(master)
