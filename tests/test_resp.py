"""The sans-IO scanners: where commands and replies end, and what is refused."""

from __future__ import annotations

import pytest

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
