"""Sans-IO RESP framing for the proxy's hot path.

The proxy never decodes what it forwards: it only needs to know where client
commands end (and which ones to look at) and where upstream replies end.
Both scanners take a buffer and an offset and return offsets, so forwarding
slices the original bytes. Nothing is allocated from a declared length: a
``*N`` or ``$N`` header only moves an offset, so a hostile header costs
nothing until the bytes really arrive.

``scan_run`` and ``scan_replies`` come from the C module ``_scan`` when it is
built; the pure-Python versions here define their behaviour and stand in
when it is not (tests check both give the same answers).
"""

from __future__ import annotations

from collections.abc import Set

CRLF = b"\r\n"

#: Same limits Redis applies before it reads a frame; beyond them the peer is
#: broken or hostile, and the connection is closed.
MAX_INLINE_LEN = 64 * 1024
MAX_HEADER_LEN = 32
#: A header is a type byte, at most MAX_HEADER_LEN digits, and CRLF.
HEADER_WINDOW = MAX_HEADER_LEN + 3
MAX_ARGS = 2**31 - 1
MAX_NAME = 16
DEFAULT_MAX_BULK_LEN = 512 * 1024 * 1024

INCOMPLETE = -1

# What scan_run found where it stopped.
STOP_DONE, STOP_INCOMPLETE, STOP_SPECIAL, STOP_INLINE, STOP_ERROR = range(5)

_DIGITS = frozenset(b"0123456789")


class ProtocolError(Exception):
    """The client sent something that is not RESP; the text follows Redis'."""


#: Bytes on their way through: received buffers and views into them.
Chunk = bytes | bytearray | memoryview


def slice_of(buf: bytes | bytearray, start: int, end: int) -> Chunk:
    """Part of a received buffer, to pass on without copying it when that is safe.

    A ``bytes`` object never changes, so a view of it may sit in a transport's
    queue; a ``bytearray`` is ours and grows later, so it is copied.
    """
    if type(buf) is bytes and end - start > 4096:
        return memoryview(buf)[start:end]
    return buf[start:end]


def parse_len(field: bytes | bytearray) -> int | None:
    """Strict decimal with an optional '-', as Redis reads lengths; None if not."""
    negative = field[:1] == b"-"
    digits = field[1:] if negative else field
    if not digits or len(field) > MAX_HEADER_LEN or len(digits) > 18:
        return None
    if not _DIGITS.issuperset(digits):
        return None
    if digits[:1] == b"0" and (len(digits) > 1 or negative):
        return None  # "0" alone: no leading zero, no "-0", as Redis' string2ll
    return int(field)


def _header(buf: bytes | bytearray, pos: int, what: str) -> tuple[int, int] | None:
    """(value, end of line) of the length header at pos, or None if incomplete."""
    nl = buf.find(CRLF, pos, pos + HEADER_WINDOW)
    if nl < 0:
        if len(buf) - pos >= HEADER_WINDOW:
            raise ProtocolError(f"invalid {what} length")
        return None
    value = parse_len(buf[pos + 1 : nl])
    if value is None:
        raise ProtocolError(f"invalid {what} length")
    return value, nl


def command_end(
    buf: bytes | bytearray, pos: int, max_bulk_len: int = DEFAULT_MAX_BULK_LEN
) -> tuple[int, bytes | None]:
    """Find the end of the multibulk command starting at ``pos``.

    Returns ``(end, name)``; ``end`` is INCOMPLETE while bytes are missing.
    ``name`` is the first argument as sent (not case-folded), or None for an
    empty command (``*0`` / ``*-1``), which Redis ignores without a reply.
    """
    n = len(buf)
    header = _header(buf, pos, "multibulk")
    if header is None:
        return INCOMPLETE, None
    count, nl = header
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
        header = _header(buf, p, "bulk")
        if header is None:
            return INCOMPLETE, None
        size, nl = header
        if size < 0 or size > max_bulk_len:
            raise ProtocolError("invalid bulk length")
        start = nl + 2
        if n - start < size + 2:
            return INCOMPLETE, None
        p = start + size + 2
        if buf[p - 2 : p] != CRLF:
            raise ProtocolError("bulk string not terminated by CRLF")
        if name is None:
            name = bytes(buf[start : start + size])
    return p, name


def command_need(buf: bytes | bytearray, pos: int) -> int:
    """How many bytes from ``pos`` the incomplete command there needs at least.

    Lets the session wait for a large value without looking at it again on
    every read. Only a lower bound: headers not yet received count as one byte.
    """
    n = len(buf)
    if buf[pos] != 42:
        return n - pos + 1
    nl = buf.find(CRLF, pos, pos + HEADER_WINDOW)
    count = parse_len(buf[pos + 1 : nl]) if nl >= 0 else None
    if count is None:
        return n - pos + 1
    p = nl + 2
    for _ in range(count):
        nl = buf.find(CRLF, p, p + HEADER_WINDOW) if p < n else -1
        size = parse_len(buf[p + 1 : nl]) if nl >= 0 else None
        if size is None or size < 0:
            return max(p, n) - pos + 1
        p = nl + 2 + size + 2
        if p > n:
            return p - pos
    return n - pos + 1


class RequestTracker:
    """Follows one large command chunk by chunk until it is complete.

    A command of many arguments would otherwise be joined and scanned again
    on every read. The tracker only finds where the command ends; the scanner
    still checks it once it is all there, so a malformed header just ends
    tracking early.
    """

    def __init__(self) -> None:
        self.carry = b""
        self.skip = 0
        self.args_left: int | None = None

    def feed(self, chunk: bytes | bytearray) -> bool:
        """True once the command is complete (or cannot be followed)."""
        pos, n = 0, len(chunk)
        while True:
            if self.skip:
                take = min(self.skip, n - pos)
                self.skip -= take
                pos += take
                if self.skip:
                    return False
                if self.args_left == 0:
                    return True
            nl = chunk.find(b"\n", pos)
            if nl < 0:
                self.carry += chunk[pos:]
                return len(self.carry) > HEADER_WINDOW
            line = self.carry + chunk[pos : nl + 1]
            self.carry = b""
            pos = nl + 1
            value = parse_len(line[1:-2]) if line.endswith(CRLF) else None
            if value is None:
                return True
            if self.args_left is None:
                self.args_left = value
                if value <= 0:
                    return True
                continue
            if value < 0 or self.args_left <= 0:
                return True
            self.args_left -= 1
            self.skip = value + 2


def py_scan_run(
    buf: bytes | bytearray, pos: int, max_bulk_len: int, special: Set[bytes] | None
) -> tuple[int, int, int, str | None]:
    """Walk complete commands from ``pos`` whose names are not special.

    Returns ``(end, count, stop, message)``: ``buf[pos:end]`` holds ``count``
    ordinary commands (empty ones included, not counted), and ``stop`` says
    what is at ``end``: nothing left, an incomplete command, a special one
    (``special`` None: every command is), an inline one, or an error.
    """
    n = len(buf)
    count = 0
    while pos < n:
        if buf[pos] != 42:  # '*'
            return pos, count, STOP_INLINE, None
        try:
            end, name = command_end(buf, pos, max_bulk_len)
        except ProtocolError as exc:
            return pos, count, STOP_ERROR, str(exc)
        if end == INCOMPLETE:
            return pos, count, STOP_INCOMPLETE, None
        if name is not None:
            if special is None or (len(name) <= MAX_NAME and name.upper() in special):
                return pos, count, STOP_SPECIAL, None
            count += 1
        pos = end
    return pos, count, STOP_DONE, None


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
_MAX_AGGREGATE = 1 << 40


def reply_end(buf: bytes | bytearray, pos: int) -> int:
    """End of the RESP2/RESP3 reply starting at ``pos``, or INCOMPLETE.

    Delimits without decoding. Attributes (``|``) are not replies on their
    own: the value after them belongs to the same reply. Raises ValueError on
    a header it cannot read.
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
        if kind in _BLOB_TYPES or kind in _ARRAY_TYPES or kind in _PAIR_TYPES:
            value = parse_len(buf[pos + 1 : nl])
            if value is None or value > _MAX_AGGREGATE:
                raise ValueError("unparseable reply header")
            if kind in _BLOB_TYPES:
                if value >= 0:
                    if n - nl < value + 4:
                        return INCOMPLETE
                    pos = nl + 4 + value
                    continue
            elif kind in _ARRAY_TYPES:
                need += max(value, 0)
            else:
                need += 2 * max(value, 0) + (1 if kind == 124 else 0)  # '|'
        pos = nl + 2
    return pos


def py_scan_replies(
    buf: bytes | bytearray, pos: int, want: int, need: int = 0, push: bool = False
) -> tuple[int, int, int, bool, int]:
    """Walk replies item by item until ``want`` are complete or bytes run out.

    Returns ``(end, replies, need, push, blob_left)``. Everything up to
    ``end`` can be passed on at once, even the first part of a reply still
    arriving; ``need`` and ``push`` describe that unfinished reply (pass them
    back in to resume), and ``blob_left`` > 0 says ``end`` is inside a string
    payload still missing that many bytes, CRLF included. Pushes (``>``) are
    walked but not counted. Raises ValueError on a header it cannot read.
    """
    n = len(buf)
    replies = 0
    while True:
        if need == 0:
            if replies >= want or pos >= n:
                break
            push = buf[pos] == 62  # '>'
            need = 1
        if pos >= n:
            break
        nl = buf.find(CRLF, pos)
        if nl < 0:
            break
        kind = buf[pos]
        value = 0
        if kind in _BLOB_TYPES or kind in _ARRAY_TYPES or kind in _PAIR_TYPES:
            parsed = parse_len(buf[pos + 1 : nl])
            if parsed is None or parsed > _MAX_AGGREGATE:
                raise ValueError("unparseable reply header")
            value = parsed
        need -= 1
        if kind in _BLOB_TYPES and value >= 0:
            data = nl + 2
            if n - data < value + 2:
                return n, replies, need, push, value + 2 - (n - data)
            pos = data + value + 2
        else:
            if kind in _ARRAY_TYPES:
                need += max(value, 0)
            elif kind in _PAIR_TYPES:
                need += 2 * max(value, 0) + (1 if kind == 124 else 0)  # '|'
            pos = nl + 2
        if need == 0 and not push:
            replies += 1
    return pos, replies, need, push, 0


try:
    from kvproxy.proxy._scan import scan_replies as scan_replies
    from kvproxy.proxy._scan import scan_run as scan_run
except ImportError:  # not built: the reference implementations do the work
    scan_run = py_scan_run
    scan_replies = py_scan_replies
