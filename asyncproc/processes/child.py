"""A worker process for ``--processes``: ``python -m asyncproc.processes.child``.

It reads one JSON line on stdin (the shards to run, each a :class:`ShardSpec` and the
checkpoint to resume from, plus the processor and the loop), runs those shards on its
own event loop and prints one JSON line per durable commit on stdout, then ``{"done":
true}``. It dies with its parent: the kernel sends it SIGKILL when the parent dies
(``PR_SET_PDEATHSIG`` on Linux), and it exits at once when its stdin reaches EOF, which
is how the parent stops it at once; a line ``stop GRACE`` asks for a graceful stop (the
workers finish their items in flight for up to GRACE seconds and commit). It runs in a
session of its own and ignores SIGINT: Ctrl-C is the parent's to handle.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import orjson
from anyio.lowlevel import EventLoopToken

from ..engine.loops import backend_options
from ..engine.processors import Processor, load_processor
from ..engine.worker import Commit, ShardWorker
from ..storage.records import ShardCheckpoint
from .wire import DONE, PARENT_ENV, STOP, commit_line, decode_spec

PR_SET_PDEATHSIG = 1
EXIT_ORPHANED = 75


def _die_with_parent() -> None:
    """Ask the kernel for SIGKILL when the parent dies; exit if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    expected = os.environ.get(PARENT_ENV)
    if expected is not None and os.getppid() != int(expected):
        os._exit(EXIT_ORPHANED)


def _watch_stdin(token: EventLoopToken, workers: list[ShardWorker]) -> None:
    """Read the parent's stop lines; EOF means the parent wants this process gone, now."""
    for line in sys.stdin.buffer:
        if line.startswith(STOP):
            grace = float(line.split()[1])
            anyio.from_thread.run_sync(_stop_all, workers, grace, token=token)
    os._exit(0)


def _stop_all(workers: list[ShardWorker], grace: float) -> None:
    for worker in workers:
        worker.stop(grace)


class _Channel:
    """The child's private line to its parent: the original stdout.

    ``print`` in a user's processor must not corrupt it, so fd 1 and ``sys.stdout``
    are pointed at stderr and only this channel writes to the pipe.
    """

    def __init__(self) -> None:
        self._out = os.fdopen(os.dup(1), "wb")
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def send(self, line: bytes) -> None:
        self._out.write(line)
        self._out.flush()

    def emit(self, commit: Commit) -> None:
        self.send(commit_line(commit))


async def _serve(job: dict[str, Any], channel: _Channel) -> None:
    processor: Processor = load_processor(job["processor"], job["processor_args"])
    workers = [
        ShardWorker(
            decode_spec(shard["spec"]),
            processor,
            ShardCheckpoint.from_bytes(shard["start"].encode(), "shard start"),
            channel.emit,
        )
        for shard in job["shards"]
    ]
    token = anyio.lowlevel.current_token()
    threading.Thread(target=_watch_stdin, args=(token, workers), daemon=True).start()
    async with anyio.create_task_group() as tg:
        for worker in workers:
            tg.start_soon(worker.run)


def _report(exc: BaseException) -> None:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    sys.stderr.write(f"asyncproc: worker process {os.getpid()}: {type(exc).__name__}: {exc}\n")
    sys.stderr.flush()


def main() -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel = _Channel()
    job = orjson.loads(sys.stdin.buffer.readline())
    try:
        anyio.run(_serve, job, channel, backend_options=backend_options(job["loop"]))
    except Exception as exc:  # reported in one line; the parent names the shards
        _report(exc)
        os._exit(1)
    channel.send(DONE)
    os._exit(0)  # the stdin watcher is still blocked in read()


if __name__ == "__main__":
    main()
