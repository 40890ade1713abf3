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

import anyio
import anyio.lowlevel

from ._encode import Encoder, decoder_for
from ._processors import Processor
from ._reader import Line, read_lines
from ._records import SegmentRef, ShardCheckpoint, ShardPlan
from ._retry import Attempts
from ._volatile import store_for

FEED_LOW_WATER = 4096
# Items lanes may finish beyond the batches being committed: enough to keep lanes busy
# while a commit's fsyncs run, small enough that a crash redoes a fraction of a second.
LIMIT_SLACK = 2048
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

    @property
    def limit(self) -> int:
        """How far lanes may run ahead of the durable prefix."""
        return max(4 * self.lanes, 64) + 2 * self.batch_size + LIMIT_SLACK


@dataclass(frozen=True, slots=True)
class Commit:
    """What one durable commit added, for progress and failure accounting."""

    shard_id: int
    processed: int
    failed: int
    checkpoint: ShardCheckpoint


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
        self._lines: deque[Line] = deque()
        self._results: dict[int, tuple[int, bytes | None, bytes | None]] = {}
        self._out, self._dead = bytearray(), bytearray()
        self._out_len = self._dead_len = 0
        self._taken = self._next = self._durable = 0
        self._ok = self._failed = 0
        self._yield_at = YIELD_EVERY
        self._offset = start.offset
        self._eof = self._lanes_done = False
        self._lines_ready, self._space, self._progress, self._batch = (_Signal() for _ in range(4))

    async def run(self) -> ShardCheckpoint:
        """Process the rest of the shard; return its final, durable checkpoint."""
        await anyio.to_thread.run_sync(self._open_segments)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._feed)
                tg.start_soon(self._commit_loop)
                async with anyio.create_task_group() as lanes:
                    for _ in range(self.spec.lanes):
                        lanes.start_soon(self._lane)
                self._lanes_done = True
                self._batch.fire()
        finally:
            await anyio.to_thread.run_sync(self._store.close)
        return self._durable_state

    def _open_segments(self) -> None:
        self._store.open_segment(self._out_name)
        self._store.open_segment(self._dead_name)

    # -- feeder ------------------------------------------------------------------------

    async def _feed(self) -> None:
        shard = self.spec.shard
        path = Path(self.spec.input_path)
        async for lines in read_lines(path, self._offset, shard.end):
            while len(self._lines) > FEED_LOW_WATER:
                await self._space.wait()
            self._lines.extend(lines)
            self._lines_ready.fire()
        self._eof = True
        self._lines_ready.fire()

    # -- lanes -------------------------------------------------------------------------

    async def _lane(self) -> None:
        lines, limit = self._lines, self.spec.limit
        while True:
            if not lines:
                if self._eof:
                    return
                await self._lines_ready.wait()
                continue
            if self._taken - self._durable >= limit:
                await self._progress.wait()
                continue
            start, end, raw = lines.popleft()
            if len(lines) == FEED_LOW_WATER:
                self._space.fire()
            seq = self._taken
            self._taken += 1
            out, dead = await self._handle(seq, start, raw)
            if self._finish(seq, end, out, dead):
                await anyio.lowlevel.checkpoint()

    async def _handle(self, seq: int, start: int, raw: bytes) -> tuple[bytes | None, bytes | None]:
        """Turn one line into an encoded record, or into a dead letter."""
        try:
            item = self._decode(raw)
        except Exception as exc:
            return None, self._encoder.dead(seq, start, raw, exc, 0)
        value, error, attempts = await self._attempts.run(item)
        if error is not None:
            return None, self._encoder.dead(seq, start, item, error, attempts)
        try:
            return self._encoder.record(seq, value), None
        except Exception as exc:
            return None, self._encoder.dead(seq, start, item, exc, attempts)

    def _finish(self, seq: int, end: int, out: bytes | None, dead: bytes | None) -> bool:
        """Record a result; advance the ordered prefix. True when the lane should yield."""
        if seq != self._next:
            self._results[seq] = (end, out, dead)
            return False
        self._append(end, out, dead)
        nxt, results = seq + 1, self._results
        while nxt in results:
            self._append(*results.pop(nxt))
            nxt += 1
        batch, was = self.spec.batch_size, self._next - self._durable
        self._next = nxt
        if was < batch <= nxt - self._durable:
            self._batch.fire()
            return True
        if nxt >= self._yield_at:
            self._yield_at = nxt + YIELD_EVERY
            return True
        return False

    def _append(self, end: int, out: bytes | None, dead: bytes | None) -> None:
        if out is not None:
            self._out += out
            self._ok += 1
        else:
            self._dead += dead or b""
            self._failed += 1
        self._offset = end

    # -- committer ---------------------------------------------------------------------

    def _finished(self) -> bool:
        return self._lanes_done and self._next == self._taken

    async def _commit_loop(self) -> None:
        while True:
            if not (self._finished() or self._next - self._durable >= self.spec.batch_size):
                with anyio.move_on_after(self.spec.commit_interval):
                    await self._batch.wait()
            if self._finished():
                await self._commit(done=True)
                return
            if self._next > self._durable:
                await self._commit(done=False)

    async def _commit(self, *, done: bool) -> None:
        """Snapshot the ordered prefix and make it durable, off the loop."""
        out, dead = bytes(self._out), bytes(self._dead)
        self._out.clear()
        self._dead.clear()
        ok, failed, nxt = self._ok, self._failed, self._next
        self._ok = self._failed = 0
        self._out_len += len(out)
        self._dead_len += len(dead)
        previous = self._durable_state
        checkpoint = self._checkpoint_after(previous, ok, failed, nxt, done)
        data = {self._out_name: out, self._dead_name: dead}
        await anyio.to_thread.run_sync(self._store.commit, data, checkpoint)
        self._durable_state, self._durable = checkpoint, nxt
        self._progress.fire()
        self._on_commit(Commit(self.spec.shard.shard_id, ok, failed, checkpoint))

    def _checkpoint_after(
        self, previous: ShardCheckpoint, ok: int, failed: int, nxt: int, done: bool
    ) -> ShardCheckpoint:
        base = self._encoder.first_index
        old_out = tuple(s for s in previous.segments if s.name != self._out_name)
        old_dead = tuple(s for s in previous.dead_segments if s.name != self._dead_name)
        return replace(
            previous,
            generation=previous.generation + 1,
            offset=self.spec.shard.end if done else self._offset,
            next_index=base + nxt,
            processed=previous.processed + ok,
            failed=previous.failed + failed,
            segments=(*old_out, SegmentRef(self._out_name, self._out_len)),
            dead_segments=(*old_dead, SegmentRef(self._dead_name, self._dead_len)),
            done=done,
            updated_at=time.time(),
        )
