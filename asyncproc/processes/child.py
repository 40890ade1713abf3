"""A worker process for ``--processes``: ``python -m asyncproc.processes.child``.

It reads the run's setup (one JSON line on stdin), then runs units exactly as one
process does (:class:`~asyncproc.engine.executor.InProcess`: unit slots and one pool of
lanes), except that its work source is the parent: each slot asks for a unit over the
pipe, every durable commit is reported on stdout, and a cap request from the parent is
answered by the running unit itself. It dies with its parent: the kernel sends it
SIGKILL when the parent dies (``PR_SET_PDEATHSIG`` on Linux), and it exits at once when
its stdin reaches EOF. It ignores SIGINT: Ctrl-C is the parent's to handle.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import orjson
from anyio.lowlevel import EventLoopToken

from ..engine.budget import TakeBudget
from ..engine.executor import InProcess, RunSetup, UnitHandle, local_store
from ..engine.loops import backend_options
from ..engine.poison import careful
from ..engine.stopping import Stopper, StopReason
from ..engine.unit import Commit
from ..engine.units import Place, UnitSpec
from ..engine.wire import (
    WorkerSetup,
    decode_checkpoint,
    decode_spec,
    encode_checkpoint,
    encode_place,
)
from ..limits.gate import Gate, LimitConfig
from ..storage import faults
from ..storage.records import UnitCheckpoint
from .poison import announcer
from .wire import DONE, PARENT_ENV, commit_message, line

PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 75
Job = tuple[UnitSpec, UnitCheckpoint]


def _die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the parent dies; exit if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    expected = os.environ.get(PARENT_ENV)
    if expected is not None and os.getppid() != int(expected):
        os._exit(EXIT_ORPHANED)


class _Channel:
    """The child's private line to its parent: the original stdout.

    ``print`` in a user's processor must not corrupt it, so fd 1 and ``sys.stdout``
    are pointed at stderr and only this channel writes to the pipe (from the loop).
    """

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, data: bytes) -> None:
        self._out.write(data)
        self._out.flush()


class ParentLink:
    """The child's work source: units come from the parent, results go back to it."""

    def __init__(self, channel: _Channel, stopper: Stopper, gate: Gate) -> None:
        self._channel, self._stopper, self.gate = channel, stopper, gate
        gate.on_pause = lambda seconds: channel.send(line({"pause": seconds}))
        self._ids = itertools.count()
        self._answers: dict[int, tuple[anyio.Event, list[Job | None]]] = {}
        self._units: dict[int, UnitHandle] = {}

    async def next_unit(self) -> Job | None:
        request = next(self._ids)
        event, box = anyio.Event(), list[Job | None]([None])
        self._answers[request] = (event, box)
        self._channel.send(line({"next": request}))
        await event.wait()
        return box[0]

    def answer(self, message: dict[str, Any]) -> None:
        """A unit (or none) for the slot that asked."""
        event, box = self._answers.pop(int(message["id"]))
        if message["unit"] is not None:
            start = decode_checkpoint(message["start"], "unit start")
            box[0] = (decode_spec(message["unit"]), start)
        event.set()

    async def cap(self, message: dict[str, Any]) -> None:
        unit = self._units.get(int(message["cap"]))
        candidates = [Place(o, i) for o, i in message["candidates"]]
        place = None if unit is None else await unit.cap(candidates)
        self._channel.send(line({"capped": message["id"], "place": encode_place(place)}))

    def running(self, unit_id: int, handle: UnitHandle) -> None:
        self._units[unit_id] = handle

    def committed(self, commit: Commit) -> None:
        limits = {"limits": [self.gate.limit, self.gate.rejections]}
        self._channel.send(line(commit_message(commit)) + line(limits))

    def finished(self, unit_id: int, checkpoint: UnitCheckpoint) -> None:
        self._units.pop(unit_id, None)
        message = {"finished": unit_id, "checkpoint": encode_checkpoint(checkpoint)}
        self._channel.send(line(message))

    def returned(self, unit_id: int, checkpoint: UnitCheckpoint) -> None:
        self.finished(unit_id, checkpoint)

    def stop(self, grace: float) -> None:
        self._stopper.grace = grace
        self._stopper.request(StopReason(None, "stopped by the parent"))


def _watch_stdin(token: EventLoopToken, link: ParentLink) -> None:
    """Hand the parent's lines to the loop; EOF means the parent wants this process gone."""
    for raw in sys.stdin.buffer:
        message = orjson.loads(raw)
        if "unit" in message:
            anyio.from_thread.run_sync(link.answer, message, token=token)
        elif "cap" in message:
            anyio.from_thread.run(link.cap, message, token=token)
        elif "pause" in message:
            seconds = float(message["pause"])
            anyio.from_thread.run_sync(link.gate.paused_elsewhere, seconds, token=token)
        elif "stop" in message:
            anyio.from_thread.run_sync(link.stop, float(message["stop"]), token=token)
    os._exit(0)


def _setup(job: WorkerSetup, stopper: Stopper, gate: Gate, channel: _Channel) -> RunSetup:
    setup = RunSetup.made(job, local_store, stopper, gate)
    if not job.careful:
        return setup
    # rerunning what a dead worker had in flight (see .poison)
    condemned = {int(offset): str(reason) for offset, reason in job.condemned}
    suspects = frozenset(int(offset) for offset in job.suspects)
    processor = careful(setup.processor, condemned, announcer(channel.send), suspects)
    return replace(setup, processor=processor, budget=TakeBudget(job.budget))


async def _serve(job: WorkerSetup, channel: _Channel) -> None:
    stopper = Stopper(0.0)
    gate = job.gate() or Gate(LimitConfig())
    link = ParentLink(channel, stopper, gate)
    token = anyio.lowlevel.current_token()
    threading.Thread(target=_watch_stdin, args=(token, link), daemon=True).start()
    await InProcess().run(link, _setup(job, stopper, gate, channel))


def _report(exc: BaseException) -> None:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    sys.stderr.write(f"asyncproc: worker process {os.getpid()}: {type(exc).__name__}: {exc}\n")
    sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> None:
    del argv
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = _Channel()
    first = sys.stdin.buffer.readline()
    if not first:  # the parent had no run for this process (done already, or failed first)
        os._exit(0)
    job = WorkerSetup.from_dict(orjson.loads(first))
    faults.arm(job.faults)  # the parent's, as the command line armed them
    try:
        anyio.run(_serve, job, channel, backend_options=backend_options(job.loop))
    except Exception as exc:  # reported in one line; the parent names the process
        _report(exc)
        os._exit(1)
    channel.send(DONE)
    os._exit(0)  # the stdin watcher is still blocked in read()


if __name__ == "__main__":
    main()
