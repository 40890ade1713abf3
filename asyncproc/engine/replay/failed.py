"""``--retry-failed``: process a finished run's failed items again, splice in the successes.

A retry is checkpointed like any run, and streams like one: the failed-items file is
its input, read a block at a time (:mod:`.run`); each item's line is re-read from
the input at its recorded offset (the input must be the one the run planned), run
through the one item pipeline, and committed in failed-items order to the retry's own
segments and two-slot checkpoint under ``<run>/retry/`` (:mod:`.state`). Once
every item is committed, the successes are spliced into the output by index, the items
still failing replace the failed-items file, the summary is recorded and the retry's
state cleared (:mod:`.publish`). Successes are encoded exactly as a clean run
encodes them, so the result is byte-identical to a run in which they never failed.

The input, the output (with its failed items beside it) and the run directory may
each be a local path or a URL (``s3://...``): files and objects are reached through
:class:`~asyncproc.storage.location.Location` with the invocation's storage options,
and the retry's state lives in the run's own storage, whichever it is.

After a crash, the next ``--retry-failed`` goes on with the retry it finds: from its
checkpoint if it was still retrying (nothing committed is processed again), or from
its publication if every item was committed, in which case this invocation then makes
a retry pass of its own over what is still failing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import anyio

from ..._errors import unwrap_group
from ..._options import Options
from ...limits.gate import Gate, LimitConfig
from ...processors.loading import Processor
from ...runs.rundir import RunDir
from ...storage.location import Location
from ...storage.records import Manifest, UnitCheckpoint
from ..choose import require_unchanged
from ..pipeline import Pipeline
from ..sources import failed_location
from ..summary import Summary
from ..watchdog import watch_loop
from .publish import publish_retry, summary_after
from .run import LetterReader, RetryRun
from .state import RetryState, leftover, retry_store, start

log = logging.getLogger("asyncproc")


async def retry_failed(
    run: RunDir, processor: Processor, options: Options, summary: Summary,
    gate: Gate | None = None, storage_options: Mapping[str, Any] | None = None,
) -> Summary:  # fmt: skip
    """Retry the failed items of a completed run (going on with an interrupted retry).

    The input, the output and the failed items may be files or objects at URLs;
    ``storage_options`` are the invocation's for those (never stored).
    """
    started = time.monotonic()
    manifest = await anyio.to_thread.run_sync(run.read)
    places = Places.of(manifest, storage_options)
    state = await anyio.to_thread.run_sync(leftover, run, manifest, places.failed)
    if state is not None and state.done:
        log.info("run %s: publishing the retry a crash interrupted", run.run_id)
        manifest, summary = await _publish(run, manifest, places, summary, state.checkpoint,
                                           started, 0)  # fmt: skip
        state = None
    if state is None:
        if not summary.failed_items_file:
            return summary
        state = await anyio.to_thread.run_sync(start, run, manifest, places.failed)
    gate = gate or Gate(LimitConfig.from_options(options))
    final, here = await _retry(run, manifest, places, state, processor, options, gate)
    return (await _publish(run, manifest, places, summary, final, started, here))[1]


@dataclass(frozen=True, slots=True)
class Places:
    """Where a retry reads and writes, with the invocation's storage options.

    The failed items are always derived from the output, never read from a record, so
    nothing planted in a run directory can point a retry at another file.
    """

    input: Location
    output: Location
    failed: Location

    @classmethod
    def of(cls, manifest: Manifest, storage_options: Mapping[str, Any] | None) -> Self:
        output = Location(manifest.output, storage_options)
        source = Location(manifest.input.path, storage_options)
        return cls(source, output, failed_location(output))


async def _publish(
    run: RunDir, manifest: Manifest, places: Places, summary: Summary, final: UnitCheckpoint,
    started: float, here: int,
) -> tuple[Manifest, Summary]:  # fmt: skip
    failed = places.failed.shown
    updated = summary_after(summary, final, failed, time.monotonic() - started, here)
    manifest = await anyio.to_thread.run_sync(
        publish_retry, run, manifest, final, updated, places.output.options
    )
    return manifest, updated


async def _retry(
    run: RunDir, manifest: Manifest, places: Places, state: RetryState, processor: Processor,
    options: Options, gate: Gate,
) -> tuple[UnitCheckpoint, int]:  # fmt: skip
    """Retry what the state has left; the final checkpoint and the items committed here."""
    await anyio.to_thread.run_sync(
        require_unchanged, manifest.input, run.run_id, "since", places.input.options
    )
    plan, begin = state.plan, state.checkpoint
    done = begin.processed + begin.failed
    if done:
        log.info("run %s: resuming its retry, %d of %d failed item(s) left", run.run_id,
                 plan.items - done, plan.items)  # fmt: skip
    else:
        log.info("retrying %d failed item(s) of run %s", plan.items, run.run_id)
    reader = await anyio.to_thread.run_sync(
        LetterReader, places.failed, begin.offset, plan.failed.size,
        places.input, manifest.input.size, str(manifest.options["format"]),
    )  # fmt: skip
    pipeline = _pipeline(manifest, processor, options, gate)
    retry = RetryRun(
        reader, begin, plan.failed.size, retry_store(run, options.durable), pipeline,
        lanes=options.concurrency, batch_size=options.batch_size,
        commit_interval=options.commit_interval, fingerprint=manifest.input.fingerprint,
    )  # fmt: skip
    try:
        with watch_loop(processor.is_async):
            final = await retry.run()
    except BaseExceptionGroup as group:
        cause = unwrap_group(group)
        raise cause from (None if cause is group else group)
    finally:
        reader.close()
        pipeline.close()
        with anyio.CancelScope(shield=True):
            await pipeline.aclose()
    return final, retry.committed


def _pipeline(manifest: Manifest, processor: Processor, options: Options, gate: Gate) -> Pipeline:
    return Pipeline(
        processor, format=str(manifest.options["format"]),
        output_kind=str(manifest.options["output_kind"]), retries=options.retries,
        timeout=options.timeout, threads=options.threads or options.concurrency,
        gate=gate,
    )  # fmt: skip
