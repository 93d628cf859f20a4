"""The emulator fixtures themselves: restart on the same port, what a restart
keeps, and a clear failure when a tool is missing."""

# ruff: noqa: F811 - pytest fixtures imported from tests.emulators are redefined as arguments

from __future__ import annotations

from pathlib import Path

import pytest

from kvproxy.storage import NotFound
from kvproxy.storage.providers import open_store
from tests import emulators
from tests.emulators import (  # noqa: F401 - fixtures
    Azurite,
    FakeGcs,
    azurite,
    fake_gcs,
    no_cloud_credentials,
)

pytestmark = pytest.mark.usefixtures("no_cloud_credentials")


@pytest.mark.parametrize("fixture", ["fake_gcs", "azurite"])
def test_restart_keeps_the_port_and_the_buckets_but_not_the_data(
        fixture: str, request: pytest.FixtureRequest) -> None:
    emulator = request.getfixturevalue(fixture)
    provider = emulator.provider("p")
    store = open_store(provider, "kv")
    store.write("repo.json", b"{}")
    port = emulator.port
    emulator.stop()
    assert not emulator.running()
    emulator.start()
    assert emulator.port == port
    store.probe()  # the bucket is back ...
    with pytest.raises(NotFound):  # ... empty
        store.read("repo.json")


@pytest.mark.parametrize("kind", [FakeGcs, Azurite])
def test_persistent_emulators_keep_data_across_a_restart(kind: type[emulators.Emulator],
                                                         tmp_path: Path) -> None:
    emulator = kind(tmp_path, persistent=True)  # type: ignore[call-arg]
    try:
        emulator.start()
        store = open_store(emulator.provider("p"), "kv")
        store.write("repo.json", b"kept")
        emulator.stop()
        emulator.start()
        assert store.read("repo.json") == b"kept"
    finally:
        emulator.stop()


def test_a_missing_tool_fails_with_the_install_hint() -> None:
    with pytest.raises(pytest.fail.Exception, match="no-such-emulator not found: install it"):
        emulators._tool("no-such-emulator", [Path("/nonexistent")], "install it")


def test_sections_parse_as_kvcloud_conf(fake_gcs: FakeGcs, azurite: Azurite) -> None:
    text = azurite.section("az", "backups", sas_token="sv=1&sig=x", account_key=None)
    assert "account_key" not in text and "sas_token = sv=1&sig=x" in text
    provider = fake_gcs.provider("g", "some-bucket", project_id="test")
    assert provider.values == {"type": "gcs", "bucket": "some-bucket",
                               "endpoint_url": fake_gcs.endpoint_url, "project_id": "test",
                               "actions": ("upload", "restore")}
