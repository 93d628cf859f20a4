"""Provider names, shorthands and actions."""

from __future__ import annotations

import pytest

from kvproxy.config import parse
from kvproxy.jobs.targets import TargetError, select_providers

CONF = parse("""
[provider aws]
type = s3
bucket = b
[provider gcs]
type = gcs
bucket = g
actions = restore
[provider az]
type = azure
container = c
actions = upload
""")


def names(providers) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.name for p in providers]


def test_no_name_means_every_provider_allowed() -> None:
    assert names(select_providers(CONF, [], "upload")) == ["aws", "az"]
    assert names(select_providers(CONF, [], "restore")) == ["aws", "gcs"]


def test_names_and_shorthands() -> None:
    assert names(select_providers(CONF, ["AWS", "az"], "upload")) == ["aws", "az"]
    assert names(select_providers(CONF, ["s3", "aws"], "upload")) == ["aws"]
    assert names(select_providers(CONF, ["gcp"], "restore")) == ["gcs"]


@pytest.mark.parametrize("name, message", [
    ("gcs", "provider gcs does not allow upload (actions = restore in kvcloud.conf)"),
    ("nope", "unknown provider 'nope'; kvcloud.conf has: aws, gcs, az"),
])
def test_refusals_say_what_to_change(name: str, message: str) -> None:
    with pytest.raises(TargetError) as caught:
        select_providers(CONF, [name], "upload")
    assert str(caught.value) == message


def test_no_provider_sections() -> None:
    with pytest.raises(TargetError, match="no \\[provider NAME\\]"):
        select_providers(parse("[kvcloud]\n"), [], "upload")
    only_restore = parse("[provider x]\ntype = file\npath = p\nactions = restore\n")
    with pytest.raises(TargetError, match="no provider allows upload"):
        select_providers(only_restore, [], "upload")
