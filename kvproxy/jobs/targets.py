"""Which providers a KVCLOUD command or CLI call means.

A name is a ``[provider NAME]`` section; the proposal's shorthands pick the
first provider of a type; no name means every provider whose ``actions``
allow the operation.
"""

from __future__ import annotations

from kvproxy.config import Config, Provider

SHORTHANDS = {
    "AWS": "s3", "S3": "s3",
    "GCS": "gcs", "GCP": "gcs",
    "AZ": "azure", "AZURE": "azure",
}


class TargetError(Exception):
    """The named providers cannot do this; the message says what to change."""


def select_providers(config: Config, names: list[str], action: str) -> list[Provider]:
    if not config.providers:
        raise TargetError("no [provider NAME] section in kvcloud.conf")
    if not names:
        chosen = [p for p in config.providers if action in p.values["actions"]]
        if not chosen:
            raise TargetError(f"no provider allows {action}: add 'actions = {action}' to a "
                              "[provider NAME] section of kvcloud.conf")
        return chosen
    chosen = []
    for name in names:
        provider = _find(config, name)
        if action not in provider.values["actions"]:
            actions = ", ".join(provider.values["actions"])
            raise TargetError(f"provider {provider.name} does not allow {action} "
                              f"(actions = {actions} in kvcloud.conf)")
        if provider not in chosen:
            chosen.append(provider)
    return chosen


def _find(config: Config, name: str) -> Provider:
    for provider in config.providers:
        if provider.name == name:
            return provider
    kind = SHORTHANDS.get(name.upper())
    if kind is not None:
        for provider in config.providers:
            if provider.type == kind:
                return provider
        raise TargetError(f"no provider of type {kind} in kvcloud.conf for {name}")
    known = ", ".join(p.name for p in config.providers)
    raise TargetError(f"unknown provider {name!r}; kvcloud.conf has: {known}")
