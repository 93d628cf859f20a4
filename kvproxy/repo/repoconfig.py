"""repo.json: a repository's settings, read before anything else.

It is plain JSON so that a reader with only the format document can start.
It is not encrypted; the settings that matter for security (cipher, KDF,
chunker, repository id) are pinned by the key check, an HMAC under a key
derived from the backup key, so an attacker who edits them makes ``open``
fail instead of, say, downgrading the cipher.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from kvproxy.repo.chunker import ChunkerParams
from kvproxy.repo.codec import CipherId
from kvproxy.repo.compression import Compression
from kvproxy.repo.errors import RepoFormatError
from kvproxy.repo.subkeys import Kdf

FORMAT_NAME = "kvproxy-repository"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class RepoConfig:
    """The contents of repo.json. ``kdf`` and ``key_check`` are None when unencrypted."""

    repository_id: bytes
    label: str
    created: str
    cipher: CipherId
    chunker: ChunkerParams
    compression: Compression
    kdf: Kdf | None = None
    key_check: str | None = field(default=None, repr=False)
    version: int = FORMAT_VERSION

    @property
    def encrypted(self) -> bool:
        return self.cipher != CipherId.NONE

    def bound(self) -> dict[str, Any]:
        """The settings the key check covers (see docs/format.md, "Key check")."""
        return {"format": FORMAT_NAME, "version": self.version,
                "repository_id": self.repository_id.hex(), "chunker": self.chunker.to_json(),
                "cipher": self.cipher.label,
                "kdf": self.kdf.to_json() if self.kdf else {"name": "none"}}

    def to_json(self) -> bytes:
        encryption: dict[str, Any] = {"cipher": self.cipher.label}
        if self.kdf is not None:
            encryption["kdf"] = self.kdf.to_json()
            encryption["key_check"] = self.key_check
        document = {"format": FORMAT_NAME, "version": self.version,
                    "repository_id": self.repository_id.hex(), "label": self.label,
                    "created": self.created, "chunker": self.chunker.to_json(),
                    "compression": str(self.compression), "encryption": encryption}
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> RepoConfig:
        """Parse repo.json; RepoFormatError naming ``where`` if it is not version 1."""
        try:
            raw = json.loads(data)
            if raw.get("format") != FORMAT_NAME:
                raise RepoFormatError(f"not a kvproxy repository (format {raw.get('format')!r})")
            if raw.get("version") != FORMAT_VERSION:
                raise RepoFormatError(f"format version {raw.get('version')!r}; this kvproxy "
                                      f"reads version {FORMAT_VERSION}: upgrade kvproxy")
            encryption = raw["encryption"]
            cipher = CipherId.named(encryption["cipher"])
            encrypted = cipher != CipherId.NONE
            repository_id = bytes.fromhex(raw["repository_id"])
            if len(repository_id) != 16:
                raise ValueError("repository_id must be 16 bytes")
            config = cls(
                repository_id=repository_id, label=str(raw["label"]),
                created=str(raw["created"]), cipher=cipher,
                chunker=ChunkerParams.from_json(raw["chunker"]),
                compression=Compression.parse(raw["compression"]),
                kdf=Kdf.from_json(encryption["kdf"]) if encrypted else None,
                key_check=str(encryption["key_check"]) if encrypted else None)
        except RepoFormatError as exc:
            raise RepoFormatError(f"{where}/repo.json: {exc}") from None
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RepoFormatError(f"{where}/repo.json is malformed: {type(exc).__name__}: "
                                  f"{exc}") from None
        if config.chunker.keyed != encrypted:
            raise RepoFormatError(f"{where}/repo.json: chunker keyed={config.chunker.keyed} "
                                  f"does not match cipher {cipher.label}")
        return config
