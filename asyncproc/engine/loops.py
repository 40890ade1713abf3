"""Choosing the event loop: uvloop when it is installed, unless asked otherwise."""

from __future__ import annotations

import asyncio
import importlib
from enum import StrEnum
from typing import Any

from .._errors import ConfigError, option


class LoopChoice(StrEnum):
    """What ``--loop`` accepts."""

    AUTO = "auto"  # uvloop if importable, else asyncio
    ASYNCIO = "asyncio"  # the standard library's loop
    UVLOOP = "uvloop"  # uvloop, or an error if it is missing


def uvloop_available() -> bool:
    try:
        importlib.import_module("uvloop")
    except ImportError:
        return False
    return True


def backend_options(choice: str) -> dict[str, Any]:
    """The ``backend_options`` for :func:`anyio.run` that give the chosen loop."""
    try:
        choice = LoopChoice(choice)
    except ValueError:
        raise ConfigError(f"unknown loop {choice!r}; use auto, asyncio or uvloop") from None
    if choice is LoopChoice.ASYNCIO:
        return {}
    if uvloop_available():
        return {"use_uvloop": True}
    if choice is LoopChoice.UVLOOP:
        raise ConfigError(
            f"{option('loop', 'uvloop')} needs uvloop; install it with: pip install "
            f"'asyncproc[fast]', or use {option('loop', 'asyncio')}"
        )
    return {}


def running_loop() -> str:
    """``uvloop`` or ``asyncio``: which loop runs the calling coroutine."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.split(".")[0] == "uvloop" else "asyncio"
