"""The C scanners give the reference scanners' answers on any bytes, whole or in pieces.

``kvproxy.proxy._scan`` replaces ``resp.py_scan_run`` and ``resp.py_scan_replies``
on the hot path, so a difference between them is a proxy that behaves one way
in development (no compiler) and another in production. Hypothesis builds
valid RESP commands and RESP2/RESP3 replies (pushes, attributes, maps, sets,
blob errors, verbatim strings), then damages them the ways a broken or hostile
peer would: flipped and inserted bytes (``\\xff``, NUL, stray CR/LF),
truncations, splices, length headers replaced by huge, negative or non-digit
ones, lost CRLFs and inline lines. Both scanners get the same bytes at random
offsets with random ``special`` sets and resume states, and must return equal
tuples or raise the same exception type.

Resumption is checked too: a stream fed in pieces, the way the session and the
link feed what arrives, ends where the whole stream ends with the same count.

The default number of examples keeps the module at a few seconds. For a long
run, set ``KVPROXY_FUZZ_EXAMPLES``, e.g.::

    KVPROXY_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_scan_agreement.py

Without the C extension the comparisons are skipped with a reason, except in
CI (``CI`` set), where they fail: CI must not pass on the slow path.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from kvproxy.proxy import resp

CRLF = b"\r\n"

EXAMPLES = int(os.environ.get("KVPROXY_FUZZ_EXAMPLES", "250"))
# No example database: failures print a reproduction blob instead of leaving a
# .hypothesis directory in the work tree.
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def in_ci() -> bool:
    """CI systems set CI (usually to "true"); an empty, "0" or "false" value means no."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def c_scan() -> ModuleType:
    """The C module, or a skip (a failure in CI) saying why it is not there.

    Decided once, before Hypothesis runs: a skip or failure raised inside a
    property would be shrunk and replayed like a bug.
    """
    try:
        from kvproxy.proxy import _scan
    except ImportError as exc:
        reason = f"kvproxy.proxy._scan not importable ({exc}); build it with pip install -e ."
        if in_ci():
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    return _scan


# ---- what valid traffic looks like ------------------------------------------

NAMES = [b"GET", b"get", b"SET", b"PING", b"ECHO", b"MULTI", b"multi", b"Exec", b"AUTH",
         b"auth", b"KVCLOUD", b"kvCloud", b"HELLO", b"SUBSCRIBE", b"", b"A" * 16, b"a" * 16,
         b"A" * 17, b"\xffX", b"ping\x00"]
SPECIAL_POOL = [b"MULTI", b"EXEC", b"AUTH", b"KVCLOUD", b"HELLO", b"SUBSCRIBE", b"",
                b"A" * 16, b"A" * 17, b"\xffX", b"GET"]


def bulk(prefix: bytes, payload: bytes) -> bytes:
    return prefix + b"%d\r\n" % len(payload) + payload + CRLF


def encode_command(args: Sequence[bytes]) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(bulk(b"$", arg) for arg in args)


def line_text(raw: bytes) -> bytes:
    """A simple string's text: anything but CR and LF."""
    return raw.replace(b"\r", b"").replace(b"\n", b"")


arguments = st.one_of(st.sampled_from(NAMES), st.binary(max_size=24))
inline_lines = st.binary(max_size=16).map(lambda raw: line_text(raw) + CRLF)
commands = st.one_of(
    st.lists(arguments, min_size=1, max_size=4).map(encode_command),
    st.sampled_from([b"*0\r\n", b"*-1\r\n", b"*1\r\n$4\r\nPING\r\n"]),
    inline_lines,
)

scalars = st.one_of(
    st.tuples(st.sampled_from([b"+", b"-", b"(", b","]), st.binary(max_size=12)).map(
        lambda t: t[0] + line_text(t[1]) + CRLF),
    st.integers(-(2**63), 2**63).map(lambda i: b":%d\r\n" % i),
    st.sampled_from([b"_\r\n", b"#t\r\n", b"#f\r\n", b"$-1\r\n", b"*-1\r\n", b"%-1\r\n",
                     b"~-1\r\n", b"!-1\r\n", b"=-1\r\n", b"$0\r\n\r\n"]),
    st.tuples(st.sampled_from([b"$", b"!", b"="]), st.binary(max_size=24)).map(
        lambda t: bulk(t[0], b"txt:" + t[1] if t[0] == b"=" else t[1])),
)


def aggregates(children: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    """Arrays, sets and pushes of items; maps of pairs; attributes before a value."""
    pairs = st.lists(st.tuples(children, children), max_size=3)
    return st.one_of(
        st.tuples(st.sampled_from([b"*", b"~", b">"]), st.lists(children, max_size=4)).map(
            lambda t: t[0] + b"%d\r\n" % len(t[1]) + b"".join(t[1])),
        pairs.map(lambda kv: b"%%%d\r\n" % len(kv) + b"".join(k + v for k, v in kv)),
        st.tuples(pairs, children).map(
            lambda t: b"|%d\r\n" % len(t[0]) + b"".join(k + v for k, v in t[0]) + t[1]),
    )


replies = st.recursive(scalars, aggregates, max_leaves=10)

# ---- how a peer breaks it ---------------------------------------------------

TOKENS = [b"\xff", b"\x00", b"\r", b"\n", CRLF, b"$", b"*", b"-", b"-1", b"0", b"9" * 20,
          b"PING\r\n", b"GET k\n", b"*3\r\n", b"$4\r\n", b"$-5\r\n", b">2\r\n", b"|1\r\n",
          b"%1\r\n", b"~1\r\n", b"!3\r\nERR\r\n", b"=7\r\ntxt:abc\r\n", b"+OK\r\n",
          b"*2\r\n\xff3\r\nGET\r\n"]
LENGTHS = [b"", b"-", b"-1", b"-0", b"-2", b"00", b"01", b"x", b"1x", b"+1", b" 1", b"1 ",
           b"\xff", b"9" * 18, b"9" * 19, b"9" * 33, b"2147483647", b"2147483648",
           b"1099511627776", b"1099511627777", b"536870912", b"536870913",
           b"-9223372036854775808", b"99999999999999999999999"]
HEADER = re.compile(rb"[*$%~>|!=](-?[0-9]+)\r\n")


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[bytes]) -> bytes:
    """``base`` with up to five of the damages listed in the module docstring."""
    data = bytearray(draw(base))
    for _ in range(draw(st.integers(0, 5))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "splice",
                                   "length", "crlf", "inline"]))
        at = draw(st.integers(0, len(data)))
        if op == "flip" and data:
            at = min(at, len(data) - 1)
            data[at] = draw(st.one_of(st.integers(0, 255), st.sampled_from(b"\xff\x00\r\n$*-")))
        elif op == "insert":
            data[at:at] = draw(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=4)))
        elif op == "delete":
            data[at : at + draw(st.integers(1, 8))] = b""
        elif op == "truncate":
            del data[at:]
        elif op == "splice":
            start = draw(st.integers(0, len(data)))
            piece = bytes(data[start : start + draw(st.integers(1, 24))])
            data[at:at] = piece
        elif op == "length":
            headers = list(HEADER.finditer(data))
            if headers:
                match = draw(st.sampled_from(headers))
                data[match.start(1) : match.end(1)] = draw(st.sampled_from(LENGTHS))
        elif op == "crlf":
            ends = [m.start() for m in re.finditer(rb"\r\n", data)]
            if ends:
                where = draw(st.sampled_from(ends))
                data[where : where + 2] = draw(st.sampled_from([b"", b"\r", b"\n", b"\n\r"]))
        elif op == "inline":
            data[at:at] = draw(inline_lines)
    return bytes(data)


command_streams = st.lists(commands, max_size=6).map(b"".join)
reply_streams = st.lists(replies, max_size=5).map(b"".join)
# Each scanner also gets the other's traffic and plain noise.
any_stream = st.one_of(mutated(command_streams), mutated(reply_streams),
                       mutated(st.lists(st.one_of(commands, replies), max_size=5).map(b"".join)),
                       st.binary(max_size=80))
# Any container answers `in` for the reference; the C module asks the same way.
specials = st.one_of(st.none(), st.frozensets(st.sampled_from(SPECIAL_POOL)),
                     st.sets(st.sampled_from(SPECIAL_POOL)),
                     st.sets(st.sampled_from(SPECIAL_POOL)).map(lambda s: dict.fromkeys(s).keys()))
max_bulks = st.one_of(st.sampled_from([0, 1, 4, 100, resp.DEFAULT_MAX_BULK_LEN, 2**63 - 1,
                                       2**70, -1, -(2**70)]), st.integers(0, 64))
wants = st.one_of(st.integers(-1, 6), st.sampled_from([2**31, 2**62]))
needs = st.one_of(st.integers(-3, 8), st.sampled_from([2**40, 2**41 + 1, 2**62]))


def outcome(scan: Callable[..., Any], *args: Any) -> Any:
    """What a scanner returned, or the type of what it raised."""
    try:
        return scan(*args)
    except Exception as exc:  # noqa: BLE001 - the type itself is compared
        return type(exc)


def as_type(buf: bytes, mutable: bool) -> bytes | bytearray:
    return bytearray(buf) if mutable else buf


# ---- one call, both scanners ------------------------------------------------

PING_ECHO = encode_command([b"PING"]) + encode_command([b"ECHO", b"x"])


@FUZZ
@given(buf=any_stream, pos=st.integers(0, 100), max_bulk=max_bulks, special=specials,
       mutable=st.booleans())
@example(buf=PING_ECHO + b"*2\r\n\xff3\r\nGET\r\n", pos=0, max_bulk=100,
         special=frozenset(), mutable=False)
@example(buf=b"*1\r\n\x00", pos=0, max_bulk=100, special=None, mutable=True)
def test_scan_run_agrees(c_scan: ModuleType, buf: bytes, pos: int, max_bulk: int,
                         special: frozenset[bytes] | None, mutable: bool) -> None:
    scan = c_scan.scan_run
    pos = min(pos, len(buf) + 1)
    data = as_type(buf, mutable)
    assert outcome(scan, data, pos, max_bulk, special) == outcome(
        resp.py_scan_run, data, pos, max_bulk, special)


@pytest.mark.parametrize("byte", range(256))
def test_every_byte_in_place_of_dollar_is_named_alike(c_scan: ModuleType, byte: int) -> None:
    """The message quotes the byte as chr() does, NUL and bytes >= 0x80 included."""
    buf = PING_ECHO + b"*2\r\n" + bytes([byte]) + b"3\r\nGET\r\n"
    expected = resp.py_scan_run(buf, 0, 100, frozenset())
    if byte != ord("$"):
        assert expected == (len(PING_ECHO), 2, resp.STOP_ERROR, f"expected '$', got '{chr(byte)}'")
    assert c_scan.scan_run(buf, 0, 100, frozenset()) == expected


@FUZZ
@given(buf=any_stream, pos=st.integers(0, 100), want=wants, need=needs, push=st.booleans(),
       mutable=st.booleans())
def test_scan_replies_agrees(c_scan: ModuleType, buf: bytes, pos: int, want: int, need: int,
                             push: bool, mutable: bool) -> None:
    scan = c_scan.scan_replies
    pos = min(pos, len(buf) + 1)
    data = as_type(buf, mutable)
    assert outcome(scan, data, pos, want, need, push) == outcome(
        resp.py_scan_replies, data, pos, want, need, push)


# ---- in pieces, as it arrives -----------------------------------------------

def pieces(stream: bytes, cuts: Sequence[int]) -> list[bytes]:
    bounds = [0, *sorted(min(c, len(stream)) for c in cuts), len(stream)]
    return [stream[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def run_in_pieces(scan: Callable[..., tuple[int, int, int, str | None]], parts: list[bytes],
                  max_bulk: int, special: frozenset[bytes] | None,
                  ) -> tuple[int, int, int, str | None]:
    """Keep what a scan could not finish and scan it again with the next piece."""
    consumed = count = 0
    pending = b""
    stop, message = resp.STOP_DONE, None
    for part in parts:
        pending += part
        end, got, stop, message = scan(pending, 0, max_bulk, special)
        consumed += end
        count += got
        pending = pending[end:]
        if stop not in (resp.STOP_DONE, resp.STOP_INCOMPLETE):
            break
    return consumed, count, stop, message


def replies_in_pieces(scan: Callable[..., tuple[int, int, int, bool, int]], parts: list[bytes],
                      want: int) -> tuple[int, int, int, bool, int]:
    """Pass on what each scan allows, skip string payloads by count, resume the rest."""
    passed = replies = need = blob_left = 0
    push = False
    pending = b""
    for part in parts:
        if blob_left:
            taken = min(blob_left, len(part))
            passed += taken
            blob_left -= taken
            part = part[taken:]
            if blob_left:
                continue
            if need == 0 and not push:
                replies += 1
        pending += part
        end, got, need, push, blob_left = scan(pending, 0, want - replies, need, push)
        passed += end
        replies += got
        pending = pending[end:]
    return passed, replies, need, push, blob_left


@FUZZ
@given(stream=mutated(command_streams), cuts=st.lists(st.integers(0, 400), max_size=12),
       max_bulk=max_bulks, special=specials)
def test_commands_in_pieces_end_where_the_whole_stream_ends(
        c_scan: ModuleType, stream: bytes, cuts: list[int], max_bulk: int,
        special: frozenset[bytes] | None) -> None:
    results = []
    for scan in (resp.py_scan_run, c_scan.scan_run):
        whole = outcome(scan, stream, 0, max_bulk, special)
        assert outcome(run_in_pieces, scan, pieces(stream, cuts), max_bulk, special) == whole
        for cut in range(len(stream) + 1):
            assert outcome(run_in_pieces, scan, pieces(stream, [cut]), max_bulk,
                           special) == whole, cut
        results.append(whole)
    assert results[0] == results[1]


@FUZZ
@given(stream=st.one_of(reply_streams, mutated(reply_streams)),
       cuts=st.lists(st.integers(0, 400), max_size=12), want=st.integers(0, 6))
def test_replies_in_pieces_end_where_the_whole_stream_ends(
        c_scan: ModuleType, stream: bytes, cuts: list[int], want: int) -> None:
    results = []
    for scan in (resp.py_scan_replies, c_scan.scan_replies):
        whole = outcome(scan, stream, 0, want, 0, False)
        assert outcome(replies_in_pieces, scan, pieces(stream, cuts), want) == whole
        for cut in range(len(stream) + 1):
            assert outcome(replies_in_pieces, scan, pieces(stream, [cut]), want) == whole, cut
        results.append(whole)
    assert results[0] == results[1]
