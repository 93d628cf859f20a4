"""A backup repository under one prefix of one bucket: the format's front door.

Everything a backup, restore, verify or prune job does to the bucket goes
through here: chunk ids, chunk objects, manifests, repo.json. Object bytes
are made and checked only by ``codec``; keys come from ``keys``/``subkeys``;
paths from ``layout``. The write order is the caller's duty and the
format's only consistency rule: every chunk first, the manifest last.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
from datetime import UTC, datetime

from kvproxy.repo import layout
from kvproxy.repo.chunker import Chunker, ChunkerParams
from kvproxy.repo.codec import CipherId, Codec, Kind
from kvproxy.repo.compression import Compression
from kvproxy.repo.errors import (
    CorruptObject,
    ManifestError,
    RepoError,
    RepoExists,
    RepoFormatError,
    RepoKeyError,
    RepoNotFound,
)
from kvproxy.repo.keys import KeySource
from kvproxy.repo.manifest import Manifest
from kvproxy.repo.repoconfig import RepoConfig
from kvproxy.repo.subkeys import Kdf, SubKeys
from kvproxy.storage.store import NotFound, Store


class BackupNotFound(RepoError):
    """No manifest under that backup id."""


class Repository:
    """An opened (or just created) repository; safe to share between worker threads."""

    def __init__(self, store: Store, config: RepoConfig, keys: SubKeys | None,
                 label: str, compression: Compression | None = None) -> None:
        self.store = store
        self.config = config
        self.label = label
        self._keys = keys
        self.codec = Codec(config.cipher, keys.encryption if keys else None,
                           compression or config.compression, self.chunk_id)

    # -- creating and opening -------------------------------------------------

    @staticmethod
    def exists(store: Store) -> bool:
        """Whether a repository was created under this store's root."""
        return store.exists(layout.REPO_JSON)

    @classmethod
    def create(cls, store: Store, label: str, encryption: str = "aes-256-gcm",
               compression: str = "zstd:3", key_source: KeySource | None = None, *,
               chunker: ChunkerParams | None = None) -> Repository:
        """Write a new repo.json; RepoExists if the prefix already holds a repository.

        With ``encryption`` other than none the key is required; a raw key is
        used as is, a passphrase gets a fresh scrypt salt. With ``none`` any
        key given is ignored. Create once per prefix, not from two processes
        at the same time (the store has no create-if-absent; a lost race is
        detected by reading repo.json back, not prevented).
        """
        cipher = CipherId.named(encryption)
        _refuse_existing(store, label)
        params = dataclasses.replace(chunker or ChunkerParams(), keyed=cipher != CipherId.NONE)
        config = RepoConfig(repository_id=secrets.token_bytes(16), label=label,
                            created=f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}", cipher=cipher,
                            chunker=params, compression=Compression.parse(compression))
        keys = None
        if cipher != CipherId.NONE:
            material = (key_source or KeySource()).load()
            if material is None:
                raise RepoKeyError(f"repository {label} is to be encrypted with {encryption}: "
                                   f"give encryption_key_file or KVCLOUD_ENCRYPTION_KEY")
            kdf = Kdf.for_material(material)
            keys = SubKeys.derive(kdf.master_key(material, label), config.repository_id)
            config = dataclasses.replace(config, kdf=kdf)
            config = dataclasses.replace(config, key_check=keys.check_value(config.bound()))
        document = config.to_json()
        store.write(layout.REPO_JSON, document)
        if store.read(layout.REPO_JSON) != document:
            raise RepoExists(f"repository {label} was created by another process at the "
                             f"same time; use that one")
        return cls(store, config, keys, label)

    @classmethod
    def open(cls, store: Store, key_source: KeySource | None = None, *,
             label: str | None = None, compression: str | None = None,
             allow_unencrypted: bool = False) -> Repository:
        """Read repo.json and check the key against its key check.

        ``label`` names the repository in messages (default: the label stored
        at creation). ``compression`` overrides the repository's default for
        objects this process writes. An unencrypted repository opened while a
        key is given raises RepoKeyError unless ``allow_unencrypted``: whoever
        configured a key expects encrypted backups (and a repo.json edited to
        say "none" must not make them plaintext); readers may pass True.
        """
        source = key_source or KeySource()
        where = label or f"{store.name}:{store.root}"
        try:
            document = store.read(layout.REPO_JSON)
        except NotFound:
            raise RepoNotFound(f"no repository at {where}: nothing was backed up there yet "
                               f"(no repo.json)") from None
        config = RepoConfig.from_json(document, where)
        name = label or config.label
        if not config.encrypted:
            if source.given and not allow_unencrypted:
                raise RepoKeyError(
                    f"repository {name} is not encrypted, but a key was given "
                    f"({source.describe()}): back up to a new prefix to get encrypted "
                    f"backups, or set encryption = none")
            return cls(store, config, None, name, _parse(compression))
        material = source.load()
        if material is None:
            raise RepoKeyError(f"repository {name} is encrypted: give encryption_key_file "
                               f"or KVCLOUD_ENCRYPTION_KEY")
        if config.kdf is None or config.key_check is None:  # from_json guarantees both
            raise RepoFormatError(f"{name}/repo.json: encrypted without kdf or key check")
        keys = SubKeys.derive(config.kdf.master_key(material, name), config.repository_id)
        if not hmac.compare_digest(keys.check_value(config.bound()), config.key_check):
            raise RepoKeyError(f"wrong encryption key for repository {name} "
                               f"(from {material.origin}), or its repo.json was altered")
        return cls(store, config, keys, name, _parse(compression))

    # -- properties -------------------------------------------------------------

    @property
    def encrypted(self) -> bool:
        return self.config.encrypted

    @property
    def cipher(self) -> str:
        return self.config.cipher.label

    @property
    def compression(self) -> str:
        """The compression this process writes with (``zstd:3``, ``none``)."""
        return str(self.codec.compression)

    # -- chunks -----------------------------------------------------------------

    def chunk_id(self, data: bytes) -> str:
        """HMAC-SHA256(chunk-id key, data) when encrypted, SHA-256(data) otherwise; hex."""
        if self._keys is not None:
            return hmac.new(self._keys.chunk_id, data, hashlib.sha256).hexdigest()
        return hashlib.sha256(data).hexdigest()

    def chunker(self) -> Chunker:
        """A chunker with this repository's parameters and (when encrypted) secret seed."""
        seed = self._keys.chunker_seed if self._keys else 0
        return Chunker(self.config.chunker, seed)

    def has_chunk(self, chunk_id: str) -> bool:
        return self.store.exists(layout.chunk_key(chunk_id))

    def put_chunk(self, chunk_id: str, plaintext: bytes) -> int:
        """Seal and store one chunk (overwriting any copy); returns the object's size.

        ValueError if ``chunk_id`` is not ``chunk_id(plaintext)``: a wrong id
        would be a backup that can never be restored.
        """
        blob = self.codec.seal(Kind.CHUNK, chunk_id, plaintext)
        self.store.write(layout.chunk_key(chunk_id), blob)
        return len(blob)

    def get_chunk(self, chunk_id: str) -> bytes:
        """The verified plaintext; CorruptObject if damaged, altered or missing."""
        key = layout.chunk_key(chunk_id)
        try:
            blob = self.store.read(key)
        except NotFound:
            raise CorruptObject(self._name(key), "missing from the bucket") from None
        return self._open(Kind.CHUNK, chunk_id, key, blob)

    def list_chunks(self) -> list[str]:
        """Every chunk id in the bucket (for prune and verify), sorted."""
        ids = (layout.chunk_id_of(key) for key in self.store.list(layout.CHUNKS))
        return [chunk_id for chunk_id in ids if chunk_id]

    def chunk_sizes(self) -> dict[str, int | None]:
        """Every chunk id in the bucket with its object size (None where unknown)."""
        found = ((layout.chunk_id_of(key), size)
                 for key, size in self.store.sizes(layout.CHUNKS).items())
        return {chunk_id: size for chunk_id, size in found if chunk_id}

    def delete_chunk(self, chunk_id: str) -> None:
        """Prune only: delete a chunk no remaining manifest references."""
        self.store.delete(layout.chunk_key(chunk_id))

    # -- manifests --------------------------------------------------------------

    def write_manifest(self, manifest: Manifest) -> str:
        """Commit a backup: seal and store its manifest, after all its chunks.

        Validates the manifest first and refuses to overwrite an existing
        backup id. Returns the backup id.
        """
        manifest.validate()
        if manifest.encrypted != self.encrypted:
            raise ManifestError(f"manifest {manifest.backup_id} says encrypted="
                                f"{manifest.encrypted} for repository {self.label} "
                                f"(encrypted={self.encrypted})")
        key = layout.manifest_key(manifest.backup_id)
        if self.store.exists(key):
            raise ManifestError(f"backup {manifest.backup_id} already exists in {self.label}")
        self.store.write(key, self.codec.seal(Kind.MANIFEST, manifest.backup_id,
                                              manifest.to_json()))
        return manifest.backup_id

    def read_manifest(self, backup_id: str) -> Manifest:
        """The verified, validated manifest; BackupNotFound, CorruptObject or ManifestError."""
        try:
            key = layout.manifest_key(backup_id)
        except ValueError:
            raise BackupNotFound(f"{backup_id!r} is not a backup id "
                                 f"(they look like 20261124T101500Z-3f9a)") from None
        try:
            blob = self.store.read(key)
        except NotFound:
            raise BackupNotFound(f"no backup {backup_id} in repository {self.label}") from None
        manifest = Manifest.from_json(self._open(Kind.MANIFEST, backup_id, key, blob))
        if manifest.backup_id != backup_id:
            raise CorruptObject(self._name(key), f"holds backup {manifest.backup_id}")
        return manifest

    def list_backups(self) -> list[str]:
        """Backup ids with a manifest, oldest first."""
        ids = (layout.backup_id_of(key) for key in self.store.list(layout.BACKUPS))
        return sorted(backup_id for backup_id in ids if backup_id)

    def delete_backup(self, backup_id: str) -> None:
        """Prune only: remove a manifest (before any chunk only it referenced)."""
        self.store.delete(layout.manifest_key(backup_id))

    # -- helpers ----------------------------------------------------------------

    def _open(self, kind: Kind, object_id: str, key: str, blob: bytes) -> bytes:
        try:
            return self.codec.open(kind, object_id, blob)
        except CorruptObject as exc:
            raise CorruptObject(self._name(key), exc.reason) from None

    def _name(self, key: str) -> str:
        return f"{key} in {self.store.name}:{self.label}"


def _parse(compression: str | None) -> Compression | None:
    return Compression.parse(compression) if compression else None


def _refuse_existing(store: Store, label: str) -> None:
    if store.exists(layout.REPO_JSON):
        raise RepoExists(f"repository {label} already exists")
    if store.list(layout.BACKUPS) or store.list(layout.CHUNKS):
        raise RepoExists(f"{label} holds backups or chunks but no repo.json: refusing to "
                         f"create a new repository over them (its key would not match)")
