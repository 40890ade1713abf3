"""One attempt at a retry: dead letters streamed in, an ordered prefix committed out.

Built like a unit (:mod:`.unit`) from the same parts: a *feeder* reads the failed-items
file a block at a time (each dead letter with its item's line, re-read from the input
at its recorded offset) into a bounded queue; ``lanes`` tasks run each item through
the one :class:`~.pipeline.Pipeline`; :class:`~.ordering.Ordering` puts the results back
in failed-items order (sequence numbers are positions in that file, offsets are its
bytes); a *committer* makes the ordered prefix durable through a
:class:`~asyncproc.storage.unitstore.UnitStore` every ``batch_size`` items or
``commit_interval`` seconds. Lanes stop taking items ``window`` items ahead of the last
commit, so memory is bounded by the window, not by the number of failed items.
"""

from __future__ import annotations

import secrets
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.lowlevel
import orjson

from ..._errors import CheckpointError, option
from ...storage.faults import crashpoint
from ...storage.location import Location
from ...storage.records import SegmentRef, UnitCheckpoint
from ...storage.unitstore import UnitStore
from ..committing import commit_batches
from ..context import LaneSlot, current_slot
from ..items import items_for
from ..ordering import Cut, Ordering, Point
from ..pipeline import Pipeline
from ..signal import Signal
from ..unit import FEED_LOW_WATER, window

BLOCK_ITEMS = 512  # most dead letters read in one thread round trip
BLOCK_BYTES = 1 << 20  # and about this many bytes of their input lines
LINE_STEP = 1 << 16  # an input line is read this much at a time, up to its line end
YIELD_EVERY = 256  # a lane whose processor never awaits lets the committer in this often

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


class RetryRun:
    """One attempt at a retry, resuming from ``start`` (a checkpoint in the failed file)."""

    def __init__(
        self, reader: LetterReader, start: UnitCheckpoint, end: int, store: UnitStore,
        pipeline: Pipeline, *, lanes: int, batch_size: int, commit_interval: float,
        fingerprint: str,
    ) -> None:  # fmt: skip
        self.order = Ordering(batch_size, start.offset)
        self.limit = window(lanes, batch_size)
        self.queue: deque[Pending] = deque()
        self.eof = False
        self.ready, self.space, self.batch = Signal(), Signal(), Signal()
        self.committed = 0  # items committed by this attempt
        self.peak = self.peak_queue = 0  # most results held, most letters queued: for tests
        self.last_error: str | None = None
        self._reader, self._end, self._store, self._pipeline = reader, end, store, pipeline
        self._lanes, self._interval, self._fingerprint = lanes, commit_interval, fingerprint
        self._first = start.next_index
        attempt = f"{start.unit_id:04d}.{start.attempts + 1:03d}-{secrets.token_hex(3)}"
        self._out_name, self._dead_name = f"{attempt}.out", f"{attempt}.dead"
        self._durable = replace(start, attempts=start.attempts + 1)

    async def run(self) -> UnitCheckpoint:
        """Retry every dead letter left; return the final checkpoint (offset at the end)."""
        await anyio.to_thread.run_sync(self._open_segments)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._feed)
                for _ in range(self._lanes):
                    tg.start_soon(self._lane)
                await self._commit_loop()
        finally:
            self._store.close()
        return self._durable

    def _open_segments(self) -> None:
        self._store.open_segment(self._out_name)
        self._store.open_segment(self._dead_name)

    # -- feeder and lanes -------------------------------------------------------------

    async def _feed(self) -> None:
        while block := await anyio.to_thread.run_sync(self._reader.read):
            self.queue.extend(block)
            self.peak_queue = max(self.peak_queue, len(self.queue))
            self.ready.fire()
            while len(self.queue) > FEED_LOW_WATER:
                await self.space.wait()
        self.eof = True
        self.ready.fire()
        self.batch.fire()

    async def _lane(self) -> None:
        slot = LaneSlot(-1, self._fingerprint)
        current_slot.set(slot)
        order, queue, budget = self.order, self.queue, YIELD_EVERY
        while True:
            if queue and order.taken - order.durable < self.limit:
                await self._one(slot, queue.popleft())
                budget -= 1
                if not budget:
                    budget = YIELD_EVERY
                    await anyio.lowlevel.checkpoint()
            elif self.eof and not queue:
                return
            else:
                await self.ready.wait()

    async def _one(self, slot: LaneSlot, pending: Pending) -> None:
        """Take the next sequence number, run the item, hand its result to the ordering."""
        end, index, offset, raw = pending
        order = self.order
        if len(self.queue) == FEED_LOW_WATER:
            self.space.fire()
        seq = order.take()
        self.peak = max(self.peak, order.taken - order.durable)
        slot.index, slot.offset = index, offset
        outcome = await self._pipeline.process(index, offset, raw)
        if outcome.failed:
            self.last_error = outcome.error
        if order.finish(seq, end, outcome.record, outcome.failed) or (self.eof and not self.queue):
            self.batch.fire()

    # -- committer --------------------------------------------------------------------

    def _over(self) -> bool:
        """Every dead letter is read, taken and ordered."""
        return self.eof and not self.queue and self.order.complete

    async def _commit_loop(self) -> None:
        """Commit batch by batch, as a unit does (:func:`.committing.commit_batches`)."""
        await commit_batches(self.order, self.batch, self._interval, self._over, self._commit)

    async def _commit(self, point: Point, final: bool = False) -> None:
        """Make the ordered prefix up to ``point`` durable, off the loop."""
        previous = self._durable
        offset = self._end if final else point.offset
        if point.next == self.order.durable and offset == previous.offset:
            return  # nothing new to say
        cut = self.order.cut(point)
        checkpoint = self._checkpoint_after(previous, cut, offset)
        data = {self._out_name: cut.out, self._dead_name: cut.dead}
        checkpoint = await anyio.to_thread.run_sync(self._commit_durably, data, checkpoint)
        self._durable = checkpoint
        self.order.made_durable(cut.point)
        self.committed += cut.ok + cut.failed
        self.ready.fire()  # the window moved: lanes may take more items

    def _commit_durably(self, data: dict[str, bytes], checkpoint: UnitCheckpoint) -> UnitCheckpoint:
        written = self._store.commit(data, checkpoint)
        crashpoint("retry_committed")
        return written

    def _checkpoint_after(self, previous: UnitCheckpoint, cut: Cut, offset: int) -> UnitCheckpoint:
        point = cut.point
        return previous.advanced(
            SegmentRef(self._out_name, point.out_len), SegmentRef(self._dead_name, point.dead_len),
            cut.ok, cut.failed, offset=offset, next_index=self._first + point.next,
        )  # fmt: skip
