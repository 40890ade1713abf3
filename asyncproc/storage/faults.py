"""Deterministic fault points for the fault-injection tests.

Nothing is armed unless a caller says so: :func:`arm` with ``"name:n"`` makes the
process ``os._exit(3)`` the n-th time it passes the point called ``name``;
``"name:n:ENOSPC"`` (any errno name) raises that ``OSError`` there instead, once.
Several entries may be given, comma-separated. The library never reads the environment
for this: only the command line does, at start (``ASYNCPROC_CRASH_AT``, see
``cli/main.py``), and says so on stderr, so a stray variable cannot crash a library run.
Disarmed, a fault point costs one dictionary lookup.
"""

from __future__ import annotations

import errno
import os
import sys

ENV = "ASYNCPROC_CRASH_AT"  # read by the command line only, at its start

CRASH_EXIT = 3

# The points of ``--retry-failed`` (``engine/retry_*.py``), in the order it passes them.
RETRY_POINTS = (
    "retry_planned",  # the retry's plan is durable, nothing of it committed yet
    "retry_committed",  # one more retry commit durable: segments synced, checkpoint replaced
    "retry_before_publish",  # every failed item retried and committed, output not replaced
    "retry_after_output",  # spliced output in place, failed-items file not yet replaced
    "retry_after_failed_file",  # failed-items file replaced (or removed), summary not recorded
    "retry_before_clear",  # summary recorded in the manifest, retry state still there
)

# Every named point, so that tests can cover each one and a typo is caught.
POINTS = (
    "before_first_commit",  # a shard's segments exist, nothing committed yet
    "segment_write",  # about to append a commit's bytes to a segment
    "write_checkpoint",  # about to write a checkpoint's temporary file
    "write_index",  # about to write the line index (before the first manifest)
    "before_rename_index",
    "after_rename_index",
    "write_manifest",
    "after_data_fsync",  # segment bytes durable, checkpoint not yet replaced
    "before_rename_checkpoint",  # new checkpoint fsynced in its temporary file
    "after_rename_checkpoint",  # renamed, directory not yet fsynced
    "before_rename_manifest",
    "after_rename_manifest",
    "split_capped",  # a running unit agreed to end at a point; nothing durable yet
    "split_recorded",  # the plan with the new unit is durable; the new unit not started
    "before_rename_output",  # merged output fsynced in its temporary file
    "after_output",  # output in place, failed-items file not yet written
    "before_clear",  # run marked merged, checkpoints and segments still there
    "after_clear",  # state cleared, run not yet marked completed
    "after_completed",  # run marked completed, the process not yet exited
    *RETRY_POINTS,
)


def _parse(spec: str) -> dict[str, tuple[int, str | None]]:
    armed: dict[str, tuple[int, str | None]] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, rest = part.partition(":")
        count, _, error = rest.partition(":")
        if (count and not count.isdigit()) or (error and not hasattr(errno, error)):
            raise ValueError(f"bad fault spec {part!r}: write name:n or name:n:ERRNO")
        if name not in POINTS:
            raise ValueError(f"{name!r} is not a fault point (see POINTS in storage/faults.py)")
        armed[name] = (int(count or "1"), error or None)
    return armed


_armed: dict[str, tuple[int, str | None]] = {}
_spec = [""]  # what was armed, as given: worker processes are armed with the same


def arm(spec: str) -> None:
    """Arm the fault points in ``spec`` (replacing what was armed); ``""`` disarms."""
    parsed = _parse(spec)
    _armed.clear()
    _armed.update(parsed)
    _spec[0] = spec


def armed_spec() -> str:
    """The spec last armed in this process (``""``: none), to arm a worker process with."""
    return _spec[0]


def crashpoint(name: str) -> None:
    """Die (or fail with the armed OSError) here, if armed and the count ran out."""
    if name not in _armed:
        return
    count, error = _armed[name]
    if count > 1:
        _armed[name] = (count - 1, error)
        return
    del _armed[name]
    if error is not None:
        code = getattr(errno, error)
        raise OSError(code, f"{os.strerror(code)} (injected at {name})")
    sys.stderr.write(f"asyncproc: crash point {name} reached, exiting hard\n")
    sys.stderr.flush()
    os._exit(CRASH_EXIT)
