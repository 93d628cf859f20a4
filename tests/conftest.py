"""Fixtures that start real servers; nothing is assumed to be running."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import fsspec
import pytest

from kvproxy.storage.store import Store
from tests.servers import Kvrocks, Proxy, Upstream, kvrocks_binary


def _upstream_class(kind: str) -> type[Upstream]:
    if kind == "kvrocks":
        if kvrocks_binary() is None:
            pytest.skip("no Kvrocks binary: set KVROCKS_BIN or put kvrocks on PATH")
        return Kvrocks
    return Upstream


@pytest.fixture(scope="module", params=["redis", "kvrocks"])
def upstream(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[Upstream]:
    """A shared upstream per module: redis-server always, Kvrocks when a binary exists."""
    cls = _upstream_class(request.param)
    server = cls(tmp_path_factory.mktemp(request.param)).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def proxy(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    server = Proxy(tmp_path_factory.mktemp("proxy"), upstream.port).start()
    yield server
    server.stop()


class _Started(list):  # type: ignore[type-arg]
    """Servers a test started, stopped when it ends."""

    def add(self, server: Server) -> Server:
        self.append(server)
        return server


Server = TypeVar("Server", Upstream, Proxy)


@pytest.fixture
def _started() -> Iterator[_Started]:
    started = _Started()
    yield started
    for server in started:
        server.stop()


@pytest.fixture
def make_upstream(tmp_path: Path, _started: _Started) -> Callable[..., Upstream]:
    def make(kind: str = "redis", **kwargs: object) -> Upstream:
        cls = _upstream_class(kind)
        directory = tmp_path / f"{kind}-{len(_started)}"
        return _started.add(cls(directory, **kwargs).start())  # type: ignore[arg-type]

    return make


@pytest.fixture
def make_proxy(tmp_path: Path, _started: _Started) -> Callable[..., Proxy]:
    def make(upstream_port: int, conf: str | None = None, args: list[str] | None = None) -> Proxy:
        directory = tmp_path / f"proxy-{len(_started)}"
        return _started.add(Proxy(directory, upstream_port, conf, args).start())

    return make


@pytest.fixture
def pair_proxy(make_upstream: Callable[..., Upstream],
               make_proxy: Callable[..., Proxy]) -> Proxy:
    """A fresh redis-server with a fresh proxy in front, for tests that stop either."""
    return make_proxy(make_upstream().port)


@pytest.fixture
def key(tmp_path: Path) -> Path:
    """A new random raw backup key (32 bytes), as ``kvrocks-cloud keygen`` writes one."""
    path = tmp_path / "backup.key"
    path.write_bytes(os.urandom(32))
    path.chmod(0o600)
    return path


@pytest.fixture
def store() -> Iterator[Store]:
    """An empty Store on fsspec's memory filesystem, for unit tests of the format."""
    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]
    yield Store(fs, "/bucket/prefix", "memory")
    fs.store.clear()
    fs.pseudo_dirs[:] = [""]
