"""The manifest schema: validation, JSON, backup ids."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import UTC, datetime

import pytest

from kvproxy.repo.errors import ManifestError
from kvproxy.repo.manifest import (
    ChunkRef,
    FileEntry,
    Manifest,
    Totals,
    backup_time,
    new_backup_id,
)

NOW = datetime(2026, 11, 24, 10, 15, 0, tzinfo=UTC)


def entry(name: str, data: bytes = b"hello", mode: int = 0o644) -> FileEntry:
    digest = hashlib.sha256(data).hexdigest()
    chunks = (ChunkRef(digest, len(data)),) if data else ()
    return FileEntry(name=name, size=len(data), mode=mode, sha256=digest, chunks=chunks)


def manifest(*files: FileEntry) -> Manifest:
    return Manifest.new(source="kvrocks-checkpoint", server_version="2.10.1", encrypted=True,
                        compression="zstd:3", files=files, new_chunks=1, stored_bytes=99,
                        sequence=1234, now=NOW)


def test_backup_ids_sort_by_time() -> None:
    backup_id = new_backup_id(NOW)
    assert backup_id.startswith("20261124T101500Z-") and len(backup_id) == 21
    later = new_backup_id(datetime(2026, 11, 24, 10, 15, 1, tzinfo=UTC))
    assert sorted([later, backup_id]) == [backup_id, later]
    assert backup_time(backup_id) == NOW


def test_new_manifest_fills_id_created_and_totals() -> None:
    m = manifest(entry("000012.sst", b"x" * 10), entry("CURRENT", b"MANIFEST-000005\n"))
    assert m.created == "2026-11-24T10:15:00Z"
    assert m.backup_id.startswith("20261124T101500Z-")
    assert m.totals == Totals(files=2, bytes=26, chunks=2, new_chunks=1, stored_bytes=99)
    m.validate()


def test_json_round_trip() -> None:
    m = manifest(entry("a/b/000012.sst", b"data"), entry("empty", b""))
    again = Manifest.from_json(m.to_json())
    assert again == m
    raw = json.loads(m.to_json())
    assert raw["format_version"] == 1 and raw["sequence"] == 1234
    assert raw["files"][0]["chunks"][0]["size"] == 4


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/../b", "", "a//b", "./a", "a/",
                                  "..", "a\\b", "nul\x00"])
def test_names_that_escape_or_are_empty_are_refused(name: str) -> None:
    with pytest.raises(ManifestError):
        manifest(entry(name)).validate()


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ManifestError, match="listed twice"):
        manifest(entry("CURRENT"), entry("CURRENT")).validate()


def test_inconsistent_entries_are_refused() -> None:
    good = entry("f", b"abc")
    for bad in (dataclasses.replace(good, size=4),
                dataclasses.replace(good, sha256="xyz"),
                dataclasses.replace(good, chunks=(ChunkRef("nothex", 3),)),
                dataclasses.replace(good, mode=0o100644)):
        with pytest.raises(ManifestError):
            manifest(bad).validate()
    with pytest.raises(ManifestError, match="totals"):
        dataclasses.replace(manifest(good), totals=Totals(files=2)).validate()
    with pytest.raises(ManifestError, match="source"):
        dataclasses.replace(manifest(good), source="tape").validate()


@pytest.mark.parametrize("edit", [
    lambda raw: raw["files"][0].__setitem__("size", "5"),
    lambda raw: raw["files"][0].__setitem__("size", True),
    lambda raw: raw.pop("totals"),
    lambda raw: raw.__setitem__("format_version", 2),
    lambda raw: raw["files"][0].__setitem__("name", "../../etc/passwd"),
])
def test_from_json_refuses_bad_documents(edit: object) -> None:
    raw = json.loads(manifest(entry("f")).to_json())
    edit(raw)  # type: ignore[operator]
    with pytest.raises(ManifestError):
        Manifest.from_json(json.dumps(raw).encode())
    with pytest.raises(ManifestError):
        Manifest.from_json(b"not json")
