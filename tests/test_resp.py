"""The sans-IO scanners: where commands and replies end, and what is refused."""

from __future__ import annotations

import random

import pytest

from kvproxy.proxy import resp
from kvproxy.proxy.replies import encode, error
from kvproxy.proxy.resp import (
    INCOMPLETE,
    ProtocolError,
    command_args,
    command_end,
    inline_end,
    reply_end,
)

SET = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\n\x00x\r\n"


def test_command_end_and_name() -> None:
    end, name = command_end(SET + b"*1\r\n", 0)
    assert (end, name) == (len(SET), b"SET")
    assert command_args(SET, 0, end) == [b"SET", b"k", b"v\r\n\x00x"]


@pytest.mark.parametrize("cut", range(1, len(SET)))
def test_every_prefix_is_incomplete(cut: int) -> None:
    assert command_end(SET[:cut], 0)[0] == INCOMPLETE


def test_empty_commands_have_no_name() -> None:
    assert command_end(b"*0\r\n", 0) == (4, None)
    assert command_end(b"*-1\r\n", 0) == (5, None)


@pytest.mark.parametrize("data", [b"*x\r\n", b"*1\r\n:1\r\n", b"*1\r\n$-1\r\n",
                                  b"*1\r\n$3\r\nabcde", b"*1\r\n$" + b"1" * 40,
                                  b"*99999999999\r\n"])
def test_malformed_commands_raise(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        command_end(data, 0)


def test_bulk_limit_is_configurable() -> None:
    with pytest.raises(ProtocolError):
        command_end(b"*1\r\n$11\r\n", 0, max_bulk_len=10)
    assert command_end(b"*1\r\n$10\r\n", 0, max_bulk_len=10)[0] == INCOMPLETE


def test_inline_end() -> None:
    assert inline_end(b"PING\r\nGET", 0) == 6
    assert inline_end(b"PING\nGET", 0) == 5
    assert inline_end(b"PIN", 0) == INCOMPLETE


REPLIES = [
    b"+OK\r\n", b"-ERR x\r\n", b":12\r\n", b"$-1\r\n", b"$0\r\n\r\n", b"$3\r\na\r\n\r\n",
    b"*-1\r\n", b"*0\r\n", b"*2\r\n$1\r\na\r\n*1\r\n:1\r\n",
    b"%1\r\n+k\r\n*2\r\n:1\r\n:2\r\n", b"~1\r\n,1.5\r\n", b"_\r\n", b"#t\r\n",
    b">3\r\n$7\r\nmessage\r\n$1\r\nc\r\n$1\r\nm\r\n", b"=8\r\ntxt:abcd\r\n",
    b"|1\r\n+ttl\r\n:3\r\n$1\r\nv\r\n", b"!5\r\nERR x\r\n", b"(123\r\n",
]


@pytest.mark.parametrize("reply", REPLIES)
def test_reply_end_finds_each_reply(reply: bytes) -> None:
    assert reply_end(reply + b"+NEXT\r\n", 0) == len(reply)
    for cut in range(len(reply)):
        assert reply_end(reply[:cut], 0) == INCOMPLETE


def test_encode_resp2_and_resp3() -> None:
    value = {"state": "idle", "bytes": 3, "none": None, "list": ["a"]}
    assert encode(value) == (b"*8\r\n$5\r\nstate\r\n$4\r\nidle\r\n$5\r\nbytes\r\n:3\r\n"
                             b"$4\r\nnone\r\n$-1\r\n$4\r\nlist\r\n*1\r\n$1\r\na\r\n")
    assert encode(value, resp3=True).startswith(b"%4\r\n")
    assert encode(None, resp3=True) == b"_\r\n"
    assert error("ERR two\r\nlines") == b"-ERR two  lines\r\n"


# ---- the C scanner gives the reference's answers ---------------------------

try:
    from kvproxy.proxy import _scan
except ImportError:  # pragma: no cover - the project's setup builds it
    _scan = None  # type: ignore[assignment]

needs_c = pytest.mark.skipif(_scan is None, reason="C scanner not built (pip install -e .)")

SPECIAL_NAMES = frozenset({b"MULTI", b"AUTH", b"KVCLOUD"})
CORPUS = [
    SET * 3, SET + b"*1\r\n$5\r\nmulti\r\n" + SET, b"*0\r\n*-1\r\n" + SET, SET + b"PING\r\n",
    SET[:-3], b"*2\r\n$3\r\nGET\r\n$1\r\n", b"*1\r\n$-1\r\n", b"*1\r\n:1\r\n",
    b"*01\r\n$4\r\nPING\r\n", b"*1\r\n$04\r\nPING\r\n", b"*+1\r\n", b"* 1\r\n",
    b"*1\r\n$" + b"9" * 31, b"*1\r\n$" + b"9" * 40,
    b"*" + b"1" * 33, b"*" + b"1" * 34, b"*" + b"1" * 35, b"*1\r\n$4\r\nPINGxx\r\n",
    b"*1\r\n$7\r\nkvcloud\r\n", b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n",
    b"*1\r\n$17\r\nAAAAAAAAAAAAAAAAA\r\n",
]


@needs_c
@pytest.mark.parametrize("index", range(len(CORPUS)))
@pytest.mark.parametrize("special", [SPECIAL_NAMES, None])
def test_scan_run_matches_reference(index: int, special: frozenset[bytes] | None) -> None:
    buf = CORPUS[index]
    for cut in range(len(buf) + 1):
        assert _scan.scan_run(buf[:cut], 0, 100, special) == resp.py_scan_run(
            buf[:cut], 0, 100, special), buf[:cut]


@needs_c
def test_scan_run_matches_reference_on_random_mutations() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        data = bytearray(rng.choice(CORPUS) * rng.randint(1, 3))
        for _ in range(rng.randint(0, 3)):
            data[rng.randrange(len(data))] = rng.choice(b"*$\r\n-0123456789aZ")
        buf = bytes(data)
        assert _scan.scan_run(buf, 0, 100, SPECIAL_NAMES) == resp.py_scan_run(
            buf, 0, 100, SPECIAL_NAMES), buf


def _walk(scan, stream: bytes, cuts: list[int], want: int) -> tuple[bytes, int]:  # type: ignore[no-untyped-def]
    """Feed ``stream`` in pieces the way the link does; return what it passed on."""
    out, kept, need, push, blob_left, replies = [], b"", 0, False, 0, 0
    for piece in (stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)):
        if blob_left:
            take = min(blob_left, len(piece))
            out.append(piece[:take])
            blob_left -= take
            piece = piece[take:]
            if blob_left:
                continue
            if need == 0 and not push:
                replies += 1
        buf = kept + piece
        end, got, need, push, blob_left = scan(buf, 0, want - replies, need, push)
        out.append(buf[:end])
        replies += got
        kept = buf[end:]
    return b"".join(out), replies


@needs_c
def test_scan_replies_matches_reference() -> None:
    rng = random.Random(11)
    stream = b"".join(REPLIES)
    for want in range(len(REPLIES) + 2):
        for cut in range(len(stream) + 1):
            assert _scan.scan_replies(stream[:cut], 0, want, 0, False) == resp.py_scan_replies(
                stream[:cut], 0, want), (want, cut)
    for _ in range(3000):
        data = bytearray(b"".join(rng.sample(REPLIES, 4)))
        data[rng.randrange(len(data))] = rng.choice(b"*$%>|\r\n-0123456789")
        buf = bytes(data)
        try:
            expected: object = resp.py_scan_replies(buf, 0, 3)
        except ValueError:
            expected = ValueError
        try:
            got: object = _scan.scan_replies(buf, 0, 3, 0, False)
        except ValueError:
            got = ValueError
        assert got == expected, buf


@pytest.mark.parametrize("scan", [resp.py_scan_replies, resp.scan_replies])
def test_replies_pass_on_in_pieces_and_count_once(scan) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(5)
    big = b"*3\r\n$70000\r\n" + b"a" * 70000 + b"\r\n:1\r\n$5\r\nhello\r\n"
    stream = b"".join(REPLIES) + big + b">2\r\n+p\r\n+q\r\n" + b"+LAST\r\n"
    # pushes are passed on but not counted
    total = sum(not reply.startswith(b">") for reply in REPLIES) + 2
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(1, 40)))
        passed, replies = _walk(scan, stream, cuts, total)
        assert passed == stream
        assert replies == total


def test_scan_run_reports_runs_and_stops() -> None:
    run = resp.py_scan_run
    assert run(SET * 2, 0, 100, SPECIAL_NAMES) == (2 * len(SET), 2, resp.STOP_DONE, None)
    multi = b"*1\r\n$5\r\nMulti\r\n"
    assert run(SET + multi, 0, 100, SPECIAL_NAMES) == (len(SET), 1, resp.STOP_SPECIAL, None)
    assert run(SET + b"PING\r\n", 0, 100, SPECIAL_NAMES)[2] == resp.STOP_INLINE
    assert run(SET + SET[:5], 0, 100, SPECIAL_NAMES)[2] == resp.STOP_INCOMPLETE
    assert run(b"*1\r\n$-1\r\n", 0, 100, None) == (0, 0, resp.STOP_ERROR, "invalid bulk length")


def test_command_need_is_a_lower_bound_that_grows() -> None:
    big = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\n" + b"x" * 100_000 + b"\r\n"
    for cut in (1, 10, 20, 30, 1000, 50_000, len(big) - 1):
        need = resp.command_need(big[:cut], 0)
        assert cut < need <= len(big)
    assert resp.command_need(big[:30], 0) == len(big)
    assert resp.command_need(b"PIN", 0) == 4


def test_request_tracker_finds_the_end_in_any_pieces() -> None:
    rng = random.Random(3)
    command = b"*4\r\n$4\r\nMSET\r\n$1\r\nk\r\n$70000\r\n" + b"v" * 70000 + b"\r\n$0\r\n\r\n"
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(command)), rng.randint(1, 30)))
        tracker = resp.RequestTracker()
        pieces = [command[a:b] for a, b in zip([0, *cuts], [*cuts, len(command)], strict=True)]
        done = [tracker.feed(piece) for piece in pieces]
        assert done[-1] is True and not any(done[:-1])
    assert resp.RequestTracker().feed(b"*1\r\n$x\r\n") is True  # the scanner will say why
