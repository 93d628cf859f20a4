"""The content-defined chunker: determinism, bounded reads, the CDC property."""

from __future__ import annotations

import hashlib
import io
import os
import random
import tracemalloc
from pathlib import Path

import pytest

from kvproxy.repo.chunker import Chunker, ChunkerParams, MiB
from kvproxy.repo.errors import RepoFormatError

SMALL = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384, keyed=False)


def data_of(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def cut(chunker: Chunker, data: bytes) -> list[tuple[int, bytes]]:
    return list(chunker.chunks(io.BytesIO(data)))


def test_chunks_cover_the_input_in_order() -> None:
    data = data_of(300_000)
    chunks = cut(Chunker(SMALL), data)
    assert b"".join(d for _, d in chunks) == data
    offsets = [offset for offset, _ in chunks]
    assert offsets == [sum(len(d) for _, d in chunks[:i]) for i in range(len(chunks))]
    assert all(SMALL.min_size <= len(d) <= SMALL.max_size for _, d in chunks[:-1])
    assert len(chunks) > 20


def test_same_input_same_boundaries() -> None:
    data = data_of(200_000)
    first = [(o, len(d)) for o, d in cut(Chunker(SMALL), data)]
    again = [(o, len(d)) for o, d in cut(Chunker(SMALL), data)]
    assert first == again


def test_seed_changes_boundaries_and_is_deterministic() -> None:
    keyed = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384, keyed=True)
    data = data_of(200_000)
    one = [len(d) for _, d in cut(Chunker(keyed, seed=1234), data)]
    same = [len(d) for _, d in cut(Chunker(keyed, seed=1234), data)]
    other = [len(d) for _, d in cut(Chunker(keyed, seed=98765), data)]
    unkeyed = [len(d) for _, d in cut(Chunker(SMALL), data)]
    assert one == same
    assert one != other and one != unkeyed


def test_keyed_chunker_needs_a_seed() -> None:
    with pytest.raises(ValueError):
        Chunker(ChunkerParams(), seed=0)


def test_insertion_in_the_middle_changes_only_a_few_chunks() -> None:
    data = data_of(1_000_000)
    edited = data[:500_000] + b"inserted bytes!" * 7 + data[500_000:]
    chunker = Chunker(SMALL)
    before = {hashlib.sha256(d).hexdigest() for _, d in cut(chunker, data)}
    after = {hashlib.sha256(d).hexdigest() for _, d in cut(chunker, edited)}
    assert len(before) > 100
    assert len(after - before) <= 3
    assert len(before - after) <= 3


def test_empty_stream_has_no_chunks() -> None:
    assert cut(Chunker(SMALL), b"") == []


class CountingReader:
    """A stream that records every read, to prove the file is read in pieces."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.reads: list[int] = []
        self.position = 0

    def readinto(self, buffer: memoryview) -> int:
        n = self._inner.readinto(buffer)
        self.reads.append(len(buffer))
        self.position += n
        return n


def test_stream_is_read_in_bounded_pieces_never_whole() -> None:
    data = data_of(2_000_000)
    reader = CountingReader(data)
    chunker = Chunker(SMALL, read_size=4096)
    ahead = []
    for offset, chunk in chunker.chunks(reader):
        ahead.append(reader.position - offset)
        assert len(chunk) <= SMALL.max_size
    assert max(reader.reads) <= 4096
    # Never more than the window (2 * max_size) plus one piece ahead of the chunk.
    assert max(ahead) <= 2 * SMALL.max_size + 4096
    assert reader.position == len(data)


def test_large_file_with_default_parameters_in_bounded_memory(tmp_path: Path) -> None:
    path = tmp_path / "sparse.sst"
    with open(path, "wb") as handle:  # 200 MiB of zeros, no disk space used
        handle.truncate(200 * MiB)
    chunker = Chunker(ChunkerParams(keyed=False))
    tracemalloc.start()
    try:
        total = count = 0
        for _, chunk in chunker.file_chunks(path):
            total += len(chunk)
            count += 1
            assert len(chunk) <= 16 * MiB
            del chunk
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 200 * MiB and count >= 200 // 16
    assert peak < 64 * MiB, f"peak {peak / MiB:.0f} MiB for a 200 MiB file"


def test_default_parameters_on_random_data(tmp_path: Path) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(os.urandom(48 * MiB))
    sizes = [len(d) for _, d in Chunker(ChunkerParams(), seed=42).file_chunks(path)]
    assert sum(sizes) == 48 * MiB
    assert sizes[0] == sizes[-1] == 64 * 1024  # the edge chunks
    assert all(MiB <= s <= 16 * MiB for s in sizes[1:-2])  # the middle: FastCDC's sizes


@pytest.mark.parametrize("fields", [
    {"min_size": 10}, {"avg_size": 8 * MiB}, {"max_size": 32 * MiB},
    {"min_size": 8192, "avg_size": 4096, "max_size": 16384}, {"normalization": 4},
])
def test_parameters_are_checked(fields: dict[str, int]) -> None:
    with pytest.raises(RepoFormatError):
        ChunkerParams(**fields)  # type: ignore[arg-type]


def test_parameters_round_trip_through_json() -> None:
    params = ChunkerParams(min_size=2048, avg_size=8192, max_size=65536, normalization=2)
    assert ChunkerParams.from_json(params.to_json()) == params
    with pytest.raises(RepoFormatError):
        ChunkerParams.from_json({**params.to_json(), "algorithm": "rabin"})


def test_file_edges_are_chunks_of_their_own(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os as _os

    params = ChunkerParams(min_size=1024, avg_size=4096, max_size=16384, keyed=False,
                           edge_size=2048)
    chunker = Chunker(params)
    body = _os.urandom(200_000)
    first = tmp_path / "first.rdb"
    first.write_bytes(b"HEADER-1" + body + b"CRC-0001")
    second = tmp_path / "second.rdb"
    second.write_bytes(b"HEADER-2" + body + b"CRC-0002")
    one = list(chunker.file_chunks(first))
    two = list(chunker.file_chunks(second))
    assert b"".join(d for _, d in one) == first.read_bytes()
    assert [o for o, _ in one] == sorted(o for o, _ in one)
    assert len(one[0][1]) == len(one[-1][1]) == 2048
    # Only the two edges differ: every chunk between them is the same.
    assert [d for _, d in one[1:-1]] == [d for _, d in two[1:-1]]
    assert one[0][1] != two[0][1] and one[-1][1] != two[-1][1]
    small = tmp_path / "small"
    small.write_bytes(b"x" * 3000)
    assert [len(d) for _, d in chunker.file_chunks(small)] == [3000]
