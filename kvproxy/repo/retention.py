"""Which backups a retention policy keeps: a pure function of the list of backups.

``retention = last=7 hourly=24 daily=7 weekly=4 monthly=12`` (any subset, in
any order) in kvcloud.conf. As restic's ``forget``:

- ``last=N`` keeps the N newest backups;
- ``hourly=N``, ``daily=N``, ``weekly=N``, ``monthly=N`` keep the newest
  backup of each of the N most recent hours, days, ISO weeks or months *that
  have backups* (a month without a backup does not use up a slot);
- a backup is kept when any rule keeps it; every other one is dropped.

Buckets are computed in UTC from each backup's creation time; two backups
with the same time are ordered by backup id (the larger id is the newer).
Nothing here reads the clock: the same list and policy always give the same
answer. A policy that keeps nothing (empty, or every count 0) is refused:
applying it would delete every backup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

#: The rules, in the order they are written and reported.
RULES = ("last", "hourly", "daily", "weekly", "monthly")

_TOKEN = re.compile(r"^([a-z]+)=([0-9]+)$")

#: Bucket of a time for each periodic rule (UTC); equal strings share a bucket.
_BUCKETS: dict[str, Callable[[datetime], str]] = {
    "hourly": lambda t: f"{t:%Y-%m-%dT%H}",
    "daily": lambda t: f"{t:%Y-%m-%d}",
    "weekly": lambda t: "{}-W{:02d}".format(*t.isocalendar()[:2]),
    "monthly": lambda t: f"{t:%Y-%m}",
}


class RetentionError(ValueError):
    """A policy that cannot be parsed, or one that would keep nothing."""


@dataclass(frozen=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0

    @classmethod
    def parse(cls, text: str) -> Policy:
        """``last=7 daily=7 weekly=4`` (spaces or commas between rules); empty is allowed
        here (it means: no policy, prune refuses) but a malformed rule is not."""
        counts: dict[str, int] = {}
        for token in text.replace(",", " ").split():
            match = _TOKEN.match(token.strip().lower())
            if match is None:
                raise RetentionError(
                    f"expected rules like 'last=7 daily=7 weekly=4' ({', '.join(RULES)}, "
                    f"each =N with N a whole number), got {token!r}")
            name, number = match.group(1), int(match.group(2))
            if name not in RULES:
                raise RetentionError(f"unknown retention rule {name!r} (known: "
                                     f"{', '.join(RULES)})")
            if name in counts:
                raise RetentionError(f"retention rule {name!r} given twice")
            counts[name] = number
        return cls(**counts)

    @property
    def empty(self) -> bool:
        """Whether the policy keeps nothing at all."""
        return not any(getattr(self, name) for name in RULES)

    def __str__(self) -> str:
        text = " ".join(f"{f.name}={getattr(self, f.name)}" for f in fields(self)
                        if getattr(self, f.name))
        return text or "(none)"


@dataclass(frozen=True)
class Backup:
    """What the policy looks at: the id and the creation time (UTC)."""

    backup_id: str
    created: datetime


@dataclass(frozen=True)
class Decision:
    """``keep`` and ``drop``, newest first; ``reasons[id]`` says why each kept one stays."""

    keep: tuple[str, ...]
    drop: tuple[str, ...]
    reasons: dict[str, tuple[str, ...]] = field(default_factory=dict)


def decide(policy: Policy, backups: Iterable[Backup]) -> Decision:
    """Apply ``policy``; RetentionError if it keeps nothing (it would drop everything)."""
    if policy.empty:
        raise RetentionError("the retention policy keeps no backup (empty, or every count 0): "
                             "refusing to delete every backup; set e.g. retention = last=7")
    ordered = sorted(backups, key=lambda b: (_utc(b.created), b.backup_id), reverse=True)
    left = {name: getattr(policy, name) for name in RULES}
    seen: dict[str, str] = {}  # rule -> the last bucket that rule kept a backup for
    reasons: dict[str, tuple[str, ...]] = {}
    for rank, backup in enumerate(ordered, start=1):
        why: list[str] = []
        if left["last"] > 0:
            left["last"] -= 1
            why.append(f"last {rank}")
        moment = _utc(backup.created)
        for name, bucket_of in _BUCKETS.items():
            bucket = bucket_of(moment)
            if left[name] > 0 and seen.get(name) != bucket:
                seen[name] = bucket
                left[name] -= 1
                why.append(f"{name} {bucket}")
        if why:
            reasons[backup.backup_id] = tuple(why)
    keep = tuple(b.backup_id for b in ordered if b.backup_id in reasons)
    drop = tuple(b.backup_id for b in ordered if b.backup_id not in reasons)
    return Decision(keep, drop, reasons)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
