"""Where the backup key comes from, and how a new one is made.

The key is given in one of two places, first found wins:

1. ``encryption_key_file`` (kvcloud.conf / ``--key-file``): a file of exactly
   32 bytes is a raw key (what ``keygen`` writes); any other content is a
   passphrase, its trailing CR/LF characters removed.
2. The environment variable ``KVCLOUD_ENCRYPTION_KEY``: ``hex:`` followed by
   64 hex digits is a raw key; anything else is a passphrase (trailing CR/LF
   removed as for the file).

A raw key is used as the master key directly; a passphrase is stretched with
scrypt (see ``subkeys``). Which of the two a repository uses is recorded in
its repo.json, so opening a passphrase repository with a 32-byte file reads
that file as a passphrase. Nothing here ever puts key bytes in a message or a
``repr``.
"""

from __future__ import annotations

import binascii
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from kvproxy.repo.errors import RepoKeyError

KEY_SIZE = 32
ENV_VAR = "KVCLOUD_ENCRYPTION_KEY"
HEX_PREFIX = "hex:"
MAX_FILE_SIZE = 4096


def keygen(path: str | os.PathLike[str]) -> None:
    """Write a new random 32-byte raw key to ``path``, mode 0600.

    Refuses to touch an existing file: overwriting a backup key makes every
    backup made with it unreadable.
    """
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise RepoKeyError(f"{os.fspath(path)} exists: refusing to overwrite a backup key"
                           ) from None
    except OSError as exc:
        raise RepoKeyError(f"cannot create key file {os.fspath(path)}: {exc.strerror}"
                           ) from None
    try:
        os.fchmod(descriptor, 0o600)  # whatever the umask did
        os.write(descriptor, secrets.token_bytes(KEY_SIZE))
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@dataclass(frozen=True)
class KeyMaterial:
    """Key bytes as read, before the repository says how to use them.

    ``raw`` is set when the source holds a raw key, ``passphrase`` when it can
    be read as one (a 32-byte file can be both). ``origin`` names the source
    for messages.
    """

    origin: str
    raw: bytes | None = field(default=None, repr=False)
    passphrase: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class KeySource:
    """Where to look for the key: a file path, the environment's value, or neither."""

    file: str | None = None
    env_value: str | None = field(default=None, repr=False)

    @classmethod
    def from_environment(cls, file: str | None = None,
                         environ: Mapping[str, str] | None = None) -> KeySource:
        """The configured file plus ``KVCLOUD_ENCRYPTION_KEY`` from ``environ`` (os.environ)."""
        env = os.environ if environ is None else environ
        return cls(file=file or None, env_value=env.get(ENV_VAR) or None)

    @property
    def given(self) -> bool:
        return self.file is not None or self.env_value is not None

    def describe(self) -> str:
        """Which source ``load`` would read, for messages (never the key itself)."""
        if self.file is not None:
            return f"encryption_key_file {self.file}"
        if self.env_value is not None:
            return f"environment variable {ENV_VAR}"
        return "no key"

    def load(self) -> KeyMaterial | None:
        """Read the key from the first source present; None when none is."""
        if self.file is not None:
            return _from_file(self.file)
        if self.env_value is not None:
            return _from_env(self.env_value)
        return None


def _from_file(path: str) -> KeyMaterial:
    origin = f"encryption_key_file {path}"
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_SIZE + 1)
    except OSError as exc:
        raise RepoKeyError(f"cannot read {origin}: {exc.strerror}") from None
    if len(data) > MAX_FILE_SIZE:
        raise RepoKeyError(f"{origin} is larger than {MAX_FILE_SIZE} bytes: not a key")
    passphrase = data.rstrip(b"\r\n")
    if not passphrase:
        raise RepoKeyError(f"{origin} is empty")
    raw = data if len(data) == KEY_SIZE else None
    return KeyMaterial(origin, raw=raw, passphrase=passphrase)


def _from_env(value: str) -> KeyMaterial:
    origin = f"environment variable {ENV_VAR}"
    if value.startswith(HEX_PREFIX):
        digits = value[len(HEX_PREFIX):].strip()
        try:
            raw = binascii.unhexlify(digits)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != KEY_SIZE:
            raise RepoKeyError(f"{origin} starts with {HEX_PREFIX!r} but is not followed by "
                               f"{2 * KEY_SIZE} hex digits")
        return KeyMaterial(origin, raw=raw)
    passphrase = value.rstrip("\r\n").encode("utf-8")
    if not passphrase:
        raise RepoKeyError(f"{origin} is empty")
    return KeyMaterial(origin, passphrase=passphrase)
