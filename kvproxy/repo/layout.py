"""Where things live under a repository prefix: the key layout, in one place.

    repo.json                       the repository's settings (plain JSON)
    chunks/<id[0:2]>/<id>           one chunk object
    backups/<backup-id>.manifest    one manifest object: the commit of a backup
    locks/<kind>-<token>.json       a running backup or prune (plain JSON; locks.py)

The two-character fan-out keeps directory listings small on the local
filesystem backend and spreads keys over S3 partitions.
"""

from __future__ import annotations

import posixpath

from kvproxy.repo.manifest import BACKUP_ID, CHUNK_ID

REPO_JSON = "repo.json"
CHUNKS = "chunks"
BACKUPS = "backups"
LOCKS = "locks"
MANIFEST_SUFFIX = ".manifest"


def chunk_key(chunk_id: str) -> str:
    if not CHUNK_ID.match(chunk_id):
        raise ValueError(f"not a chunk id: {chunk_id!r}")
    return f"{CHUNKS}/{chunk_id[:2]}/{chunk_id}"


def manifest_key(backup_id: str) -> str:
    if not BACKUP_ID.match(backup_id):
        raise ValueError(f"not a backup id: {backup_id!r}")
    return f"{BACKUPS}/{backup_id}{MANIFEST_SUFFIX}"


def backup_id_of(key: str) -> str | None:
    """The backup id a listed key stands for, or None for anything else."""
    directory, name = posixpath.split(key)
    backup_id = name.removesuffix(MANIFEST_SUFFIX)
    if directory == BACKUPS and name.endswith(MANIFEST_SUFFIX) and BACKUP_ID.match(backup_id):
        return backup_id
    return None


def chunk_id_of(key: str) -> str | None:
    """The chunk id a listed key stands for, or None for anything else."""
    parts = key.split("/")
    if (len(parts) == 3 and parts[0] == CHUNKS and CHUNK_ID.match(parts[2])
            and parts[1] == parts[2][:2]):
        return parts[2]
    return None
