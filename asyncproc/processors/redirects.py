"""Redirects for the ``http`` processor, followed by hand so headers never change origin.

aiohttp follows redirects itself and drops only ``Authorization`` when the host changes:
an API key sent as ``X-Api-Key`` (``--header``) would go to whatever server a redirect
names. Here each hop is a request of its own: a hop to the same origin (scheme, host
and port) keeps every header; a hop to another origin keeps none of the custom ones
(``--header`` or the item's ``headers``). The method follows the browsers' rule: 303
(and 301/302 after a POST) become a GET without a body; 307 and 308 keep both.

The values of ``--header`` are secrets as far as anything written is concerned: a
server that echoes them back in an error body would put them in the failed-items file,
on stderr and in ``show``. :func:`redact` blanks them out of such text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urljoin, urlsplit

REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 10
DEFAULT_PORTS = {"http": 80, "https": 443}
REDACTED = "[redacted]"
SECRET_PART = 8  # a word of a header value this long is redacted on its own too


@dataclass(frozen=True, slots=True)
class Hop:
    """One request of a chain of redirects."""

    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


def origin(url: str) -> tuple[str, str, int | None]:
    """Scheme, host and port (the scheme's default when left out)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # a port that is not a number: never the same origin as another
        port = -1
    return scheme, (parts.hostname or "").lower(), port or DEFAULT_PORTS.get(scheme)


def next_hop(hop: Hop, status: int, location: str) -> Hop:
    """The request a redirect asks for; custom headers only when the origin stays."""
    target = urljoin(hop.url, location)
    method, body = hop.method, hop.body
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        method, body = "GET", {}
    headers = hop.headers if origin(target) == origin(hop.url) else {}
    return replace(hop, method=method, url=target, headers=headers, body=body)


def secrets_of(values: Iterable[str]) -> list[str]:
    """What to redact for these header values: each whole, and its long words
    (``Bearer <token>`` echoed as the token alone), longest first."""
    found = set()
    for value in values:
        if value:
            found.add(value)
            found.update(word for word in value.split() if len(word) >= SECRET_PART)
    return sorted(found, key=len, reverse=True)


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``[redacted]``."""
    for secret in secrets:
        text = text.replace(secret, REDACTED)
    return text
