"""``--processes P``: the parent's side of running units in worker processes.

Each child (:mod:`.child`) runs unit slots and a pool of lanes of its own and asks the
parent for units one at a time; the parent answers from the coordinator's work source,
which splits a unit running in one child to give a tail to an idle one. The parent
keeps the run lock, turns each child's commit lines into the same calls an in-process
unit makes (progress, states for the merge), and does the merge itself. A child that
dies before saying ``done`` with units in flight has them rerun carefully (:mod:`.poison`:
an item that kills a worker twice is dead-lettered), then a new child takes its place
and the run goes on; a death with nothing in flight, one while the run is stopping, or
too many deaths fail the run with a hint to resume. Every commit a child reported was
durable before it was printed, so a resume loses nothing the parent counted.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

import anyio
import orjson
from anyio.abc import ByteSendStream, Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from .._errors import WorkerProcessError, unwrap_group
from ..engine.executor import Job, RunSetup, WorkSource
from ..engine.poison import suspects
from ..engine.units import Place, UnitSpec
from ..engine.wire import (
    decode_checkpoint,
    decode_commit,
    decode_place,
    encode_checkpoint,
    encode_spec,
)
from ..limits.gate import LimitConfig
from ..storage.records import UnitCheckpoint
from .poison import MAX_DEATHS, Attempt, Careful, how_it_died, quarantine
from .wire import PARENT_ENV, line

log = logging.getLogger("asyncproc")

MAX_LINE = 64 * 1024 * 1024


def shares(total: int, parts: int) -> list[int]:
    """Spread ``total`` over ``parts``, at least one each."""
    base, extra = divmod(total, parts)
    return [max(1, base + (1 if k < extra else 0)) for k in range(parts)]


def setup_message(
    setup: RunSetup, workers: int, concurrency: int, threads: int, parts: int,
    extra: dict[str, Any] | None = None,
) -> bytes:  # fmt: skip
    """A child's setup: its shares of the slots, lanes, threads and budgets (``extra``:
    a careful child's keys, see :mod:`.poison`).

    The headers travel on the private pipe, never on disk.
    """
    limits = setup.gate.config if setup.gate is not None else LimitConfig()
    worker = replace(
        setup.shared, workers=workers, concurrency=concurrency, threads=threads,
        limits=limits.share(parts, concurrency).to_dict(), **(extra or {}),
    )  # fmt: skip
    return line(worker.to_dict())


class Processes:
    """The ``--processes P`` executor: units handed out to P child processes on demand."""

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._spawned: list[Process] = []

    @asynccontextmanager
    async def started(self) -> AsyncIterator[None]:
        """Start the children now: they import while the parent plans, then wait for work.

        A child whose run never comes (the run was already done, or failed first) sees
        its stdin closed on the way out and exits.
        """
        async with AsyncExitStack() as stack:
            for _ in range(self.processes):
                process = await stack.enter_async_context(await _spawn())
                self._spawned.append(process)
            try:
                yield
            finally:
                self._spawned.clear()

    async def run(self, work: WorkSource, setup: RunSetup) -> None:
        p = self.processes
        slots, lanes = shares(setup.shared.workers, p), shares(setup.shared.concurrency, p)
        threads = shares(setup.shared.threads, p)
        spawned = list(self._spawned)
        try:
            children: list[_Child] = []
            for k in range(p):
                data = setup_message(setup, slots[k], lanes[k], threads[k], p)
                children.append(_Child(data, work, setup, k, children, lanes[k]))
                if setup.gate is not None:  # until the child reports its own
                    setup.gate.report(k, lanes[k], 0)
            async with anyio.create_task_group() as tg:
                for k, child in enumerate(children):
                    tg.start_soon(child.run, spawned[k] if k < len(spawned) else None)
        except ExceptionGroup as group:
            raise unwrap_group(group) from None


async def _spawn() -> Process:
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    command = [sys.executable, "-I", "-m", "asyncproc.processes.child"]
    return await anyio.open_process(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=env,
        start_new_session=True,  # Ctrl-C is for the parent; children die with it
    )  # fmt: skip


class _RemoteUnit:
    """A unit running in a child, as the coordinator sees it (and as a death leaves it)."""

    def __init__(self, child: _Child, spec: UnitSpec, start: UnitCheckpoint) -> None:
        self.unit_id, self.spec, self.checkpoint = spec.unit_id, spec, start
        self.claimed, self._child = Place(start.offset, start.next_index), child

    async def cap(self, candidates: Sequence[Place]) -> Place | None:
        place = await self._child.ask_cap(self.unit_id, candidates)
        if place is not None:  # a careful rerun after a death must stop there too
            self.spec = replace(self.spec, end=place.offset, end_index=place.index)
        return place


class _Child:
    """One worker process, from start to exit."""

    def __init__(
        self, data: bytes, work: WorkSource, setup: RunSetup, number: int,
        siblings: list[_Child], lanes: int = 1,
    ) -> None:  # fmt: skip
        self._data, self._work, self._setup = data, work, setup
        self._number, self._siblings, self._lanes = number, siblings, lanes
        self._units: dict[int, _RemoteUnit] = {}
        self._caps: dict[int, tuple[anyio.Event, list[Place | None]]] = {}
        self._ids = itertools.count()
        self._send_lock = anyio.Lock()
        self._stdin: ByteSendStream | None = None
        self._done = self._gone = self._worked = False  # _worked: it was given a unit
        self.caught: dict[int, Place] = {}  # a careful child's items in the processor

    async def run(self, spawned: Process | None) -> None:
        """Run the child: one started earlier (:meth:`Processes.started`), or a new one;
        after a death, rerun carefully what it had in flight (a child killed between two
        units had nothing) and start another."""
        for _ in range(MAX_DEATHS):
            code = await self.attempt(spawned)
            if self._done and code == 0:
                return
            if self._setup.stopper.reason is not None or not self._worked:
                break  # stopping, or a child that dies before any work: it would again
            lost = list(self._units.values())
            if lost:
                await self._recover(lost, code)
            self._units.clear()
            self._done = self._gone = self._worked = False
            spawned = None
        _child_failed(sorted(self._units), code)

    async def attempt(self, spawned: Process | None) -> int:
        """One child process from start to exit; its exit code."""
        async with AsyncExitStack() as stack:
            if spawned is None:
                spawned = await stack.enter_async_context(await _spawn())
            try:
                await self._talk(spawned)
            finally:
                self._gone = True
                for event, _ in self._caps.values():  # nobody will answer them now
                    event.set()
                self._caps.clear()
            return await spawned.wait()

    async def _recover(self, lost: list[_RemoteUnit], code: int) -> None:
        """Rerun what each lost unit may have had in flight, all at once, each carefully."""
        units = ", ".join(str(u.unit_id) for u in sorted(lost, key=lambda u: u.unit_id))
        log.warning(
            "the worker process for unit(s) %s ended (%s); rerunning what they had in "
            "flight in a careful worker to find any item that kills it", units,
            how_it_died(code),
        )  # fmt: skip
        async with anyio.create_task_group() as tg:
            for unit in lost:
                tg.start_soon(self._recover_unit, unit)

    async def _recover_unit(self, unit: _RemoteUnit) -> None:
        parts = len(self._siblings) or 1
        careful = careful_runner(self._setup, self._number, parts, self._lanes)
        await _rerun(unit.spec, unit.checkpoint, self._lanes, careful, self._work)

    async def _talk(self, process: Process) -> None:
        """Send the setup, serve the child's requests until it says it is done."""
        assert process.stdin is not None
        self._stdin = process.stdin
        await self._send_raw(self._data)
        stopper = self._setup.stopper
        async with anyio.create_task_group() as tg:
            handle = _ChildStop(self, tg)
            if not stopper.attach(handle):
                handle.stop(0)
            try:
                await self._follow(process, tg)
            finally:
                stopper.detach(handle)
                tg.cancel_scope.cancel()  # answers nobody will read any more

    async def _follow(self, process: Process, tg: TaskGroup) -> None:
        assert process.stdout is not None
        stream = BufferedByteReceiveStream(process.stdout)
        while not self._done:
            try:
                raw = await stream.receive_until(b"\n", MAX_LINE)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return
            self._dispatch(orjson.loads(raw), tg)

    def _dispatch(self, message: dict[str, Any], tg: TaskGroup) -> None:
        if "next" in message:
            tg.start_soon(self._give_unit, int(message["next"]))
        elif "commit" in message:
            commit = decode_commit(message["commit"], "child commit")
            unit = self._units.get(commit.unit_id)
            if unit is not None:
                unit.claimed, unit.checkpoint = commit.claimed, commit.checkpoint
            self._work.committed(commit)
        elif "trying" in message or "tried" in message:
            self._announced(message)
        elif "capped" in message:
            event, box = self._caps.pop(int(message["capped"]))
            box[0] = decode_place(message["place"])
            event.set()
        elif "finished" in message:
            unit_id = int(message["finished"])
            self._units.pop(unit_id, None)
            self._work.finished(unit_id, decode_checkpoint(message["checkpoint"], "child"))
        elif "limits" in message and self._setup.gate is not None:
            limit, rejections = message["limits"]
            self._setup.gate.report(self._number, int(limit), int(rejections))
        elif "pause" in message:
            self._pause_others(float(message["pause"]), tg)
        elif message.get("done"):
            self._done = True

    def _announced(self, message: dict[str, Any]) -> None:
        """A careful child's item: in the processor now, or back from it (then whatever
        kills the child, it was not this item)."""
        if "trying" in message:
            _, offset, index = message["trying"]
            self.caught[int(offset)] = Place(int(offset), int(index))
        else:
            self.caught.pop(int(message["tried"][1]), None)

    def _pause_others(self, seconds: float, tg: TaskGroup) -> None:
        """One child was told to slow down: the whole run pauses, every child with it."""
        for child in self._siblings:
            if child is not self:
                tg.start_soon(child._send, {"pause": seconds})

    async def _give_unit(self, request: int) -> None:
        with anyio.CancelScope(shield=True):  # a unit taken is a unit this child answers for
            job = await self._work.next_unit()
        if job is None:
            await self._send({"unit": None, "id": request})
            return
        spec, start = job
        unit = _RemoteUnit(self, spec, start)
        self._units[spec.unit_id] = unit
        self._worked = True
        self._work.running(spec.unit_id, unit)
        await self._send({"unit": encode_spec(spec), "start": encode_checkpoint(start),
                          "id": request})  # fmt: skip

    async def ask_cap(self, unit_id: int, candidates: Sequence[Place]) -> Place | None:
        if self._gone:
            return None
        request = next(self._ids)
        event, box = anyio.Event(), list[Place | None]([None])
        self._caps[request] = (event, box)
        await self._send({"cap": unit_id, "candidates": [[p.offset, p.index] for p in candidates],
                          "id": request})  # fmt: skip
        await event.wait()
        return box[0]

    async def _send(self, message: dict[str, Any]) -> None:
        await self._send_raw(line(message))

    async def _send_raw(self, data: bytes) -> None:
        assert self._stdin is not None
        async with self._send_lock:
            try:
                await self._stdin.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                return  # the child is gone; its exit says how


class _ChildStop:
    """Stands for one child in the :class:`Stopper`: a stop becomes a line on its stdin."""

    def __init__(self, child: _Child, tg: TaskGroup) -> None:
        self._child, self._tg = child, tg

    def stop(self, grace: float) -> None:
        self._tg.start_soon(self._child._send, {"stop": grace})


def careful_runner(setup: RunSetup, number: int, parts: int, lanes: int) -> Careful:
    """Runs one careful child (one slot, ``lanes`` lanes) over a work source's one unit."""

    async def run(extra: dict[str, Any], source: WorkSource) -> Attempt:
        data = setup_message(setup, 1, lanes, lanes, parts, extra)
        child = _Child(data, source, setup, number, [])
        code = await child.attempt(None)
        caught = tuple(sorted(child.caught.values(), key=lambda p: p.offset))
        return Attempt(not child._done or code != 0, code, caught)

    return run


async def rerun_carefully(work: WorkSource, setup: RunSetup, jobs: list[Job], lanes: int) -> None:
    """One process, the rerun after a death (see :mod:`.poison`): each waiting unit's
    stretch in a careful child of its own, one per core at a time. The careful children
    run apart from this process (their own session): a kill of the whole command never
    looks like an item's doing."""
    careful = careful_runner(setup, 0, 1, lanes)
    limiter = anyio.CapacityLimiter(max(2, os.cpu_count() or 1))
    try:
        async with anyio.create_task_group() as tg:
            for spec, start in jobs:
                tg.start_soon(_rerun, spec, start, lanes, careful, work, limiter)
    except ExceptionGroup as group:
        raise unwrap_group(group) from None


async def _rerun(
    spec: UnitSpec, start: UnitCheckpoint, lanes: int, careful: Careful, work: WorkSource,
    limiter: anyio.CapacityLimiter | None = None,
) -> None:  # fmt: skip
    async with limiter or anyio.CapacityLimiter(1):
        final = await quarantine(spec, start, suspects(lanes, spec.batch_size), careful, work)
    work.returned(spec.unit_id, final)


def _child_failed(units: Sequence[int], code: int) -> None:
    what = f"unit(s) {', '.join(map(str, units))}" if units else "its units"
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    raise WorkerProcessError(
        f"the worker process for {what} {how}; "
        "committed work is safe: run the same command again to resume"
    )
