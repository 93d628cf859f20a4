"""Every credential method the emulators allow, end to end: open_store, then real
requests. moto runs with IAM authentication here (moto_s3_auth), so a wrong key
is refused as AWS would; Azurite checks its account key and SAS signatures;
fake-gcs-server takes no credentials at all."""

# ruff: noqa: F811 - pytest fixtures imported from tests.emulators are redefined as arguments

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kvproxy.storage import AccessDenied, StorageError, Store
from kvproxy.storage.credentials import Credentials
from kvproxy.storage.providers import check, open_store
from tests.emulators import (  # noqa: F401 - fixtures
    Azurite,
    FakeGcs,
    MotoS3,
    azurite,
    fake_gcs,
    moto_s3_auth,
    no_cloud_credentials,
)

pytestmark = pytest.mark.usefixtures("no_cloud_credentials")


def works(store: Store) -> None:
    """The credentials are good for everything a backup does."""
    check(store)
    store.write("chunks/ab/ab01", b"chunk")
    assert store.read("chunks/ab/ab01") == b"chunk"
    assert store.exists("chunks/ab/ab01")
    assert store.list("chunks") == ["chunks/ab/ab01"]
    store.delete("chunks/ab/ab01")


def refused(store: Store, *secrets: str) -> str:
    """The first real request fails with AccessDenied; the message has no secret."""
    with pytest.raises(AccessDenied) as caught:
        check(store)
    message = str(caught.value)
    for secret in secrets:
        assert secret not in message
    assert "Traceback" not in message
    return message


# ---- S3 (moto with IAM authentication) ----------------------------------------------


def test_s3_keys_in_kvcloud_conf(moto_s3_auth: MotoS3) -> None:
    store = open_store(moto_s3_auth.provider("aws"), "kv")
    assert store.credentials == "kvcloud.conf [provider aws]"
    works(store)


def test_s3_key_on_the_command_line(moto_s3_auth: MotoS3,
                                    caplog: pytest.LogCaptureFixture) -> None:
    key = f"{moto_s3_auth.access_key_id}:{moto_s3_auth.secret_access_key}"
    store = open_store(moto_s3_auth.provider("aws", credentials=False), "kv",
                       Credentials(s3_key=key))
    assert store.credentials == "command line"
    works(store)
    assert "command line" in caplog.text
    assert moto_s3_auth.secret_access_key not in caplog.text


def test_s3_credentials_file(moto_s3_auth: MotoS3, tmp_path: Path) -> None:
    creds = tmp_path / "kvcloud-credentials"
    creds.write_text(f"[s3]\naccess_key_id = {moto_s3_auth.access_key_id}\n"
                     f"secret_access_key = {moto_s3_auth.secret_access_key}\n")
    store = open_store(moto_s3_auth.provider("aws", credentials=False,
                                             credentials_file=str(creds)), "kv")
    assert store.credentials == f"credentials file {creds} [s3]"
    works(store)
    store = open_store(moto_s3_auth.provider("aws", credentials=False), "kv",
                       Credentials(credentials_file=str(creds)))
    works(store)


def test_s3_shared_file_with_profile(moto_s3_auth: MotoS3, no_cloud_credentials: Path,
                                     tmp_path: Path) -> None:
    aws = no_cloud_credentials / ".aws"
    aws.mkdir()
    (aws / "credentials").write_text(
        "[default]\naws_access_key_id = AKIAWRONG\naws_secret_access_key = wrong\n"
        f"[backup]\naws_access_key_id = {moto_s3_auth.access_key_id}\n"
        f"aws_secret_access_key = {moto_s3_auth.secret_access_key}\n")
    store = open_store(moto_s3_auth.provider("aws", credentials=False, profile="backup"), "kv")
    assert store.credentials == "~/.aws/credentials profile backup"
    works(store)
    # --shared-cred-file and --profile from the command line
    shared = tmp_path / "elsewhere"
    shared.write_text((aws / "credentials").read_text())
    store = open_store(moto_s3_auth.provider("aws", credentials=False), "kv",
                       Credentials(shared_file=str(shared), profile="backup"))
    assert store.credentials == f"{shared} profile backup"
    works(store)
    # the default profile holds a wrong key: refused, and the message says where it came from
    message = refused(open_store(moto_s3_auth.provider("aws", credentials=False), "kv"),
                      "wrong")
    assert "credentials from ~/.aws/credentials profile default" in message


def test_s3_environment(moto_s3_auth: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", moto_s3_auth.access_key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", moto_s3_auth.secret_access_key)
    store = open_store(moto_s3_auth.provider("aws", credentials=False), "kv")
    assert store.credentials == "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"
    works(store)


def test_s3_order_config_over_environment_command_line_over_config(
        moto_s3_auth: MotoS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVWRONG")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envwrongsecret")
    works(open_store(moto_s3_auth.provider("aws"), "kv"))
    store = open_store(moto_s3_auth.provider("aws"), "kv",
                       Credentials(s3_key="AKIACLIWRONG:cliwrongsecret"))
    message = refused(store, "cliwrongsecret")
    assert "credentials from command line" in message


def test_s3_wrong_secret(moto_s3_auth: MotoS3) -> None:
    store = open_store(moto_s3_auth.provider("aws", secret_access_key="not-the-secret-123"),
                       "kv")
    message = refused(store, "not-the-secret-123", moto_s3_auth.secret_access_key)
    assert message.startswith("provider aws (s3): access denied: cannot list '")
    assert message.endswith("(credentials from kvcloud.conf [provider aws]; looked at, "
                            "in order: command line, kvcloud.conf [provider aws])")
    assert "SignatureDoesNotMatch" in message or "signature" in message
    with pytest.raises(AccessDenied):
        store.write("x", b"1")
    with pytest.raises(AccessDenied):
        store.read("x")


def test_s3_unknown_key_id(moto_s3_auth: MotoS3) -> None:
    store = open_store(moto_s3_auth.provider("aws", access_key_id="AKIANOSUCHKEY"), "kv")
    message = refused(store, moto_s3_auth.secret_access_key)
    assert "access denied" in message


def test_s3_no_credentials(moto_s3_auth: MotoS3) -> None:
    store = open_store(moto_s3_auth.provider("aws", credentials=False), "kv")
    message = refused(store)
    assert message == ("provider aws (s3): no credentials: tried command line, "
                       "kvcloud.conf [provider aws], ~/.aws/credentials profile default, "
                       "environment, SDK default chain (botocore)")


# ---- Azure (Azurite) ------------------------------------------------------------


def test_azure_account_key_in_kvcloud_conf(azurite: Azurite) -> None:
    works(open_store(azurite.provider("az"), "kv"))


def test_azure_account_url_given_in_full(azurite: Azurite) -> None:
    works(open_store(azurite.provider("az", endpoint_url=azurite.account_url), "kv"))


def test_azure_connection_string(azurite: Azurite) -> None:
    provider = azurite.provider("az", credentials=False, account_name=None, endpoint_url=None,
                                connection_string=azurite.connection_string)
    works(open_store(provider, "kv"))


def test_azure_sas_token(azurite: Azurite) -> None:
    container = azurite.make_bucket()
    provider = azurite.provider("az", container, credentials=False,
                                sas_token=azurite.sas_token(container))
    store = open_store(provider, "kv")
    assert store.credentials == "kvcloud.conf [provider az]"
    works(store)


def test_azure_sas_token_signed_with_another_key(azurite: Azurite) -> None:
    container = azurite.make_bucket()
    sas = azurite.sas_token(container, account_key="d3Jvbmcga2V5IGZvciB0ZXN0cw==")
    signature = sas.split("sig=")[1].split("&")[0]
    store = open_store(azurite.provider("az", container, credentials=False, sas_token=sas), "kv")
    message = refused(store, sas, signature)
    assert "provider az (azure)" in message and "AuthorizationFailure" in message


def test_azure_key_on_the_command_line(azurite: Azurite) -> None:
    store = open_store(azurite.provider("az", credentials=False, account_name=None), "kv",
                       Credentials(azure_key=f"{azurite.account_name}:{azurite.account_key}"))
    assert store.credentials == "command line"
    works(store)


def test_azure_credentials_file(azurite: Azurite, tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.write_text(f"[azure]\naccount_name = {azurite.account_name}\n"
                     f"account_key = {azurite.account_key}\n")
    store = open_store(azurite.provider("az", credentials=False, account_name=None,
                                        credentials_file=str(creds)), "kv")
    assert store.credentials == f"credentials file {creds} [azure]"
    works(store)


@pytest.mark.parametrize("variables", ["account_key", "account_key_adlfs_names",
                                       "connection_string", "sas_token"])
def test_azure_environment(azurite: Azurite, monkeypatch: pytest.MonkeyPatch,
                           variables: str) -> None:
    container = azurite.make_bucket()
    if variables == "account_key":
        monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", azurite.account_name)
        monkeypatch.setenv("AZURE_STORAGE_KEY", azurite.account_key)
    elif variables == "account_key_adlfs_names":
        monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", azurite.account_name)
        monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", azurite.account_key)
    elif variables == "connection_string":
        monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    else:
        monkeypatch.setenv("AZURE_STORAGE_ACCOUNT", azurite.account_name)
        monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", azurite.sas_token(container))
    store = open_store(azurite.provider("az", container, credentials=False, account_name=None),
                       "kv")
    assert store.credentials.startswith("environment (AZURE_STORAGE_")
    works(store)


def test_azure_wrong_key(azurite: Azurite) -> None:
    wrong = "d3Jvbmcga2V5IGZvciB0ZXN0cw=="
    store = open_store(azurite.provider("az", account_key=wrong), "kv")
    message = refused(store, wrong)
    assert message.startswith("provider az (azure): access denied: cannot list '")
    assert "credentials from kvcloud.conf [provider az]" in message
    assert "<?xml" not in message


def test_azure_no_credentials(azurite: Azurite) -> None:
    with pytest.raises(AccessDenied) as caught:
        open_store(azurite.provider("az", credentials=False, account_name=None), "kv")
    assert str(caught.value) == (
        "provider az (azure): no credentials: tried command line, kvcloud.conf [provider az], "
        "environment, SDK default chain (DefaultAzureCredential) "
        "(the SDK default chain needs account_name)")


def test_azure_key_without_account_name(azurite: Azurite) -> None:
    with pytest.raises(StorageError, match="needs account_name"):
        open_store(azurite.provider("az", account_name=None, endpoint_url="http://example.test"),
                   "kv")


# ---- GCS (fake-gcs-server) ----------------------------------------------------


def test_gcs_anonymous_with_endpoint(fake_gcs: FakeGcs) -> None:
    store = open_store(fake_gcs.provider("gcs"), "kv")
    assert store.credentials == "anonymous (endpoint_url set)"
    works(store)


def test_gcs_service_account_key_that_does_not_exist(fake_gcs: FakeGcs) -> None:
    provider = fake_gcs.provider("gcs", service_account_key="/nonexistent/gcs.json")
    with pytest.raises(StorageError) as caught:
        open_store(provider, "kv")
    assert str(caught.value) == (
        "provider gcs (gcs): service account key /nonexistent/gcs.json "
        "(from kvcloud.conf [provider gcs]) does not exist or is not a file")


def test_gcs_key_path_from_environment_and_command_line(fake_gcs: FakeGcs,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/env.json")
    with pytest.raises(StorageError, match=r"/nonexistent/env.json \(from environment "
                                           r"\(GOOGLE_APPLICATION_CREDENTIALS\)\)"):
        open_store(fake_gcs.provider("gcs"), "kv")
    with pytest.raises(StorageError, match=r"/nonexistent/cli.json \(from command line\)"):
        open_store(fake_gcs.provider("gcs"), "kv",
                   Credentials(gcs_service_account="/nonexistent/cli.json"))


def test_gcs_key_file_that_is_not_a_key(fake_gcs: FakeGcs, tmp_path: Path) -> None:
    key = tmp_path / "gcs.json"
    key.write_text('{"type": "service_account", "private_key": "-----BEGIN not-a-key"}')
    with pytest.raises(StorageError, match="is not usable") as caught:
        open_store(fake_gcs.provider("gcs", service_account_key=str(key)), "kv")
    assert "not-a-key" not in str(caught.value)


def test_gcs_service_account_refused_by_the_token_server(fake_gcs: FakeGcs,
                                                        tmp_path: Path) -> None:
    """A well-formed key whose token exchange fails (here: the emulator has no token
    endpoint) is an access error naming where the key came from."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    key = tmp_path / "gcs.json"
    key.write_text(json.dumps({
        "type": "service_account", "project_id": "test", "private_key_id": "1",
        "private_key": pem, "client_email": "backup@test.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": f"{fake_gcs.endpoint_url}/token"}))
    store = open_store(fake_gcs.provider("gcs", service_account_key=str(key)), "kv")
    message = refused(store, pem.splitlines()[1])
    assert message.startswith("provider gcs (gcs): access denied: cannot list '")
    assert "credentials from kvcloud.conf [provider gcs]" in message


def test_gcs_no_credentials_without_endpoint() -> None:
    from kvproxy import config

    provider = config.parse("[provider g]\ntype = gcs\nbucket = b\n").providers[0]
    with pytest.raises(AccessDenied) as caught:
        open_store(provider, "kv")
    assert str(caught.value) == (
        "provider g (gcs): no credentials: tried command line, kvcloud.conf [provider g], "
        "environment, SDK default chain (google.auth.default)")


def test_s3_profile_that_no_file_defines(moto_s3_auth: MotoS3) -> None:
    store = open_store(moto_s3_auth.provider("aws", credentials=False, profile="nowhere"), "kv")
    assert refused(store) == (
        "provider aws (s3): no credentials: tried command line, kvcloud.conf [provider aws], "
        "~/.aws/credentials profile nowhere, environment, SDK default chain (botocore)")
