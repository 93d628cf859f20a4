"""A run of commands forwarded in one piece and the replies it still awaits."""

from __future__ import annotations

from collections.abc import Callable


class Batch:
    """Sits in a session's reply order; the link counts its replies down.

    ``observer`` sees the replies of a batch whose outcome changes the
    session's state (AUTH, HELLO): only the server knows if they succeeded.
    """

    __slots__ = ("remaining", "size", "observer", "slow")

    def __init__(self, remaining: int, observer: Callable[[bytes], None] | None = None) -> None:
        self.remaining = remaining
        #: Commands in the batch (``remaining`` counts down as replies arrive).
        self.size = remaining
        self.observer = observer
        #: Sent by a client whose last batch was slow: its link is a slow lane until answered.
        self.slow = False
