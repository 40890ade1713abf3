"""A lock for storage that has no ``flock``: a lease object with an expiry.

On an object store the run lock (and the checkpoint directory's) is a lease: a small
record ``lease/<what>.<n>`` created *exclusively* (S3's ``If-None-Match: *``), naming
its holder and an expiry ``TTL`` seconds ahead, renewed every ``TTL / 3`` seconds by a
thread while it is held, and deleted on release. The highest ``n`` is the current lease.

* Taking a lease: read the highest one; if it is live, refuse (naming the holder and
  when it expires); otherwise create ``n + 1``. Exclusive creation means two takers of
  an expired lease cannot both win: one of them gets ``False`` and is refused.
* A lease is dead when its expiry has passed, or at once when its holder is a process
  on this host that no longer exists (a killed run never makes a local resume wait).
* Renewing: the holder rewrites its own record (only it writes that name). If a higher
  lease exists, the holder could not renew in time (a partition longer than the TTL)
  and another process took over: :attr:`Lease.lost` is set and logged, and
  :func:`lost_lease` names it until it is released, so that the holder writes nothing
  more of the run (no manifest, no merge: the later process wins the run, and may have
  finished it and removed its state meanwhile).

What this relies on: clocks within a few seconds of each other across hosts, and a
store whose exclusive creation is honoured (AWS S3, moto, GCS and Azure do). On a store
that ignores it, two processes racing for an expired lease could both believe they won.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from .._errors import RunLockedError
from ..storage.protocol import Storage

log = logging.getLogger("asyncproc")

FOLDER = "lease/"
TTL = 30.0  # seconds a lease lives without renewal
WAIT_STEP = 0.2  # seconds between tries when waiting for a lease
_LOST: set[str] = set()  # leases this process held and another process took over


def lost_lease() -> str | None:
    """A lease of this process that another process took over, if any."""
    return min(_LOST) if _LOST else None


def _me(ttl: float) -> dict[str, Any]:
    return {
        "pid": os.getpid(), "host": socket.gethostname(),
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S"), "expires_at": time.time() + ttl,
    }  # fmt: skip


def _number(name: str) -> int:
    try:
        return int(name.rpartition(".")[2])
    except ValueError:
        return -1


def _pid_gone(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def is_live(info: dict[str, Any] | None, now: float | None = None) -> bool:
    """Whether a lease record still holds: not expired, and not a dead process of ours."""
    if info is None:
        return False
    expires = info.get("expires_at")
    if not isinstance(expires, int | float) or expires <= (now or time.time()):
        return False
    return not (info.get("host") == socket.gethostname() and _pid_gone(info.get("pid")))


def describe(info: dict[str, Any]) -> str:
    expires = time.strftime("%H:%M:%S", time.localtime(float(info.get("expires_at", 0))))
    return (
        f"pid {info.get('pid')} on {info.get('host')} since {info.get('started_at')} "
        f"(its lease expires at {expires} unless renewed)"
    )


def current(storage: Storage, what: str) -> tuple[str | None, dict[str, Any] | None]:
    """The newest lease of ``what`` and its record (None if there is none or it is torn)."""
    names = [n for n in storage.list(f"{FOLDER}{what}.") if _number(n) >= 0]
    if not names:
        return None, None
    newest = max(names, key=_number)
    raw = storage.get(newest)
    try:
        info = orjson.loads(raw) if raw is not None else None
    except orjson.JSONDecodeError:
        info = None
    return newest, info if isinstance(info, dict) else None


def holder(storage: Storage, what: str) -> str | None:
    """Who holds the lease now, or None: asked without taking it."""
    _, info = current(storage, what)
    return describe(info) if info is not None and is_live(info) else None


class Lease:
    """A held lease, renewed by a daemon thread until :meth:`release`."""

    def __init__(self, storage: Storage, name: str, ttl: float) -> None:
        self.storage, self.name, self.ttl = storage, name, ttl
        self.lost = False
        self._what = name[len(FOLDER) :].rpartition(".")[0]
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="asyncproc-lease", daemon=True)
        self._thread.start()

    def _renew(self) -> None:
        while not self._done.wait(self.ttl / 3):
            try:
                newest, _ = current(self.storage, self._what)
                if newest != self.name:
                    self.lost = True
                    _LOST.add(self.name)
                    log.error("the lease %s was taken over by another process", self.name)
                    return
                self.storage.put(self.name, orjson.dumps(_me(self.ttl)), point="lease")
            except OSError as exc:  # try again at the next tick, before the expiry
                log.warning("could not renew the lease %s: %s", self.name, exc)

    def release(self) -> None:
        self._done.set()
        self._thread.join(timeout=self.ttl)
        _LOST.discard(self.name)
        if not self.lost:
            try:
                self.storage.delete(self.name)
            except OSError as exc:
                log.warning(
                    "could not release the lease %s (%s); it expires by itself", self.name, exc
                )


def take(storage: Storage, what: str, label: str, *, wait: float = 0.0, ttl: float = TTL) -> Lease:
    """Take the lease on ``what``, waiting up to ``wait`` seconds for a live one to end."""
    deadline = time.monotonic() + wait
    while True:
        newest, info = current(storage, what)
        if not is_live(info):
            name = f"{FOLDER}{what}.{(_number(newest) if newest else 0) + 1:06d}"
            if storage.create(name, orjson.dumps(_me(ttl))):
                if newest is not None:
                    storage.delete(newest)
                return Lease(storage, name, ttl)
        elif time.monotonic() >= deadline:
            assert info is not None
            raise RunLockedError(
                f"{label} is in progress in {describe(info)}; wait for it to finish or stop "
                "that process, then try again"
            )
        time.sleep(WAIT_STEP)


@contextmanager
def leased(storage: Storage, what: str, label: str, *, wait: float = 0.0) -> Iterator[Lease]:
    """Hold the lease on ``what`` for the block."""
    lease = take(storage, what, label, wait=wait)
    try:
        yield lease
    finally:
        lease.release()
