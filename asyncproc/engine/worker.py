"""The shard worker: read a byte range, process its items concurrently, commit in order.

Three kinds of task share one shard, all in one task group:

* a *feeder* reads the range a chunk at a time and keeps a bounded queue of lines;
* a fixed pool of *lanes* takes lines, runs the processor and hands back encoded records;
* a *committer* makes the ordered prefix durable every ``batch_size`` items (or every
  ``commit_interval`` seconds) through :class:`ShardStore`, off the event loop.

Lanes never take an item more than ``limit`` ahead of the durable prefix, so memory is
bounded by the window, never by the input. The hot path takes no lock and makes no
thread hop; waiting happens only when a lane runs out of lines or of window.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import anyio.lowlevel

from ..storage.faults import crashpoint
from ..storage.records import SegmentRef, ShardCheckpoint, ShardPlan
from ..storage.volatile import store_for
from .context import LaneSlot, current_slot
from .encode import Encoder, decoder_for
from .processors import Processor
from .reader import read_lines
from .retry import ITEM_ERRORS, Attempts

FEED_LOW_WATER = 1024
# A result at most this far ahead of its turn waits as it is; one further ahead is
# copied to its exact size first (see ShardWorker._park).
NEAR = 64
# Items lanes may run past a full batch while it commits: rides out a slow fsync with
# small batches, without letting a large --batch-size multiply the window.
COMMIT_SLACK = 8192
# Where an item failed: its line, the processor, or encoding the result.
DECODE, CALL, ENCODE = range(3)
# Lanes of a processor that never awaits yield this often, so commits keep flowing.
YIELD_EVERY = 256


@dataclass(frozen=True, slots=True)
class ShardSpec:
    """A plain, serialisable description of one shard's work."""

    run_id: str
    run_dir: str
    input_path: str
    shard: ShardPlan
    format: str
    output_kind: str
    lanes: int
    batch_size: int
    retries: int
    timeout: float | None
    commit_interval: float
    durable: bool = True
    fingerprint: str = ""
    one_batch_per_commit: bool = False  # --simulate-crash: the crash lands where asked

    @property
    def limit(self) -> int:
        """How far lanes may run ahead of the durable prefix."""
        batch = self.batch_size
        return max(4 * self.lanes, 64) + batch + min(7 * batch, COMMIT_SLACK)


class Point(NamedTuple):
    """A place in the ordered prefix: how far each total had got when it was reached."""

    next: int  # sequence number of the first item after it
    out_len: int
    dead_len: int
    ok: int
    failed: int
    offset: int


@dataclass(frozen=True, slots=True)
class Commit:
    """What one durable commit added, for progress and failure accounting."""

    shard_id: int
    processed: int
    failed: int
    checkpoint: ShardCheckpoint
    last_error: str | None = None


class _Signal:
    """A re-armable wake-up: ``wait`` sleeps until the next ``fire``."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()

    def fire(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None


def first_checkpoint(spec: ShardSpec) -> ShardCheckpoint:
    """The state of a shard nobody has touched yet."""
    plan = spec.shard
    return ShardCheckpoint(
        run_id=spec.run_id, shard_id=plan.shard_id, generation=0, offset=plan.start,
        next_index=plan.first_index, processed=0, failed=0, attempts=0, segments=(),
        dead_segments=(), done=plan.start >= plan.end, updated_at=time.time(),
    )  # fmt: skip


class ShardWorker:
    """One attempt at one shard, resuming from ``start``."""

    def __init__(
        self,
        spec: ShardSpec,
        processor: Processor,
        start: ShardCheckpoint,
        on_commit: Callable[[Commit], None],
    ) -> None:
        self.spec = spec
        self._store = store_for(spec.durable)(Path(spec.run_dir), spec.shard.shard_id)
        self._on_commit = on_commit
        self._attempts = Attempts(processor, spec.retries, spec.timeout)
        self._decode = decoder_for(spec.format)
        self._encoder = Encoder(spec.output_kind, start.next_index)
        attempt = f"{start.attempts + 1:03d}-{secrets.token_hex(3)}"
        self._out_name = f"{spec.shard.shard_id:04d}.{attempt}.out"
        self._dead_name = f"{spec.shard.shard_id:04d}.{attempt}.dead"
        self._durable_state = replace(start, attempts=start.attempts + 1)
        self._starts: deque[int] = deque()
        self._lines: deque[bytes] = deque()
        # Results that finished ahead of their turn, by sequence number: the end offset of
        # the line and the record (a dead letter if the seq is in ``_parked_dead``).
        self._parked_ends: dict[int, int] = {}
        self._parked: dict[int, bytes] = {}
        self._parked_dead: set[int] = set()
        # The ordered prefix not yet committed, and where it stands. ``_ok``, ``_failed``
        # and the ``_*_len`` byte counts are totals for this attempt; a commit takes the
        # prefix up to a Point and records how far it took each of them.
        self._out, self._dead = bytearray(), bytearray()
        self._out_len = self._dead_len = self._ok_committed = self._failed_committed = 0
        self._taken = self._next = self._durable = 0
        self._ok = self._failed = 0
        self._yield_at = YIELD_EVERY
        self._offset = start.offset
        # Batch boundaries the ordered prefix has reached and no commit has taken yet.
        self._marks: deque[Point] = deque()
        self._mark_at = spec.batch_size
        self._eof = self._lanes_done = self._stopping = False
        self._lanes_scope: anyio.CancelScope | None = None
        self._last_error: str | None = None
        self._lines_ready, self._space, self._progress, self._batch = (_Signal() for _ in range(4))

    async def run(self) -> ShardCheckpoint:
        """Process the rest of the shard; return its last durable checkpoint."""
        await anyio.to_thread.run_sync(self._open_segments)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._commit_loop)
                async with anyio.create_task_group() as work:
                    work.start_soon(self._feed)
                    async with anyio.create_task_group() as lanes:
                        self._lanes_scope = lanes.cancel_scope
                        for _ in range(self.spec.lanes):
                            lanes.start_soon(self._lane)
                    work.cancel_scope.cancel()  # the feeder is not needed any more
                self._lanes_done = True
                self._batch.fire()
        finally:
            self._store.close()
        return self._durable_state

    def stop(self, grace: float) -> None:
        """Take no new items; give those in flight ``grace`` seconds, then cancel them.

        The committer still makes the ordered prefix durable before the worker returns.
        """
        self._stopping = True
        self._lines_ready.fire()
        self._progress.fire()
        if self._lanes_scope is not None:
            self._lanes_scope.deadline = min(
                self._lanes_scope.deadline, anyio.current_time() + grace
            )

    @property
    def complete(self) -> bool:
        """Every item of the shard is ordered (not only every item taken)."""
        return self._eof and not self._lines and self._next == self._taken

    def _open_segments(self) -> None:
        self._store.open_segment(self._out_name)
        self._store.open_segment(self._dead_name)
        crashpoint("before_first_commit")

    # -- feeder ------------------------------------------------------------------------

    async def _feed(self) -> None:
        shard = self.spec.shard
        path = Path(self.spec.input_path)
        async for starts, lines in read_lines(path, self._offset, shard.end):
            while len(self._lines) > FEED_LOW_WATER:
                await self._space.wait()
            self._starts.extend(starts)
            self._lines.extend(lines)
            self._lines_ready.fire()
        self._eof = True
        self._lines_ready.fire()

    # -- lanes -------------------------------------------------------------------------

    async def _lane(self) -> None:
        starts, lines, limit = self._starts, self._lines, self.spec.limit
        shard_end = self.spec.shard.end
        slot = LaneSlot(self.spec.shard.shard_id, self.spec.fingerprint)
        current_slot.set(slot)
        decode, call, encode = self._decode, self._attempts.call, self._encoder.record
        first = self._encoder.first_index
        while not self._stopping:
            if not lines:
                if self._eof:
                    return
                await self._lines_ready.wait()
                continue
            if self._taken - self._durable >= limit:
                await self._progress.wait()
                continue
            start, raw = starts.popleft(), lines.popleft()
            end = start + len(raw) + 1
            if end > shard_end:  # the last line of the input, without a newline
                end = shard_end
            if len(lines) == FEED_LOW_WATER:
                self._space.fire()
            seq = self._taken
            self._taken += 1
            slot.index, slot.offset = first + seq, start
            # The hot path is inline: one decode, one call, one encode, no extra frames.
            stage, item = DECODE, raw
            out: bytes | None
            dead: bytes | None
            try:
                item = decode(raw)
                stage = CALL
                value = await call(item)
                stage = ENCODE
                out, dead = encode(seq, value), None
            except ITEM_ERRORS as exc:
                out, dead = await self._recover(stage, seq, start, item, exc)
            if self._finish(seq, end, out, dead):
                await anyio.lowlevel.checkpoint()

    async def _recover(
        self, stage: int, seq: int, start: int, item: Any, error: BaseException
    ) -> tuple[bytes | None, bytes | None]:
        """Retry a failed call; a bad line or an unencodable result is not retried."""
        attempts = 0 if stage == DECODE else 1
        if stage == CALL:
            value, retry_error, attempts = await self._attempts.retry(item, error)
            if retry_error is None:
                try:
                    return self._encoder.record(seq, value), None
                except ITEM_ERRORS as exc:
                    retry_error = exc
            error = retry_error
        return None, self._dead_letter(seq, start, item, error, attempts)

    def _dead_letter(
        self, seq: int, start: int, item: Any, error: BaseException, attempts: int
    ) -> bytes:
        self._last_error = f"{type(error).__name__}: {error}"
        return self._encoder.dead(seq, start, item, error, attempts)

    def _finish(self, seq: int, end: int, out: bytes | None, dead: bytes | None) -> bool:
        """Record a result and advance the ordered prefix; True when the lane should yield.

        The in-order case is inline (no further calls): it is most items' only path.
        """
        if seq != self._next:
            self._park(seq, end, out, dead)
            return False
        if out is None:
            self._dead += dead or b""
            self._failed += 1
        else:
            self._out += out
            self._ok += 1
        self._offset = end
        nxt = seq + 1
        if nxt in self._parked_ends or nxt >= self._mark_at or nxt >= self._yield_at:
            return self._drain(nxt)
        self._next = nxt
        return False

    def _park(self, seq: int, end: int, out: bytes | None, dead: bytes | None) -> None:
        """Keep a result until its turn, in containers the garbage collector ignores.

        Results often finish a little out of order, so this path is hot: no tuple per
        result, which made every burst of early results a collection. A result far
        ahead of its turn is copied to its exact size: orjson over-allocates what it
        returns (4 KiB for a 60-byte record), which held for long made the window cost
        ~50 times what it holds.
        """
        self._parked_ends[seq] = end
        if out is None:
            self._parked_dead.add(seq)
            out = dead or b""
        self._parked[seq] = out if seq - self._next < NEAR else bytes(memoryview(out))

    def _drain(self, nxt: int) -> bool:
        """Extend the ordered prefix with waiting results, marking each batch boundary."""
        ends, records, dead = self._parked_ends, self._parked, self._parked_dead
        marked = False
        while True:
            if nxt >= self._mark_at:
                self._next = nxt
                self._mark()
                marked = True
            if nxt not in ends:
                break
            self._offset = ends.pop(nxt)
            if dead and nxt in dead:
                dead.discard(nxt)
                self._dead += records.pop(nxt)
                self._failed += 1
            else:
                self._out += records.pop(nxt)
                self._ok += 1
            nxt += 1
        self._next = nxt
        if nxt >= self._yield_at:
            self._yield_at = nxt + YIELD_EVERY
            return True
        return marked

    def _here(self) -> Point:
        return Point(
            self._next,
            self._out_len + len(self._out),
            self._dead_len + len(self._dead),
            self._ok,
            self._failed,
            self._offset,
        )

    def _mark(self) -> None:
        self._marks.append(self._here())
        self._mark_at += self.spec.batch_size
        self._batch.fire()

    # -- committer ---------------------------------------------------------------------

    async def _commit_loop(self) -> None:
        """Commit each batch as it fills (or what there is, every commit interval).

        A commit that fell behind takes every whole batch ordered meanwhile: checkpoints
        stay on batch boundaries, and a slow fsync means bigger commits, not stalled
        lanes. ``--simulate-crash`` caps commits at one batch so the crash lands where
        asked.
        """
        capped = self.spec.one_batch_per_commit
        while True:
            if not (self._lanes_done or self._marks):
                with anyio.move_on_after(self.spec.commit_interval):
                    await self._batch.wait()
            if self._lanes_done:
                while capped and self._marks and self._marks[0].next < self._next:
                    await self._commit(self._marks[0], done=False)
                await self._commit(self._here(), done=self.complete)
                return
            if self._marks:
                await self._commit(self._marks[0] if capped else self._marks[-1], done=False)
            elif self._next > self._durable:
                await self._commit(self._here(), done=False)

    def _take(self, point: Point) -> tuple[bytes, bytes]:
        """Cut the ordered prefix up to ``point`` off the buffers; later results stay."""
        cut_out, cut_dead = point.out_len - self._out_len, point.dead_len - self._dead_len
        with memoryview(self._out) as out, memoryview(self._dead) as dead:
            taken = bytes(out[:cut_out]), bytes(dead[:cut_dead])
        del self._out[:cut_out]
        del self._dead[:cut_dead]
        while self._marks and self._marks[0].next <= point.next:
            self._marks.popleft()
        if point.next == self._next:
            # Everything ordered is taken (the interval, the end): boundaries restart here.
            self._mark_at = point.next + self.spec.batch_size
        return taken

    async def _commit(self, point: Point, *, done: bool) -> None:
        """Make the ordered prefix up to ``point`` durable, off the loop."""
        out, dead = self._take(point)
        ok, failed = point.ok - self._ok_committed, point.failed - self._failed_committed
        self._out_len, self._dead_len = point.out_len, point.dead_len
        self._ok_committed, self._failed_committed = point.ok, point.failed
        previous = self._durable_state
        checkpoint = self._checkpoint_after(previous, ok, failed, point, done)
        data = {self._out_name: out, self._dead_name: dead}
        await anyio.to_thread.run_sync(self._store.commit, data, checkpoint)
        self._durable_state, self._durable = checkpoint, point.next
        self._progress.fire()
        self._on_commit(Commit(self.spec.shard.shard_id, ok, failed, checkpoint, self._last_error))

    def _checkpoint_after(
        self, previous: ShardCheckpoint, ok: int, failed: int, point: Point, done: bool
    ) -> ShardCheckpoint:
        base = self._encoder.first_index
        old_out = tuple(s for s in previous.segments if s.name != self._out_name)
        old_dead = tuple(s for s in previous.dead_segments if s.name != self._dead_name)
        return replace(
            previous,
            generation=previous.generation + 1,
            offset=self.spec.shard.end if done else point.offset,
            next_index=base + point.next,
            processed=previous.processed + ok,
            failed=previous.failed + failed,
            segments=(*old_out, SegmentRef(self._out_name, self._out_len)),
            dead_segments=(*old_dead, SegmentRef(self._dead_name, self._dead_len)),
            done=done,
            updated_at=time.time(),
        )
