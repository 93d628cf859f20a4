"""The states of a client session: where its commands go, and what happens to its input."""

from __future__ import annotations

import enum


class Mode(enum.Enum):
    """Which upstream connection a client's commands go to."""

    SHARED = "shared"
    #: Held until earlier replies are in, then DEDICATED or RAW.
    SWITCHING = "switching"
    DEDICATED = "dedicated"
    #: Dedicated, relayed as a byte stream both ways.
    RAW = "raw"


class Input(enum.Enum):
    """What happens to the bytes a client sends."""

    OPEN = "open"
    #: Kept unread until a switch or an awaited KVCLOUD reply completes.
    HELD = "held"
    #: Held, and the client has hung up since: what it sent is still handled.
    HELD_ENDING = "held-ending"
    #: EOF, QUIT or a protocol error: nothing more is read; closes once replies are out.
    ENDED = "ended"
    #: The connection is lost.
    GONE = "gone"
