"""Who a client is to the server: what AUTH and HELLO told, and what it may do.

Only the server knows whether an ``AUTH`` or ``HELLO`` succeeded, so these
commands travel in a batch of their own whose reply is watched; the proxy
answers ``AUTH`` itself only with its own password, once the server has
accepted that password on the proxy's links.
"""

from __future__ import annotations

import enum
import hmac

from kvproxy.proxy.batch import Batch
from kvproxy.proxy.commands import AUTH, CLIENT


class Auth(enum.Enum):
    #: The server wants a password this client has not given yet.
    NONE = "none"
    #: The server accepted a password or token that is not the proxy's.
    UPSTREAM = "upstream"
    #: No password is configured, or the server accepted the proxy's own.
    ADMIN = "admin"
    #: The proxy answered ``AUTH <upstream_password>`` itself (shared links).
    LOCAL = "local"


class Identity:
    """A client's authentication state, protocol, and the metadata to replay."""

    __slots__ = ("password", "auth", "resp3", "replay")

    def __init__(self, password: str | None) -> None:
        self.password = password.encode() if password is not None else None
        self.auth = Auth.ADMIN if password is None else Auth.NONE
        self.resp3 = False
        #: CLIENT SETINFO commands sent while shared, sent again on a dedicated link.
        self.replay: list[bytes] = []

    @property
    def authenticated(self) -> bool:
        return self.auth is not Auth.NONE

    @property
    def admin(self) -> bool:
        return self.auth is Auth.ADMIN or self.auth is Auth.LOCAL

    def is_proxy_password(self, candidate: bytes) -> bool:
        return self.password is not None and hmac.compare_digest(candidate, self.password)

    def observed(self, upper: bytes, args: list[bytes], raw: bytes | bytearray) -> Batch:
        """The batch for a command whose outcome, known to the server only, changes us."""
        if upper == CLIENT:
            command = bytes(raw)

            def remember(reply: bytes) -> None:
                if reply[:1] != b"-":
                    self.replay.append(command)

            return Batch(1, remember)
        password: bytes | None = None
        protocol: int | None = None
        if upper == AUTH:
            password = args[-1] if len(args) in (2, 3) else None
        else:  # HELLO [protover [AUTH user pass] [SETNAME name]]
            rest = list(args[1:])
            if rest and rest[0].isdigit():
                protocol = int(rest.pop(0))
            while rest:
                option = rest.pop(0).upper()
                if option == b"AUTH" and len(rest) >= 2:
                    password = rest[1]
                    del rest[:2]
                elif option == b"SETNAME" and rest:
                    rest.pop(0)

        def observe(reply: bytes) -> None:
            if reply[:1] == b"-":
                return
            if protocol is not None:
                self.resp3 = protocol == 3
            if password is not None:
                self.auth = Auth.ADMIN if self.is_proxy_password(password) else Auth.UPSTREAM

        return Batch(1, observe)
