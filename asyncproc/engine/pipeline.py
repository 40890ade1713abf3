"""The one item pipeline: decode, call with retries, backoff and timeout, encode or dead-letter.

File runs, ``--retry-failed``, keyed ``process_items`` and ``asyncproc bench`` all go
through a :class:`Pipeline`, on the one lane loop (:mod:`.lanes`): the lanes inline its
first attempt (decode, ``call``, ``encode``: no extra frames on the hot path) and hand
any failure to :meth:`Pipeline.recover`. Keyed items and bench levels are Python objects
already and keep no records (``OBJECTS``).

Limits (:mod:`.limits`) wrap ``call`` in the run's gate when they are configured, or
once any call is rejected (a processor raised :class:`~asyncproc.RetryAfter`): then the
pipeline swaps in the gated call and tells the lanes (``changed``), so a run with no
limits keeps the plain call on its hot path. Retries always go through the gate: they
respect a pause, the pacing and the limit. Only calls outside the gate let a
RetryAfter out (the gate retries its own and gives up with an :class:`ItemError`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .._errors import ItemError, RetryAfter
from ..limits.gate import Gate, LimitConfig, gated
from ..processors.loading import Processor
from .encode import Encoder, decoder_for
from .forks import FORKED, leave, running
from .retry import ITEM_ERRORS, Call, caller, cancelled, retry
from .threads import ThreadPool

# Where an item failed: its line, the processor, or encoding the result.
DECODE, CALL, ENCODE = range(3)
# The format and output of keyed items: Python objects already, whose results are not kept.
OBJECTS = "objects"


class Pipeline:
    """Everything that happens to one item, configured once per run."""

    __slots__ = (
        "_encoder", "_gated", "_keeps", "_plain", "_pool", "_running", "call", "changed",
        "decode", "encode", "error", "failure", "gate", "processor", "retries", "timings",
    )  # fmt: skip

    def __init__(
        self, processor: Processor, *, format: str, output_kind: str, retries: int,
        timeout: float | None, threads: int, gate: Gate | None = None, timed: bool = False,
    ) -> None:  # fmt: skip
        self.processor = processor
        self.retries = retries
        self.decode: Callable[[Any], Any] = _same if format == OBJECTS else decoder_for(format)
        # A sync processor's calls run in threads of the pipeline's own (close it after).
        self._pool = None if processor.is_async else ThreadPool(threads)
        self._plain: Call = caller(processor, timeout, self._pool)
        # ``timed`` (asyncproc bench): every call's seconds, failed ones too, go to `timings`.
        self.timings: list[float] = []
        if timed:
            self._plain = self._timed(self._plain)
        self.gate = gate or Gate(LimitConfig())
        self._gated: Call = gated(self._plain, self.gate)  # retries always take this one
        self.call: Call = self._gated if self.gate.config.configured else self._plain
        self.changed: Callable[[], None] = _nothing  # the lanes' hook: `call` was replaced
        self.gate.activate = self.use_gate  # any rejection routes all calls through the gate
        self._encoder = Encoder(output_kind)
        self._keeps = output_kind != OBJECTS  # records and dead letters are written
        self.encode = self._encoder.record if self._keeps else _kept_nowhere
        self.error: str | None = None  # the last item error, for progress and limits
        self.failure: BaseException | None = None  # and the error itself (keyed marks)
        self._running = running()  # a fork while the pipeline is open marks the child
        self._running.__enter__()

    def close(self) -> None:
        """Let the worker threads of a sync processor end."""
        if self._pool is not None:
            self._pool.close()
        self._running.__exit__(None, None, None)

    async def aclose(self) -> None:
        """Close what the processor holds open on the loop (the ``http`` client)."""
        close = getattr(self.processor.fn, "aclose", None)
        if close is not None:
            await close()

    def use_gate(self) -> None:
        """Route every further call through the gate (a processor asked to slow down)."""
        if self.call is not self._gated:
            self.call = self._gated
            self.changed()

    def _timed(self, call: Call) -> Call:
        """``call``, timed; a rejection is a failed call here, never a pause and a retry:
        the bench reports what a level's calls met, rejections included."""
        clock = time.perf_counter

        async def timed(item: Any) -> Any:
            started = clock()
            try:
                return await call(item)
            except RetryAfter as exc:
                raise ItemError(f"rejected: {exc}") from None
            finally:
                self.timings.append(clock() - started)

        return timed

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def attempt(self, item: Any) -> tuple[Any, BaseException | None, int]:
        """Call the processor with retries: (value, None, attempts) or (None, error, attempts)."""
        try:
            value = await self.call(item)
            if FORKED[0]:
                leave()
            return value, None, 1
        except ITEM_ERRORS as exc:  # an item's failure is data, not a crash
            if FORKED[0]:
                leave()
            if cancelled(exc):
                raise
            if isinstance(exc, RetryAfter):  # from a call outside the gate: not a failure
                await self.gate.rejected_outside(exc)  # gates every further call
                return await self.attempt(item)
            return await retry(self._gated, item, exc, self.retries)

    async def recover(
        self, stage: int, index: int, offset: int, item: Any, error: BaseException
    ) -> tuple[bytes, bool]:
        """After a failed first attempt: retry a failed call; a bad line or result is final.

        Returns the record and whether it is a dead letter.
        """
        if FORKED[0]:  # a forked child that failed its way back here
            leave()
        attempts = 0 if stage == DECODE else 1
        if stage == CALL:
            if isinstance(error, RetryAfter):  # from a call outside the gate: not a failure
                await self.gate.rejected_outside(error)  # gates every further call
                value, retry_error, attempts = await self.attempt(item)
            else:
                value, retry_error, attempts = await retry(self._gated, item, error, self.retries)
            if retry_error is None:
                try:
                    return self.encode(index, value), False
                except ITEM_ERRORS as exc:
                    if cancelled(exc):
                        raise
                    retry_error = exc
            error = retry_error
        return self.dead(index, offset, item, error, attempts), True

    def dead(
        self, index: int, offset: int, item: Any, error: BaseException, attempts: int
    ) -> bytes:
        self.error, self.failure = f"{type(error).__name__}: {error}", error
        return self._encoder.dead(index, offset, item, error, attempts) if self._keeps else b""


def _nothing() -> None:
    return None


def _same(item: Any) -> Any:
    return item


def _kept_nowhere(index: int, value: Any) -> bytes:
    del index, value
    return b""
