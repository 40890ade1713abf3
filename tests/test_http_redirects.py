"""``--header`` never changes origin on a redirect, and is redacted where a server echoes it.

Two real aiohttp servers on 127.0.0.1, on two ports: two origins. The first redirects
to itself and to the second; both record the headers each request brought.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import files_under, run_args, run_cli, summary_of

from asyncproc.processors.redirects import Hop, next_hop, origin, redact, secrets_of

web = pytest.importorskip("aiohttp.web")

SECRET = "k3y-0f-the-us3r-1234"
HEADERS = ["--header", "X-Api-Key: $API_KEY", "--header", "Authorization: Bearer $API_KEY"]


class Origin:
    """One aiohttp server on its own port, recording the headers of every request."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.base = ""
        self.other = ""  # the other origin's base, for cross-origin redirects

    def app(self) -> Any:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        return app

    async def _answer(self, request: Any) -> Any:
        self.seen.append((request.path, dict(request.headers)))
        name = request.match_info["tail"]
        if name.startswith("to-other/"):
            raise web.HTTPFound(f"{self.other}/{name.removeprefix('to-other/')}")
        if name.startswith("to-self/"):
            raise web.HTTPTemporaryRedirect(f"/{name.removeprefix('to-self/')}")
        if name == "loop":
            raise web.HTTPFound("/loop")
        if name.startswith("echo"):  # an error that repeats what it was sent
            echoed = {
                k: v for k, v in request.headers.items() if k.lower().startswith(("x-", "auth"))
            }
            return web.json_response({"error": "bad request", "you sent": echoed}, status=400)
        return web.json_response({"path": request.path, "method": request.method})

    def headers_at(self, path: str) -> list[dict[str, str]]:
        return [headers for seen, headers in self.seen if seen == path]


@pytest.fixture(scope="module")
def origins() -> Iterator[tuple[Origin, Origin]]:
    loop = asyncio.new_event_loop()
    first, second = Origin(loop), Origin(loop)
    runners: list[Any] = []

    async def start(origin_: Origin) -> None:
        runner = web.AppRunner(origin_.app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        origin_.base = f"http://127.0.0.1:{port}"

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    for each in (first, second):
        asyncio.run_coroutine_threadsafe(start(each), loop).result(timeout=10)
    first.other, second.other = second.base, first.base
    yield first, second
    for runner in runners:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=10)
    loop.close()


def _run(tmp_path: Path, urls: list[str], code: int) -> dict[str, Any]:
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(url) + "\n" for url in urls))
    proc = run_cli(*run_args(source, tmp_path / "out.jsonl", tmp_path / "ck"), "--processor",
                   "http", *HEADERS, check=code, env={"API_KEY": SECRET})  # fmt: skip
    return {"summary": summary_of(proc), "stderr": proc.stderr}


def test_custom_headers_follow_a_redirect_to_the_same_origin_only(
    origins: tuple[Origin, Origin], tmp_path: Path
) -> None:
    first, second = origins
    _run(tmp_path, [f"{first.base}/to-other/landed-a", f"{first.base}/to-self/landed-b"], 0)
    (there,) = second.headers_at("/landed-a")  # the redirect was followed, to the other port
    assert "X-Api-Key" not in there and "Authorization" not in there, there
    assert SECRET not in json.dumps(there)
    (here,) = first.headers_at("/landed-b")  # the same origin keeps them
    assert here["X-Api-Key"] == SECRET and here["Authorization"] == f"Bearer {SECRET}"
    records = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["body"]["path"] for r in records] == ["/landed-a", "/landed-b"]


def test_echoed_header_values_are_redacted_everywhere_they_are_written(
    origins: tuple[Origin, Origin], tmp_path: Path
) -> None:
    first, _ = origins
    ran = _run(tmp_path, [f"{first.base}/echo"], 4)
    (sent,) = first.headers_at("/echo")
    assert sent["X-Api-Key"] == SECRET  # the server did get it, and echoed it
    failed = (tmp_path / "out.failed.jsonl").read_text()
    assert SECRET not in failed and "[redacted]" in failed, failed
    assert SECRET not in ran["stderr"] and "[redacted]" in ran["stderr"], ran["stderr"]
    run_id = ran["summary"]["run_id"]
    shown = run_cli("show", run_id, "--checkpoint", tmp_path / "ck", "--json", check=0)
    assert SECRET not in shown.stdout
    for path in files_under(tmp_path / "ck"):
        assert SECRET.encode() not in path.read_bytes(), path


def test_redirect_rules() -> None:
    hop = Hop("POST", "https://api.example/a", {"X-Api-Key": "k"}, {"json": {}})
    assert origin("https://API.example:443/x") == origin("https://api.example/y")
    assert origin("http://api.example/x") != origin("https://api.example/x")
    assert next_hop(hop, 307, "/b") == Hop(
        "POST", "https://api.example/b", {"X-Api-Key": "k"}, {"json": {}}
    )
    assert next_hop(hop, 302, "//evil.example/c") == Hop("GET", "https://evil.example/c", {}, {})
    assert next_hop(hop, 308, "http://api.example/d").headers == {}  # a downgrade: another origin
    assert redact("key Bearer abcdefghij and abcdefghij", secrets_of(["Bearer abcdefghij"])) == (
        "key [redacted] and [redacted]"
    )


def test_a_redirect_loop_fails_the_item(origins: tuple[Origin, Origin], tmp_path: Path) -> None:
    first, _ = origins
    _run(tmp_path, [f"{first.base}/loop"], 4)
    (failed,) = (tmp_path / "out.failed.jsonl").read_text().splitlines()
    assert "more than 10 redirects" in json.loads(failed)["error"], failed
