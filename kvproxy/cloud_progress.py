"""Progress for kvrocks-cloud: a bar on a terminal, a plain line now and then otherwise."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable

from kvproxy.jobs.status import JobStatus

#: Seconds between plain progress lines (KVCLOUD_PROGRESS_EVERY overrides).
PLAIN_EVERY = float(os.environ.get("KVCLOUD_PROGRESS_EVERY", "5"))


async def watch(status: JobStatus, work: Awaitable[None], terminal: bool) -> None:
    task = asyncio.ensure_future(work)
    if terminal:
        await _bar(status, task)
    else:
        await _lines(status, task)
    await task


async def _bar(status: JobStatus, task: asyncio.Future[None]) -> None:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
               TransferSpeedColumn())
    with Progress(*columns, transient=True) as progress:
        bar = progress.add_task("backup", total=None)
        while not task.done():
            progress.update(bar, completed=status.bytes_done, total=status.bytes_total or None)
            await asyncio.wait([task], timeout=0.2)


async def _lines(status: JobStatus, task: asyncio.Future[None]) -> None:
    while not task.done():
        await asyncio.wait([task], timeout=PLAIN_EVERY)
        if not task.done() and status.bytes_total:
            print(f"backup: {status.bytes_done} of {status.bytes_total} bytes, "
                  f"{status.bytes_uploaded} uploaded", file=sys.stderr, flush=True)
