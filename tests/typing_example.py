"""A small program using the public API; ``mypy --strict`` checks it (see pyproject.toml).

Also run by ``tests/test_typing_example.py``, so it stays a working example.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import assert_type

import anyio
import anyio.lowlevel

import asyncproc


@dataclass(frozen=True)
class Item:
    id: int
    name: str


async def fetch(item: Item) -> str:
    await anyio.lowlevel.checkpoint()
    return item.name.upper()


def keyed(checkpoint_dir: Path) -> asyncproc.ItemsReport:
    @asyncproc.checkpointed(
        name="load_items", interval=25, key=lambda item: item.id, checkpoint_dir=checkpoint_dir
    )
    async def load_items(
        ctx: asyncproc.LoaderContext[Item], items: list[Item]
    ) -> asyncproc.ItemsReport:
        ctx.checkpoint.set_total_items(len(items))
        return await ctx.process_items(items, fetch, concurrency=8)

    report = anyio.run(load_items, [Item(i, f"n{i}") for i in range(50)])
    assert_type(report, asyncproc.ItemsReport)
    assert report.succeeded == 50
    return report


async def manual(checkpoint_dir: Path) -> asyncproc.LoaderStats:
    manager = asyncproc.CheckpointManager(checkpoint_dir, shards=4)
    async with await manager.start_run({"source": "example"}) as run:
        loader: asyncproc.LoaderCheckpoint = await run.loader("pages", interval=10)
        for page in range(20):
            if not loader.is_processed(page):
                await loader.mark_processed(page)
        await loader.mark_failed("page-x", ValueError("not found"))
        await loader.save_progress()
        stats = loader.stats()
    runs: list[asyncproc.KeyedRunInfo] = manager.list_runs()
    assert runs[0].status is asyncproc.RunStatus.COMPLETED
    return stats


def files(workdir: Path) -> asyncproc.Summary:
    source = workdir / "in.txt"
    source.write_text("a\nb\n")
    summary = asyncproc.run_file(source, workdir / "out.json", checkpoint_dir=workdir / "ck")
    views: list[asyncproc.RunView] = asyncproc.list_runs(workdir / "ck")
    assert views[0].run_id == summary.run_id
    return summary


def main(workdir: Path) -> None:
    keyed(workdir / "keyed")
    stats = anyio.run(manual, workdir / "manual")
    assert (stats.processed, stats.failures) == (20, 1)
    assert files(workdir).processed == 2


if __name__ == "__main__":
    main(Path(sys.argv[1]))
