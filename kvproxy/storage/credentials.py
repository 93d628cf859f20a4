"""Which credentials a provider uses: the same order for S3, GCS and Azure.

Highest priority first:

1. the command line (``Credentials``; accepted with a warning: command lines leak),
2. the provider's section of kvcloud.conf,
3. a credentials file (``credentials_file`` / ``--cred-file``, format below),
4. the provider's shared file (``~/.aws/credentials`` with a profile; for GCS
   gcloud's application-default credentials file; Azure has none),
5. environment variables,
6. the SDK's default chain (for GCS with ``endpoint_url``: anonymous access).

``load_sources`` reads the files and the environment; ``resolve_credentials``
is a pure function of what it was given, so the order is tested on its own.

The credentials file is INI, one section per provider type::

    [s3]
    access_key_id = AKIA...
    secret_access_key = ...
    session_token = ...            (optional)
    region = eu-west-1             (optional)

    [azure]
    account_name = myaccount
    account_key = ...              (or sas_token = ..., or connection_string = ...)

    [gcs]
    service_account_key = /etc/kvcloud/gcs.json
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from kvproxy.storage.store import StorageError

#: Keys whose values are secrets, wherever they come from.
SECRET_KEYS = ("secret_access_key", "session_token", "account_key", "sas_token",
               "connection_string")

#: What each provider type reads from a source, most specific first.
_S3_KEYS = ("access_key_id", "secret_access_key", "session_token")
_AZURE_KEYS = ("connection_string", "account_name", "account_key", "sas_token")
_GCS_KEYS = ("service_account_key",)
_CRED_FILE_KEYS = {"s3": _S3_KEYS + ("region",), "azure": _AZURE_KEYS, "gcs": _GCS_KEYS}

_ENV: dict[str, dict[str, tuple[str, ...]]] = {
    "s3": {"access_key_id": ("AWS_ACCESS_KEY_ID",),
           "secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
           "session_token": ("AWS_SESSION_TOKEN",)},
    "azure": {"connection_string": ("AZURE_STORAGE_CONNECTION_STRING",),
              "account_name": ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_ACCOUNT_NAME"),
              "account_key": ("AZURE_STORAGE_KEY", "AZURE_STORAGE_ACCOUNT_KEY"),
              "sas_token": ("AZURE_STORAGE_SAS_TOKEN",)},
    "gcs": {"service_account_key": ("GOOGLE_APPLICATION_CREDENTIALS",)},
}
_SDK_CHAIN = {"s3": "SDK default chain (botocore)",
              "azure": "SDK default chain (DefaultAzureCredential)",
              "gcs": "SDK default chain (google.auth.default)"}


@dataclass(frozen=True)
class Credentials:
    """What the command line gave; every field is optional.

    ``s3_key`` is ``ACCESS_KEY_ID:SECRET_ACCESS_KEY``, ``azure_key`` is
    ``ACCOUNT:KEY``; ``gcs_service_account`` is a path. ``credentials_file``
    (``--cred-file``) and ``shared_file`` (``--shared-cred-file``) are paths,
    ``profile`` picks the profile in the shared file. Secrets are left out of
    ``repr``.
    """

    s3_key: str | None = field(default=None, repr=False)
    azure_key: str | None = field(default=None, repr=False)
    azure_sas_token: str | None = field(default=None, repr=False)
    azure_connection_string: str | None = field(default=None, repr=False)
    gcs_service_account: str | None = None
    credentials_file: str | None = None
    shared_file: str | None = None
    profile: str | None = None

    def secret_flags(self) -> list[str]:
        """Which secrets were given on the command line (names only)."""
        given = [("s3_key", self.s3_key), ("azure_key", self.azure_key),
                 ("azure_sas_token", self.azure_sas_token),
                 ("azure_connection_string", self.azure_connection_string)]
        return [name for name, value in given if value]


@dataclass(frozen=True)
class Sources:
    """Everything ``resolve_credentials`` looks at, already read from disk."""

    cli: Credentials = field(default_factory=Credentials)
    #: the credentials file: its path and sections, or None when none is configured
    credentials_file: str | None = None
    credentials_sections: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: the shared file: a label for messages ("~/.aws/credentials"), its sections
    #: (None when the file does not exist), and the profile to use
    shared_file: str | None = None
    shared_sections: Mapping[str, Mapping[str, str]] | None = None
    profile: str = "default"
    environ: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Resolution:
    """The credentials found, where they came from, and every source looked at.

    ``values`` may hold secrets: it is left out of ``repr``. Unpacks as
    ``values, method, tried``.
    """

    values: dict[str, str] = field(repr=False)
    method: str
    tried: list[str]

    def __iter__(self) -> Iterator[Any]:
        return iter((self.values, self.method, self.tried))

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(self.values[key] for key in SECRET_KEYS if self.values.get(key))


def _split_pair(value: str, what: str, label: str) -> tuple[str, str]:
    first, sep, second = value.partition(":")
    if not sep or not first or not second:
        raise StorageError(f"{label}: the command-line {what} must be given as "
                           f"{'ACCESS_KEY_ID:SECRET' if what == 's3 key' else 'ACCOUNT:KEY'}")
    return first, second


def _cli_values(kind: str, cli: Credentials, label: str) -> dict[str, str]:
    if kind == "s3" and cli.s3_key:
        key_id, secret = _split_pair(cli.s3_key, "s3 key", label)
        return {"access_key_id": key_id, "secret_access_key": secret}
    if kind == "azure":
        if cli.azure_connection_string:
            return {"connection_string": cli.azure_connection_string}
        if cli.azure_key:
            account, key = _split_pair(cli.azure_key, "azure key", label)
            return {"account_name": account, "account_key": key}
        if cli.azure_sas_token:
            return {"sas_token": cli.azure_sas_token}
    if kind == "gcs" and cli.gcs_service_account:
        return {"service_account_key": cli.gcs_service_account}
    return {}


def _pick(kind: str, found: Mapping[str, Any], where: str, label: str) -> dict[str, str]:
    """The usable credential in one source, {} if it has none; half of a pair is an error."""
    values = {key: str(found[key]) for key in _CRED_FILE_KEYS[kind] if found.get(key)}
    if kind == "s3":
        if ("access_key_id" in values) != ("secret_access_key" in values):
            raise StorageError(f"{label}: {where} has only one of access_key_id and "
                               "secret_access_key; both are needed")
        return values if "access_key_id" in values else {}
    if kind == "azure" and not {"connection_string", "account_key", "sas_token"} & set(values):
        return {}
    return values


def _env_values(kind: str, environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    found: dict[str, str] = {}
    names: list[str] = []
    for key, candidates in _ENV[kind].items():
        for name in candidates:
            if environ.get(name):
                found[key] = environ[name]
                names.append(name)
                break
    return found, names


def _shared_values(sources: Sources) -> dict[str, str]:
    section = (sources.shared_sections or {}).get(sources.profile)
    if section is None:
        return {}
    # ~/.aws/credentials spells the keys with an aws_ prefix
    return {key: section[f"aws_{key}"] for key in _S3_KEYS if section.get(f"aws_{key}")}


def resolve_credentials(kind: str, config: Mapping[str, Any], sources: Sources,
                        name: str = "") -> Resolution:
    """Pick the credentials for a provider of type ``kind`` (s3, gcs, azure, file).

    ``config`` is the provider's kvcloud.conf section and ``name`` its name.
    Raises StorageError only for half of a pair (a key id without its secret)
    or a malformed command-line value.
    """
    if kind == "file":
        return Resolution({}, "local files", [])
    label = f"provider {name} ({kind})"
    extra = _extras(kind, config, sources)
    steps: list[tuple[str, Callable[[], dict[str, str]]]] = [
        ("command line", lambda: _cli_values(kind, sources.cli, label)),
        (f"kvcloud.conf [provider {name}]",
         lambda: _pick(kind, config, f"kvcloud.conf [provider {name}]", label)),
    ]
    if sources.credentials_file:
        where = f"credentials file {sources.credentials_file}"
        section = sources.credentials_sections.get(kind)
        steps.append((f"{where} [{kind}]" if section is not None else f"{where} (no [{kind}])",
                      lambda: _pick(kind, section or {}, f"{where} [{kind}]", label)))
    if kind == "s3":
        steps.append((f"{sources.shared_file or '~/.aws/credentials'} profile {sources.profile}",
                      lambda: _shared_values(sources)))
    elif kind == "gcs" and sources.shared_file:
        shared = {"service_account_key": sources.shared_file}
        steps.append((sources.shared_file, lambda: shared))
    env, names = _env_values(kind, sources.environ)
    steps.append(("environment", lambda: _pick(kind, env, "the environment", label)))
    tried: list[str] = []
    for method, read in steps:
        tried.append(method)
        values = read()
        if values:
            if method == "environment":
                tried[-1] = method = f"environment ({', '.join(names)})"
            return Resolution({**extra, **values}, method, tried)
    if kind == "gcs" and config.get("endpoint_url"):
        tried.append("anonymous (endpoint_url set)")
        return Resolution({**extra, "anonymous": "yes"}, tried[-1], tried)
    tried.append(_SDK_CHAIN[kind])
    return Resolution(extra, tried[-1], tried)


def _extras(kind: str, config: Mapping[str, Any], sources: Sources) -> dict[str, str]:
    """Settings that are not secrets and apply whichever credential wins."""
    extra: dict[str, str] = {}
    if kind == "s3":
        region = (config.get("region")
                  or sources.credentials_sections.get("s3", {}).get("region")
                  or sources.environ.get("AWS_REGION")
                  or sources.environ.get("AWS_DEFAULT_REGION"))
        if region:
            extra["region"] = str(region)
        if sources.cli.profile or config.get("profile"):
            extra["profile"] = sources.profile  # for profiles only the SDK can read (SSO, roles)
    if kind == "azure":
        account = (config.get("account_name")
                   or sources.credentials_sections.get("azure", {}).get("account_name")
                   or _env_values("azure", sources.environ)[0].get("account_name"))
        if account:
            extra["account_name"] = str(account)
    return extra


def read_ini(path: str, label: str, what: str) -> dict[str, dict[str, str]]:
    """An INI file's sections; StorageError (without quoting any line) if unusable."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        with open(os.path.expanduser(path)) as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise StorageError(f"{label}: cannot read {what} {path}: "
                           f"{exc.strerror or type(exc).__name__}") from None
    except (configparser.Error, UnicodeDecodeError) as exc:
        line = getattr(exc, "lineno", None)
        where = f" (line {line})" if line else ""
        raise StorageError(f"{label}: {what} {path} is not an INI file{where}") from None
    return {name: dict(parser.items(name, raw=True)) for name in parser.sections()}


def load_sources(kind: str, config: Mapping[str, Any], cli: Credentials | None,
                 name: str = "", environ: Mapping[str, str] | None = None) -> Sources:
    """Read the files a provider's credentials may come from.

    A credentials file that was asked for (``--cred-file`` or
    ``credentials_file``) must be readable; the default shared files may be absent.
    """
    cli = cli or Credentials()
    label = f"provider {name} ({kind})"
    env = dict(os.environ if environ is None else environ)
    cred_path = cli.credentials_file or config.get("credentials_file")
    sections: dict[str, dict[str, str]] = {}
    if cred_path:
        sections = read_ini(str(cred_path), label, "credentials file")
    profile = cli.profile or config.get("profile") or env.get("AWS_PROFILE") or "default"
    shared_label: str | None = cli.shared_file
    shared: dict[str, dict[str, str]] | None = None
    if kind == "s3":
        path = cli.shared_file or env.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
        shared_label = path
        if cli.shared_file or os.path.exists(os.path.expanduser(path)):
            shared = read_ini(path, label, "shared credentials file")
    elif kind == "gcs" and not cli.shared_file:
        adc = "~/.config/gcloud/application_default_credentials.json"
        if os.path.exists(os.path.expanduser(adc)):
            shared_label = adc
    if shared_label and kind == "gcs":
        shared_label = os.path.expanduser(shared_label)
    return Sources(cli, str(cred_path) if cred_path else None, sections, shared_label, shared,
                   str(profile), env)
