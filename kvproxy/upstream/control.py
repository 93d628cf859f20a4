"""The proxy's own connection to the server, for BGSAVE, INFO and CONFIG GET.

Separate from the links clients use, so backup work never waits behind (or
in front of) client traffic. redis-py's asyncio client does the talking.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError


class ControlError(Exception):
    """The server refused or could not be reached; the message says which and why."""


class Control:
    def __init__(self, address: tuple[str, int], password: str | None = None,
                 timeout: float = 30.0) -> None:
        host, port = address
        self.address = address
        # No silent retries: redis-py would re-send a BGSAVE or a SHUTDOWN after
        # the connection drops (as SHUTDOWN's always does), and back off for seconds.
        self.client = aioredis.Redis(host=host, port=port, password=password, protocol=2,
                                     socket_timeout=timeout, socket_connect_timeout=timeout,
                                     retry=Retry(NoBackoff(), 0))

    async def __aenter__(self) -> Control:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.client.aclose()

    async def call(self, *args: Any) -> Any:
        try:
            return await self.client.execute_command(*args)  # type: ignore[no-untyped-call]
        except RedisError as exc:
            host, port = self.address
            raise ControlError(f"upstream {host}:{port}: {' '.join(map(str, args[:2]))}: "
                               f"{exc}") from None

    async def info(self, section: str) -> dict[str, Any]:
        try:
            return dict(await self.client.info(section))
        except RedisError as exc:
            host, port = self.address
            raise ControlError(f"upstream {host}:{port}: INFO {section}: {exc}") from None

    async def config_get(self, name: str) -> str:
        reply = await self.call("CONFIG", "GET", name)
        if isinstance(reply, dict):
            value = reply.get(name.encode(), reply.get(name))
        else:
            value = reply[1] if len(reply) >= 2 else None
        if value is None:
            raise ControlError(f"upstream does not know CONFIG {name}")
        return value.decode() if isinstance(value, bytes) else str(value)
