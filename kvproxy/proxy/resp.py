"""Sans-IO RESP framing for the proxy's hot path.

The proxy never decodes what it forwards: it only needs to know where each
client command ends (and its name) and where each upstream reply ends. Both
scanners work on a buffer and an offset and return offsets, so forwarding can
slice the original bytes. Nothing is allocated from a declared length: a
``*N`` or ``$N`` header only moves an offset, so a hostile header costs
nothing until the bytes really arrive.
"""

from __future__ import annotations

CRLF = b"\r\n"

#: Same limits Redis applies before it reads a frame; beyond them the peer is
#: either broken or hostile, and the connection is closed.
MAX_INLINE_LEN = 64 * 1024
MAX_HEADER_LEN = 32
MAX_ARGS = 2**31 - 1
DEFAULT_MAX_BULK_LEN = 512 * 1024 * 1024

INCOMPLETE = -1


class ProtocolError(Exception):
    """The client sent something that is not RESP; the text follows Redis'."""


def _parse_len(buf: bytes | bytearray, start: int, nl: int, what: str) -> int:
    field = buf[start:nl]
    if not field or len(field) > MAX_HEADER_LEN:
        raise ProtocolError(f"invalid {what} length")
    try:
        return int(field)
    except ValueError:
        raise ProtocolError(f"invalid {what} length") from None


def command_end(
    buf: bytes | bytearray, pos: int, max_bulk_len: int = DEFAULT_MAX_BULK_LEN
) -> tuple[int, bytes | None]:
    """Find the end of the multibulk command starting at ``pos``.

    Returns ``(end, name)``; ``end`` is INCOMPLETE while bytes are missing.
    ``name`` is the first argument as sent (not case-folded), or None for an
    empty command (``*0`` / ``*-1``), which Redis ignores without a reply.
    """
    n = len(buf)
    find = buf.find
    nl = find(CRLF, pos)
    if nl < 0:
        if n - pos > MAX_HEADER_LEN:
            raise ProtocolError("invalid multibulk length")
        return INCOMPLETE, None
    count = _parse_len(buf, pos + 1, nl, "multibulk")
    if count > MAX_ARGS:
        raise ProtocolError("invalid multibulk length")
    p = nl + 2
    if count <= 0:
        return p, None
    name: bytes | None = None
    for _ in range(count):
        if p >= n:
            return INCOMPLETE, None
        if buf[p] != 36:  # '$'
            raise ProtocolError(f"expected '$', got '{chr(buf[p])}'")
        nl = find(CRLF, p)
        if nl < 0:
            if n - p > MAX_HEADER_LEN:
                raise ProtocolError("invalid bulk length")
            return INCOMPLETE, None
        size = _parse_len(buf, p + 1, nl, "bulk")
        if size < 0 or size > max_bulk_len:
            raise ProtocolError("invalid bulk length")
        start = nl + 2
        p = start + size + 2
        if p > n:
            return INCOMPLETE, None
        if buf[p - 2 : p] != CRLF:
            raise ProtocolError("bulk string not terminated by CRLF")
        if name is None:
            name = bytes(buf[start : start + size])
    return p, name


def inline_end(buf: bytes | bytearray, pos: int) -> int:
    """End of an inline command (a line typed by hand), or INCOMPLETE."""
    nl = buf.find(b"\n", pos)
    if nl < 0:
        if len(buf) - pos > MAX_INLINE_LEN:
            raise ProtocolError("too big inline request")
        return INCOMPLETE
    return nl + 1


def inline_args(line: bytes | bytearray) -> list[bytes]:
    """Split an inline command the simple way (whitespace).

    Only used to recognise the command: inline commands are always sent to a
    dedicated upstream connection as typed, so the server's own quoting rules
    apply to what it executes.
    """
    return bytes(line).split()


def command_args(buf: bytes | bytearray, pos: int, end: int) -> list[bytes]:
    """All arguments of a complete multibulk command (only for the few we inspect)."""
    args: list[bytes] = []
    nl = buf.find(CRLF, pos)
    count = int(buf[pos + 1 : nl])
    p = nl + 2
    for _ in range(max(count, 0)):
        nl = buf.find(CRLF, p)
        size = int(buf[p + 1 : nl])
        start = nl + 2
        args.append(bytes(buf[start : start + size]))
        p = start + size + 2
    return args


# Reply types whose header is followed by a length-prefixed payload.
_BLOB_TYPES = frozenset(b"$!=")
# Aggregates counting their elements; maps and attributes count pairs.
_ARRAY_TYPES = frozenset(b"*~>")
_PAIR_TYPES = frozenset(b"%|")


def reply_end(buf: bytes | bytearray, pos: int) -> int:
    """End of the RESP2/RESP3 reply starting at ``pos``, or INCOMPLETE.

    Delimits without decoding. Attributes (``|``) are not replies on their
    own: the value after them belongs to the same reply.
    """
    n = len(buf)
    find = buf.find
    need = 1
    while need:
        if pos >= n:
            return INCOMPLETE
        nl = find(CRLF, pos)
        if nl < 0:
            return INCOMPLETE
        kind = buf[pos]
        need -= 1
        if kind in _BLOB_TYPES:
            size = int(buf[pos + 1 : nl])
            pos = nl + 2 if size < 0 else nl + 4 + size
        else:
            if kind in _ARRAY_TYPES:
                count = int(buf[pos + 1 : nl])
                if count > 0:
                    need += count
            elif kind in _PAIR_TYPES:
                count = int(buf[pos + 1 : nl])
                need += 2 * count + (1 if kind == 124 else 0)
            pos = nl + 2
    return pos if pos <= n else INCOMPLETE
