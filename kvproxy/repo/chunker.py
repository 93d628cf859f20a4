"""Content-defined chunking: where a file is cut into chunks.

Boundaries depend on the bytes around them, not on offsets, so an insertion
in the middle of a file moves only the chunks around it and every other
chunk keeps its id: that is what makes a backup incremental. The algorithm
is FastCDC 2020 from ``pyfastcdc`` (measured faster than ``fastcdc`` here,
and the only one of the two with a seed; see bench/chunker).

In an encrypted repository the gear table is XORed with a 64-bit seed
derived from the key (as Borg keys its buzhash), so an attacker who sees
chunk sizes cannot test guesses about the content against them. The seed
is only 64 bits and the table transform is linear, so this hides boundaries
from casual analysis, not from a determined cryptanalyst; see docs/format.md.

Memory is bounded: the file is read through ``read_size`` pieces into
pyfastcdc's window of ``2 * max_size`` bytes, never whole.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from pyfastcdc import FastCDC

from kvproxy.repo.errors import RepoFormatError

MiB = 1024 * 1024
ALGORITHM = "fastcdc2020"
READ_SIZE = 1 * MiB

# pyfastcdc's own limits on the three sizes.
_MIN_RANGE = (64, 1 * MiB)
_AVG_RANGE = (256, 4 * MiB)
_MAX_RANGE = (1024, 16 * MiB)


@dataclass(frozen=True)
class ChunkerParams:
    """The cut-point parameters, stored in repo.json: a repository never changes them,
    or new backups would stop deduplicating against old ones."""

    min_size: int = 1 * MiB
    avg_size: int = 4 * MiB
    max_size: int = 16 * MiB
    normalization: int = 1
    keyed: bool = True
    #: A file's first and last ``edge_size`` bytes are chunks of their own (see
    #: ``Chunker.file_chunks``); 0 turns this off.
    edge_size: int = 64 * 1024

    def __post_init__(self) -> None:
        for name, (low, high) in (("min_size", _MIN_RANGE), ("avg_size", _AVG_RANGE),
                                  ("max_size", _MAX_RANGE)):
            value = getattr(self, name)
            if not isinstance(value, int) or not low <= value <= high:
                raise RepoFormatError(f"chunker {name} {value!r} is outside [{low}, {high}]")
        if not self.min_size <= self.avg_size <= self.max_size:
            raise RepoFormatError("chunker sizes must satisfy min_size <= avg_size <= max_size")
        if self.normalization not in (0, 1, 2, 3):
            raise RepoFormatError(f"chunker normalization {self.normalization!r} is not 0..3")
        if not isinstance(self.edge_size, int) or not 0 <= self.edge_size <= _MAX_RANGE[1]:
            raise RepoFormatError(f"chunker edge_size {self.edge_size!r} is outside "
                                  f"[0, {_MAX_RANGE[1]}]")

    def to_json(self) -> dict[str, Any]:
        return {"algorithm": ALGORITHM, "min_size": self.min_size, "avg_size": self.avg_size,
                "max_size": self.max_size, "normalization": self.normalization,
                "keyed": self.keyed, "edge_size": self.edge_size}

    @classmethod
    def from_json(cls, value: Any) -> ChunkerParams:
        if not isinstance(value, dict) or value.get("algorithm") != ALGORITHM:
            raise RepoFormatError(f"unknown chunker {value!r}")
        try:
            return cls(int(value["min_size"]), int(value["avg_size"]), int(value["max_size"]),
                       int(value["normalization"]), bool(value["keyed"]),
                       int(value.get("edge_size", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise RepoFormatError(f"bad chunker parameters: {exc!r}") from None


class Readable(Protocol):
    """A binary stream with ``readinto`` (open(..., "rb"), io.BytesIO, fsspec files)."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class _Pieces:
    """Hands pyfastcdc at most ``size`` bytes per read, whatever it asks for."""

    def __init__(self, stream: Readable, size: int) -> None:
        self._stream = stream
        self._size = size

    def readinto(self, buffer: memoryview) -> int:
        return self._stream.readinto(buffer[: self._size]) or 0


class _Limited:
    """At most ``left`` bytes of a stream, so the chunker stops before the tail."""

    def __init__(self, stream: Readable, left: int) -> None:
        self._stream = stream
        self._left = left

    def readinto(self, buffer: memoryview) -> int:
        if self._left <= 0:
            return 0
        got = self._stream.readinto(buffer[: self._left]) or 0
        self._left -= got
        return got


def _read_exactly(handle: Any, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        piece = handle.read(size - len(data))
        if not piece:
            raise RepoFormatError("file shrank while it was being read")
        data += piece
    return bytes(data)


class Chunker:
    """Cuts streams into chunks with fixed parameters and seed (0 = unkeyed)."""

    def __init__(self, params: ChunkerParams, seed: int = 0, read_size: int = READ_SIZE) -> None:
        if params.keyed and not seed:
            raise ValueError("a keyed chunker needs a non-zero seed")
        self.params = params
        self.read_size = read_size
        self._cdc = FastCDC(params.avg_size, min_size=params.min_size,
                            max_size=params.max_size,
                            normalized_chunking=params.normalization,  # type: ignore[arg-type]
                            seed=seed if params.keyed else 0)

    def chunks(self, stream: Readable) -> Iterator[tuple[int, bytes]]:
        """Yield ``(offset, data)`` for each chunk of ``stream`` read to its end.

        ``data`` is a copy the caller may keep. Held at a time: pyfastcdc's
        window of ``2 * max_size`` plus the chunk being yielded (48 MiB with
        the default parameters), whatever the stream's length.
        """
        for chunk in self._cdc.cut_stream(_Pieces(stream, self.read_size)):
            yield chunk.offset, bytes(chunk.data)

    def file_chunks(self, path: str | os.PathLike[str]) -> Iterator[tuple[int, bytes]]:
        """Chunks of the file at ``path``: its edges, then ``chunks`` of the rest.

        Many files rewrite a few bytes at their start or end on every save (a
        Redis RDB: its header with the save time, its checksum trailer). Cut
        by content alone, each such change re-uploads a whole multi-MiB chunk;
        with the first and last ``edge_size`` bytes as chunks of their own it
        costs only those.
        """
        size = os.path.getsize(path)
        edge = self.params.edge_size
        with open(path, "rb", buffering=0) as handle:
            if not edge or size < 2 * edge + self.params.min_size:
                yield from self.chunks(handle)
                return
            yield 0, _read_exactly(handle, edge)
            for offset, data in self.chunks(_Limited(handle, size - 2 * edge)):
                yield edge + offset, data
                del data  # hold no chunk while the next one is cut
            yield size - edge, _read_exactly(handle, edge)
