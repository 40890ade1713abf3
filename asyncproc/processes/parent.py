"""``--processes P``: the parent's side of running units in worker processes.

Each child (:mod:`.child`) runs unit slots and a pool of lanes of its own and asks the
parent for units one at a time; the parent answers from the coordinator's work source,
which splits a unit running in one child to give a tail to an idle one. The parent
keeps the run lock, turns each child's commit lines into the same calls an in-process
unit makes (progress, states for the merge), and does the merge itself. A child that
dies before saying ``done`` fails the run with a hint to resume; the other children are
then killed. Every commit a child reported was durable before it was printed, so a
resume loses nothing the parent counted.
"""

from __future__ import annotations

import itertools
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
from ..engine.executor import RunSetup, WorkSource
from ..engine.units import Place
from ..engine.wire import (
    decode_checkpoint,
    decode_commit,
    decode_place,
    encode_checkpoint,
    encode_spec,
)
from ..limits.gate import LimitConfig
from .wire import PARENT_ENV, line

MAX_LINE = 64 * 1024 * 1024


def shares(total: int, parts: int) -> list[int]:
    """Spread ``total`` over ``parts``, at least one each."""
    base, extra = divmod(total, parts)
    return [max(1, base + (1 if k < extra else 0)) for k in range(parts)]


def setup_message(
    setup: RunSetup, workers: int, concurrency: int, threads: int, parts: int
) -> bytes:
    """A child's setup: its shares of the slots, lanes, threads and budgets.

    The headers travel on the private pipe, never on disk.
    """
    limits = setup.gate.config if setup.gate is not None else LimitConfig()
    worker = replace(
        setup.shared, workers=workers, concurrency=concurrency, threads=threads,
        limits=limits.share(parts, concurrency).to_dict(),
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
                children.append(_Child(data, work, setup, k, children))
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
    """A unit running in a child, as the coordinator sees it."""

    def __init__(self, child: _Child, unit_id: int, claimed: Place) -> None:
        self.unit_id, self.claimed, self._child = unit_id, claimed, child

    async def cap(self, candidates: Sequence[Place]) -> Place | None:
        return await self._child.ask_cap(self.unit_id, candidates)


class _Child:
    """One worker process, from start to exit."""

    def __init__(
        self, data: bytes, work: WorkSource, setup: RunSetup, number: int,
        siblings: list[_Child],
    ) -> None:  # fmt: skip
        self._data, self._work, self._setup = data, work, setup
        self._number, self._siblings = number, siblings
        self._units: dict[int, _RemoteUnit] = {}
        self._caps: dict[int, tuple[anyio.Event, list[Place | None]]] = {}
        self._ids = itertools.count()
        self._send_lock = anyio.Lock()
        self._stdin: ByteSendStream | None = None
        self._done = False

    async def run(self, spawned: Process | None) -> None:
        """Run the child: one started earlier (:meth:`Processes.started`), or a new one."""
        async with AsyncExitStack() as stack:
            if spawned is None:
                spawned = await stack.enter_async_context(await _spawn())
            await self._talk(spawned)
            code = await spawned.wait()
        if not self._done or code != 0:
            _child_failed(sorted(self._units), code)

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
            if commit.unit_id in self._units:
                self._units[commit.unit_id].claimed = commit.claimed
            self._work.committed(commit)
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

    def _pause_others(self, seconds: float, tg: TaskGroup) -> None:
        """One child was told to slow down: the whole run pauses, every child with it."""
        for child in self._siblings:
            if child is not self:
                tg.start_soon(child._send, {"pause": seconds})

    async def _give_unit(self, request: int) -> None:
        job = await self._work.next_unit()
        if job is None:
            await self._send({"unit": None, "id": request})
            return
        spec, start = job
        unit = _RemoteUnit(self, spec.unit_id, Place(start.offset, start.next_index))
        self._units[spec.unit_id] = unit
        self._work.running(spec.unit_id, unit)
        await self._send({"unit": encode_spec(spec), "start": encode_checkpoint(start),
                          "id": request})  # fmt: skip

    async def ask_cap(self, unit_id: int, candidates: Sequence[Place]) -> Place | None:
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


def _child_failed(units: Sequence[int], code: int) -> None:
    what = f"unit(s) {', '.join(map(str, units))}" if units else "its units"
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    raise WorkerProcessError(
        f"the worker process for {what} {how}; "
        "committed work is safe: run the same command again to resume"
    )
