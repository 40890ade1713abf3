"""One unit's Dask task: what a worker runs, synchronously, in one of its threads.

The entry point is a plain function: an ``async def`` task would run on the worker's
own event loop and hold up its heartbeats with file I/O. It runs the unit on an event
loop of its own (:func:`anyio.run`), exactly as one process runs units
(:class:`~asyncproc.engine.executor.InProcess` with one slot), and installs no signal
handlers: it is not the main thread, and stopping is the coordinator's job (a Dask
event the task watches).

A task may run more than once: Dask runs it again when its worker dies, and graceful
retirement can run a second copy while the first still writes. Each run therefore
starts from the newest good checkpoint *in storage* (not only the one it was handed),
so a retried unit resumes instead of restarting, and writes segments of its own, so
two live attempts never touch each other's bytes.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
from anyio.lowlevel import EventLoopToken

from ..engine.executor import InProcess, Job, OneUnit, RunSetup, local_store
from ..engine.loops import backend_options
from ..engine.stopping import Stopper, StopReason
from ..engine.unit import Commit
from ..engine.units import UnitSpec
from ..engine.wire import encode_checkpoint
from ..storage.records import UnitCheckpoint
from ..storage.unitstore import UnitStore
from .wire import TaskArgs, commit_event, stop_event, topic

STOP_POLL = 0.5  # seconds a stop watcher waits on the event before checking it is needed


def resume_point(store: UnitStore, spec: UnitSpec, given: UnitCheckpoint) -> UnitCheckpoint:
    """The newer of the checkpoint handed over and the newest good one in storage.

    An earlier attempt at this task (on a worker that died) may have committed after
    the coordinator last heard of it.
    """
    if not spec.durable:
        return given
    stored = store.load(spec.start, spec.end).checkpoint
    if stored is None:
        return given
    return max((given, stored), key=lambda c: (c.offset, c.generation))


def run_unit(args: dict[str, Any]) -> str:
    """Run one unit to its end (or until the coordinator stops the run); its last checkpoint."""
    from distributed import Event, get_worker

    task = TaskArgs.from_dict(args)
    spec = task.unit
    store = local_store(spec)
    start = resume_point(store, spec, task.checkpoint)
    event = Event(stop_event(spec.run_id))  # type: ignore[no-untyped-call]
    if event.is_set():  # type: ignore[no-untyped-call]
        return encode_checkpoint(start)
    worker, pid = get_worker(), os.getpid()

    def report(commit: Commit) -> None:
        worker.log_event(topic(spec.run_id), commit_event(commit, pid))

    final = anyio.run(_run, task, (spec, start), store, report, event,
                      backend_options=backend_options(task.setup.loop))  # fmt: skip
    return encode_checkpoint(final)


async def _run(
    task: TaskArgs, job: Job, store: UnitStore, report: Callable[[Commit], None], event: Any
) -> UnitCheckpoint:
    stopper = Stopper(task.setup.grace)
    setup = RunSetup.made(task.setup, lambda _: store, stopper)
    source = OneUnit(job, report)
    with _watching(event, stopper, anyio.lowlevel.current_token()):
        await InProcess().run(source, setup)
    return source.checkpoint


@contextmanager
def _watching(event: Any, stopper: Stopper, token: EventLoopToken) -> Iterator[None]:
    """A thread that turns the coordinator's stop event into a graceful stop here."""
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                is_set = event.wait(timeout=STOP_POLL)
            except Exception:  # the cluster is going away: nothing left to stop
                return
            if is_set:
                reason = StopReason(None, "stopped by the coordinator")
                with contextlib.suppress(RuntimeError):  # the unit's loop has already ended
                    anyio.from_thread.run_sync(stopper.request, reason, token=token)
                return

    thread = threading.Thread(target=watch, name="asyncproc-stop-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
