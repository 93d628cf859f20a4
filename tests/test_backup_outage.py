"""A provider that goes away in the middle of a backup, against real emulators.

The SDKs make one attempt per request (RetryingStore is the one retry policy),
so with ``retries = 2`` a stopped emulator fails the backup within seconds:
``failed`` with the reason, and no manifest. Once the emulator is back, the
same backup succeeds and skips the chunks stored before the outage.

Each test starts its own persistent emulator (data on disk, kept across
stop()/start()), so the session's shared emulators are never stopped here.
Nothing depends on timing: the backup goes through a relay that forwards a
fixed number of bytes towards the emulator and then holds the rest, so the
outage always comes after some chunks and before the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from kvproxy import config
from kvproxy.repo.keys import KeySource
from kvproxy.repo.repository import Repository
from kvproxy.storage import Store, Unavailable
from kvproxy.storage.providers import open_store
from kvproxy.storage.retry import RetryingStore
from tests.emulators import AZURITE_KEY, Azurite, Emulator, FakeGcs
from tests.servers import free_port

MiB = 1024 * 1024
PREFIX = "prod-1"
#: Never reached by a working emulator: only a hang ends here.
HANG = 120.0


class Relay:
    """A TCP relay in front of an emulator that forwards the first ``budget`` bytes
    clients send, then holds the rest (answers still flow back). ``cut`` closes
    every connection and the listening port: to clients, the emulator is gone."""

    def __init__(self, target_port: int, budget: int) -> None:
        self.target_port = target_port
        self.budget = budget
        self.forwarded = 0
        self.holding = threading.Event()
        self.closed = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while True:
                data = source.recv(1 << 16)
                if not data:
                    break
                if counted:
                    with self.lock:
                        allowed = min(len(data), self.budget - self.forwarded)
                        self.forwarded += allowed
                    if allowed < len(data):
                        sink.sendall(data[:allowed])
                        self.holding.set()
                        self.closed.wait()  # hold the rest until cut
                        return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.closed.set()
        self.listener.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


def make_emulator(kind: str, directory: Path) -> Emulator:
    server: Emulator = (Azurite if kind == "azure" else FakeGcs)(directory, persistent=True)
    return server.start()


@pytest.fixture(params=["azure", "gcs"])
def persistent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Emulator]:
    """A persistent emulator of this test's own, on a new port."""
    server = make_emulator(request.param, tmp_path / f"{request.param}-data")
    yield server
    server.stop()


def cloud(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "kvproxy.cloud_cli", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def conf(path: Path, section: str, state: Path) -> Path:
    path.write_text("[kvcloud]\n"
                    f"prefix = {PREFIX}\n"
                    f"state_dir = {state}\n"
                    "retries = 2\n"
                    "retry_delay = 0.1\n"
                    "parallelism = 2\n" + section)
    return path


def chunk_ids(store: Store) -> set[str]:
    return {key.rsplit("/", 1)[-1] for key in store.list("chunks")}


def test_outage_fails_the_backup_and_the_next_one_skips_stored_chunks(
        persistent: Emulator, tmp_path: Path) -> None:
    emulator = persistent
    bucket = emulator.make_bucket()
    direct = emulator.provider("cloud", bucket)
    store = open_store(direct, PREFIX)

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "CURRENT").write_text("MANIFEST-000005\n")
    (checkpoint / "MANIFEST-000005").write_bytes(os.urandom(64 * 1024))
    for number in range(7, 10):  # 54 MiB of incompressible data: about 15 chunks
        (checkpoint / f"00000{number}.sst").write_bytes(os.urandom(18 * MiB))
    key = tmp_path / "backup.key"
    assert subprocess.run([sys.executable, "-m", "kvproxy.cloud_cli", "keygen", str(key)],
                          capture_output=True).returncode == 0
    backup = ["backup", "-p", "cloud", "-d", str(checkpoint), "--key-file", str(key), "--json"]

    # 36 MiB get through: with 2 uploads of at most 16 MiB at a time, that completes
    # at least one chunk, and it cannot be all of them (54 MiB).
    relay = Relay(emulator.port, budget=36 * MiB)
    section = emulator.section("cloud", bucket, endpoint_url=relay.endpoint_url)
    first = cloud(*backup, "--conf", str(conf(tmp_path / "relay.conf", section, tmp_path)))
    try:
        assert relay.holding.wait(HANG), "the backup never sent 36 MiB"
        deadline = time.monotonic() + HANG
        while not chunk_ids(store):
            assert time.monotonic() < deadline, "no chunk arrived in the emulator"
            time.sleep(0.05)
        emulator.stop()
        relay.cut()
        out, err = first.communicate(timeout=HANG)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        relay.cut()
    assert first.returncode == 1, err
    status = json.loads(out)
    assert status["state"] == "failed"
    assert status["backup_id"] == ""
    reason = status["error"]
    label = f"provider cloud ({emulator.kind})"
    # Which request fails first, and the SDK's words for it, vary (an upload cut off,
    # a connection refused or dropped); the reason names the provider, the object and
    # the failure, which was retried: only transient errors say "gave up after".
    assert re.fullmatch(rf"{re.escape(label)}: cannot write "
                        r"'chunks/[0-9a-f]{2}/[0-9a-f]{64}': \S.* \(gave up after 2 attempts\)",
                        reason), reason
    assert status["results"] == f"cloud: failed: {reason}"
    # each retry is logged with the provider, the key and the reason
    assert f"WARNING kvproxy.storage: {label}: cannot " in err
    assert "(attempt 1 of 2; trying again in" in err
    assert AZURITE_KEY not in err + out

    emulator.start()  # the same data, the same port
    assert store.list("backups") == []  # no manifest: the backup did not happen
    stored = chunk_ids(store)
    assert stored, "the chunks stored before the outage survive the restart"

    second = cloud(*backup, "--conf", str(conf(tmp_path / "direct.conf",
                                               emulator.section("cloud", bucket), tmp_path)))
    out, err = second.communicate(timeout=HANG)
    assert second.returncode == 0, err
    status = json.loads(out)
    assert status["state"] == "succeeded", status
    repo = Repository.open(store, KeySource(str(key)))
    (backup_id,) = repo.list_backups()
    assert status["backup_id"] == backup_id
    manifest = repo.read_manifest(backup_id)
    refs = [ref for entry in manifest.files for ref in entry.chunks]
    skipped = sum(ref.size for ref in refs if ref.id in stored)
    assert skipped > 0 and status["bytes_deduplicated"] == skipped
    assert status["bytes_uploaded"] > 0
    assert status["bytes_done"] == status["bytes_total"] == sum(
        path.stat().st_size for path in checkpoint.iterdir())

    # The backup restores to the very files: every chunk verifies and every file's
    # sha256 matches the manifest and the original.
    assert sorted(entry.name for entry in manifest.files) == sorted(
        path.name for path in checkpoint.iterdir())
    for entry in manifest.files:
        digest = hashlib.sha256()
        for ref in entry.chunks:
            data = repo.get_chunk(ref.id)
            assert len(data) == ref.size
            digest.update(data)
        assert digest.hexdigest() == entry.sha256
        original = (checkpoint / entry.name).read_bytes()
        assert entry.size == len(original)
        assert entry.sha256 == hashlib.sha256(original).hexdigest()


def test_a_retried_write_goes_through_once_the_emulator_is_back(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Persistent Azurite stops; the first attempt fails at once (no SDK retries),
    the emulator starts again while RetryingStore waits, and the second attempt
    stores the object next to the one written before the outage."""
    emulator = make_emulator("azure", tmp_path / "azurite")
    try:
        store = open_store(emulator.provider("az"), "kv")
        store.write("before", b"written before the outage")
        emulator.stop()
        waits: list[float] = []

        def sleep(seconds: float) -> None:
            waits.append(seconds)
            emulator.start()

        retrying = RetryingStore(store, attempts=3, base_delay=0.1, sleep=sleep)
        with caplog.at_level(logging.WARNING, logger="kvproxy.storage"):
            retrying.write("chunks/ab/after", b"written once it was back")
        assert len(waits) == 1
        assert retrying.read("chunks/ab/after") == b"written once it was back"
        assert retrying.read("before") == b"written before the outage"
        (record,) = [r for r in caplog.records if r.name == "kvproxy.storage"]
        message = record.getMessage()
        assert message.startswith("provider az (azure): cannot write 'chunks/ab/after': ")
        assert "(attempt 1 of 3; trying again in" in message
        assert AZURITE_KEY not in message
    finally:
        emulator.stop()


class Busy:
    """An HTTP server that answers every request with 503 Service Unavailable, which
    every SDK would retry on its own, and counts the requests."""

    def __init__(self) -> None:
        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _busy(self) -> None:
                counter.requests.append(f"{self.command} {self.path}")
                if self.headers.get("Expect", "").lower() != "100-continue":
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(503)  # instead of 100 Continue: the body is not wanted
                self.send_header("Content-Length", "0")
                self.send_header("Connection", "close")
                self.end_headers()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _busy  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.requests: list[str] = []
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


SECTIONS = {
    "s3": "bucket = b\nregion = us-east-1\naccess_key_id = testing\nsecret_access_key = testing\n",
    "gcs": "bucket = b\n",
    "azure": f"container = b\naccount_name = devstoreaccount1\naccount_key = {AZURITE_KEY}\n",
}


@pytest.mark.parametrize("kind", sorted(SECTIONS))
@pytest.mark.parametrize("operation", ["write", "read", "list"])
def test_each_sdk_makes_one_attempt_per_operation(kind: str, operation: str) -> None:
    """A failing operation sends each request once: RetryingStore decides how often to try
    (botocore, gcsfs and azure-storage-blob would each retry a 503 several times,
    for ~8 s, ~33 s and ~85 s)."""
    server = Busy()
    try:
        text = (f"[provider p]\ntype = {kind}\nendpoint_url = http://127.0.0.1:{server.port}\n"
                + SECTIONS[kind])
        store = open_store(config.parse(text).providers[0], "kv")
        calls: dict[str, Callable[[], object]] = {
            "write": lambda: store.write("chunks/x", b"data"),
            "read": lambda: store.read("chunks/x"),
            "list": lambda: store.list("chunks"),
        }
        with pytest.raises(Unavailable):
            calls[operation]()
        # adlfs lists after a HEAD on the prefix: different requests, none repeated
        assert server.requests and len(set(server.requests)) == len(server.requests), \
            server.requests
    finally:
        server.close()


def test_nothing_listening_is_unavailable() -> None:
    """Nothing listening: each provider's first request is Unavailable (retried by
    RetryingStore), naming the provider and the key."""
    port = free_port()
    for kind, section in SECTIONS.items():
        text = f"[provider p]\ntype = {kind}\nendpoint_url = http://127.0.0.1:{port}\n" + section
        store = open_store(config.parse(text).providers[0], "kv")
        with pytest.raises(Unavailable, match=rf"^provider p \({kind}\): cannot write 'k': "):
            store.write("k", b"data")
