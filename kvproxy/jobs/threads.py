"""Blocking job work in a thread, stopped cleanly when the job is cancelled."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")


async def run_stoppable(work: Callable[[threading.Event], Result]) -> Result:
    """Run ``work(stop)`` in a thread; on cancellation set ``stop`` and wait for it to end."""
    stop = threading.Event()
    future = asyncio.ensure_future(asyncio.to_thread(work, stop))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()  # the worker stops at its next chunk
        with contextlib.suppress(Exception):  # cancelled is the outcome that counts
            await future
        raise
