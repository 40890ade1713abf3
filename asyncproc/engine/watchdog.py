"""Watching the event loop from a thread: is it answering, and if not, who is blocking it?

An ``async def`` processor that makes a blocking call (``time.sleep``, ``requests``, a
slow ``json.loads``) holds the whole event loop: every other item, every commit and
every signal waits. Nothing fails, the run just crawls. :class:`LoopWatchdog` asks the
loop to answer (a callback posted from a thread) every few tenths of a second; when it
has not answered for ``BLOCKED_AFTER`` seconds, it looks at the loop thread's stack for
the lane running the item, and says which item blocked the loop, where, and for how
long.

:func:`on_signal` serves signals the same way: SIGINT and SIGTERM normally reach the
loop, which stops the run (a second signal at once); a blocked loop never sees them, so
after ``ANSWER_WITHIN`` seconds without an answer a thread says why nothing happens (a
first signal) or ends the process (a second). The checkpoints on disk are valid either
way: they are only ever replaced atomically.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from types import FrameType

from .context import LaneSlot

log = logging.getLogger("asyncproc")

BLOCKED_AFTER = float(os.environ.get("ASYNCPROC_BLOCKED_AFTER") or 1.0)
ANSWER_WITHIN = 1.0  # seconds a blocked loop gets to answer a second signal
MOST_REPORTS = 20  # blocked episodes reported per run; more would drown the log


class LoopProbe:
    """Asks a running loop, from another thread, whether it answers."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.thread = threading.get_ident()  # the loop's thread: this is made on it

    def answers(self, within: float) -> threading.Event:
        """Post a callback; the event is set once the loop ran it (wait on it)."""
        answered = threading.Event()
        try:
            self.loop.call_soon_threadsafe(answered.set)
        except RuntimeError:  # the loop is closed: nothing is blocked any more
            answered.set()
        answered.wait(within)
        return answered

    def blocker(self) -> str | None:
        """The item the loop thread is running, and where, as words for a log line.

        None when no item is: the loop is busy with something else (or starved of CPU).
        """
        frame = sys._current_frames().get(self.thread)
        if frame is None:
            return None
        slot = next((s for s in map(_slot_of, _frames(frame)) if s is not None), None)
        if slot is None or slot.index < 0:
            return None
        where = f"{frame.f_code.co_name} at {frame.f_code.co_filename}:{frame.f_lineno}"
        return f"item {slot.index} (in {where})"


def _frames(frame: FrameType | None) -> Iterator[FrameType]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def _slot_of(frame: FrameType) -> LaneSlot | None:
    """The lane's view of its item, if ``frame`` is a lane's (it holds one as ``slot``)."""
    slot = frame.f_locals.get("slot")
    return slot if isinstance(slot, LaneSlot) else None


class LoopWatchdog:
    """Reports each time the loop stays blocked past ``BLOCKED_AFTER`` seconds."""

    def __init__(self, probe: LoopProbe, blocked_after: float = BLOCKED_AFTER) -> None:
        self._probe, self._after = probe, blocked_after
        self._stopped = threading.Event()
        self._reports = 0
        self._thread = threading.Thread(target=self._watch, name="asyncproc watchdog", daemon=True)

    def __enter__(self) -> LoopWatchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        while not self._stopped.is_set() and self._reports < MOST_REPORTS:
            asked = time.monotonic()
            answered = self._probe.answers(self._after)
            if answered.is_set():
                self._stopped.wait(self._after / 4)
                continue
            who = self._probe.blocker()
            while not answered.wait(0.05) and not self._stopped.is_set():
                pass
            if self._stopped.is_set():
                return
            if who is not None:  # a processor's doing, not a busy machine
                self._report(who, time.monotonic() - asked)

    def _report(self, who: str, seconds: float) -> None:
        self._reports += 1
        log.warning(
            "the event loop was blocked for %.1f s by %s: every other item, commit and "
            "signal waited. An async def processor must not make blocking calls: await an "
            "async library, or make it a plain def (it then runs in threads)%s",
            seconds, who,
            "; further blocks are not reported" if self._reports == MOST_REPORTS else "",
        )  # fmt: skip


def watch_loop(is_async: bool) -> AbstractContextManager[object]:
    """Watch the running loop while an ``async def`` processor runs on it (a plain
    ``def`` runs in threads and cannot block it)."""
    if not is_async:
        return nullcontext()
    return LoopWatchdog(LoopProbe(asyncio.get_running_loop()))


def on_signal(probe: LoopProbe, signum: int, received: int) -> None:
    """Serve the ``received``-th SIGINT/SIGTERM where the loop cannot: from a thread.

    The loop gets every signal too and acts on it when it can. When it does not answer
    within ``ANSWER_WITHIN`` seconds, a first signal is told why nothing happens, and a
    second one ends the process at once.
    """
    if received > 2:
        return

    def serve() -> None:
        if probe.answers(ANSWER_WITHIN).is_set():
            return  # the loop is alive and stops the run itself
        name, who = _signal_name(signum), probe.blocker() or "something"
        if received == 1:
            sys.stderr.write(
                f"asyncproc: {name}: {who} is blocking the event loop, so the run cannot "
                f"stop until it returns; send {name} again to stop at once\n"
            )
            sys.stderr.flush()
            return
        sys.stderr.write(
            f"asyncproc: error: {name} again while {who} blocked the event loop: stopped "
            "at once; committed work is safe: run the same command again to resume\n"
        )
        sys.stderr.flush()
        os._exit(128 + signum)

    threading.Thread(target=serve, name="asyncproc signal", daemon=True).start()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
