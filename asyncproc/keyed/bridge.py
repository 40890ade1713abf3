"""The sync layer's way into the async keyed engine: one event loop in a daemon thread.

The older tool's API is plain blocking calls from plain scripts and worker threads. They
reach the native, async keyed layer through a :class:`Bridge`: an event loop of its own,
in a daemon thread (so a script that forgets to close its manager still exits), which
runs the async calls (``portal.call``) and a :class:`Flusher` per loader.

A flusher makes marks durable in groups, as the file engine does with its batches:
whenever marks are waiting and no save is running, it starts one, and whatever is marked
meanwhile goes into the next. So a SIGKILL costs the marks of the save in progress (a
few milliseconds of work) rather than everything since the last explicit save.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from .loader import LoaderCheckpoint

T = TypeVar("T")


class Bridge:
    """An event loop in a daemon thread, and blocking calls into it."""

    def __init__(self) -> None:
        ready = threading.Event()
        self._portal: BlockingPortal | None = None
        self._thread = threading.Thread(
            target=anyio.run, args=(self._serve, ready), name="asyncproc-compat", daemon=True
        )
        self._thread.start()
        ready.wait()

    async def _serve(self, ready: threading.Event) -> None:
        async with BlockingPortal() as portal:
            self._portal = portal
            ready.set()
            await portal.sleep_until_stopped()

    @property
    def portal(self) -> BlockingPortal:
        assert self._portal is not None
        return self._portal

    def on_loop(self) -> bool:
        """Whether the caller runs on the bridge's own loop thread."""
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """Run ``fn`` on the loop and wait for it; a Ctrl-C while waiting cancels it."""
        future: Future[T] = self.portal.start_task_soon(fn)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def close(self) -> None:
        """Stop the loop (anything still running on it is cancelled) and its thread."""
        if self._thread.is_alive():
            self.portal.call(self.portal.stop, True)
            self._thread.join()


class Flusher:
    """Saves one loader's marks continuously, in groups, on the bridge's loop."""

    def __init__(self, bridge: Bridge, loader: LoaderCheckpoint) -> None:
        self._bridge, self._loader = bridge, loader
        self._lock = threading.Lock()
        self._poked = self._stopped = False
        self._wake: anyio.Event | None = None
        self.error: BaseException | None = None
        bridge.portal.start_task_soon(self._run)
        loader.on_mark = self.poke

    def poke(self) -> None:
        """Marks are waiting (called after every mark, from any thread)."""
        with self._lock:
            if self._poked:
                return
            self._poked = True
        if self._bridge.on_loop():
            self._set()
        else:
            self._bridge.portal.start_task_soon(self._set)

    def _set(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def check(self) -> None:
        """Raise what stopped the flusher (a full disk, say) in the caller's thread."""
        if self.error is not None:
            raise self.error

    async def stop(self) -> None:
        """End the flusher; the loader's own close saves what is left."""
        self._stopped = True
        self._set()

    async def _run(self) -> None:
        self._wake = anyio.Event()
        if self._poked:
            self._wake.set()
        while not self._stopped:
            await self._wake.wait()
            self._wake = anyio.Event()
            with self._lock:
                self._poked = False
            if self._stopped:
                return
            try:
                await self._loader.save_progress()
            except Exception as exc:  # reported by the next call in the user's thread
                self.error = exc
                return
