"""``--retry-failed``: process a finished run's failed items again, splice in the successes.

The items are re-read from the input at their recorded offsets (the input must be the
one the run planned), so a line that was not valid UTF-8 is retried as it really is.
Successes are encoded exactly as a clean run would have encoded them and merged into
the output by index, so the result is byte-identical to a run in which they never
failed. The output is replaced atomically first and the failed-items file second; if a
crash falls between the two, the next retry finds those items already in the output
and keeps one copy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import orjson

from .._errors import CheckpointError
from .._options import Options
from ..runs.rundir import RunDir
from ..storage.records import Manifest, RunStatus
from .choose import require_unchanged
from .context import LaneSlot, current_slot
from .merge import publish
from .pipeline import Pipeline
from .processors import Processor
from .summary import Summary

log = logging.getLogger("asyncproc")

# index -> (output record, or None) and (failed-items line, or None)
Outcomes = dict[int, tuple[bytes | None, bytes | None]]


async def retry_failed(
    run: RunDir, processor: Processor, options: Options, summary: Summary
) -> Summary:
    """Retry the failed items of a completed run; return the updated summary."""
    started = time.monotonic()
    manifest = await anyio.to_thread.run_sync(run.read)
    await anyio.to_thread.run_sync(require_unchanged, manifest.input, run.run_id, "since")
    failed_path = Path(summary.failed_items_file or "")
    letters = await anyio.to_thread.run_sync(_read_letters, failed_path)
    log.info("retrying %d failed item(s) of run %s", len(letters), run.run_id)
    outcomes = await _process(letters, manifest, processor, options)
    await anyio.to_thread.run_sync(_publish, manifest, outcomes, failed_path)
    return await anyio.to_thread.run_sync(
        _record, run, manifest, summary, outcomes, time.monotonic() - started
    )


def _read_letters(path: Path) -> list[dict[str, Any]]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise CheckpointError(f"cannot read failed items {path}: {exc.strerror}") from exc
    try:
        return [orjson.loads(line) for line in lines if line.strip()]
    except orjson.JSONDecodeError as exc:
        raise CheckpointError(f"failed-items file {path} is not JSON lines: {exc}") from exc


async def _process(
    letters: list[dict[str, Any]], manifest: Manifest, processor: Processor, options: Options
) -> Outcomes:
    outcomes: Outcomes = {}
    limiter = anyio.CapacityLimiter(options.concurrency)
    pipeline = Pipeline(
        processor, format=str(manifest.options["format"]),
        output_kind=str(manifest.options["output_kind"]), retries=options.retries,
        timeout=options.timeout, threads=options.threads or options.concurrency,
    )  # fmt: skip
    raws = await anyio.to_thread.run_sync(_read_raws, Path(manifest.input.path), letters)

    async def one(index: int, offset: int, raw: bytes) -> None:
        async with limiter:
            slot = LaneSlot(-1, manifest.input.fingerprint)
            slot.index, slot.offset = index, offset
            current_slot.set(slot)
            outcome = await pipeline.process(index, offset, raw)
            outcomes[index] = (None, outcome.record) if outcome.failed else (outcome.record, None)

    async with anyio.create_task_group() as tg:
        for index, offset, raw in raws:
            tg.start_soon(one, index, offset, raw)
    return outcomes


def _read_raws(path: Path, letters: list[dict[str, Any]]) -> list[tuple[int, int, bytes]]:
    with path.open("rb") as fh:
        return [
            (int(d["index"]), int(d["offset"]), _line_at(fh, int(d["offset"]))) for d in letters
        ]


def _line_at(fh: BinaryIO, offset: int) -> bytes:
    """The line starting at ``offset``, without its newline."""
    fh.seek(offset)
    pieces = []
    while True:
        block = fh.read(65536)
        cut = block.find(b"\n")
        if cut >= 0 or not block:
            pieces.append(block if cut < 0 else block[:cut])
            return b"".join(pieces)
        pieces.append(block)


def _existing_records(output: Path) -> Iterator[bytes]:
    """The output's records as JSON lines, whichever layout it has."""
    with output.open("rb") as fh:
        for line in fh:
            body = line.strip()
            if body in (b"[", b"]", b"[]", b""):
                continue
            yield body.rstrip(b",") + b"\n"


def _spliced(existing: Iterable[bytes], new: dict[int, bytes]) -> Iterator[bytes]:
    """Merge new records into existing ones by index; an index already present wins."""
    pending = sorted(new.items())
    position = 0
    for line in existing:
        index = orjson.loads(line)["index"]
        while position < len(pending) and pending[position][0] < index:
            yield pending[position][1]
            position += 1
        if position < len(pending) and pending[position][0] == index:
            position += 1
        yield line
    yield from (record for _, record in pending[position:])


def _publish(manifest: Manifest, outcomes: Outcomes, failed_path: Path) -> None:
    output = Path(manifest.output)
    new = {index: out for index, (out, _) in outcomes.items() if out is not None}
    still = [dead for _, (_, dead) in sorted(outcomes.items()) if dead is not None]
    as_array = manifest.options["output_kind"] == "json"
    tag = f"{manifest.run_id}.retry"
    publish(output, _spliced(_existing_records(output), new), as_array, tag)
    if still:
        publish(failed_path, still, False, tag)
    else:
        failed_path.unlink(missing_ok=True)


def _record(
    run: RunDir, manifest: Manifest, summary: Summary, outcomes: Outcomes, elapsed: float
) -> Summary:
    fixed = sum(1 for out, _ in outcomes.values() if out is not None)
    remaining = len(outcomes) - fixed
    log.info("retried %d item(s): %d succeeded, %d still failing", len(outcomes), fixed, remaining)
    updated = replace(
        summary,
        processed=summary.processed + fixed,
        failed=remaining,
        failed_items_file=summary.failed_items_file if remaining else None,
        resumed=True,
        elapsed_s=round(elapsed, 3),
        items_per_s=round(len(outcomes) / elapsed, 1) if elapsed > 0 else 0.0,
    )
    run.set_status(manifest, RunStatus.COMPLETED, summary=updated.to_dict())
    return updated
