"""Stopping a run on purpose: a signal or the failure limit.

The first stop request lets every worker finish its items in flight (for at most the
grace period), commit, and return; a second signal cancels at once. Either way the
checkpoints on disk are valid: they are only ever replaced atomically.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from typing import Protocol

import anyio

from .watchdog import LoopProbe, on_signal

log = logging.getLogger("asyncproc")


class Stoppable(Protocol):
    """A shard worker, or a worker process standing for several (``--processes``)."""

    def stop(self, grace: float) -> None: ...


@dataclass(frozen=True, slots=True)
class StopReason:
    """Why a run stopped early: a signal number, or None for the failure limit."""

    signum: int | None
    message: str


class Stopper:
    """Holds the running workers and stops them, gracefully first."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.reason: StopReason | None = None
        self.scope: anyio.CancelScope | None = None
        self._workers: list[Stoppable] = []

    def attach(self, worker: Stoppable) -> bool:
        """Register a starting worker; False if the run is already stopping."""
        if self.reason is not None:
            return False
        self._workers.append(worker)
        return True

    def detach(self, worker: Stoppable) -> None:
        self._workers.remove(worker)

    def request(self, reason: StopReason) -> None:
        if self.reason is not None:
            return
        self.reason = reason
        for worker in self._workers:
            worker.stop(self.grace)

    def hard_stop(self) -> None:
        if self.scope is not None:
            self.scope.cancel()

    async def watch_signals(self) -> None:
        """First SIGINT/SIGTERM: graceful stop. Second: stop at once.

        Signals reach this task through the event loop; a loop blocked by a processor
        never delivers them, so each is also served from a thread (:func:`on_signal`).
        """
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            _serve_signals_off_the_loop(LoopProbe(asyncio.get_running_loop()))
            async for signum in signals:
                name = signal.Signals(signum).name
                if self.reason is None:
                    log.warning(
                        "%s: finishing the items in flight (up to %gs), then committing; "
                        "send it again to stop at once", name, self.grace,
                    )  # fmt: skip
                    self.request(StopReason(signum, f"interrupted by {_who(signum)}"))
                else:
                    log.warning("%s again: stopping now", name)
                    self.hard_stop()


def _who(signum: int) -> str:
    """What stopped the run, in the user's words: a SIGINT is most often their Ctrl-C."""
    name = signal.Signals(signum).name
    return f"you ({name}, Ctrl-C)" if signum == signal.SIGINT else name


def _serve_signals_off_the_loop(probe: LoopProbe) -> None:
    """Count SIGINT/SIGTERM in the interpreter's own handler, which runs even while the
    loop is blocked (the loop still gets each signal through its wake-up fd)."""
    received = 0

    def handler(signum: int, frame: object) -> None:
        nonlocal received
        received += 1
        on_signal(probe, signum, received)

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
