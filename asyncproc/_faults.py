"""Deterministic crash points for the fault-injection tests.

``ASYNCPROC_CRASH_AT="name:n"`` makes the process ``os._exit(3)`` the n-th time it
passes the point called ``name`` (several may be given, comma-separated). Unset, a
crash point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import sys

CRASH_EXIT = 3


def _parse(spec: str) -> dict[str, int]:
    points: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.partition(":")
        points[name] = int(count or "1")
    return points


_armed = _parse(os.environ.get("ASYNCPROC_CRASH_AT", ""))


def crashpoint(name: str) -> None:
    """Die here, hard, if the environment armed this point and its count ran out."""
    if name not in _armed:
        return
    _armed[name] -= 1
    if _armed[name] <= 0:
        sys.stderr.write(f"asyncproc: crash point {name} reached, exiting hard\n")
        sys.stderr.flush()
        os._exit(CRASH_EXIT)
