"""Worker threads for plain ``def`` processors, handing results back in batches.

Waking the event loop once per finished call (``call_soon_threadsafe``, as
``run_in_executor`` and ``anyio.to_thread`` do) costs more than a 10 ms call is worth
at a few hundred threads: measured on two cores, anyio's threads ran about 4,500 calls
a second and a bare ``ThreadPoolExecutor(256)`` about 10,000, against 25,600 ideal.
Here a worker puts its result on a shared deque and wakes the loop only if no wake-up
is pending, so the loop takes every result of a burst in one go (about 18,000 a second).

Threads start on demand, at most ``size``, and are daemons: a call that hangs past its
timeout may keep its thread, but never keeps the process alive. Each call runs in a copy
of the caller's context, so :func:`asyncproc.current_item` works in a sync processor.
All bookkeeping except the result deque happens on the loop thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .forks import FORKED, leave

Job = tuple[contextvars.Context, Callable[[Any], Any], Any, "asyncio.Future[Any]"]
Done = tuple["asyncio.Future[Any]", Any, BaseException | None]


class _Carried(Exception):
    """A processor's ``BaseException`` on its way from a worker thread to the lane.

    A future cannot hold every error as it is: it refuses ``StopIteration``, and a
    ``GeneratorExit`` that a task throws into its coroutine closes the whole chain of
    awaits instead of reaching the lane's ``except``. Carried as an ``Exception`` and
    raised again in :meth:`ThreadPool.call`, either one is just that item's failure
    (``StopIteration`` becoming a ``RuntimeError``, as in an ``async def``).
    """

    def __init__(self, error: BaseException) -> None:
        super().__init__(repr(error))
        self.error = error


def _carried(exc: BaseException) -> BaseException:
    if isinstance(exc, Exception) and not isinstance(exc, StopIteration):
        return exc
    return _Carried(exc)


class ThreadPool:
    """Runs sync calls for one run's lanes; ``close`` when the run is over."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._done: deque[Done] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake_pending = False
        self._started = self._outstanding = 0

    async def call(self, fn: Callable[[Any], Any], item: Any) -> Any:
        """Run ``fn(item)`` in a worker thread; cancelling the caller abandons the call."""
        loop = self._loop = self._loop or asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._jobs.put((contextvars.copy_context(), fn, item, future))
        self._outstanding += 1
        if self._outstanding > self._started and self._started < self.size:
            self._started += 1
            threading.Thread(target=self._work, name="asyncproc worker", daemon=True).start()
        try:
            return await future
        except _Carried as carried:
            raise carried.error from None  # raised here, it unwinds like any other error
        finally:
            self._outstanding -= 1

    def close(self) -> None:
        """Let every idle thread end; a thread still in a call ends when it returns."""
        for _ in range(self._started):
            self._jobs.put(None)
        self._started = 0

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            context, fn, item, future = job
            try:
                result, error = context.run(fn, item), None
            except BaseException as exc:  # handed to the awaiting lane as the item's error
                result, error = None, _carried(exc)
            if FORKED[0]:  # a child the processor forked: only this thread came along
                leave()
            self._done.append((future, result, error))
            if not self._wake_pending:
                self._wake_pending = True
                loop = self._loop
                if loop is not None and not loop.is_closed():
                    loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        """On the loop: settle every finished call (set the flag first, so none is missed)."""
        self._wake_pending = False
        done = self._done
        while done:
            future, result, error = done.popleft()
            if future.cancelled():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
