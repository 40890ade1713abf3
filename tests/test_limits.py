"""Limits without a server: parsing, the pacer, AIMD, the gate, RetryAfter from Python.

Concurrency is checked with gates (events) and spies, never with sleeps for
synchronisation; time enters only where the promise is about time (a pause).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus
from anyio.lowlevel import checkpoint
from conftest import expected_jsonl, write_lines

import asyncproc
from asyncproc import ConfigError, ItemError, RetryAfter
from asyncproc._options import Options, parse_rate
from asyncproc.limits import gate as limits
from asyncproc.limits.gate import (
    Adaptive,
    Gate,
    LimitConfig,
    Pacer,
    Recent,
    cost_function,
    gated,
    llm_tokens,
)
from asyncproc.processors.http import parse_body, parse_headers, request_of, retry_after

# -- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "per_second"),
    [("200/s", 200.0), ("3000/min", 50.0), ("90000/m", 1500.0), ("7200/h", 2.0), ("5", 5.0),
     (" 2.5 / sec ", 2.5)],
)  # fmt: skip
def test_parse_rate(text: str, per_second: float) -> None:
    assert parse_rate("--rate", text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["0", "0/s", "-1/s", "abc", "10/day", "nan/s", "inf", ""])
def test_parse_rate_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="--rate"):
        parse_rate("--rate", text)


def test_options_check_limits() -> None:
    with pytest.raises(ConfigError, match="go together"):
        Options(cost="llm")
    with pytest.raises(ConfigError, match="max_concurrency needs concurrency='auto'"):
        Options(max_concurrency=8)
    with pytest.raises(ConfigError, match="cost takes"):
        LimitConfig.from_options(Options(cost="tokens", cost_rate="10/s"))
    config = LimitConfig.from_options(Options(rate="120/min", concurrency=16))
    assert config.rate == 2.0 and config.maximum == 16 and config.configured
    assert not LimitConfig.from_options(Options()).configured
    assert config.share(2, 8).rate == 1.0 and config.share(2, 8).maximum == 8


def test_retry_after_header() -> None:
    assert retry_after("3") == 3.0
    assert retry_after("0.25") == 0.25
    assert retry_after(None) is None and retry_after("soon") is None
    assert retry_after("-5") == 0.0
    date = "Wed, 21 Oct 2015 07:28:10 GMT"  # 1445412490 in POSIX time
    assert retry_after(date, now=1445412480.0) == pytest.approx(10.0)
    assert retry_after(date, now=1445412500.0) == 0.0


def test_headers_read_the_environment() -> None:
    env = {"TOKEN": "s3cret", "ORG": "acme"}
    headers = parse_headers(["Authorization: Bearer $TOKEN", "X-Org:${ORG}-x", "X-Plain: a:b"],
                            env)  # fmt: skip
    assert headers == {"Authorization": "Bearer s3cret", "X-Org": "acme-x", "X-Plain": "a:b"}
    with pytest.raises(ConfigError, match="'Name: value'"):
        parse_headers(["Authorization Bearer x"], env)
    with pytest.raises(ConfigError, match="MISSING is not set"):
        parse_headers(["X: $MISSING"], env)


def test_http_items_and_bodies() -> None:
    assert request_of("http://h/1") == ("GET", "http://h/1", {}, {})
    method, url, headers, body = request_of(
        {"url": "http://h/2", "headers": {"X-A": 1}, "json": {"q": [1]}}
    )
    assert (method, url, headers, body) == (
        "POST",
        "http://h/2",
        {"X-A": "1"},
        {"json": {"q": [1]}},
    )
    assert request_of({"url": "u", "method": "put", "body": "x"})[0] == "PUT"
    with pytest.raises(ValueError, match="url"):
        request_of({"uri": "u"})
    assert parse_body(b'{"a": 1}', "application/json", None) == {"a": 1}
    assert parse_body(b'{"a": 1}', "text/plain", None) == '{"a": 1}'
    assert parse_body(b"not json", "application/problem+json", None) == "not json"


def test_costs() -> None:
    chat = {"json": {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 50}}
    assert llm_tokens(chat) == 100 + 50
    assert llm_tokens({"prompt": "abcd" * 10, "max_tokens": 5, "n": 2}) == 10 + 10
    field = cost_function("field:usage.tokens")
    assert field is not None and field({"usage": {"tokens": 7}}) == 7.0
    with pytest.raises(ValueError, match="missing"):
        field({"usage": {}})
    with pytest.raises(ValueError, match="not a number"):
        field({"usage": {"tokens": "7"}})
    assert cost_function(None) is None and cost_function("llm") is llm_tokens


# -- the pure parts -----------------------------------------------------------------------


def test_pacer_spaces_calls_evenly_and_never_saves_up() -> None:
    pacer = Pacer(per_second=100.0)
    starts = [pacer.reserve(1.0, now=0.0) for _ in range(5)]
    assert starts == pytest.approx([0.0, 0.01, 0.02, 0.03, 0.04])
    assert pacer.reserve(1.0, now=10.0) == 10.0  # a lull: no burst of saved-up slots after it
    assert pacer.reserve(3.0, now=10.0) == pytest.approx(10.01)
    assert pacer.reserve(1.0, now=10.0) == pytest.approx(10.04)  # the cost-3 call took 3 slots


def test_adaptive_grows_while_used_and_cuts_once_per_round_trip() -> None:
    aimd = Adaptive(maximum=64, start=4)
    now = 0.0
    for _ in range(20):  # slow start: +1 per success while the limit is in use
        now += 0.001
        aimd.success(0.02, int(aimd.limit), now)
    assert aimd.limit == 24
    aimd.success(0.02, 1, now)  # a limit not in use does not grow
    assert aimd.limit == 24
    aimd.cut(now)
    aimd.cut(now + 0.001)  # the same round trip: one cut
    assert aimd.limit == pytest.approx(24 * 0.5) and not aimd.growing  # ends slow start
    aimd.cut(now + 1.0)
    assert aimd.limit == pytest.approx(24 * 0.5 * 0.9)
    before = aimd.limit
    aimd.success(0.02, int(aimd.limit), now + 0.03)  # congestion avoidance: +1/limit
    assert aimd.limit == pytest.approx(before + 1 / before)
    for k in range(40):  # latency five times the best (a queue builds): it comes down
        aimd.success(0.1, int(aimd.limit), now + 0.1 * (k + 1))
    assert aimd.limit < before * 0.5
    assert Adaptive(maximum=3).limit == 3  # never above the ceiling


def test_adaptive_absorbs_a_lasting_shift_it_did_not_cause() -> None:
    aimd = Adaptive(maximum=64, start=32)
    now, lowest = 0.0, 32.0
    for _ in range(50):
        now += 0.02
        aimd.success(0.02, 1, now)  # settled: 20 ms, the limit not in use
    for _ in range(3000):  # from now on every call takes 60 ms, whatever the limit
        now += 0.01
        aimd.success(0.06, int(aimd.limit), now)
        lowest = min(lowest, aimd.limit)
    assert lowest < 32 * 0.9  # it cut while the shift looked like a queue...
    assert lowest > 32 * 0.9**6  # ...a few times only...
    assert aimd.limit == 64  # ...then took it as the new usual latency and grew


def test_recent_rejections_are_widespread_only_when_most_calls_are_rejected() -> None:
    recent = Recent()
    recent.rejection(0.0)
    assert recent.widespread()  # nothing succeeded yet: a service still down
    steady, now = Recent(), 0.0
    for _ in range(200):  # 32 calls in flight, 20 ms each: a success every 0.6 ms
        now += 0.02 / 32
        steady.success(0.02, now)
    overrun, outage = copy.copy(steady), copy.copy(steady)
    overrun.rejection(now)  # an overrun while the others succeed: isolated
    assert not overrun.widespread()
    for k in range(64):  # slow start's worst, two round trips: a rejection per success
        overrun.success(0.02, now + (k + 1) * 0.02 / 32)
        overrun.rejection(now + (k + 1) * 0.02 / 32)
        assert not overrun.widespread()
    for k in range(64):  # an outage: every call rejected, at the same pace
        outage.rejection(now + (k + 1) * 0.02 / 32)
    assert outage.widespread()  # within two round trips


# -- the gate -----------------------------------------------------------------------------


async def test_gate_holds_calls_to_the_limit() -> None:
    gate = Gate(LimitConfig(maximum=3))
    release = anyio.Event()
    running, most = 0, 0

    async def call(item: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        return item

    limited = gated(call, gate)
    async with anyio.create_task_group() as tg:
        for k in range(10):
            tg.start_soon(limited, k)
        await anyio.wait_all_tasks_blocked()
        assert (running, gate.in_flight, len(gate._turns)) == (3, 3, 7)
        release.set()
    assert most == 3 and gate.in_flight == 0


async def test_gate_ramps_up_from_one_call_after_a_pause() -> None:
    gate = Gate(LimitConfig(maximum=8))
    gate.pause(0.0)  # a pause that is already over: only the ramp is left
    releases = [anyio.Event() for _ in range(8)]
    running = 0
    seen: list[int] = []

    async def call(item: int) -> int:
        nonlocal running
        running += 1
        seen.append(running)
        await releases[item].wait()
        running -= 1
        return item

    limited = gated(call, gate)

    async def one(k: int, *, task_status: TaskStatus[None]) -> None:
        task_status.started()
        await limited(k)

    async with anyio.create_task_group() as tg:
        for k in range(8):
            await tg.start(one, k)
        for k in range(8):
            await anyio.wait_all_tasks_blocked()
            releases[k].set()
    assert seen[:3] == [1, 1, 2]  # one probe; each success lets one more call start
    assert gate.ramp == math.inf and gate.in_flight == 0


async def test_rejections_are_retried_without_counting_and_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = Gate(LimitConfig(maximum=4))
    calls = 0

    async def flaky(item: str) -> str:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RetryAfter(0)
        return item

    assert await gated(flaky, gate)("x") == "x"
    assert (calls, gate.rejections, gate.pauses) == (4, 3, 0)

    async def never(item: str) -> str:
        await checkpoint()
        raise RetryAfter(None, "busy forever")

    monkeypatch.setattr(limits, "MAX_REJECTIONS", 3)
    with anyio.fail_after(20), pytest.raises(ItemError, match=r"3 times in a row.*busy forever"):
        await gated(never, Gate(LimitConfig(maximum=1)))("y")


# -- RetryAfter from any processor, through process_file ---------------------------------


async def test_retry_after_pauses_the_whole_pool(tmp_path: Path) -> None:
    """A rejection before any call succeeded (a service still down) pauses every lane."""
    source = write_lines(tmp_path / "in.txt", [str(i) for i in range(60)])
    starts: list[float] = []
    rejected_at: list[float] = []

    async def call(item: str) -> dict[str, Any]:
        now = anyio.current_time()
        starts.append(now)
        if item in {"10", "11"} and len(rejected_at) < 2:
            rejected_at.append(now)
            raise RetryAfter(0.25)
        await anyio.sleep(0.002)
        return {"n": int(item)}

    summary = await asyncproc.process_file(
        source, tmp_path / "out.jsonl", call, concurrency=8, retries=0, quiet=True,
        checkpoint_dir=tmp_path / "ck",
    )  # fmt: skip
    assert summary.processed == 60 and summary.failed == 0 and summary.rejected == 2
    first = rejected_at[0]
    during = [t for t in starts if first < t < first + 0.25 and t not in rejected_at]
    assert during == [], "calls started while the pool was paused"
    out = (tmp_path / "out.jsonl").read_bytes()
    assert out == expected_jsonl((i, {"n": i}) for i in range(60))


async def test_an_isolated_rejection_waits_alone_and_the_pool_goes_on(tmp_path: Path) -> None:
    """A 429 + Retry-After for one call while the others succeed (a concurrency overrun)
    shrinks the limit; only its item waits out the Retry-After."""
    source = write_lines(tmp_path / "in.txt", [str(i) for i in range(400)])
    starts: list[tuple[float, str]] = []
    rejected_at: list[float] = []

    async def call(item: str) -> dict[str, Any]:
        now = anyio.current_time()
        starts.append((now, item))
        if item == "100" and not rejected_at:
            rejected_at.append(now)
            raise RetryAfter(0.5)
        await anyio.sleep(0.001)
        return {"n": int(item)}

    summary = await asyncproc.process_file(
        source, tmp_path / "out.jsonl", call, concurrency="auto", max_concurrency=16,
        retries=0, quiet=True, checkpoint_dir=tmp_path / "ck",
    )  # fmt: skip
    assert summary.processed == 400 and summary.failed == 0 and summary.rejected == 1
    rejected = rejected_at[0]
    again = [t for t, item in starts if item == "100" and t > rejected]
    assert len(again) == 1 and again[0] >= rejected + 0.5, "the item did not wait its turn"
    during = [item for t, item in starts if rejected < t < rejected + 0.5 and item != "100"]
    assert during, "no call started while the rejected item waited: the pool paused"
    out = (tmp_path / "out.jsonl").read_bytes()
    assert out == expected_jsonl((i, {"n": i}) for i in range(400))


async def test_rate_and_cost_from_python(tmp_path: Path) -> None:
    rows = [f'{{"tokens": {5 if i % 2 else 15}}}' for i in range(12)]
    source = write_lines(tmp_path / "in.jsonl", rows)
    starts: list[float] = []

    async def call(item: dict[str, int]) -> int:
        starts.append(anyio.current_time())
        return item["tokens"]

    summary = await asyncproc.process_file(
        source, tmp_path / "out.jsonl", call, concurrency=4, quiet=True,
        checkpoint_dir=tmp_path / "ck", cost=lambda item: float(item["tokens"]),
        cost_rate="1000/s",
    )  # fmt: skip
    assert summary.processed == 12
    # 120 cost units at 1000/s, spent evenly: the last call starts about 0.115 s in
    assert starts[-1] - starts[0] >= 0.1
    manifest = next((tmp_path / "ck").glob("run_*/manifest.json")).read_text()
    assert json.loads(manifest)["options"]["cost"] == "python" and "lambda" not in manifest


def test_callable_cost_needs_one_process(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="named by strings"):
        asyncproc.run_file(tmp_path / "x.txt", tmp_path / "y.json", "identity", processes=2,
                           cost=len, cost_rate="5/s")  # fmt: skip


async def test_concurrency_auto_from_python(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.txt", [str(i) for i in range(200)])
    most = running = 0

    async def call(item: str) -> str:
        nonlocal most, running
        running += 1
        most = max(most, running)
        await anyio.lowlevel.checkpoint()
        running -= 1
        return item

    summary = await asyncproc.process_file(
        source, tmp_path / "out.json", call, concurrency="auto", max_concurrency=12,
        quiet=True, checkpoint_dir=tmp_path / "ck",
    )  # fmt: skip
    assert summary.processed == 200 and summary.concurrency == 12
    assert summary.concurrency_limit is not None and 1 <= summary.concurrency_limit <= 12
    assert most <= 12


async def test_a_rejection_during_a_retry_is_not_a_failed_attempt(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.txt", ["a", "b", "c"])
    seen: dict[str, int] = {}

    async def call(item: str) -> str:
        seen[item] = seen.get(item, 0) + 1
        if item == "b" and seen[item] == 1:
            raise ConnectionError("reset")  # an ordinary failure: one attempt spent
        if item == "b" and seen[item] < 5:
            raise RetryAfter(0)  # then rejected three times: none of them counts
        return item

    summary = await asyncproc.process_file(
        source, tmp_path / "out.json", call, retries=1, quiet=True,
        checkpoint_dir=tmp_path / "ck",
    )  # fmt: skip
    assert (summary.processed, summary.failed, summary.rejected) == (3, 0, 3)
    assert seen == {"a": 1, "b": 5, "c": 1}
