"""The Python entry points: ``process_file`` for async code, ``run_file`` for scripts."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import anyio

from ._errors import ConfigError
from ._options import DEFAULT_MAX_CONCURRENCY, Options
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
    "headers",
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
    _auto_concurrency(options)
    if callable(options.get("cost")):
        extra["cost"] = options.pop("cost")
        options["cost"] = "python"  # recorded as such (limits.PYTHON_COST); never the function
    if extra.get("checkpoint_dir") is not None:
        extra["checkpoint_dir"] = Path(extra["checkpoint_dir"])
    if (callable(processor) or "cost" in extra) and options.get("processes", 1) > 1:
        raise ConfigError(
            "processes > 1 needs the processor and the cost named by strings, not callables"
        )
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


def _auto_concurrency(options: dict[str, Any]) -> None:
    """``concurrency="auto"``: as many lanes as ``max_concurrency``, an adaptive limit on them."""
    if options.get("concurrency") != "auto":
        return
    options["adaptive"] = True
    options["concurrency"] = options.get("max_concurrency") or DEFAULT_MAX_CONCURRENCY


async def process_file(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    processor: str | Fn = "text_stats",
    **options: Any,
) -> Summary:
    """Process ``input`` into ``output``, resuming an unfinished run of the same pair.

    ``options`` are the fields of :class:`Options` plus ``checkpoint_dir``, ``new_run``,
    ``resume`` (a run id), ``quiet``, ``retry_failed`` and ``handle_signals`` (stop gracefully on
    SIGINT/SIGTERM; main thread only). Limits: ``rate="200/s"``, ``cost_rate="90000/min"``
    with ``cost`` (a function of the item, ``"llm"`` or ``"field:NAME"``),
    ``concurrency="auto"`` with ``max_concurrency``; ``headers={...}`` for the ``http``
    processor (never stored).
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
