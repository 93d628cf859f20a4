"""Encoding of the replies the proxy writes itself (KVCLOUD, local errors).

Field/value replies are maps on a RESP3 connection and flat arrays on RESP2,
as Redis does for HELLO and CONFIG GET.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

Value: TypeAlias = (
    "None | bool | int | float | str | bytes | Sequence[Value] | Mapping[str, Value]"
)

OK = b"+OK\r\n"


def encode_command(*args: bytes) -> bytes:
    """A command as a client sends it (for the commands the proxy sends itself)."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def error(text: str) -> bytes:
    """An error reply; ``text`` starts with its code (ERR, NOAUTH, ...)."""
    return b"-" + text.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


def encode(value: Value, resp3: bool = False) -> bytes:
    out: list[bytes] = []
    _encode(value, resp3, out)
    return b"".join(out)


def _bulk(data: bytes, out: list[bytes]) -> None:
    out.append(b"$%d\r\n" % len(data))
    out.append(data)
    out.append(b"\r\n")


def _encode(value: Value, resp3: bool, out: list[bytes]) -> None:
    if value is None:
        out.append(b"_\r\n" if resp3 else b"$-1\r\n")
    elif isinstance(value, bool):
        out.append((b"#t\r\n" if value else b"#f\r\n") if resp3 else b":%d\r\n" % value)
    elif isinstance(value, int):
        out.append(b":%d\r\n" % value)
    elif isinstance(value, float):
        if resp3:
            out.append(b",%r\r\n" % value)
        else:
            _bulk(repr(value).encode(), out)
    elif isinstance(value, str):
        _bulk(value.encode(), out)
    elif isinstance(value, bytes):
        _bulk(value, out)
    elif isinstance(value, Mapping):
        out.append((b"%%%d\r\n" if resp3 else b"*%d\r\n") % (len(value) * (1 if resp3 else 2)))
        for key, item in value.items():
            _bulk(key.encode(), out)
            _encode(item, resp3, out)
    else:
        out.append(b"*%d\r\n" % len(value))
        for item in value:
            _encode(item, resp3, out)
