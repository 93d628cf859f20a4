"""The exceptions of the repository format, in one place.

Callers (jobs, the CLI, KVCLOUD replies) catch ``RepoError`` to turn any
repository problem into one error line; the subclasses say what to do next.
No message ever contains key material: only file names, variable names,
repository labels and object ids.
"""

from __future__ import annotations


class RepoError(Exception):
    """Something is wrong with a backup repository; the message names it."""


class RepoKeyError(RepoError):
    """The backup key is missing, unreadable, malformed or wrong for this repository."""


class RepoExists(RepoError):
    """``Repository.create`` found a repository (or its remains) under the prefix."""


class RepoNotFound(RepoError):
    """No ``repo.json`` under the prefix: nothing was ever backed up there."""


class RepoFormatError(RepoError):
    """``repo.json`` or a manifest is malformed or of a version this code cannot read."""


class ManifestError(RepoError):
    """A manifest breaks the schema (bad name, duplicate file, inconsistent totals)."""


class CorruptObject(RepoError):
    """An object in the bucket failed verification when it was opened.

    One type for every failure (bad magic, unknown version, truncation,
    authentication tag, id mismatch, decompression), so a restore or verify
    can report "this object is damaged" without caring why. ``name`` says
    which object (kind and id, plus the storage key when known).
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"corrupt object {name}: {reason}")
        self.name = name
        self.reason = reason
