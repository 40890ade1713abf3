"""The keyed API on any storage: fsspec's memory://, a real S3 API (moto on loopback), and
a :class:`MemoryStorage` handed in; each run is locked by a lease there, and resumes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

import asyncproc
from asyncproc._errors import RunLockedError
from asyncproc._runs_api import runs_in
from asyncproc.storage.memory import MemoryStorage
from asyncproc.storage.protocol import Storage

CONFIG = {"source": "catalogue", "version": 2}


async def interrupt_then_resume(ck: str | Storage, **options: Any) -> None:
    """Mark keys, leave the run interrupted, then resume it from a fresh manager."""
    manager = asyncproc.CheckpointManager(ck, shards=2, **options)
    run = await manager.start_run(CONFIG)
    loader = await run.loader("items", interval=2)
    for key in range(5):
        await loader.mark_processed(key)
    await loader.mark_failed(99, ValueError("bad row"))
    loader.set_total_items(6)
    other = asyncproc.CheckpointManager(ck, shards=2, **options)
    with pytest.raises(RunLockedError):  # the lease holds it while this run works
        await other.start_run(CONFIG, run_id=run.run_id)
    await run.close()
    (info,) = other.list_runs()
    assert (info.run_id, info.status, info.loaders) == (
        run.run_id, asyncproc.RunStatus.INTERRUPTED, ("items",)
    )  # fmt: skip
    again = await other.start_run(CONFIG)
    assert again.resumed and again.run_id == run.run_id
    resumed = await again.loader("items")
    assert resumed.processed_keys() == frozenset(range(5))
    assert [f.key for f in resumed.failures()] == [99]
    assert resumed.stats().total == 6
    await resumed.mark_processed(99)
    await again.complete()
    (done,) = asyncproc.CheckpointManager(ck, shards=2, **options).list_runs()
    assert done.status is asyncproc.RunStatus.COMPLETED


async def test_keyed_runs_on_fsspec_memory_make_no_local_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    await interrupt_then_resume(f"memory://{tmp_path.name}/ck")
    assert os.listdir(tmp_path) == [], "a memory:// checkpoint made local files"


async def test_keyed_runs_on_s3(tmp_path: Path, s3_server: Any, s3_bucket: str) -> None:
    ck = f"s3://{s3_bucket}/{tmp_path.name}/ck"
    await interrupt_then_resume(ck, storage_options=s3_server.options())


async def test_keyed_runs_on_a_storage_handed_in() -> None:
    storage = MemoryStorage()
    await interrupt_then_resume(storage)
    names = storage.list("")
    assert any(n.endswith("/keyed.json") for n in names), names
    assert any("/loaders/items/" in n for n in names), names


async def test_the_decorator_resumes_on_memory(tmp_path: Path) -> None:
    storage = MemoryStorage()
    calls: list[int] = []

    @asyncproc.checkpointed(name="load", interval=1, checkpoint_dir=storage, shards=2)
    async def load(ctx: asyncproc.LoaderContext[int], stop: int | None) -> None:
        for key in range(10):
            if ctx.checkpoint.is_processed(key):
                continue
            if key == stop:
                raise RuntimeError("stopped on purpose")
            calls.append(key)
            await ctx.checkpoint.mark_processed(key)

    with pytest.raises(RuntimeError):
        await load(4)
    await load(None)
    assert calls == list(range(10)), "each key once over both calls"


async def test_run_management_lists_file_and_keyed_runs_at_a_url(tmp_path: Path) -> None:
    ck = f"memory://{tmp_path.name}/mixed"
    source = tmp_path / "in.txt"
    source.write_text("".join(f"line {i}\n" for i in range(50)))
    done = await asyncproc.process_file(source, tmp_path / "out.jsonl", checkpoint_dir=ck,
                                        quiet=True)  # fmt: skip
    manager = asyncproc.CheckpointManager(ck, shards=2)
    async with await manager.start_run(CONFIG, description="keyed beside a file run") as run:
        loader = await run.loader("items")
        await loader.mark_failed("k1", ValueError("bad key"))
    views = {v.run_id: v for v in asyncproc.list_runs(ck)}
    assert {(v.run_id, v.kind, v.status) for v in views.values()} == {
        (done.run_id, "file", asyncproc.RunStatus.COMPLETED),
        (run.run_id, "keyed", asyncproc.RunStatus.COMPLETED),
    }, views
    keyed = asyncproc.get_run(run.run_id, ck)
    assert keyed.description == "keyed beside a file run"
    (failure,) = runs_in(ck).failures(keyed, 5)
    assert (failure["loader"], failure["key"]) == ("items", "k1"), failure
    assert asyncproc.get_run(done.run_id, ck).processed == 50
