"""KVCLOUD CANCEL: a running upload or restore stops, and leaves nothing behind.

The jobs run in this process against a real redis-server and a real bucket
directory; the store is wrapped so the job holds still at a known point
until the test has sent CANCEL, which makes the race deterministic.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import hiredis
import pytest
import redis

from kvproxy import config as configuration
from kvproxy.proxy import kvcloud as kvcloud_module
from kvproxy.proxy import server as server_module
from kvproxy.proxy.server import Proxy
from kvproxy.repo.keys import keygen
from kvproxy.storage.providers import open_store
from kvproxy.storage.store import Store
from tests.servers import Upstream


class Admin:
    resp3 = False
    authenticated = True
    admin = True


class HeldStore(Store):
    """A real store whose reads or writes of chunks stop at a gate until it opens."""

    def __init__(self, inner: Store, hold: str, reached: threading.Event,
                 gate: threading.Event) -> None:
        super().__init__(inner.fs, inner.root, inner.name)
        self.hold, self.reached, self.gate = hold, reached, gate

    def _maybe_hold(self, action: str, key: str) -> None:
        if action == self.hold and key.startswith("chunks/"):
            self.reached.set()
            self.gate.wait(30)

    def read(self, key: str) -> bytes:
        self._maybe_hold("read", key)
        return super().read(key)

    def write(self, key: str, data: bytes) -> None:
        self._maybe_hold("write", key)
        super().write(key, data)


class Hold:
    """Where the job stands still (``reached``) and what lets it go on (``gate``)."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.gate = threading.Event()


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Hold]]:
    """Makes every store the proxy opens from now hold at its first chunk read or write."""
    hold = Hold()

    def arm(action: str) -> Hold:
        def opener(*args: Any, **kwargs: Any) -> Store:
            return HeldStore(open_store(*args, **kwargs), action, hold.reached, hold.gate)

        monkeypatch.setattr(kvcloud_module, "open_store", opener)
        monkeypatch.setattr(server_module, "open_store", opener)
        return hold

    yield arm
    hold.gate.set()


def make_config(tmp_path: Path, upstream: Upstream) -> configuration.Config:
    key = tmp_path / "backup.key"
    keygen(key)
    conf = tmp_path / "kvcloud.conf"
    conf.write_text(f"[kvcloud]\nupstream = 127.0.0.1:{upstream.port}\nsource = redis\n"
                    f"encryption_key_file = {key}\nstate_dir = {tmp_path / 'state'}\n"
                    f"restore_dir = {tmp_path / 'restores'}\n"
                    f"[provider local]\ntype = file\npath = {tmp_path / 'bucket'}\n")
    return configuration.load(conf)


async def kvcloud(proxy: Proxy, *words: str) -> Any:
    reply = proxy.kvcloud.handle(Admin(), [word.encode() for word in words])
    if isinstance(reply, Awaitable):
        reply = await reply
    return reply


def decoded(reply: bytes) -> Any:
    reader = hiredis.Reader(encoding="utf-8")
    reader.feed(reply)
    return reader.gets()


def fields(reply: bytes) -> dict[str, Any]:
    """A RESP2 flat field/value array as a dict."""
    items = decoded(reply)
    return dict(zip(items[::2], items[1::2], strict=True))


def fill(client: redis.Redis) -> None:
    client.mset({f"key:{i}": i.to_bytes(4, "big") * 250 for i in range(2000)})


async def cancel_when_held(proxy: Proxy, hold: Hold) -> dict[str, Any]:
    """CANCEL while the job stands still, then let it run into the stop."""
    assert await asyncio.to_thread(hold.reached.wait, 30), "the job never reached the store"
    reply = proxy.kvcloud.handle(Admin(), [b"CANCEL"])
    # The job's task takes the cancellation on its next step, which the loop
    # runs before this coroutine's next one; only then is its stop flag set.
    await asyncio.sleep(0)
    hold.gate.set()
    assert isinstance(reply, Awaitable), reply
    return fields(await reply)


def test_cancel_an_upload_writes_no_manifest(make_upstream, tmp_path: Path, held) -> None:  # type: ignore[no-untyped-def]
    upstream: Upstream = make_upstream()
    fill(upstream.client())
    config = make_config(tmp_path, upstream)
    hold = held("write")

    async def scenario() -> dict[str, str]:
        proxy = Proxy(config)
        job_id = await kvcloud(proxy, "UPLOAD")
        assert decoded(job_id).startswith("upload-")
        final = await cancel_when_held(proxy, hold)
        assert final["job_id"] == decoded(job_id)
        status = fields(await kvcloud(proxy, "STATUS"))
        assert status["state"] == "cancelled"
        return final

    final = asyncio.run(scenario())
    assert final["state"] == "cancelled" and final["error"] == "cancelled"
    assert final["results"] == "local: cancelled"
    assert not list((tmp_path / "bucket").rglob("manifests/*")), "a cancelled upload committed"
    assert not list((tmp_path / "state" / "staging").glob("*")), "pinned snapshot left behind"


def test_cancel_a_restore_leaves_no_directory(make_upstream, tmp_path: Path, held) -> None:  # type: ignore[no-untyped-def]
    upstream: Upstream = make_upstream()
    fill(upstream.client())
    config = make_config(tmp_path, upstream)
    target = tmp_path / "restored"

    async def scenario() -> dict[str, str]:
        proxy = Proxy(config)
        uploaded = fields(await kvcloud(proxy, "UPLOAD", "WAIT"))
        assert uploaded["state"] == "succeeded", uploaded
        hold = held("read")
        job_id = await kvcloud(proxy, "RESTORE", "TO", str(target))
        assert decoded(job_id).startswith("restore-")
        return await cancel_when_held(proxy, hold)

    final = asyncio.run(scenario())
    assert final["state"] == "cancelled" and final["operation"] == "restore"
    assert not target.exists()
    assert not list(tmp_path.glob(".restored.restoring-*")), "staging left behind"


def test_cancel_answers_clearly_when_there_is_nothing_to_stop(pair_proxy) -> None:  # type: ignore[no-untyped-def]
    client = pair_proxy.client()
    with pytest.raises(redis.ResponseError, match="^no job is running$"):
        client.execute_command("KVCLOUD", "CANCEL")
    with pytest.raises(redis.ResponseError, match="^no such job: upload-nope$"):
        client.execute_command("KVCLOUD", "CANCEL", "upload-nope")
    with pytest.raises(redis.ResponseError, match="^usage: KVCLOUD CANCEL"):
        client.execute_command("KVCLOUD", "CANCEL", "a", "b")
