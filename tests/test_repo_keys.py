"""The backup key: keygen, key files, the environment, wrong and missing keys."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from kvproxy.repo.errors import RepoKeyError
from kvproxy.repo.keys import ENV_VAR, KeySource, keygen
from kvproxy.repo.repository import Repository
from kvproxy.repo.subkeys import SubKeys
from kvproxy.storage.store import Store

LABEL = "kvrocks/prod-1"


def key_file(tmp_path: Path, name: str = "backup.key") -> str:
    path = str(tmp_path / name)
    keygen(path)
    return path


def text_file(tmp_path: Path, content: bytes, name: str = "pass") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def env(value: str) -> KeySource:
    return KeySource.from_environment(None, {ENV_VAR: value})


# -- keygen ---------------------------------------------------------------------


def test_keygen_writes_32_random_bytes_mode_0600(tmp_path: Path) -> None:
    old = os.umask(0)  # even a permissive umask must not widen the mode
    try:
        first, second = key_file(tmp_path, "a"), key_file(tmp_path, "b")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(first).st_mode) == 0o600
    assert len(Path(first).read_bytes()) == 32
    assert Path(first).read_bytes() != Path(second).read_bytes()


def test_keygen_refuses_to_overwrite(tmp_path: Path) -> None:
    path = key_file(tmp_path)
    before = Path(path).read_bytes()
    with pytest.raises(RepoKeyError, match="refusing to overwrite"):
        keygen(path)
    assert Path(path).read_bytes() == before


# -- key sources ----------------------------------------------------------------


def test_file_of_32_bytes_is_raw_other_content_is_a_passphrase(tmp_path: Path) -> None:
    raw = KeySource(file=key_file(tmp_path)).load()
    assert raw is not None and raw.raw is not None and len(raw.raw) == 32
    phrase = KeySource(file=text_file(tmp_path, b"correct horse\r\n")).load()
    assert phrase is not None and phrase.raw is None and phrase.passphrase == b"correct horse"


def test_env_hex_is_raw_other_values_are_passphrases() -> None:
    raw = env("hex:" + "ab" * 32).load()
    assert raw is not None and raw.raw == bytes([0xAB]) * 32 and raw.passphrase is None
    phrase = env("correct horse").load()
    assert phrase is not None and phrase.passphrase == b"correct horse" and phrase.raw is None


@pytest.mark.parametrize("value", ["hex:abcd", "hex:" + "zz" * 32, "hex:" + "ab" * 33])
def test_bad_hex_is_refused_without_echoing_it(value: str) -> None:
    with pytest.raises(RepoKeyError, match="64 hex digits") as caught:
        env(value).load()
    assert value[4:] not in str(caught.value)


def test_empty_and_unreadable_key_files(tmp_path: Path) -> None:
    with pytest.raises(RepoKeyError, match="is empty"):
        KeySource(file=text_file(tmp_path, b"\n")).load()
    with pytest.raises(RepoKeyError, match="cannot read"):
        KeySource(file=str(tmp_path / "missing")).load()


def test_file_wins_over_environment(tmp_path: Path) -> None:
    source = KeySource.from_environment(text_file(tmp_path, b"from file\n"),
                                        {ENV_VAR: "from env"})
    material = source.load()
    assert material is not None and material.passphrase == b"from file"
    assert "from env" not in repr(source)
    assert KeySource.from_environment(None, {}).load() is None


def test_subkeys_are_distinct() -> None:
    keys = SubKeys.derive(bytes(32), bytes(16))
    assert len({keys.encryption, keys.chunk_id, keys.key_check}) == 3
    assert 0 < keys.chunker_seed < 2**63  # pyfastcdc cannot take larger seeds
    assert SubKeys.derive(bytes(32), bytes([1]) * 16).chunk_id != keys.chunk_id
    assert "0000" not in repr(keys)


# -- keys against repositories ----------------------------------------------------


def test_raw_key_file_opens_and_env_hex_of_the_same_key_too(store: Store,
                                                            tmp_path: Path) -> None:
    path = key_file(tmp_path)
    Repository.create(store, LABEL, "aes-256-gcm", "zstd:3", KeySource(file=path))
    assert Repository.open(store, KeySource(file=path)).encrypted
    Repository.open(store, env("hex:" + Path(path).read_bytes().hex()))


def test_passphrase_from_file_or_env(store: Store, tmp_path: Path) -> None:
    Repository.create(store, LABEL, "chacha20-poly1305", "zstd:3",
                      KeySource(file=text_file(tmp_path, b"correct horse battery\n")))
    document = json.loads(store.read("repo.json"))
    assert document["encryption"]["kdf"]["name"] == "scrypt"
    assert document["encryption"]["kdf"]["n"] == 2**15
    Repository.open(store, env("correct horse battery"))
    Repository.open(store, KeySource(file=text_file(tmp_path, b"correct horse battery", "p2")))


def test_a_32_byte_passphrase_file_opens_a_passphrase_repository(store: Store,
                                                                 tmp_path: Path) -> None:
    phrase = "x" * 32
    Repository.create(store, LABEL, "aes-256-gcm", "none", env(phrase))
    Repository.open(store, KeySource(file=text_file(tmp_path, phrase.encode())))


def test_missing_key(store: Store, tmp_path: Path) -> None:
    Repository.create(store, LABEL, "aes-256-gcm", "zstd:3",
                      KeySource(file=key_file(tmp_path)))
    with pytest.raises(RepoKeyError) as caught:
        Repository.open(store, KeySource())
    assert str(caught.value) == ("repository kvrocks/prod-1 is encrypted: give "
                                 "encryption_key_file or KVCLOUD_ENCRYPTION_KEY")


def test_create_encrypted_without_a_key(store: Store) -> None:
    with pytest.raises(RepoKeyError, match="give encryption_key_file"):
        Repository.create(store, LABEL, "aes-256-gcm", "zstd:3", KeySource())
    assert not store.exists("repo.json")


def test_wrong_raw_key_never_shows_key_material(store: Store, tmp_path: Path) -> None:
    right = key_file(tmp_path, "right")
    wrong = key_file(tmp_path, "wrong")
    Repository.create(store, LABEL, "aes-256-gcm", "zstd:3", KeySource(file=right))
    with pytest.raises(RepoKeyError, match="wrong encryption key for repository "
                                           "kvrocks/prod-1") as caught:
        Repository.open(store, KeySource(file=wrong))
    message = str(caught.value)
    for path in (right, wrong):
        assert Path(path).read_bytes().hex() not in message
    assert "wrong" in message and wrong in message  # names the file, not its bytes


def test_wrong_passphrase(store: Store) -> None:
    Repository.create(store, LABEL, "aes-256-gcm", "zstd:3", env("open sesame"))
    with pytest.raises(RepoKeyError, match="wrong encryption key") as caught:
        Repository.open(store, env("open says me"))
    assert "sesame" not in str(caught.value) and "says me" not in str(caught.value)


def test_passphrase_given_for_raw_key_repository(store: Store, tmp_path: Path) -> None:
    Repository.create(store, LABEL, "aes-256-gcm", "zstd:3",
                      KeySource(file=key_file(tmp_path)))
    with pytest.raises(RepoKeyError, match="uses a raw 32-byte key.*holds a passphrase"):
        Repository.open(store, env("a passphrase"))


def test_raw_key_given_for_passphrase_repository(store: Store) -> None:
    Repository.create(store, LABEL, "aes-256-gcm", "zstd:3", env("a passphrase"))
    with pytest.raises(RepoKeyError, match="uses a passphrase.*raw hex key"):
        Repository.open(store, env("hex:" + "00" * 32))


def test_unencrypted_repository_opened_with_a_key(store: Store, tmp_path: Path) -> None:
    source = KeySource(file=key_file(tmp_path))
    Repository.create(store, LABEL, "none", "zstd:3", source)  # key ignored on purpose
    assert not Repository.open(store, KeySource()).encrypted
    with pytest.raises(RepoKeyError, match="is not encrypted, but a key was given"):
        Repository.open(store, source)
    assert not Repository.open(store, source, allow_unencrypted=True).encrypted


@pytest.mark.parametrize("edit", ["cipher", "chunker", "kdf", "repository_id"])
def test_edited_repo_json_fails_the_key_check(store: Store, tmp_path: Path,
                                              edit: str) -> None:
    source = KeySource(file=key_file(tmp_path))
    Repository.create(store, LABEL, "aes-256-gcm", "zstd:3", source)
    document = json.loads(store.read("repo.json"))
    if edit == "cipher":
        document["encryption"]["cipher"] = "chacha20-poly1305"
    elif edit == "chunker":
        document["chunker"]["avg_size"] = 2 * 1024 * 1024
    elif edit == "kdf":
        document["encryption"]["kdf"] = {"name": "scrypt", "n": 2**14, "r": 8, "p": 1,
                                         "salt": "00" * 16}
    else:
        document["repository_id"] = "11" * 16
    store.write("repo.json", json.dumps(document).encode())
    with pytest.raises(RepoKeyError):
        Repository.open(store, source)


def test_downgrade_to_unencrypted_is_refused_when_a_key_is_given(store: Store,
                                                                 tmp_path: Path) -> None:
    source = KeySource(file=key_file(tmp_path))
    Repository.create(store, LABEL, "aes-256-gcm", "zstd:3", source)
    document = json.loads(store.read("repo.json"))
    document["encryption"] = {"cipher": "none"}
    document["chunker"]["keyed"] = False
    store.write("repo.json", json.dumps(document).encode())
    with pytest.raises(RepoKeyError, match="not encrypted"):
        Repository.open(store, source)
