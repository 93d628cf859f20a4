"""kvcloud.conf validation: every problem named by file, section and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvproxy import config

EXAMPLE = Path(__file__).resolve().parent.parent / "conf" / "kvcloud.conf"


def test_the_shipped_example_is_valid() -> None:
    loaded = config.load(EXAMPLE)
    assert loaded["listen"] == ("127.0.0.1", 6667)
    assert {p.type for p in loaded.providers} >= {"file"}


def test_defaults_without_a_file() -> None:
    defaults = config.defaults()
    assert defaults["listen"] == ("127.0.0.1", 6667)
    assert defaults["upstream"] == ("127.0.0.1", 6666)
    assert defaults["upstream_password"] is None


@pytest.mark.parametrize("text, message", [
    ("[kvcloud]\nlisten = 6667\n", "expected HOST:PORT"),
    ("[kvcloud]\nparallelism = 0\n", "positive"),
    ("[kvcloud]\ncompression = gzip\n", "zstd"),
    ("[kvcloud]\nencryption = rot13\n", "aes-256-gcm"),
    ("[kvcloud]\nmanaged = maybe\n", "yes or no"),
    ("[kvcloud]\nlistne = 1.2.3.4:1\n", "unknown key 'listne'"),
    ("[weird]\n", "unknown section [weird]"),
    ("[provider x]\nbucket = b\n", "missing 'type'"),
    ("[provider x]\ntype = s3\n", "needs 'bucket'"),
    ("[provider x]\ntype = ftp\n", "expected one of s3, gcs, azure, file"),
    ("[provider x]\ntype = file\npath = p\nactions = upload, delete\n", "upload and/or restore"),
    ("no section header\n", "<config>: line 1: a key before any [section]"),
    ("[kvcloud]\nlisten = a:1\n[kvcloud]\n", "already exists"),
    ("[kvcloud]\nconnect_timeout = nan\n", "positive"),
    ("[kvcloud]\nshutdown_timeout = inf\n", "positive"),
    ("[provider x]\ntype = file\npath = p\nactions =\n", "got nothing"),
    ("[provider x]\ntype = file\npath = p\nbucket = b\n", "does not apply to a file provider"),
    ("[kvcloud]\nprefix = a\nprefix = b\n", "given twice"),
    ("[kvcloud]\nupstream_connections = 0\n", "positive"),
    ("[kvcloud]\nspare_connections = -1\n", "0 or more"),
    ("[kvcloud]\nclient_output_limit = 256mb\n", "<hard> <soft> <seconds>"),
    ("[kvcloud]\nclient_output_limit = 1tb 0 0\n", "expected a size"),
    ("[kvcloud]\nclient_output_limit = 1mb 1mb ten\n", "whole seconds"),
])
def test_invalid_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(config.ConfigError, match=None) as caught:
        config.parse(text)
    assert message in str(caught.value)


@pytest.mark.parametrize("text, hard, soft, seconds", [
    ("256mb 64mb 60", 256 * 1024**2, 64 * 1024**2, 60),
    ("0 0 0", 0, 0, 0),
    ("1gb 512k 5", 1024**3, 512_000, 5),
    ("1048576 1KB 1", 1048576, 1024, 1),
])
def test_client_output_limit_reads_sizes_as_redis_does(text: str, hard: int, soft: int,
                                                       seconds: int) -> None:
    limit = config.parse(f"[kvcloud]\nclient_output_limit = {text}\n")["client_output_limit"]
    assert (limit.hard, limit.soft, limit.soft_seconds) == (hard, soft, seconds)


def test_parse_errors_never_quote_the_line() -> None:
    with pytest.raises(config.ConfigError) as caught:
        config.parse("[kvcloud]\nhunter2-secret-line\n")
    assert "hunter2" not in str(caught.value)
    assert "line 2" in str(caught.value)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError, match="cannot read"):
        config.load(tmp_path / "missing.conf")
    binary = tmp_path / "binary.conf"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(config.ConfigError, match="not a text file"):
        config.load(binary)


def test_redaction_covers_every_secret_key() -> None:
    text = """
[kvcloud]
upstream_password = pw1
[provider a]
type = s3
bucket = b
secret_access_key = pw2
[provider z]
type = azure
container = c
account_key = pw3
sas_token = pw4
connection_string = pw5
"""
    shown = config.parse(text).redacted()
    values = " ".join(shown.values())
    for secret in ("pw1", "pw2", "pw3", "pw4", "pw5"):
        assert secret not in values
    assert shown["upstream_password"] == config.REDACTED


def test_overrides_win_and_survive_reload() -> None:
    loaded = config.parse("[kvcloud]\nupstream = 10.0.0.1:1\n")
    overridden = loaded.with_overrides(upstream=("127.0.0.1", 7000), listen=None)
    assert overridden["upstream"] == ("127.0.0.1", 7000)
    assert overridden["listen"] == ("127.0.0.1", 6667)
    assert dict(overridden.overrides) == {"upstream": ("127.0.0.1", 7000)}


def test_configuration_doc_shows_the_shipped_example() -> None:
    doc = (EXAMPLE.parent.parent / "docs" / "configuration.md").read_text()
    example = doc.split("```ini\n", 1)[1].split("```", 1)[0]
    assert example == EXAMPLE.read_text()
