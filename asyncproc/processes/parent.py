"""``--processes P``: the parent's side of running shards in worker processes.

Pending shards are dealt round-robin to at most P children (:mod:`._child`). The parent
keeps the run lock, turns each child's commit lines into the same ``on_commit`` calls an
in-process worker makes (progress, states for the merge), and does the merge itself. A
child that dies before saying ``done`` fails the run with a hint to resume; the other
children are then killed. Every commit a child reported was durable before it was
printed, so a resume loses nothing the parent counted.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import orjson
from anyio.abc import ByteSendStream, Process, TaskGroup
from anyio.streams.buffered import BufferedByteReceiveStream

from .._errors import WorkerProcessError, unwrap_group
from ..engine.executor import Job
from ..engine.loops import running_loop
from ..engine.processors import Processor
from ..engine.stopping import Stopper
from ..engine.worker import Commit
from .wire import PARENT_ENV, STOP, decode_commit, encode_spec

MAX_LINE = 64 * 1024 * 1024


def deal(jobs: Sequence[Job], processes: int) -> list[list[Job]]:
    """Round-robin the shards over the processes; no process without a shard."""
    groups = [list(jobs[k::processes]) for k in range(processes)]
    return [group for group in groups if group]


def payload(group: Sequence[Job], processor: str, args: dict[str, str]) -> bytes:
    shards = [{"spec": encode_spec(s), "start": c.to_bytes().decode()} for s, c in group]
    job = {"processor": processor, "processor_args": args, "loop": running_loop(),
           "shards": shards}  # fmt: skip
    return orjson.dumps(job) + b"\n"


class _ChildStop:
    """Stands for one child in the :class:`Stopper`: a stop becomes a line on its stdin."""

    def __init__(self, stdin: ByteSendStream, tg: TaskGroup) -> None:
        self._stdin = stdin
        self._tg = tg

    def stop(self, grace: float) -> None:
        self._tg.start_soon(self._stdin.send, STOP + f" {grace}\n".encode())


class Processes:
    """The ``--processes P`` executor: shards dealt to P child processes."""

    def __init__(self, processes: int, processor_args: dict[str, str]) -> None:
        self.processes = processes
        self.processor_args = processor_args

    async def run(
        self, jobs: Sequence[Job], processor: Processor, stopper: Stopper,
        on_commit: Callable[[Commit], None], concurrency: int,
    ) -> None:  # fmt: skip
        """Run every job in child processes; return when all of them finished."""
        del concurrency  # already spread over the shards' lanes
        try:
            async with anyio.create_task_group() as tg:
                for group in deal(jobs, self.processes):
                    data = payload(group, processor.spec, self.processor_args)
                    tg.start_soon(_Child(data, group, stopper, on_commit).run)
        except ExceptionGroup as group:
            raise unwrap_group(group) from None


class _Child:
    """One worker process, from start to exit."""

    def __init__(
        self, data: bytes, group: Sequence[Job], stopper: Stopper,
        on_commit: Callable[[Commit], None],
    ) -> None:  # fmt: skip
        self._data = data
        self._group = group
        self._stopper = stopper
        self._on_commit = on_commit

    async def run(self) -> None:
        env = {**os.environ, PARENT_ENV: str(os.getpid())}
        command = [sys.executable, "-m", "asyncproc.processes.child"]
        async with await anyio.open_process(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, env=env,
            start_new_session=True,  # Ctrl-C is for the parent; children die with it
        ) as process:  # fmt: skip
            done = await self._talk(process)
            code = await process.wait()
        if not done or code != 0:
            _child_failed(self._group, code)

    async def _talk(self, process: Process) -> bool:
        """Send the job, relay stop requests, follow the commits until the child is done."""
        assert process.stdin is not None
        await process.stdin.send(self._data)
        async with anyio.create_task_group() as tg:
            handle = _ChildStop(process.stdin, tg)
            if not self._stopper.attach(handle):
                handle.stop(0)
            try:
                done = await _follow(process, self._on_commit)
            finally:
                self._stopper.detach(handle)
        return done


async def _follow(process: Process, on_commit: Callable[[Commit], None]) -> bool:
    """Apply each commit line; True when the child said it finished."""
    assert process.stdout is not None
    stream = BufferedByteReceiveStream(process.stdout)
    while True:
        try:
            line = await stream.receive_until(b"\n", MAX_LINE)
        except (anyio.EndOfStream, anyio.IncompleteRead):
            return False
        message: dict[str, Any] = orjson.loads(line)
        if message.get("done"):
            return True
        on_commit(decode_commit(message))


def _child_failed(group: Sequence[Job], code: int) -> None:
    shards = ", ".join(str(spec.shard.shard_id) for spec, _ in group)
    how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
    raise WorkerProcessError(
        f"the worker process for shard(s) {shards} {how}; "
        "committed work is safe: run the same command again to resume"
    )
