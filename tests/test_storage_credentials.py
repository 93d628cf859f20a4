"""Credential resolution: the order as a pure function, then every method the
emulators allow, end to end through open_store and a real request."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from kvproxy.storage import StorageError
from kvproxy.storage.credentials import (
    Credentials,
    Sources,
    load_sources,
    resolve_credentials,
)

S3_CONF = {"type": "s3", "bucket": "b", "access_key_id": "CONFKEY",
           "secret_access_key": "confsecret"}
S3_FILE = {"s3": {"access_key_id": "FILEKEY", "secret_access_key": "filesecret",
                  "region": "eu-west-3"}}
S3_SHARED = {"default": {"aws_access_key_id": "SHAREDKEY", "aws_secret_access_key": "sharedsec"},
             "backup": {"aws_access_key_id": "PROFKEY", "aws_secret_access_key": "profsecret"}}
S3_ENV = {"AWS_ACCESS_KEY_ID": "ENVKEY", "AWS_SECRET_ACCESS_KEY": "envsecret"}


def _without_keys(values: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in values.items() if k not in keys}


def test_s3_order_highest_first() -> None:
    conf = dict(S3_CONF)
    sources = Sources(cli=Credentials(s3_key="CLIKEY:clisecret"), credentials_file="/c",
                      credentials_sections=S3_FILE, shared_file="~/.aws/credentials",
                      shared_sections=S3_SHARED, environ=S3_ENV)
    values, method, tried = resolve_credentials("s3", conf, sources, "aws")
    assert (values["access_key_id"], values["secret_access_key"]) == ("CLIKEY", "clisecret")
    assert method == "command line" and tried == ["command line"]

    sources = Sources(credentials_file="/c", credentials_sections=S3_FILE,
                      shared_file="~/.aws/credentials", shared_sections=S3_SHARED,
                      environ=S3_ENV)
    found = resolve_credentials("s3", conf, sources, "aws")
    assert found.values["access_key_id"] == "CONFKEY"
    assert found.method == "kvcloud.conf [provider aws]"

    conf = _without_keys(conf, "access_key_id", "secret_access_key")
    found = resolve_credentials("s3", conf, sources, "aws")
    assert found.values["access_key_id"] == "FILEKEY"
    assert found.method == "credentials file /c [s3]"
    assert found.values["region"] == "eu-west-3"

    sources = Sources(shared_file="~/.aws/credentials", shared_sections=S3_SHARED,
                      environ=S3_ENV)
    found = resolve_credentials("s3", conf, sources, "aws")
    assert found.values["access_key_id"] == "SHAREDKEY"
    assert found.method == "~/.aws/credentials profile default"

    sources = Sources(shared_file="/x/creds", shared_sections=S3_SHARED, profile="backup",
                      environ=S3_ENV)
    found = resolve_credentials("s3", conf, sources, "aws")
    assert found.values["access_key_id"] == "PROFKEY"
    assert found.method == "/x/creds profile backup"

    sources = Sources(shared_sections=S3_SHARED, profile="other", environ=S3_ENV)
    found = resolve_credentials("s3", conf, sources, "aws")
    assert found.values["access_key_id"] == "ENVKEY"
    assert found.method == "environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)"

    found = resolve_credentials("s3", conf, Sources(), "aws")
    assert found.method == "SDK default chain (botocore)"
    assert found.tried == ["command line", "kvcloud.conf [provider aws]",
                           "~/.aws/credentials profile default", "environment",
                           "SDK default chain (botocore)"]
    assert "access_key_id" not in found.values


def test_s3_region_and_profile_settings() -> None:
    conf = {"type": "s3", "bucket": "b"}
    environ = {"AWS_REGION": "ap-south-1", "AWS_DEFAULT_REGION": "us-west-2"}
    assert resolve_credentials("s3", conf, Sources(environ=environ)).values == {
        "region": "ap-south-1"}
    found = resolve_credentials("s3", {**conf, "region": "eu-north-1", "profile": "sso"},
                                Sources(profile="sso", environ=environ))
    # a configured profile goes to the SDK, which knows SSO and role profiles
    assert found.values == {"region": "eu-north-1", "profile": "sso"}


def test_credentials_file_without_the_section_is_skipped() -> None:
    found = resolve_credentials("s3", {"type": "s3"}, Sources(
        credentials_file="/etc/kv/creds", credentials_sections={"azure": {}},
        environ=S3_ENV), "aws")
    assert found.tried[2] == "credentials file /etc/kv/creds (no [s3])"
    assert found.method.startswith("environment")


@pytest.mark.parametrize("where", ["config", "file", "env"])
def test_half_a_key_pair_is_an_error_without_the_secret(where: str) -> None:
    conf: dict[str, Any] = {"type": "s3"}
    sources = Sources()
    if where == "config":
        conf["secret_access_key"] = "lonelysecret"
    elif where == "file":
        sources = Sources(credentials_file="/c",
                          credentials_sections={"s3": {"secret_access_key": "lonelysecret"}})
    else:
        sources = Sources(environ={"AWS_SECRET_ACCESS_KEY": "lonelysecret"})
    with pytest.raises(StorageError, match="only one of access_key_id and secret_access_key") as e:
        resolve_credentials("s3", conf, sources, "aws")
    assert "lonelysecret" not in str(e.value)


def test_malformed_command_line_key() -> None:
    with pytest.raises(StorageError, match="ACCESS_KEY_ID:SECRET") as e:
        resolve_credentials("s3", {}, Sources(cli=Credentials(s3_key="nocolonsecret")), "aws")
    assert "nocolonsecret" not in str(e.value)
    with pytest.raises(StorageError, match="ACCOUNT:KEY"):
        resolve_credentials("azure", {}, Sources(cli=Credentials(azure_key="x")), "az")


def test_azure_order_and_account_name() -> None:
    conf: dict[str, Any] = {"type": "azure", "container": "c", "account_name": "confacct",
                            "account_key": "confkey"}
    environ = {"AZURE_STORAGE_CONNECTION_STRING": "envconn", "AZURE_STORAGE_ACCOUNT": "envacct",
               "AZURE_STORAGE_KEY": "envkey", "AZURE_STORAGE_SAS_TOKEN": "envsas"}
    found = resolve_credentials("azure", conf, Sources(
        cli=Credentials(azure_key="cliacct:clikey"), environ=environ), "az")
    assert found.values == {"account_name": "cliacct", "account_key": "clikey"}
    found = resolve_credentials("azure", conf, Sources(environ=environ), "az")
    assert found.values == {"account_name": "confacct", "account_key": "confkey"}
    conf = _without_keys(conf, "account_key")
    found = resolve_credentials("azure", conf, Sources(
        credentials_file="/c", credentials_sections={"azure": {"sas_token": "filesas"}},
        environ=environ), "az")
    assert found.values == {"account_name": "confacct", "sas_token": "filesas"}
    found = resolve_credentials("azure", conf, Sources(environ=environ), "az")
    assert found.method == ("environment (AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT,"
                            " AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN)")
    assert found.values["connection_string"] == "envconn"
    # the account name alone is not a credential: the SDK chain gets it
    found = resolve_credentials("azure", {"type": "azure"},
                                Sources(environ={"AZURE_STORAGE_ACCOUNT_NAME": "acct"}), "az")
    assert found.method == "SDK default chain (DefaultAzureCredential)"
    assert found.values == {"account_name": "acct"}
    assert found.tried == ["command line", "kvcloud.conf [provider az]", "environment",
                           "SDK default chain (DefaultAzureCredential)"]


def test_gcs_order() -> None:
    conf: dict[str, Any] = {"type": "gcs", "bucket": "b", "service_account_key": "/conf.json"}
    environ = {"GOOGLE_APPLICATION_CREDENTIALS": "/env.json"}
    found = resolve_credentials("gcs", conf, Sources(
        cli=Credentials(gcs_service_account="/cli.json"), environ=environ), "g")
    assert found.values == {"service_account_key": "/cli.json"}
    found = resolve_credentials("gcs", conf, Sources(environ=environ), "g")
    assert found.values == {"service_account_key": "/conf.json"}
    conf = {"type": "gcs", "bucket": "b"}
    found = resolve_credentials("gcs", conf, Sources(shared_file="/adc.json", environ=environ))
    assert found.values == {"service_account_key": "/adc.json"}
    found = resolve_credentials("gcs", conf, Sources(environ=environ), "g")
    assert found.method == "environment (GOOGLE_APPLICATION_CREDENTIALS)"
    found = resolve_credentials("gcs", conf, Sources(), "g")
    assert found.method == "SDK default chain (google.auth.default)"
    found = resolve_credentials("gcs", {**conf, "endpoint_url": "http://127.0.0.1:1"},
                                Sources(), "g")
    assert found.method == "anonymous (endpoint_url set)"
    assert found.values == {"anonymous": "yes"}


def test_secrets_stay_out_of_repr() -> None:
    cli = Credentials(s3_key="AK:topsecret1", azure_key="a:topsecret2",
                      azure_sas_token="topsecret3", azure_connection_string="topsecret4")
    assert "topsecret" not in repr(cli)
    assert cli.secret_flags() == ["s3_key", "azure_key", "azure_sas_token",
                                  "azure_connection_string"]
    found = resolve_credentials("s3", {}, Sources(cli=cli), "aws")
    assert "topsecret" not in repr(found)
    assert found.secrets == ("topsecret1",)


def test_load_sources_reads_the_files(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.write_text("[s3]\naccess_key_id = K\nsecret_access_key = S\n")
    shared = tmp_path / "shared"
    shared.write_text("[prof]\naws_access_key_id = P\naws_secret_access_key = Q\n")
    sources = load_sources("s3", {"credentials_file": str(creds)},
                           Credentials(shared_file=str(shared), profile="prof"), "aws", {})
    assert sources.credentials_sections == {"s3": {"access_key_id": "K",
                                                   "secret_access_key": "S"}}
    assert sources.shared_sections is not None and sources.profile == "prof"
    # --cred-file wins over credentials_file
    sources = load_sources("s3", {"credentials_file": "/nonexistent"},
                           Credentials(credentials_file=str(creds)), "aws", {})
    assert sources.credentials_file == str(creds)
    # the default shared file may be absent; AWS_SHARED_CREDENTIALS_FILE moves it
    sources = load_sources("s3", {}, None, "aws", {"AWS_SHARED_CREDENTIALS_FILE": str(shared),
                                                   "AWS_PROFILE": "prof"})
    assert sources.shared_file == str(shared) and sources.profile == "prof"
    sources = load_sources("s3", {}, None, "aws",
                           {"AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")})
    assert sources.shared_sections is None


def test_unreadable_credentials_files_are_errors(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"provider aws \(s3\): cannot read credentials "
                                           r"file /nonexistent/creds: No such file"):
        load_sources("s3", {"credentials_file": "/nonexistent/creds"}, None, "aws", {})
    bad = tmp_path / "bad"
    bad.write_text("secret_access_key = not-in-a-section-leak\n")
    with pytest.raises(StorageError, match="is not an INI file") as e:
        load_sources("s3", {}, Credentials(credentials_file=str(bad)), "aws", {})
    assert "leak" not in str(e.value)
    with pytest.raises(StorageError, match="cannot read shared credentials file"):
        load_sources("s3", {}, Credentials(shared_file=str(tmp_path / "none")), "aws", {})


def test_file_provider_needs_no_credentials() -> None:
    assert tuple(resolve_credentials("file", {"path": "/x"}, Sources())) == (
        {}, "local files", [])


def test_warning_for_command_line_secrets_names_no_secret(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from kvproxy import config
    from kvproxy.storage.providers import open_store

    provider = config.parse("[provider aws]\ntype = s3\nbucket = b\n"
                            "endpoint_url = http://127.0.0.1:9\n").providers[0]
    with caplog.at_level(logging.INFO, logger="kvproxy.storage"):
        store = open_store(provider, "p", Credentials(s3_key="AKIAEXAMPLE:supersecretvalue"))
    assert store.credentials == "command line"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings and "command line" in warnings[0].getMessage()
    assert "s3_key" in warnings[0].getMessage()
    assert all("supersecretvalue" not in r.getMessage() for r in caplog.records)
