"""Compression of object payloads: zstd at a configured level, or none.

Only ``codec`` calls this. ``compress`` keeps the plaintext as it is when
zstd does not make it smaller (already-compressed SST blocks, random data),
so incompressible chunks cost nothing to read back; the object header says
which was done, so the setting can change between backups without breaking
old ones.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import IntEnum

import zstandard

DEFAULT_ZSTD_LEVEL = 3


class CompressionId(IntEnum):
    """The compression byte of an object header."""

    NONE = 0
    ZSTD = 1


@dataclass(frozen=True)
class Compression:
    """What a writer does: ``none``, or ``zstd`` at ``level`` (1..22)."""

    name: str = "zstd"
    level: int = DEFAULT_ZSTD_LEVEL

    @classmethod
    def parse(cls, spec: str) -> Compression:
        """``none``, ``zstd`` (level 3) or ``zstd:N``, as kvcloud.conf writes it."""
        if spec == "none":
            return cls("none", 0)
        name, _, level = spec.partition(":")
        if name != "zstd" or (level and not (level.isdigit() and 1 <= int(level) <= 22)):
            raise ValueError(f"compression must be zstd, zstd:1..22 or none, not {spec!r}")
        return cls("zstd", int(level) if level else DEFAULT_ZSTD_LEVEL)

    def __str__(self) -> str:
        return "none" if self.name == "none" else f"zstd:{self.level}"


_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """One compressor per thread and level: ZstdCompressor is not thread-safe."""
    cache: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level, write_content_size=True)
    return cache[level]


def compress(plaintext: bytes, compression: Compression) -> tuple[CompressionId, bytes]:
    """The payload to seal and how it was made; raw unless zstd saves at least one byte."""
    if compression.name == "zstd" and plaintext:
        packed: bytes = _compressor(compression.level).compress(plaintext)
        if len(packed) < len(plaintext):
            return CompressionId.ZSTD, packed
    return CompressionId.NONE, plaintext


def decompress(compression_id: CompressionId, payload: bytes, limit: int) -> bytes:
    """The plaintext; ValueError if the payload is not one zstd frame of at most ``limit``."""
    if compression_id == CompressionId.NONE:
        return payload
    try:
        size = zstandard.frame_content_size(payload)
    except zstandard.ZstdError as exc:
        raise ValueError(f"not a zstd frame: {exc}") from None
    if size < 0 or size > limit:
        raise ValueError(f"zstd frame declares {size} bytes (limit {limit})")
    try:
        plaintext: bytes = zstandard.ZstdDecompressor().decompress(payload)
    except zstandard.ZstdError as exc:
        raise ValueError(str(exc)) from None
    if len(plaintext) != size:
        raise ValueError(f"zstd frame gave {len(plaintext)} bytes, declared {size}")
    return plaintext
