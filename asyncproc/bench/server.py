"""A local HTTP server that enforces an API's limits, to try rate-limited runs on.

``python -m asyncproc.bench.server --port 8765 --latency 0.02 --rate 200 --burst 20``
(needs aiohttp: ``pip install 'asyncproc[http]'``). Every request to ``/<anything>/<id>``
is answered after ``--latency`` seconds with ``{"id": "<id>"}`` (and ``"echo"``, the
JSON body of a POST), unless a limit says no, with **429 and** ``Retry-After``:

- a token bucket (``--rate`` per second, ``--burst`` deep): ``Retry-After`` is the
  time until the next token, in decimal seconds;
- a cap on requests in flight (``--max-in-flight``): ``Retry-After: 0``, or
  ``--overrun-retry-after`` (many APIs answer an overrun with ``Retry-After: 1``);
- an outage (``--outage-seconds`` long, starting at request ``--outage-after``):
  ``Retry-After`` the whole seconds left, at least 1.

A last path segment ``status-404`` (or any status) is answered with that status;
``/headers/<id>`` echoes the ``Authorization`` header. ``GET /_stats`` returns the
counters (requests and successes per path, rejections, the most in flight, the requests
that arrived while a ``Retry-After`` it gave was still running), ``POST
/_config`` changes the limits (JSON, the option names with ``_``), ``POST /_reset``
clears the counters. ``"hold_from": N`` holds requests for ids >= N until it is
unset; ``GET /_held?count=K`` answers once K requests are held (for tests that must
act in the middle of a run without sleeping).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import sys
import time
from collections import Counter
from typing import Any

from aiohttp import web

DEFAULTS: dict[str, Any] = {
    "latency": 0.0, "rate": None, "burst": 1.0, "max_in_flight": None, "overrun_retry_after": "0",
    "outage_after": None, "outage_seconds": 0.0, "hold_from": None,
}  # fmt: skip


class Limits:
    """The server's state: its limits and what it counted."""

    def __init__(self, **config: Any) -> None:
        self.config = {**DEFAULTS, **config}
        self.reset()
        self._tokens, self._refilled = float(self.config["burst"]), time.monotonic()
        self._released = asyncio.Event()
        self._more_held = asyncio.Event()

    def reset(self) -> None:
        self.requests, self.ok, self.rejected = Counter[str](), Counter[str](), 0
        self.in_flight = self.most_in_flight = self.seen = self.held = 0
        self.waited_until = -math.inf  # the latest end of a Retry-After this server gave
        self.arrived_while_waited = 0  # requests that came in before it ended
        self.first_ok: float | None = None
        self.last_ok: float | None = None
        self.outage_until: float | None = None

    def configure(self, changes: dict[str, Any]) -> None:
        self.config.update(changes)
        self._tokens, self._refilled = float(self.config["burst"]), time.monotonic()
        if self.config["hold_from"] is None:
            self._released.set()
            self._released = asyncio.Event()

    def refusal(self, now: float) -> str | None:
        """The Retry-After of a rejection, or None: the request may go on."""
        self.seen += 1
        self.arrived_while_waited += now < self.waited_until
        refused = self._refused(now)
        if refused is not None:
            self.waited_until = max(self.waited_until, now + float(refused))
        return refused

    def _refused(self, now: float) -> str | None:
        outage = self._outage(now)
        if outage is not None:
            return outage
        cap = self.config["max_in_flight"]
        if cap is not None and self.in_flight >= cap:
            return str(self.config["overrun_retry_after"])
        return self._bucket(now)

    def _outage(self, now: float) -> str | None:
        start = self.config["outage_after"]
        if self.outage_until is None and start is not None and self.seen > start:
            self.outage_until = now + float(self.config["outage_seconds"])
        if self.outage_until is not None and now < self.outage_until:
            return str(max(1, math.ceil(self.outage_until - now)))
        return None

    def _bucket(self, now: float) -> str | None:
        rate = self.config["rate"]
        if rate is None:
            return None
        burst = float(self.config["burst"])
        self._tokens = min(burst, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return f"{(1.0 - self._tokens) / rate:.3f}"

    async def hold(self, item: str) -> None:
        start = self.config["hold_from"]
        if start is None or not item.isdigit() or int(item) < start:
            return
        self.held += 1
        self._more_held.set()
        self._more_held = asyncio.Event()
        await self._released.wait()

    async def wait_held(self, count: int) -> None:
        """Until ``count`` requests are held."""
        while self.held < count:
            await self._more_held.wait()

    def stats(self) -> dict[str, Any]:
        return {
            "requests": sum(self.requests.values()), "ok": sum(self.ok.values()),
            "rejected": self.rejected, "most_in_flight": self.most_in_flight,
            "held": self.held, "ok_span_s": self._span(), "by_path": dict(self.requests),
            "arrived_while_waited": self.arrived_while_waited,
            "ok_by_path": dict(self.ok),
        }  # fmt: skip

    def _span(self) -> float | None:
        """Seconds from the first success to the last: the rate is ``ok / span``."""
        if self.first_ok is None or self.last_ok is None:
            return None
        return self.last_ok - self.first_ok


LIMITS = web.AppKey("limits", Limits)


async def _handle(request: web.Request) -> web.Response:
    limits = request.app[LIMITS]
    path = request.path
    limits.requests[path] += 1
    retry_after = limits.refusal(time.monotonic())
    if retry_after is not None:
        limits.rejected += 1
        return web.json_response({"error": "slow down"}, status=429,
                                 headers={"Retry-After": retry_after})  # fmt: skip
    limits.in_flight += 1
    limits.most_in_flight = max(limits.most_in_flight, limits.in_flight)
    try:
        return await _answer(request, limits, path)
    finally:
        limits.in_flight -= 1


async def _answer(request: web.Request, limits: Limits, path: str) -> web.Response:
    item = path.rstrip("/").rpartition("/")[2]
    await limits.hold(item)
    if limits.config["latency"]:
        await asyncio.sleep(limits.config["latency"])
    limits.ok[path] += 1
    limits.last_ok = time.monotonic()
    if limits.first_ok is None:
        limits.first_ok = limits.last_ok
    if item.startswith("status-"):
        return web.json_response({"error": item}, status=int(item[7:]))
    body: dict[str, Any] = {"id": item}
    if path.startswith("/headers/"):
        body["authorization"] = request.headers.get("Authorization")
    if request.can_read_body:
        body["echo"] = await request.json()
    return web.json_response(body)


async def _stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[LIMITS].stats())


async def _config(request: web.Request) -> web.Response:
    request.app[LIMITS].configure(await request.json())
    return web.json_response(request.app[LIMITS].config)


async def _reset(request: web.Request) -> web.Response:
    request.app[LIMITS].reset()
    return web.json_response({})


async def _held(request: web.Request) -> web.Response:
    limits, count = request.app[LIMITS], int(request.query.get("count", "1"))
    await limits.wait_held(count)
    return web.json_response(limits.stats())


def make_app(**config: Any) -> web.Application:
    app = web.Application()
    app[LIMITS] = Limits(**config)
    app.router.add_get("/_stats", _stats)
    app.router.add_post("/_config", _config)
    app.router.add_post("/_reset", _reset)
    app.router.add_get("/_held", _held)
    app.router.add_route("*", "/{tail:.*}", _handle)
    return app


async def serve(port: int, exit_on_eof: bool, **config: Any) -> None:
    """Serve until cancelled (or, ``exit_on_eof``, until stdin closes); print the port."""
    runner = web.AppRunner(make_app(**config), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    print(runner.addresses[0][1], flush=True)
    try:
        if exit_on_eof:
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        else:
            await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m asyncproc.bench.server",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    parser.add_argument("--port", type=int, default=8765, help="0: any free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    parser.add_argument("--rate", type=float, help="token bucket: requests per second")
    parser.add_argument("--burst", type=float, default=1.0, help="token bucket depth")
    parser.add_argument("--max-in-flight", type=int, help="requests answered at once")
    parser.add_argument(
        "--overrun-retry-after",
        default="0",
        help="the Retry-After of a request over --max-in-flight",
    )
    parser.add_argument("--outage-after", type=int, help="an outage starts at this request")
    parser.add_argument("--outage-seconds", type=float, default=0.0)
    parser.add_argument("--exit-on-eof", action="store_true", help="stop when stdin closes")
    args = vars(parser.parse_args(argv))
    port, eof = args.pop("port"), args.pop("exit_on_eof")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(port, eof, **args))


if __name__ == "__main__":
    main()
