"""A hand-written pool of HTTP requests: the baseline the ``http`` processor is held to.

``python benchmarks/_http_pool.py aiohttp|httpx BASE_URL ITEMS CONCURRENCY`` fetches
``BASE_URL/item/0`` ... with CONCURRENCY tasks on one shared client (connection pool
as large as the concurrency), parses each JSON body, and prints requests per second.
What a user would write without asyncproc: no checkpoints, no ordering, no output file.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from itertools import count
from typing import Any

import orjson


async def lanes(fetch: Callable[[str], Awaitable[Any]], base: str, items: int, c: int) -> float:
    counter = count()
    results: list[Any] = [None] * items

    async def lane() -> None:
        while (i := next(counter)) < items:
            results[i] = await fetch(f"{base}/item/{i}")

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(c)))
    return items / (time.perf_counter() - started)


async def with_aiohttp(base: str, items: int, c: int) -> float:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=c)) as session:

        async def fetch(url: str) -> Any:
            async with session.get(url) as response:
                response.raise_for_status()
                return orjson.loads(await response.read())

        return await lanes(fetch, base, items, c)


async def with_httpx(base: str, items: int, c: int) -> float:
    import httpx

    limits = httpx.Limits(max_connections=c, max_keepalive_connections=c)
    async with httpx.AsyncClient(limits=limits, timeout=None) as client:

        async def fetch(url: str) -> Any:
            response = await client.get(url)
            response.raise_for_status()
            return orjson.loads(response.content)

        return await lanes(fetch, base, items, c)


def main() -> None:
    library, base, items, c = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    run = with_aiohttp if library == "aiohttp" else with_httpx
    print(f"{asyncio.run(run(base, items, c)):.1f}")


if __name__ == "__main__":
    main()
