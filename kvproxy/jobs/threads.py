"""Blocking job work in a thread, stopped cleanly when the job is cancelled."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import TypeVar

Result = TypeVar("Result")


async def run_stoppable(work: Callable[[threading.Event], Result]) -> Result:
    """Run ``work(stop)`` in a thread; on cancellation set ``stop`` and wait for it to end.

    A worker that had already passed its last check (a restore renamed into
    place, a manifest written) finished its work: that result stands, and the
    job is reported as what it is, not as cancelled.
    """
    stop = threading.Event()
    future = asyncio.ensure_future(asyncio.to_thread(work, stop))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        stop.set()  # the worker stops at its next chunk
        try:
            result = await future
        except Exception:  # noqa: BLE001 - cancelled is the outcome that counts
            raise asyncio.CancelledError from None
        current = asyncio.current_task()
        if current is not None:
            current.uncancel()
        return result
