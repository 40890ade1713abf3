"""Publishing a retry whose items are all committed: output, failed-items file, summary.

Each step can be redone after a crash, and its crash point is named after it:

1. ``retry_before_publish``; the output is rewritten as a streaming splice of the
   existing records and the retry's committed successes, by index, and replaced whole.
   An index already in the output wins, so a splice redone after the output was
   replaced changes nothing.
2. ``retry_after_output``; the failed-items file is replaced by the retry's committed
   dead letters (or removed when none is left): the same bytes every time.
3. ``retry_after_failed_file``; the summary is recorded in the manifest. Its counts come
   from the summary the retry started from, which the manifest still holds until this
   step (the retry's plan remembers the manifest's ``updated_at`` to tell).
4. ``retry_before_clear``; the retry's state is removed.

The output and the failed items may be objects at URLs (``s3://...``). Nothing there
renames, so "replaced whole" is one streamed upload to the object's own key (a
multipart upload on S3), read from the old object while it is written: the store shows
the old object until the upload completes, then the whole new one, never a mix, and an
error on the way abandons the upload (:func:`.sources.publish_object`). The argument
above then holds as it is: a crash before the upload completes leaves the old output,
and step 1 redoes the splice from it; a crash after it leaves the spliced output, in
which every success's index is already present, so the redone splice writes the same
bytes again; step 2 uploads the same dead letters (or deletes an object already gone);
the manifest is one whole-object write; and a clear cut short leaves a plan older than
the manifest, or state without a plan, both of which the next retry clears. The
output's lease, held for the whole invocation, keeps any other run from writing
either object meanwhile.

Blocking; the retry runs it in a worker thread.
"""

from __future__ import annotations

import heapq
import logging
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from ..._errors import CheckpointError
from ...runs.rundir import RunDir
from ...storage.faults import crashpoint
from ...storage.location import Location
from ...storage.records import Manifest, RunStatus, UnitCheckpoint
from ..merge import committed_chunks, publish, whole_lines
from ..sources import failed_location, publish_object, remove_object
from ..summary import Summary
from .state import clear, retry_storage

log = logging.getLogger("asyncproc")


def publish_retry(
    run: RunDir, manifest: Manifest, final: UnitCheckpoint, updated: Summary,
    storage_options: Mapping[str, Any] | None = None,
) -> Manifest:  # fmt: skip
    """Publish a committed retry, record ``updated`` and forget the retry's state.

    ``storage_options`` are the invocation's, for an output at a URL (never stored).
    """
    output = Location(manifest.output, storage_options)
    storage = retry_storage(run)
    crashpoint("retry_before_publish")
    new = records(committed_chunks(storage, [final], dead=False))
    splice_into(output, new, manifest.options["output_kind"] == "json")
    crashpoint("retry_after_output")
    dead = committed_chunks(storage, [final], dead=True) if final.failed else None
    replace_failed(failed_location(output), dead)
    crashpoint("retry_after_failed_file")
    manifest = run.set_status(manifest, RunStatus.COMPLETED, summary=updated.to_dict())
    crashpoint("retry_before_clear")
    clear(run)
    log.info(
        "retried %d item(s) of run %s: %d succeeded, %d still failing",
        final.processed + final.failed, run.run_id, final.processed, final.failed,
    )  # fmt: skip
    return manifest


def splice_into(output: Location, new: Iterable[bytes], as_array: bool) -> None:
    """Replace the output, file or object, by itself with the ``new`` records spliced in."""
    if output.is_local:
        publish(output.path, spliced(existing_records(output.path), new), as_array)
        return
    with _open_output(output) as fh:  # open before the upload starts: the old object
        publish_object(output, spliced(_records_of(fh), new), as_array)


def replace_failed(failed: Location, dead: Iterable[bytes] | None) -> None:
    """Replace the failed items by ``dead``, or remove them when None: the same every time."""
    if failed.is_local and dead is not None:
        publish(failed.path, dead, False, private=True)
    elif failed.is_local:
        failed.path.unlink(missing_ok=True)
    elif dead is not None:
        publish_object(failed, dead, False)
    else:
        remove_object(failed)


def summary_after(
    summary: Summary, final: UnitCheckpoint, failed: str, elapsed: float, here: int
) -> Summary:
    """The run's summary once the retry is published; ``here`` items ran in this process."""
    return replace(
        summary,
        processed=summary.processed + final.processed,
        failed=final.failed,
        failed_items_file=failed if final.failed else None,
        resumed=True,
        elapsed_s=round(elapsed, 3),
        items_per_s=round(here / elapsed, 1) if elapsed > 0 else 0.0,
    )


def existing_records(output: Path) -> Iterator[bytes]:
    """The output's records as JSON lines, whichever layout it has, streamed.

    The output is the one asyncproc published (a regular file): a symlink planted in its
    place is not read through.
    """
    fd = os.open(output, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CheckpointError(
            f"output {output} is not a regular file any more; cannot splice the retried "
            "items into it: restore it, or start over with --new-run"
        )
    with os.fdopen(fd, "rb") as fh:
        yield from _records_of(fh)


def _open_output(output: Location) -> BinaryIO:
    """The output object, open for reading forward; a clear error if it is gone."""
    try:
        if output.info()["type"] == "file":
            return output.open_read()
    except FileNotFoundError:
        pass
    raise CheckpointError(
        f"output {output} is gone; cannot splice the retried items into it: restore it, "
        "or start over with --new-run"
    )


def _records_of(fh: BinaryIO) -> Iterator[bytes]:
    """The records of an open output as JSON lines, whichever layout it has."""
    for line in fh:
        body = line.strip()
        if body in (b"[", b"]", b"[]", b""):
            continue
        yield body.rstrip(b",") + b"\n"


def records(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Committed segment bytes as one record (a JSON line) at a time."""
    for block in whole_lines(chunks):
        for line in block.split(b"\n")[:-1]:
            yield line + b"\n"


def spliced(existing: Iterable[bytes], new: Iterable[bytes]) -> Iterator[bytes]:
    """Merge two streams of records ascending by index; an index already present wins.

    ``heapq.merge`` is stable, so of two records with one index the existing one comes
    first and the other is dropped. Memory: one record of each stream.
    """
    previous = -1
    merged = heapq.merge(_by_index(existing, "output"), _by_index(new, "retry"),
                         key=itemgetter(0))  # fmt: skip
    for index, line in merged:
        if index != previous:
            yield line
        previous = index


def _by_index(lines: Iterable[bytes], what: str) -> Iterator[tuple[int, bytes]]:
    """Each record with its index, refusing a stream that is not in input order."""
    previous = -1
    for line in lines:
        index = _index_of(line, what)
        if index < previous:
            raise CheckpointError(
                f"the {what} records are not in input order (index {index} after "
                f"{previous}); cannot splice the retried items in"
            )
        previous = index
        yield index, line


def _index_of(line: bytes, what: str) -> int:
    """A record's ``index``: the engine's, which every record has (a result's own is nested)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        record = None
    index = record.get("index") if isinstance(record, dict) else None
    if type(index) is not int:
        raise CheckpointError(
            f"a line of the {what} records is not a record with an integer index "
            f"({line[:60]!r}); cannot splice the retried items in: restore the output, "
            "or start over with --new-run"
        )
    return index
