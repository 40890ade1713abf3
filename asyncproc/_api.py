"""The Python entry points: ``process_file`` for async code, ``run_file`` for scripts."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import anyio

from ._errors import ConfigError
from ._options import Options
from .engine.coordinator import Coordinator, Request
from .engine.loops import backend_options, running_loop
from .engine.observer import LogProgress, Silent
from .engine.processors import Fn
from .engine.summary import Summary

_REQUEST_KEYS = {
    "checkpoint_dir",
    "new_run",
    "resume",
    "handle_signals",
    "retry_failed",
    "observer",
    "exit_on_crash",
}


def _request(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    processor: str | Fn,
    options: dict[str, Any],
) -> Request:
    from pathlib import Path

    extra = {k: options.pop(k) for k in list(options) if k in _REQUEST_KEYS}
    if extra.get("checkpoint_dir") is not None:
        extra["checkpoint_dir"] = Path(extra["checkpoint_dir"])
    if callable(processor) and options.get("processes", 1) > 1:
        raise ConfigError("processes > 1 needs a processor named by a string, not a callable")
    quiet = bool(options.pop("quiet", False))
    try:
        opts = Options(**options)
    except TypeError as exc:
        raise ConfigError(f"unknown option: {exc}") from None
    if extra.get("observer") is None:
        extra["observer"] = Silent() if quiet else LogProgress()
    if opts.processes > 1:
        from .processes.parent import Processes  # loaded only when asked for

        extra["executor"] = Processes(opts.processes)
    return Request(Path(input), Path(output), processor, opts, **extra)


async def process_file(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    processor: str | Fn = "text_stats",
    **options: Any,
) -> Summary:
    """Process ``input`` into ``output``, resuming an unfinished run of the same pair.

    ``options`` are the fields of :class:`Options` plus ``checkpoint_dir``, ``new_run``,
    ``resume`` (a run id), ``quiet``, ``retry_failed`` and ``handle_signals`` (stop gracefully on
    SIGINT/SIGTERM; main thread only).
    """
    summary = await Coordinator(_request(input, output, processor, options)).run()
    return replace(summary, loop=running_loop())


def run_file(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    processor: str | Fn = "text_stats",
    *,
    loop: str = "auto",
    **options: Any,
) -> Summary:
    """Blocking form of :func:`process_file`, for code that is not async.

    ``loop`` is ``auto`` (uvloop when installed), ``asyncio`` or ``uvloop``.
    """
    backend = backend_options(loop)
    request = _request(input, output, processor, options)

    async def main() -> Summary:
        return replace(await Coordinator(request).run(), loop=running_loop())

    return anyio.run(main, backend_options=backend)
