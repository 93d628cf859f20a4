"""Fewer glibc malloc arenas for the threads that restore: resident memory, not speed.

glibc gives each thread that allocates its own heap ("arena", up to eight per
core). A restore's download threads each allocate megabyte buffers (the
object, its decrypted payload, the plaintext) that are freed on other
threads, and memory freed in one arena is not reused by the others: with
eight download threads that was about 100 MiB of resident memory holding
nothing (restoring bench/restore's 1 GiB checkpoint: 336 -> 235 MiB peak
from moto, 339 -> 223 MiB from Azurite, for 3.03 -> 3.19 s and 3.78 ->
3.80 s).

The limit only applies to arenas made after it is set, so a restore sets it
before it starts its threads; where the C library is not glibc, nothing
happens.
"""

from __future__ import annotations

import ctypes
import sys

#: mallopt's parameter number for the arena limit (glibc malloc.h).
M_ARENA_MAX = -8
ARENAS = 2


def limit_arenas(count: int = ARENAS) -> bool:
    """Ask glibc for at most ``count`` arenas; whether it agreed."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, count))
