"""Keyed checkpoints: the decorator, the manual form, the manager; in-process and real kills."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from conftest import CLI_TIMEOUT

import asyncproc
from asyncproc.keyed.records import shard_of

KEYS = [f"item-{i:04d}" for i in range(100)]


class Stop(Exception):
    """Raised by a loader on purpose to leave its run unfinished."""


def _loader(ck: Path, calls: list[str], stop_after: int | None, interval: int = 10) -> object:
    @asyncproc.checkpointed(name="load_items", interval=interval, checkpoint_dir=ck, shards=4)
    async def load(ctx: asyncproc.LoaderContext[str], items: list[str]) -> asyncproc.ItemsReport:
        async def handle(item: str) -> None:
            calls.append(item)

        report = await ctx.process_items(items[:stop_after], handle, concurrency=4)
        if stop_after is not None:
            raise Stop(f"stopped after {stop_after}")
        return report

    return load


async def test_second_call_skips_keys_done_by_the_first(tmp_path: Path) -> None:
    calls: list[str] = []
    with pytest.raises(Stop):
        await _loader(tmp_path, calls, 40)(KEYS)  # type: ignore[operator]
    (run,) = asyncproc.CheckpointManager(tmp_path).list_runs()
    assert run.status is asyncproc.RunStatus.FAILED and "stopped after 40" in (run.error or "")
    report = await _loader(tmp_path, calls, None)(KEYS)  # type: ignore[operator]
    assert report == asyncproc.ItemsReport(succeeded=60, failed=0, skipped=40)
    assert sorted(calls) == KEYS, "every key exactly once over both calls"
    statuses = [r.status for r in asyncproc.CheckpointManager(tmp_path).list_runs()]
    assert statuses == [asyncproc.RunStatus.COMPLETED]
    third: list[str] = []
    assert (await _loader(tmp_path, third, None)(KEYS)).succeeded == 100  # type: ignore[operator]
    assert len(asyncproc.CheckpointManager(tmp_path).list_runs()) == 2, "completed: a new run"


async def test_failures_are_recorded_and_retried_on_resume(tmp_path: Path) -> None:
    broken = {"item-0003", "item-0050"}
    seen: list[str] = []

    @asyncproc.checkpointed(interval=5, checkpoint_dir=tmp_path)
    async def load(ctx: asyncproc.LoaderContext[str], fail: bool) -> asyncproc.LoaderStats:
        async def handle(item: str) -> None:
            seen.append(item)
            if fail and item in broken:
                raise ValueError(f"cannot load {item}")

        await ctx.process_items(KEYS, handle, concurrency=3)
        if fail:
            raise Stop("failures left")
        return ctx.stats()

    with pytest.raises(Stop):
        await load(True)
    assert len(seen) == 100
    seen.clear()
    stats = await load(False)
    assert sorted(seen) == sorted(broken), "only the failed keys run again"
    assert (stats.processed, stats.failures) == (100, 0)


async def test_stats_list_failures_with_errors(tmp_path: Path) -> None:
    manager = asyncproc.CheckpointManager(tmp_path, shards=2)
    async with await manager.start_run({"source": "api"}) as run:
        loader = await run.loader("pages", interval=3)
        loader.set_total_items(4)
        await loader.mark_processed("a")
        await loader.mark_failed("b", KeyError("b"))
        await loader.mark_failed(7, "timed out")
        stats = loader.stats()
    assert (stats.processed, stats.total, stats.percent, stats.failures) == (1, 4, 25.0, 2)
    assert [(f.key, f.error_type, f.error) for f in stats.recent_failures] == [
        (7, "Error", "timed out"),
        ("b", "KeyError", "'b'"),
    ]
    assert loader.is_processed("a") and not loader.is_processed("b")
    with pytest.raises(asyncproc.RunError, match="start or resume"):
        await loader.mark_processed("c")


async def test_async_iterator_in_another_order_on_resume(tmp_path: Path) -> None:
    calls: list[str] = []

    async def items(order: list[str]) -> AsyncIterator[str]:
        for item in order:
            await anyio.lowlevel.checkpoint()
            yield item

    @asyncproc.checkpointed(interval=7, checkpoint_dir=tmp_path)
    async def load(ctx: asyncproc.LoaderContext[str], order: list[str], stop: bool) -> int:
        async def handle(item: str) -> None:
            calls.append(item)

        report = await ctx.process_items(items(order), handle, concurrency=3)
        if stop:
            raise Stop("unfinished")
        return report.skipped

    with pytest.raises(Stop):
        await load(KEYS[:30], True)
    calls.clear()
    assert await load(KEYS[::-1], False) == 30
    assert sorted(calls) == KEYS[30:], "no done key runs again"


async def test_concurrency_is_bounded(tmp_path: Path) -> None:
    in_flight = peak = 0
    release = anyio.Event()

    async def handle(item: str) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 5:
            release.set()
        await release.wait()
        in_flight -= 1

    @asyncproc.checkpointed(checkpoint_dir=tmp_path)
    async def load(ctx: asyncproc.LoaderContext[str]) -> asyncproc.ItemsReport:
        return await ctx.process_items(KEYS + KEYS[:10], handle, concurrency=5)

    with anyio.fail_after(10):
        report = await load()
    assert peak == 5
    assert report == asyncproc.ItemsReport(succeeded=100, failed=0, skipped=10)


async def test_an_endless_iterator_is_read_only_as_items_are_taken(tmp_path: Path) -> None:
    """With every lane held, the items are read no further than one past the lanes."""
    yielded = started = 0
    seen = -1
    release = anyio.Event()

    async def endless() -> AsyncIterator[str]:
        nonlocal yielded
        while not release.is_set():
            yielded += 1
            yield f"key-{yielded}"

    async def handle(item: str) -> None:
        nonlocal started
        started += 1
        await release.wait()

    async def watch() -> None:
        nonlocal seen
        while started < 3:
            await anyio.lowlevel.checkpoint()
        await anyio.wait_all_tasks_blocked()  # the lanes held, the feeder resting
        seen = yielded
        release.set()

    @asyncproc.checkpointed(checkpoint_dir=tmp_path)
    async def load(ctx: asyncproc.LoaderContext[str]) -> asyncproc.ItemsReport:
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            report = await ctx.process_items(endless(), handle, concurrency=3)
        return report

    with anyio.fail_after(10):
        report = await load()
    assert started >= 3 and seen == 4, (started, seen)
    assert report.succeeded == yielded, (report, yielded)


async def test_manager_resume_named_refuse_config_and_lock(tmp_path: Path) -> None:
    manager = asyncproc.CheckpointManager(tmp_path, shards=3)
    first = await manager.start_run({"db": "prod", "limit": 10})
    assert first.run_id.startswith("run_") and not first.resumed
    with pytest.raises(asyncproc.RunLockedError, match="in progress in pid"):
        await manager.start_run({"db": "prod", "limit": 10})
    await (await first.loader("rows")).mark_processed("r1")
    await first.close()
    assert manager.list_runs()[0].status is asyncproc.RunStatus.INTERRUPTED

    with pytest.raises(asyncproc.IncompatibleRunError) as refused:
        await manager.start_run({"db": "test", "limit": 10, "extra": True})
    message = str(refused.value)
    assert "db: run has 'prod', now 'test'" in message and "extra: run has None" in message
    assert "new_run=True" in message

    again = await manager.start_run({"db": "prod", "limit": 10}, run_id=first.run_id)
    assert again.resumed and (await again.loader("rows")).is_processed("r1")
    await again.complete()
    with pytest.raises(asyncproc.RunError, match="already completed"):
        await manager.start_run({"db": "prod", "limit": 10}, run_id=first.run_id)
    with pytest.raises(asyncproc.RunNotFoundError, match="list_runs"):
        await manager.start_run(run_id="run_19990101_000000")
    fresh = await manager.start_run(new_run=True)
    assert fresh.run_id != first.run_id and not fresh.resumed
    await fresh.fail(RuntimeError("db down"))
    info = manager.latest_incomplete()
    assert info is not None and info.error == "RuntimeError: db down"
    assert [r.loaders for r in manager.list_runs()] == [(), ("rows",)]


def test_shard_of_is_stable() -> None:
    assert [shard_of(k, 8) for k in ("a", "b", 1, 2)] == [shard_of(k, 8) for k in ("a", "b", 1, 2)]
    probe = subprocess.run(
        [sys.executable, "-c", "from asyncproc.keyed.records import shard_of;"
         "print([shard_of(k, 8) for k in ('a', 'b', 1, 2)])"],
        capture_output=True, text=True, check=True, timeout=CLI_TIMEOUT,
    )  # fmt: skip
    assert probe.stdout.strip() == str([shard_of(k, 8) for k in ("a", "b", 1, 2)])
    spread = {shard_of(k, 8) for k in KEYS}
    assert spread == set(range(8))


async def test_bad_keys_and_names_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(asyncproc.ConfigError, match="at least 1"):
        asyncproc.checkpointed(interval=0)
    async with await asyncproc.CheckpointManager(tmp_path).start_run() as run:
        with pytest.raises(asyncproc.ConfigError, match="rename it"):
            await run.loader("../escape")
        loader = await run.loader("ok")
        with pytest.raises(asyncproc.ConfigError, match="str or an int"):
            await loader.mark_processed(1.5)  # type: ignore[arg-type]
        ctx = asyncproc.LoaderContext[object](loader, lambda item: item, run.run_id)  # type: ignore[arg-type,return-value]
        done: list[object] = []

        async def handle(item: object) -> None:
            done.append(item)

        with pytest.raises(asyncproc.ConfigError, match="make the key function return"):
            await ctx.process_items(["a", "b", 2.5, "c"], handle, concurrency=1)
        assert done == ["a", "b"] and loader.is_processed("b")


# -- real processes: SIGKILL and a corrupt shard file --------------------------------------

CHILD = """
import json
import json
import os
import sys
import time

import anyio

import asyncproc

CK, CALLS, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
STOP_AT = int(sys.argv[4]) if len(sys.argv) > 4 else -1


@asyncproc.checkpointed(name="ids", interval=10, checkpoint_dir=CK, shards=4)
async def load(ctx, ids):
    async def handle(key):
        fd = os.open(CALLS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(fd, f"{key}\\n".encode())
        os.close(fd)
        if key == STOP_AT:
            os._exit(0)  # a hard stop: no final save
        await anyio.sleep(0.001)

    return await ctx.process_items(ids, handle, concurrency=8)


print(anyio.run(load, list(range(N))).succeeded)
"""


def _calls(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


async def _acknowledged(ck: Path, n: int) -> set[int]:
    async with await asyncproc.CheckpointManager(ck).start_run() as run:
        loader = await run.loader("ids")
        acked = {k for k in range(n) if loader.is_processed(k)}
        await run.close()
    return acked


def _child(tmp_path: Path, *args: str | Path | int) -> list[str]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD))
    return [sys.executable, str(script), *(str(a) for a in args)]


def test_sigkill_mid_run_loses_no_acknowledged_key(tmp_path: Path) -> None:
    n, ck, log1, log2 = 3000, tmp_path / "ck", tmp_path / "calls1", tmp_path / "calls2"
    proc = subprocess.Popen(_child(tmp_path, ck, log1, n), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while len(_calls(log1)) < 500:
            assert proc.poll() is None and time.monotonic() < deadline, "no checkpoints"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    first = _calls(log1)
    acked = anyio.run(_acknowledged, ck, n)
    assert 400 <= len(acked) < n and acked <= set(first)
    resumed = subprocess.run(
        _child(tmp_path, ck, log2, n), capture_output=True, text=True, timeout=CLI_TIMEOUT,
        check=True,
    )  # fmt: skip
    second = _calls(log2)
    assert int(resumed.stdout) == len(second) == n - len(acked)
    assert not acked & set(second), "an acknowledged key was processed again"
    assert acked | set(second) == set(range(n)), "a key was never processed"


def test_corrupt_shard_file_costs_at_most_one_interval(tmp_path: Path) -> None:
    n, ck, log = 400, tmp_path / "ck", tmp_path / "calls"
    subprocess.run(_child(tmp_path, ck, log, n, 200), check=True, timeout=CLI_TIMEOUT)
    before = anyio.run(_acknowledged, ck, n)
    (shard_dir,) = ck.glob("run_*/loaders/ids/units")
    newest = max(
        shard_dir.glob("0002.*.ckpt"), key=lambda p: json.loads(p.read_bytes())["generation"]
    )
    newest.write_bytes(newest.read_bytes()[:40])  # torn
    after = anyio.run(_acknowledged, ck, n)
    lost = before - after
    assert after <= before and 0 < len(lost) <= 10, len(lost)
    assert {shard_of(k, 4) for k in lost} == {2}
