"""Which commands the proxy must look at: the one table of connection state.

Everything not named here is stateless and may share the upstream connection
with other clients. A command that leaves state on the server connection (or
whose replies are not one per command) moves its client to a dedicated
upstream connection for the rest of its life; see docs/proxy.md.
"""

from __future__ import annotations

#: Commands that make the client's server connection stateful.
PIN = frozenset(
    name.encode()
    for name in (
        # identity and protocol
        "AUTH", "HELLO", "SELECT", "RESET", "CLIENT", "READONLY", "READWRITE", "ASKING",
        # transactions
        "MULTI", "WATCH",
        # blocking commands hold the connection until they are answered
        "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX",
        "BZMPOP", "XREAD", "XREADGROUP", "WAIT", "WAITAOF",
        # the server ends the connection
        "SHUTDOWN",
    )
)

#: Commands after which replies are no longer one per command (pushes,
#: replication streams, Kvrocks' raw file transfer, CLIENT REPLY): the
#: dedicated connection is then relayed as a byte stream.
RAW = frozenset(
    name.encode()
    for name in (
        "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "SYNC", "PSYNC",
        # one reply per channel, and pushes after
        "UNSUBSCRIBE", "PUNSUBSCRIBE", "SUNSUBSCRIBE",
        "REPLCONF", "_FETCH_META", "_FETCH_FILE",
    )
)

#: Commands that pin only with these subcommands: they stop what runs on the
#: server (a script, a function), so they must not queue behind it on a
#: shared link; a spare connection carries them at once.
ADMIN_SUBCOMMANDS = {b"SCRIPT": frozenset({b"KILL"}), b"FUNCTION": frozenset({b"KILL"})}

KVCLOUD = b"KVCLOUD"
QUIT = b"QUIT"
CLIENT = b"CLIENT"
AUTH = b"AUTH"
HELLO = b"HELLO"

#: Answered by the proxy on every connection.
LOCAL = frozenset({KVCLOUD, QUIT})

#: Names a session on the shared link must look at; everything else is
#: forwarded untouched.
SPECIAL = PIN | RAW | LOCAL | frozenset(ADMIN_SUBCOMMANDS)

#: On a dedicated link the connection state is the client's own, so only
#: what changes how replies are read (or who the client is) needs a look.
DEDICATED_SPECIAL = RAW | LOCAL | {AUTH, HELLO, CLIENT}


def stays_shared(upper: bytes, args: list[bytes]) -> bool:
    """Whether a special command of an authenticated client may stay on the shared links.

    ``CLIENT SETINFO`` is connection metadata client libraries send on every
    connect: it stays (and is replayed if the client pins later).
    """
    if upper == CLIENT:
        return len(args) > 2 and args[1].upper() == b"SETINFO"
    kills = ADMIN_SUBCOMMANDS.get(upper)
    return kills is not None and (len(args) < 2 or args[1].upper() not in kills)
