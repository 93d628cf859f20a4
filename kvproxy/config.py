"""kvcloud.conf: one schema, loaded, validated, redacted and reloaded here.

A config is only ever replaced by another fully validated one, so a bad
``KVCLOUD REFRESH`` leaves the running proxy on the old file.
"""

from __future__ import annotations

import configparser
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvproxy.proxy.flow import OutputLimit
from kvproxy.repo.retention import Policy

REDACTED = "***"


class ConfigError(Exception):
    """The file is unusable; the message names the file, section and key."""


def _hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _yes_no(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"expected yes or no, got {value!r}")


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
        return value

    return parse


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"expected a positive number, got {value!r}")
    return number


def _count(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"expected 0 or more, got {value!r}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"expected a positive number, got {value!r}")
    return number


def _compression(value: str) -> str:
    if value == "none":
        return value
    kind, _, level = value.partition(":")
    if kind != "zstd" or (level and not (level.isdigit() and 1 <= int(level) <= 22)):
        raise ValueError(f"expected zstd, zstd:1..22 or none, got {value!r}")
    return value


def _actions(value: str) -> tuple[str, ...]:
    actions = tuple(a.strip() for a in value.split(",") if a.strip())
    if not actions:
        raise ValueError("expected upload and/or restore, got nothing")
    for action in actions:
        if action not in ("upload", "restore"):
            raise ValueError(f"expected upload and/or restore, got {action!r}")
    return actions


def _text(value: str) -> str:
    return value


def _retention(value: str) -> str:
    """Checked here so a bad policy is a config error; prune parses it again."""
    Policy.parse(value)
    return value


@dataclass(frozen=True)
class Key:
    parse: Callable[[str], Any]
    default: Any
    secret: bool = False


#: Every key of the [kvcloud] section. docs/configuration.md and
#: conf/kvcloud.conf describe the same list.
MAIN_KEYS: dict[str, Key] = {
    "listen": Key(_hostport, ("127.0.0.1", 6667)),
    "upstream": Key(_hostport, ("127.0.0.1", 6666)),
    "upstream_password": Key(_text, None, secret=True),
    "connect_timeout": Key(_positive_float, 3.0),
    "shutdown_timeout": Key(_positive_float, 5.0),
    "max_bulk_len": Key(_positive_int, 512 * 1024 * 1024),
    "upstream_connections": Key(_positive_int, 4),
    "spare_connections": Key(_count, 2),
    "client_pipeline_limit": Key(_positive_int, 1000),
    "client_output_limit": Key(OutputLimit.parse, OutputLimit.parse("256mb 64mb 60")),
    "log_format": Key(_choice("text", "json"), "text"),
    "log_level": Key(_choice("debug", "info", "warning", "error"), "info"),
    "managed": Key(_yes_no, False),
    "server_binary": Key(_text, None),
    "server_args": Key(_text, ""),
    "server_config": Key(_text, None),
    "server_dir": Key(_text, None),
    "state_dir": Key(_text, "kvproxy-data/state"),
    "restore_dir": Key(_text, "kvproxy-data/restores"),
    "source": Key(_choice("auto", "kvrocks-local", "kvrocks-remote", "redis", "directory"), "auto"),
    "prefix": Key(_text, "kvrocks"),
    "compression": Key(_compression, "zstd:3"),
    "encryption": Key(_choice("aes-256-gcm", "chacha20-poly1305", "none"), "aes-256-gcm"),
    "encryption_key_file": Key(_text, None),
    "parallelism": Key(_positive_int, 8),
    "retries": Key(_positive_int, 5),
    "retry_delay": Key(_positive_float, 0.5),
    "retention": Key(_retention, "last=7"),
}

PROVIDER_TYPES = ("s3", "gcs", "azure", "file")

#: Keys of a [provider NAME] section; which apply depends on its type.
PROVIDER_KEYS: dict[str, Key] = {
    "type": Key(_choice(*PROVIDER_TYPES), None),
    "actions": Key(_actions, ("upload", "restore")),
    "bucket": Key(_text, None),
    "region": Key(_text, None),
    "endpoint_url": Key(_text, None),
    "profile": Key(_text, None),
    "credentials_file": Key(_text, None),
    "access_key_id": Key(_text, None),
    "secret_access_key": Key(_text, None, secret=True),
    "project_id": Key(_text, None),
    "service_account_key": Key(_text, None),
    "container": Key(_text, None),
    "account_name": Key(_text, None),
    "account_key": Key(_text, None, secret=True),
    "sas_token": Key(_text, None, secret=True),
    "connection_string": Key(_text, None, secret=True),
    "path": Key(_text, None),
}

#: Keys that mean something for each provider type.
_COMMON_PROVIDER_KEYS = ("type", "actions")
KEYS_BY_TYPE = {
    "s3": _COMMON_PROVIDER_KEYS + ("bucket", "region", "endpoint_url", "profile",
                                   "credentials_file", "access_key_id", "secret_access_key"),
    "gcs": _COMMON_PROVIDER_KEYS + ("bucket", "project_id", "service_account_key",
                                    "credentials_file", "endpoint_url"),
    "azure": _COMMON_PROVIDER_KEYS + ("container", "account_name", "account_key", "sas_token",
                                      "connection_string", "credentials_file", "endpoint_url"),
    "file": _COMMON_PROVIDER_KEYS + ("path",),
}

#: What a provider of each type cannot work without.
REQUIRED_BY_TYPE = {
    "s3": ("bucket",), "gcs": ("bucket",), "azure": ("container",), "file": ("path",),
}


@dataclass(frozen=True)
class Provider:
    name: str
    values: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.values["type"])


@dataclass(frozen=True)
class Config:
    values: dict[str, Any]
    providers: tuple[Provider, ...] = ()
    path: Path | None = None
    #: Command-line values that win over the file, kept for reloads.
    overrides: tuple[tuple[str, Any], ...] = ()

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def with_overrides(self, **overrides: Any) -> Config:
        """Command-line flags win over the file."""
        given = {k: v for k, v in overrides.items() if v is not None}
        values = dict(self.values)
        values.update(given)
        return Config(values, self.providers, self.path, tuple(given.items()))

    def keeping(self, running: Config, keys: tuple[str, ...]) -> Config:
        """This config, but with the running values of keys that need a restart."""
        values = dict(self.values)
        values.update({key: running[key] for key in keys})
        return Config(values, self.providers, self.path, running.overrides)

    def redacted(self) -> dict[str, Any]:
        """The config as KVCLOUD CONFIG shows it: every secret as ***."""
        shown: dict[str, Any] = {"file": str(self.path) if self.path else "(built-in defaults)"}
        for key, spec in MAIN_KEYS.items():
            shown[key] = _show(self.values[key], spec.secret)
        for provider in self.providers:
            for key, value in provider.values.items():
                spec = PROVIDER_KEYS[key]
                shown[f"provider.{provider.name}.{key}"] = _show(value, spec.secret)
        return shown


def _show(value: Any, secret: bool) -> str:
    if value is None:
        return ""
    if secret:
        return REDACTED
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], int):
        return f"{value[0]}:{value[1]}"
    if isinstance(value, tuple):
        return ", ".join(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def defaults() -> Config:
    return Config({key: spec.default for key, spec in MAIN_KEYS.items()})


def _parse_section(
    where: str, items: dict[str, str], schema: dict[str, Key]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in items.items():
        spec = schema.get(key)
        if spec is None:
            known = ", ".join(sorted(schema))
            raise ConfigError(f"{where}: unknown key {key!r} (known keys: {known})")
        try:
            values[key] = spec.parse(raw.strip())
        except ValueError as exc:
            raise ConfigError(f"{where}: bad value for {key!r}: {exc}") from None
    return values


def _describe(exc: configparser.Error) -> str:
    """The parser's complaint without quoting the line: it may hold a secret."""
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"line {exc.lineno}: a key before any [section]"
    if isinstance(exc, configparser.ParsingError):
        lines = ", ".join(str(number) for number, _ in exc.errors)
        return f"line {lines}: not a 'key = value' line"
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"line {exc.lineno}: section [{exc.section}] already exists"
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"line {exc.lineno}: key {exc.option!r} given twice in [{exc.section}]"
    return type(exc).__name__


def parse(text: str, path: Path | None = None) -> Config:
    """Validate a whole file; raises ConfigError naming the first problem."""
    label = str(path) if path else "<config>"
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=("#", ";"), strict=True
    )
    try:
        parser.read_string(text, source=label)
    except configparser.Error as exc:
        raise ConfigError(f"{label}: {_describe(exc)}") from None
    values = {key: spec.default for key, spec in MAIN_KEYS.items()}
    providers: list[Provider] = []
    for section in parser.sections():
        items = dict(parser.items(section, raw=True))
        if section == "kvcloud":
            values.update(_parse_section(f"{label} [kvcloud]", items, MAIN_KEYS))
            continue
        kind, _, name = section.partition(" ")
        if kind != "provider" or not name.strip():
            raise ConfigError(
                f"{label}: unknown section [{section}] (expected [kvcloud] or [provider NAME])"
            )
        where = f"{label} [{section}]"
        provider_values = _parse_section(where, items, PROVIDER_KEYS)
        if "type" not in provider_values:
            raise ConfigError(f"{where}: missing 'type' (one of {', '.join(PROVIDER_TYPES)})")
        kind = provider_values["type"]
        for key in provider_values:
            if key not in KEYS_BY_TYPE[kind]:
                allowed = ", ".join(KEYS_BY_TYPE[kind])
                raise ConfigError(f"{where}: {key!r} does not apply to a {kind} provider "
                                  f"(its keys: {allowed})")
        for required in REQUIRED_BY_TYPE[kind]:
            if required not in provider_values:
                raise ConfigError(f"{where}: a {kind} provider needs {required!r}")
        provider_values.setdefault("actions", PROVIDER_KEYS["actions"].default)
        providers.append(Provider(name.strip(), provider_values))
    return Config(values, tuple(providers), path)


def load(path: str | os.PathLike[str]) -> Config:
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{file}: not a text file") from None
    return parse(text, file)
