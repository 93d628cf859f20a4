"""The backup repository format (version 1): see docs/format.md.

A backup job calls, in this order: ``Repository.open`` (or ``create``),
``repo.chunker().file_chunks(path)``, ``repo.chunk_id`` / ``has_chunk`` /
``put_chunk`` for each chunk, and ``write_manifest`` last.
"""

from kvproxy.repo.chunker import Chunker, ChunkerParams
from kvproxy.repo.errors import (
    CorruptObject,
    ManifestError,
    RepoError,
    RepoExists,
    RepoFormatError,
    RepoKeyError,
    RepoNotFound,
)
from kvproxy.repo.keys import KeySource, keygen
from kvproxy.repo.manifest import ChunkRef, FileEntry, Manifest, Totals, new_backup_id
from kvproxy.repo.repository import BackupNotFound, Repository

__all__ = [
    "BackupNotFound",
    "ChunkRef",
    "Chunker",
    "ChunkerParams",
    "CorruptObject",
    "FileEntry",
    "KeySource",
    "Manifest",
    "ManifestError",
    "RepoError",
    "RepoExists",
    "RepoFormatError",
    "RepoKeyError",
    "RepoNotFound",
    "Repository",
    "Totals",
    "keygen",
    "new_backup_id",
]
