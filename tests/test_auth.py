"""Authentication through the proxy: the server's answers, never the shared link's rights."""

from __future__ import annotations

import pytest
import redis

from kvproxy.proxy.kvcloud import STATUS_FIELDS
from tests.servers import Proxy, Upstream, cmd, raw_exchange

PASSWORD = "s3cret-upstream"


UNAUTHENTICATED_SCRIPT = b"".join([
    cmd(b"GET", b"x"), cmd(b"SET", b"x", b"1"), cmd(b"DEL", b"x"), cmd(b"KEYS", b"*"),
    cmd(b"CONFIG", b"GET", b"dir"), cmd(b"FLUSHALL"), cmd(b"DBSIZE"), cmd(b"PING"),
    cmd(b"INFO"), cmd(b"SELECT", b"1"), cmd(b"MULTI"), cmd(b"EXEC"),
    cmd(b"AUTH", b"wrong-password"), cmd(b"GET", b"x"),
])


@pytest.fixture
def protected(make_upstream, make_proxy) -> tuple[Upstream, Proxy]:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream(password=PASSWORD)
    server.client().set("guarded", "value")
    proxy = make_proxy(server.port, f"[kvcloud]\nupstream_password = {PASSWORD}\n")
    return server, proxy


def test_unauthenticated_client_gets_exactly_what_the_server_answers(
        protected: tuple[Upstream, Proxy]) -> None:
    server, proxy = protected
    direct = raw_exchange(server.port, UNAUTHENTICATED_SCRIPT)
    proxied = raw_exchange(proxy.port, UNAUTHENTICATED_SCRIPT)
    assert direct.startswith(b"-NOAUTH Authentication required.\r\n")
    assert proxied == direct
    assert server.client().get("guarded") == b"value"  # FLUSHALL did not run


def test_kvcloud_needs_authentication(protected: tuple[Upstream, Proxy]) -> None:
    _, proxy = protected
    reply = raw_exchange(proxy.port, cmd(b"KVCLOUD", b"STATUS") + cmd(b"KVCLOUD", b"HELP"))
    assert reply.startswith(b"-NOAUTH Authentication required.\r\n*10\r\n")


def test_auth_with_the_proxy_password_shares_the_upstream_connection(
        protected: tuple[Upstream, Proxy]) -> None:
    server, proxy = protected
    clients = [proxy.client(password=PASSWORD) for _ in range(8)]
    for n, client in enumerate(clients):
        assert client.set(f"shared:{n}", n) is True
        assert client.get("guarded") == b"value"
        assert client.execute_command("KVCLOUD", "STATUS")[1] == b"idle"
    # All eight authenticated clients ride on the proxy's shared connections
    # (4 by default, and 2 spares kept ready to be dedicated): none pinned.
    connections = server.client().client_list()
    assert len(connections) <= 4 + 2 + 1, connections  # and this CLIENT LIST


def test_wrong_password_is_refused_by_the_server(protected: tuple[Upstream, Proxy]) -> None:
    server, proxy = protected
    script = cmd(b"AUTH", b"nope") + cmd(b"GET", b"guarded")
    assert raw_exchange(proxy.port, script) == raw_exchange(server.port, script)
    assert "nope" not in proxy.log() and PASSWORD not in proxy.log()


def test_hello_3_with_auth(protected: tuple[Upstream, Proxy]) -> None:
    _, proxy = protected
    client = proxy.client(protocol=3, password=PASSWORD)
    assert client.get("guarded") == b"value"
    status = client.execute_command("KVCLOUD", "STATUS")
    assert isinstance(status, dict) and status[b"state"] == b"idle"


def test_another_identity_is_not_enough_for_kvcloud(protected: tuple[Upstream, Proxy]) -> None:
    server, proxy = protected
    # A Redis ACL user stands in for a Kvrocks namespace token: valid upstream, not admin.
    server.client().acl_setuser("tenant", enabled=True, passwords=["+tenant-pw"],
                                keys=["*"], commands=["+@all"])
    tenant = proxy.client(username="tenant", password="tenant-pw")
    assert tenant.get("guarded") == b"value"
    with pytest.raises(redis.exceptions.NoPermissionError, match="KVCLOUD"):
        tenant.execute_command("KVCLOUD", "STATUS")
    assert tenant.execute_command("KVCLOUD", "HELP")


def test_auth_without_a_configured_password_goes_to_the_server(
        make_upstream, make_proxy) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream(password=PASSWORD)
    proxy: Proxy = make_proxy(server.port)
    script = cmd(b"GET", b"k") + cmd(b"AUTH", PASSWORD.encode()) + cmd(b"SET", b"k", b"v") \
        + cmd(b"GET", b"k")
    assert raw_exchange(proxy.port, script) == (
        b"-NOAUTH Authentication required.\r\n+OK\r\n+OK\r\n$1\r\nv\r\n")


def test_kvrocks_namespace_token_is_not_admin(make_upstream, make_proxy) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream("kvrocks", password=PASSWORD)
    server.client().execute_command("NAMESPACE", "ADD", "tenant", "tenant-token")
    proxy: Proxy = make_proxy(server.port, f"[kvcloud]\nupstream_password = {PASSWORD}\n")
    tenant = proxy.client(password="tenant-token")
    tenant.set("ns-key", "1")
    assert tenant.get("ns-key") == b"1"
    with pytest.raises(redis.exceptions.NoPermissionError):
        tenant.execute_command("KVCLOUD", "STATUS")
    admin = proxy.client(password=PASSWORD)
    assert admin.get("ns-key") is None  # namespaces stay apart through the proxy
    assert admin.execute_command("KVCLOUD", "STATUS")[1] == b"idle"


def test_pipelined_auth_then_kvcloud_sees_the_auth(protected: tuple[Upstream, Proxy]) -> None:
    _, proxy = protected
    script = cmd("AUTH", "default", PASSWORD) + cmd("KVCLOUD", "STATUS") + cmd("GET", "guarded")
    reply = raw_exchange(proxy.port, script)
    assert reply.startswith(b"+OK\r\n*%d\r\n$5\r\nstate\r\n$4\r\nidle\r\n"
                            % (2 * len(STATUS_FIELDS)))
    assert reply.endswith(b"$5\r\nvalue\r\n")


def test_kvcloud_refused_when_the_server_wants_an_unconfigured_password(
        make_upstream, make_proxy) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream(password=PASSWORD)
    proxy: Proxy = make_proxy(server.port)
    client = proxy.client(password=PASSWORD)
    assert client.ping() is True
    with pytest.raises(redis.ResponseError, match="needs upstream_password"):
        client.execute_command("KVCLOUD", "STATUS")
    assert client.execute_command("KVCLOUD", "HELP")
    assert "requires a password" in proxy.log()


def test_proxy_password_the_server_does_not_take_is_never_accepted_locally(
        make_upstream, make_proxy) -> None:  # type: ignore[no-untyped-def]
    server: Upstream = make_upstream()  # no requirepass at all
    proxy: Proxy = make_proxy(server.port, f"[kvcloud]\nupstream_password = {PASSWORD}\n")
    script = cmd("AUTH", PASSWORD) + cmd("PING")
    assert raw_exchange(proxy.port, script) == raw_exchange(server.port, script)
    assert "rejected upstream_password" in proxy.log()
