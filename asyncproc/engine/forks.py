"""A processor that forks: its child must leave when it comes back to asyncproc.

A forked child holds a copy of everything the run holds: its pipes, its files, and (when
the fork happened on the loop) its loop and every lane. If it returns from the processor
into the engine it would go on working the parent's run, or wait forever in a worker
thread while holding the caller's pipes open. So the moment a process is forked while a
run is going on, it is marked (an at-fork hook), and the engine checks the mark where a
call comes back (:data:`FORKED`, a one-element list: one index and one test per call,
about 4 ns on the lanes' hot path by ``timeit``) and, marked, the child exits at once
with :func:`leave`.

A process forked while no run was going on (a ``multiprocessing`` worker that later runs
asyncproc itself) is not marked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

FORKED = [False]  # this process was forked from one with a run going on
_ACTIVE = [0]  # runs going on in this process
EXIT_FORKED = 0


def _after_fork_in_child() -> None:
    if _ACTIVE[0]:
        FORKED[0] = True


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def running() -> Iterator[None]:
    """Around a run: a fork while it goes on marks the child."""
    _ACTIVE[0] += 1
    try:
        yield
    finally:
        _ACTIVE[0] -= 1


def leave() -> NoReturn:
    """End a forked child that came back to the engine, touching nothing of the run."""
    message = (
        f"asyncproc: process {os.getpid()}, forked by the processor, came back to asyncproc "
        "and exits; end a forked child with os._exit() in the processor\n"
    )
    try:  # os.write: a lock inside sys.stderr may have been held by another thread at fork
        os.write(2, message.encode())
    finally:
        os._exit(EXIT_FORKED)
