"""KVCLOUD is answered by the proxy itself, in order, in any letter case."""

from __future__ import annotations

import time

import pytest
import redis

from kvproxy.proxy.kvcloud import HELP, STATUS_FIELDS
from tests.servers import Proxy, Upstream, raw_exchange

CONF = """
[kvcloud]
upstream_password = {password}
prefix = kvrocks/test
[provider aws]
type = s3
bucket = test-bucket
secret_access_key = AKIA-SECRET-DO-NOT-SHOW
access_key_id = AKIAEXAMPLE
[provider az]
type = azure
container = kv
account_name = acct
account_key = AZURE-SECRET-DO-NOT-SHOW
"""


@pytest.fixture
def kv(make_upstream, make_proxy) -> Proxy:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()
    return make_proxy(server.port)  # type: ignore[no-any-return]


def test_local_reply_keeps_its_place_in_a_pipeline(kv: Proxy) -> None:
    payload = (b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\n1\r\n"
               b"*2\r\n$7\r\nKVCLOUD\r\n$6\r\nSTATUS\r\n"
               b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n")
    reply = raw_exchange(kv.port, payload)
    assert reply.startswith(b"+OK\r\n*%d\r\n$5\r\nstate\r\n$4\r\nidle\r\n" % (
        2 * len(STATUS_FIELDS)))
    assert reply.endswith(b"$1\r\n1\r\n")


def test_local_reply_between_many_forwarded_commands(kv: Proxy) -> None:
    client = kv.client()
    pipe = client.pipeline(transaction=False)
    for i in range(500):
        pipe.set(f"k{i}", i)
        if i % 50 == 0:
            pipe.execute_command("kvcloud", "help")
        pipe.get(f"k{i}")
    results = pipe.execute()
    gets = [r for r in results if isinstance(r, bytes)]
    helps = [r for r in results if isinstance(r, list)]
    assert gets == [str(i).encode() for i in range(500)]
    assert len(helps) == 10


@pytest.mark.parametrize("spelling", ["KVCLOUD", "kvcloud", "KvClOuD"])
def test_any_letter_case(kv: Proxy, spelling: str) -> None:
    status = kv.client().execute_command(spelling, "status".swapcase())
    assert status[0:2] == [b"state", b"idle"]


def test_help_lists_every_subcommand(kv: Proxy) -> None:
    lines = [line.decode() for line in kv.client().execute_command("KVCLOUD", "HELP")]
    assert len(lines) == len(HELP)
    for sub in HELP:
        assert any(line.startswith(f"KVCLOUD {sub}") for line in lines), sub


def test_status_fields_in_resp2_and_resp3(kv: Proxy) -> None:
    flat = kv.client().execute_command("KVCLOUD", "STATUS")
    assert [k.decode() for k in flat[0::2]] == list(STATUS_FIELDS)
    resp3 = kv.client(protocol=3).execute_command("KVCLOUD", "STATUS")
    assert isinstance(resp3, dict)
    assert resp3[b"state"] == b"idle"
    assert list(resp3) == [k.encode() for k in STATUS_FIELDS]


def test_status_of_unknown_job(kv: Proxy) -> None:
    with pytest.raises(redis.ResponseError, match="no such job"):
        kv.client().execute_command("KVCLOUD", "STATUS", "nope")


def test_unknown_subcommand_lists_valid_ones(kv: Proxy) -> None:
    with pytest.raises(redis.ResponseError) as caught:
        kv.client().execute_command("KVCLOUD", "FROBNICATE")
    message = str(caught.value)
    assert "FROBNICATE" in message
    for sub in HELP:
        assert sub in message
    with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
        kv.client().execute_command("KVCLOUD")


def test_config_hides_every_secret(make_upstream, make_proxy) -> None:  # type: ignore[no-untyped-def]
    server = make_upstream(password="upstream-pw-123")
    proxy = make_proxy(server.port, CONF.format(password="upstream-pw-123"))
    client = proxy.client(password="upstream-pw-123")
    shown = client.execute_command("KVCLOUD", "CONFIG")
    text = b" ".join(shown)
    for secret in (b"upstream-pw-123", b"AKIA-SECRET-DO-NOT-SHOW", b"AZURE-SECRET-DO-NOT-SHOW"):
        assert secret not in text
    fields = dict(zip(shown[0::2], shown[1::2], strict=True))
    assert fields[b"upstream_password"] == b"***"
    assert fields[b"provider.aws.secret_access_key"] == b"***"
    assert fields[b"provider.az.account_key"] == b"***"
    assert fields[b"provider.aws.access_key_id"] == b"AKIAEXAMPLE"
    assert fields[b"prefix"] == b"kvrocks/test"
    assert "upstream-pw-123" not in proxy.log()


def test_refresh_reloads_and_refuses_a_bad_file(make_upstream, make_proxy) -> None:  # type: ignore[no-untyped-def]
    server = make_upstream()
    proxy = make_proxy(server.port, "[kvcloud]\nprefix = first\n")
    client = proxy.client()

    def prefix() -> bytes:
        shown = client.execute_command("KVCLOUD", "CONFIG")
        return dict(zip(shown[0::2], shown[1::2], strict=True))[b"prefix"]  # type: ignore[no-any-return]

    assert prefix() == b"first"
    assert proxy.conf_path is not None
    proxy.conf_path.write_text("[kvcloud]\nprefix = second\n")
    reply = client.execute_command("KVCLOUD", "REFRESH")
    assert reply[0:2] == [b"status", b"reloaded"]
    assert prefix() == b"second"

    proxy.conf_path.write_text("[kvcloud]\nprefix = third\nparallelism = lots\n")
    with pytest.raises(redis.ResponseError) as caught:
        client.execute_command("KVCLOUD", "REFRESH")
    assert "parallelism" in str(caught.value) and "old one stays" in str(caught.value)
    assert prefix() == b"second"

    proxy.conf_path.write_text("[kvcloud]\nprefx = typo\n")
    with pytest.raises(redis.ResponseError, match="unknown key 'prefx'"):
        client.execute_command("KVCLOUD", "REFRESH")
    proxy.conf_path.unlink()
    with pytest.raises(redis.ResponseError, match="cannot read"):
        client.execute_command("KVCLOUD", "REFRESH")
    assert prefix() == b"second"
    assert client.ping() is True


def test_refresh_reports_keys_that_need_a_restart(make_upstream, make_proxy) -> None:  # type: ignore[no-untyped-def]
    server = make_upstream()
    proxy = make_proxy(server.port, "[kvcloud]\n")
    assert proxy.conf_path is not None
    # log_level applies at once; listen comes from the command line, which still
    # wins; server_dir needs a restart.
    proxy.conf_path.write_text(
        "[kvcloud]\nlisten = 127.0.0.1:1\nserver_dir = /tmp/x\nlog_level = debug\n")
    client = proxy.client()
    assert client.ping() is True
    assert "DEBUG" not in proxy.log()
    reply = client.execute_command("KVCLOUD", "REFRESH")
    fields = dict(zip(reply[0::2], reply[1::2], strict=True))
    assert fields[b"restart_required"] == b"server_dir"
    assert proxy.client().ping() is True
    time.sleep(0.2)
    assert "DEBUG kvproxy.session: client" in proxy.log()
    assert proxy.client().ping() is True


@pytest.mark.parametrize("words", [("UPLOAD", "nosuch", "WAIT"), ("RESTORE", "KEEP"),
                                   ("RESTORE", "REVERT", "WAIT"), ("VERIFY", "nosuch", "WAIT")])
def test_a_waiting_command_refused_at_once_lets_the_client_go_on(kv: Proxy,
                                                                  words: tuple[str, ...]) -> None:
    """A refusal made without waiting must end the wait like a late reply would."""
    reply = raw_exchange(kv.port, b"".join([
        b"*%d\r\n" % (len(words) + 1), b"$7\r\nKVCLOUD\r\n",
        *(b"$%d\r\n%s\r\n" % (len(w), w.encode()) for w in words),
        b"*1\r\n$4\r\nPING\r\n"]))
    assert reply.startswith(b"-ERR ") and reply.endswith(b"\r\n+PONG\r\n"), reply
