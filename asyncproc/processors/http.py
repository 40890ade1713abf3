"""The built-in ``http`` processor: one request per item, through one pooled aiohttp client.

An item is a URL (a text line, or a JSON string) or a JSON object ``{"method", "url",
"headers", "json" | "body"}``. The record is ``{"status": int, "body": ...}``: the body
parsed when the response is JSON, else its text. 429 and 503 raise
:class:`~asyncproc.RetryAfter` with the ``Retry-After`` delay (seconds or an HTTP
date), so the whole run pauses and the item is tried again; other 5xx answers and
connection errors are ordinary failures, retried with backoff; any other 4xx is a
failed item at once, carrying the status and the body (with the ``--header`` values
it may echo redacted). Redirects are followed hop by hop, and ``--header`` (like the
item's headers) never goes to another origin (:mod:`.redirects`).

aiohttp, not httpx: at 200 requests in flight against a 5 ms loopback server a
hand-written aiohttp pool does about twice the requests per second of an httpx one on
this machine (``benchmarks/bench_http.py clients``). It is imported on the first call,
so runs with other processors never load it (``pip install 'asyncproc[http]'``).
"""

from __future__ import annotations

import email.utils
import importlib.util
import os
import re
import time
from collections.abc import Iterable
from typing import Any

import orjson

from .._errors import ConfigError, ItemError, RetryAfter, named
from .redirects import MAX_REDIRECTS, REDIRECTS, Hop, next_hop, redact, secrets_of

SLOW_DOWN = (429, 503)
_VAR = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


class HttpStatusError(ItemError):
    """The server answered with an error status; ``retryable`` is False for a 4xx."""

    def __init__(self, status: int, reason: str, body: Any, secrets: Iterable[str] = ()) -> None:
        text = redact(body if isinstance(body, str) else orjson.dumps(body).decode(), secrets)
        super().__init__(f"HTTP {status} {reason}: {text}")
        self.status = status
        self.body = text if isinstance(body, str) else orjson.loads(text)
        self.retryable = status >= 500


def parse_headers(values: Iterable[str], environ: dict[str, str] | None = None) -> dict[str, str]:
    """``--header 'Name: value'`` options as a dict, ``$VAR`` / ``${VAR}`` read from the
    environment (a variable that is not set is an error, not an empty string)."""
    env = os.environ if environ is None else environ
    headers: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition(":")
        if not sep or not name.strip() or name != name.strip() or " " in name:
            raise ConfigError(f"{named('headers')} takes 'Name: value', got {value!r}")

        def expand(match: re.Match[str], name: str = name) -> str:
            var = match.group(1) or match.group(2)
            if var not in env:
                raise ConfigError(
                    f"{named('headers')} {name}: environment variable {var} is not set"
                )
            return env[var]

        headers[name] = _VAR.sub(expand, text.strip())
    return headers


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: a number, or an HTTP date; None if
    absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def request_of(item: Any) -> tuple[str, str, dict[str, str], dict[str, Any]]:
    """Method, URL, headers and body arguments of one item."""
    if isinstance(item, str):
        return "GET", item, {}, {}
    if not isinstance(item, dict) or not isinstance(item.get("url"), str):
        raise ValueError('an http item is a URL or an object with a "url" string')
    headers = item.get("headers") or {}
    if not isinstance(headers, dict):
        raise ValueError('an http item\'s "headers" must be an object')
    body: dict[str, Any] = {}
    if "json" in item:
        body["json"] = item["json"]
    elif "body" in item:
        body["data"] = str(item["body"]).encode()
    method = str(item.get("method") or ("POST" if body else "GET")).upper()
    return method, item["url"], {str(k): str(v) for k, v in headers.items()}, body


def parse_body(raw: bytes, content_type: str, charset: str | None) -> Any:
    """The response body: parsed JSON for a JSON content type, else text."""
    if raw and (content_type == "application/json" or content_type.endswith("+json")):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return raw.decode(charset or "utf-8")


class HttpProcessor:
    """One aiohttp session per process and event loop, opened on the first call.

    The connector has no limit of its own: the run's lanes (and gate) bound the calls
    in flight, so the pool holds at most one keep-alive connection per lane.
    """

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.headers = dict(headers or {})
        self._secrets = secrets_of(self.headers.values())
        self._session: Any = None

    async def __call__(self, item: Any) -> dict[str, Any]:
        method, url, headers, body = request_of(item)
        hop = Hop(method, url, {**self.headers, **headers}, body)
        session = self._session or self._open()
        for _ in range(MAX_REDIRECTS + 1):
            async with session.request(
                hop.method, hop.url, headers=hop.headers or None, allow_redirects=False,
                **hop.body,
            ) as response:  # fmt: skip
                raw = await response.read()
                location = response.headers.get("Location")
                if response.status not in REDIRECTS or not location:
                    return self._record(response, raw)
            hop = next_hop(hop, response.status, location)
        raise ItemError(f"more than {MAX_REDIRECTS} redirects from {url}")

    def _record(self, response: Any, raw: bytes) -> dict[str, Any]:
        """The item's record, or the error its status means."""
        status = response.status
        if status in SLOW_DOWN:
            raise RetryAfter(retry_after(response.headers.get("Retry-After")),
                             f"HTTP {status} {response.reason}")  # fmt: skip
        parsed = parse_body(raw, response.content_type, response.charset)
        if status >= 400:
            raise HttpStatusError(status, str(response.reason), parsed, self._secrets)
        return {"status": status, "body": parsed}

    def _open(self) -> Any:
        import aiohttp  # only runs that use the http processor load it

        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(None),
            raise_for_status=False, auto_decompress=True,
        )  # fmt: skip
        return self._session

    async def aclose(self) -> None:
        """Close the session (the run is over); a later call opens a new one."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()


def make_http(headers: dict[str, str] | None = None) -> HttpProcessor:
    """The ``http`` built-in; headers come from ``--header`` or ``headers=``."""
    if importlib.util.find_spec("aiohttp") is None:  # fail before any work, not at a call
        raise ConfigError("the http processor needs aiohttp: pip install 'asyncproc[http]'")
    return HttpProcessor(headers)
