"""One attempt at a retry: dead letters streamed in, an ordered prefix committed out.

A :class:`RetryRun` is work for lanes (:class:`~..lanes.LaneWork`), as a unit's attempt
is, and commits as its :class:`~..attempt.Attempt`: a *feeder* reads the failed-items
file a block at a time (each dead letter with its item's line, re-read from the input at
its recorded offset) into a bounded queue; a pool of ``lanes`` (:class:`~..lanes.LanePool`)
runs each item through the one :class:`~..pipeline.Pipeline`;
:class:`~..ordering.Ordering` puts the results back in failed-items order (sequence
numbers are positions in that file, and what an item reaches is the end of its dead
letter there); a *committer* makes the ordered prefix durable every ``batch_size`` items
or ``commit_interval`` seconds. Lanes stop taking items ``window`` items ahead of the
last commit, so memory is bounded by the window, not by the number of failed items.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import anyio
import orjson

from ..._errors import CheckpointError, option
from ...storage.location import Location
from ...storage.records import UnitCheckpoint
from ...storage.unitstore import UnitStore
from ..attempt import Attempt
from ..committing import commit_batches
from ..items import items_for
from ..lanes import FEED_LOW_WATER, LanePool, LaneWork
from ..ordering import Ordering, Point
from ..pipeline import Pipeline
from ..unit import window

BLOCK_ITEMS = 512  # most dead letters read in one thread round trip
BLOCK_BYTES = 1 << 20  # and about this many bytes of their input lines
LINE_STEP = 1 << 16  # an input line is read this much at a time, up to its line end

# A dead letter waiting for a lane: the end of its line in the failed-items file, the
# item's index, the offset of its line in the input, and that line without its newline.
Pending = tuple[int, int, int, bytes]


class LetterReader:
    """The failed-items file from a line start on, each dead letter with its input line.

    Either may be a local file or an object at a URL (:class:`Location`, with the
    invocation's storage options): the failed items are read forward through a buffer,
    the input with one ranged read per line that the last one did not bring in.
    Blocking; the retry calls :meth:`read` from a worker thread, one block per call.
    """

    def __init__(
        self, failed: Location | Path, start: int, end: int, source: Location | Path, size: int,
        fmt: str = "text",
    ) -> None:  # fmt: skip
        failed, source = _located(failed), _located(source)
        self._letters: BinaryIO = failed.open_read()
        try:
            self._letters.seek(start)
            self._input: BinaryIO = source.open_ranged(size)
        except BaseException:
            self._letters.close()
            raise
        self._name, self._position, self._end, self._size = failed, start, end, size
        self._last = -1  # the index of the last letter read: they must ascend
        self._items = items_for(fmt)

    def read(self) -> list[Pending]:
        """The next block of dead letters; empty once the planned end is reached."""
        block: list[Pending] = []
        taken = 0
        while self._position < self._end and len(block) < BLOCK_ITEMS and taken < BLOCK_BYTES:
            line = self._letters.readline()
            if not line:
                raise CheckpointError(
                    f"failed-items file {self._name} ended at byte {self._position}, before "
                    f"the {self._end} bytes the retry planned; retry again "
                    f"({option('retry_failed')})"
                )
            at, self._position = self._position, min(self._position + len(line), self._end)
            if line.strip():
                index, offset = self._letter(line, at)
                raw = self._line_at(offset)
                block.append((self._position, index, offset, raw))
                taken += len(raw)
        return block

    def _letter(self, line: bytes, at: int) -> tuple[int, int]:
        """A dead letter's index and input offset, checked before the input is read."""
        where = f"failed-items file {self._name}, line at byte {at}"
        try:
            letter = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CheckpointError(f"{where} is not JSON: {exc}") from exc
        index = letter.get("index") if isinstance(letter, dict) else None
        offset = letter.get("offset") if isinstance(letter, dict) else None
        if type(index) is not int or type(offset) is not int or index < 0:
            raise CheckpointError(f"{where} is not a dead letter (no integer index and offset)")
        if not 0 <= offset < self._size:
            raise CheckpointError(f"{where}: offset {offset} is outside the input")
        if index <= self._last:
            raise CheckpointError(f"{where}: index {index} after {self._last}, not in input order")
        self._last = index
        return index, offset

    def _line_at(self, offset: int) -> bytes:
        """The item starting at ``offset``, as the reader cut it (up to its line end)."""
        self._input.seek(offset)
        data = bytearray()
        while (cut := self._items.line_end(data)) is None:
            more = self._input.read(LINE_STEP)
            if not more:  # the input's last line, without a line end
                return self._items.first(bytes(data))
            data += more
        return self._items.first(bytes(data[:cut]))

    def close(self) -> None:
        self._letters.close()
        self._input.close()


def _located(where: Location | Path) -> Location:
    return where if isinstance(where, Location) else Location(where)


class RetryRun(LaneWork[bytes]):
    """One attempt at a retry, resuming from ``start`` (a checkpoint in the failed file).

    Its items tell a processor's ``current_item()`` unit -1: they come from every unit.
    """

    def __init__(
        self, reader: LetterReader, start: UnitCheckpoint, end: int, store: UnitStore,
        pipeline: Pipeline, *, lanes: int, batch_size: int, commit_interval: float,
        fingerprint: str,
    ) -> None:  # fmt: skip
        self._pool = LanePool(lanes, pipeline, fingerprint)
        order, limit = Ordering(batch_size, start.offset), window(lanes, batch_size)
        super().__init__(-1, order, limit, start.next_index, self._pool.wake, indexed=True)
        self.eof = False
        self.committed = 0  # items committed by this attempt
        self.peak = self.peak_queue = 0  # most results held, most letters queued: for tests
        self._reader, self._end, self._interval = reader, end, commit_interval
        self._attempt = Attempt(start, store, committed="retry_committed")

    async def run(self) -> UnitCheckpoint:
        """Retry every dead letter left; return the final checkpoint (offset at the end)."""
        await anyio.to_thread.run_sync(self._attempt.open)
        self._pool.add(self)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pool.run)
                tg.start_soon(self._feed)
                await self._commit_loop()
                self._pool.close()  # every item is committed: the lanes end
        finally:
            self._attempt.close()
        return self._attempt.durable

    # -- feeder -----------------------------------------------------------------------

    async def _feed(self) -> None:
        while block := await anyio.to_thread.run_sync(self._reader.read):
            ends, indexes, starts, lines = zip(*block, strict=True)
            self.queue(starts, lines, ends, indexes)
            self.peak_queue = max(self.peak_queue, len(self.lines))
            while len(self.lines) > FEED_LOW_WATER:
                await self.space.wait()
        self.eof = True
        self._pool.wake()
        self.batch.fire()

    # -- committer --------------------------------------------------------------------

    def _over(self) -> bool:
        """Every dead letter is read, taken and ordered."""
        return self.eof and not self.lines and self.order.complete

    async def _commit_loop(self) -> None:
        """Commit batch by batch, as a unit does (:func:`.committing.commit_batches`)."""
        await commit_batches(self.order, self.batch, self._interval, self._over, self._commit)

    async def _commit(self, point: Point, final: bool = False) -> None:
        """Make the ordered prefix up to ``point`` durable (:meth:`.Attempt.commit`)."""
        cut = await self._attempt.commit(self.order, point, self._end if final else point.offset)
        if cut is None:
            return  # nothing new to say
        self._note_peak()
        self.order.made_durable(point)
        self.committed += cut.ok + cut.failed
        self._pool.wake()  # the window moved: lanes may take more items

    def _note_peak(self) -> None:
        """Lanes run furthest ahead of the last durable commit while the next is made."""
        self.peak = max(self.peak, self.order.taken - self.order.durable)
