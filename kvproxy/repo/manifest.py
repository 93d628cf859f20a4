"""The manifest: what one backup contains, as a JSON document.

A manifest is the commit of a backup: it is sealed like a chunk and stored
under ``backups/<backup-id>.manifest`` only after every chunk it names is in
the bucket. The schema is plain dataclasses so the upload pipeline can build
one and the restore path can read one without touching JSON; ``validate``
is what a restore relies on to never write outside its target directory.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from kvproxy.repo.errors import ManifestError

FORMAT_VERSION = 1
SOURCE_KINDS = ("kvrocks-checkpoint", "redis-rdb", "directory")
BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{4}$")
CHUNK_ID = re.compile(r"^[0-9a-f]{64}$")
SHA256 = CHUNK_ID


def new_backup_id(now: datetime | None = None) -> str:
    """``20261124T101500Z-3f9a``: UTC time to the second, then 4 random hex digits.

    Ids sort by time as strings; the random tail keeps two backups started
    in the same second apart.
    """
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(2)}"


def backup_time(backup_id: str) -> datetime:
    """When a backup started, read from its id."""
    if not BACKUP_ID.match(backup_id):
        raise ManifestError(f"not a backup id: {backup_id!r}")
    return datetime.strptime(backup_id[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class ChunkRef:
    """One chunk of a file, in file order."""

    id: str
    size: int


@dataclass(frozen=True)
class FileEntry:
    """One file of the backup. ``name`` is relative and '/'-separated."""

    name: str
    size: int
    mode: int
    sha256: str
    chunks: tuple[ChunkRef, ...] = ()


@dataclass(frozen=True)
class Totals:
    """Sums over the backup. ``chunks`` counts distinct chunk ids; ``new_chunks`` and
    ``stored_bytes`` count what this backup uploaded (object sizes, manifest excluded)."""

    files: int = 0
    bytes: int = 0
    chunks: int = 0
    new_chunks: int = 0
    stored_bytes: int = 0

    @classmethod
    def of(cls, files: Iterable[FileEntry], new_chunks: int, stored_bytes: int) -> Totals:
        entries = list(files)
        distinct = {ref.id for entry in entries for ref in entry.chunks}
        return cls(len(entries), sum(e.size for e in entries), len(distinct),
                   new_chunks, stored_bytes)


@dataclass(frozen=True)
class Manifest:
    """One backup. ``created`` is ISO 8601 UTC (``2026-11-24T10:15:00Z``)."""

    backup_id: str
    created: str
    source: str
    server_version: str
    encrypted: bool
    compression: str
    files: tuple[FileEntry, ...]
    totals: Totals
    sequence: int | None = None
    #: The server's key count at the backup, ``{"keys": n, "expires": m}``
    #: (None when writes during the save made it uncertain).
    keys: dict[str, int] | None = None
    format_version: int = field(default=FORMAT_VERSION)

    @classmethod
    def new(cls, *, source: str, server_version: str, encrypted: bool, compression: str,
            files: Iterable[FileEntry], new_chunks: int, stored_bytes: int,
            sequence: int | None = None, keys: dict[str, int] | None = None,
            now: datetime | None = None) -> Manifest:
        """A manifest with a fresh backup id and ``created`` from the same instant."""
        moment = (now or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        entries = tuple(files)
        return cls(backup_id=new_backup_id(moment), created=f"{moment:%Y-%m-%dT%H:%M:%SZ}",
                   source=source, server_version=server_version, encrypted=encrypted,
                   compression=compression, files=entries,
                   totals=Totals.of(entries, new_chunks, stored_bytes), sequence=sequence,
                   keys=keys)

    def validate(self) -> None:
        """Raise ManifestError unless the manifest is safe to restore and self-consistent."""
        where = f"manifest {self.backup_id!r}"
        if self.format_version != FORMAT_VERSION:
            raise ManifestError(f"{where}: unknown format version {self.format_version}")
        if not BACKUP_ID.match(self.backup_id):
            raise ManifestError(f"{where}: bad backup id")
        if self.source not in SOURCE_KINDS:
            raise ManifestError(f"{where}: unknown source {self.source!r}")
        seen: set[str] = set()
        for entry in self.files:
            _check_entry(where, entry)
            if entry.name in seen:
                raise ManifestError(f"{where}: file {entry.name!r} listed twice")
            seen.add(entry.name)
        expected = Totals.of(self.files, self.totals.new_chunks, self.totals.stored_bytes)
        if self.totals != expected:
            raise ManifestError(f"{where}: totals {self.totals} do not match the files "
                                f"({expected})")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        """Parse and validate; any schema error is a ManifestError."""
        try:
            raw = json.loads(data)
            files = tuple(
                FileEntry(name=_typed(f["name"], str), size=_typed(f["size"], int),
                          mode=_typed(f["mode"], int), sha256=_typed(f["sha256"], str),
                          chunks=tuple(ChunkRef(_typed(c["id"], str), _typed(c["size"], int))
                                       for c in f["chunks"]))
                for f in raw["files"])
            totals = Totals(**{k: _typed(raw["totals"][k], int)
                               for k in ("files", "bytes", "chunks", "new_chunks",
                                         "stored_bytes")})
            sequence = raw.get("sequence")
            keys = raw.get("keys")
            manifest = cls(
                backup_id=_typed(raw["backup_id"], str), created=_typed(raw["created"], str),
                source=_typed(raw["source"], str),
                server_version=_typed(raw["server_version"], str),
                encrypted=_typed(raw["encrypted"], bool),
                compression=_typed(raw["compression"], str), files=files, totals=totals,
                sequence=None if sequence is None else _typed(sequence, int),
                keys=None if keys is None else {name: _typed(keys[name], int)
                                                for name in ("keys", "expires")},
                format_version=_typed(raw["format_version"], int))
        except (ValueError, KeyError, TypeError) as exc:
            raise ManifestError(f"malformed manifest: {type(exc).__name__}: {exc}") from None
        manifest.validate()
        return manifest


def check_name(name: str) -> None:
    """Refuse a file name that could land outside the restore directory."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        raise ManifestError(f"file name {name!r} is empty, absolute or has \\ or NUL")
    for part in name.split("/"):
        if part in ("", ".", ".."):
            raise ManifestError(f"file name {name!r} has an empty, '.' or '..' component")


def _check_entry(where: str, entry: FileEntry) -> None:
    try:
        check_name(entry.name)
    except ManifestError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    if entry.size < 0 or not 0 <= entry.mode <= 0o7777:
        raise ManifestError(f"{where}: {entry.name!r} has a bad size or mode")
    if not SHA256.match(entry.sha256):
        raise ManifestError(f"{where}: {entry.name!r} has a bad sha256")
    for ref in entry.chunks:
        if not CHUNK_ID.match(ref.id) or ref.size <= 0:
            raise ManifestError(f"{where}: {entry.name!r} has a bad chunk reference")
    if sum(ref.size for ref in entry.chunks) != entry.size:
        raise ManifestError(f"{where}: {entry.name!r} chunk sizes do not add up to its size")


def _typed(value: Any, kind: type[Any]) -> Any:
    # bool is an int in Python; a JSON true must not pass as a size.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"expected {kind.__name__}, got {value!r}")
    return value
