"""A re-armable wake-up for tasks on one event loop."""

from __future__ import annotations

import anyio


class Signal:
    """``wait`` sleeps until the next ``fire``; a fire with nobody waiting is free."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    async def wait(self) -> None:
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()

    def fire(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None
