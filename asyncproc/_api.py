"""The Python entry points: ``process_file`` for async code, ``run_file`` for scripts."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import anyio

from ._errors import ConfigError, named, option
from ._options import DEFAULT_CHECKPOINT, DEFAULT_MAX_CONCURRENCY, Options
from ._public import public
from .engine.coordinator import Coordinator, Request
from .engine.executor import Executor
from .engine.loops import backend_options, running_loop
from .engine.observer import LogProgress, Silent
from .engine.summary import Summary
from .processors.loading import Fn
from .runs.store import RunStore, run_store
from .storage.location import Location

ENGINES = ("local", "processes", "dask")
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

    extra = {k: options.pop(k) for k in list(options) if k in _REQUEST_KEYS}
    storage = dict(options.pop("storage_options", None) or {})
    out = Location(output, storage)
    extra["run_store"] = _run_store(extra.pop("checkpoint_dir", None), out, storage)
    engine, scheduler = options.pop("engine", None), options.pop("scheduler", None)
    _auto_concurrency(options)
    if callable(options.get("cost")):
        extra["cost"] = options.pop("cost")
        options["cost"] = "python"  # recorded as such (limits.PYTHON_COST); never the function
    quiet = bool(options.pop("quiet", False))
    try:
        opts = Options(**options)
    except TypeError as exc:
        raise ConfigError(f"unknown option: {exc}") from None
    if extra.get("observer") is None:
        extra["observer"] = Silent() if quiet else LogProgress()
    executor = _executor(engine, scheduler, opts.processes)
    if (callable(processor) or "cost" in extra) and executor is not None:
        raise ConfigError(
            "processes > 1 and engine='dask' need the processor and the cost named by "
            "strings, not callables"
        )
    if executor is not None:
        extra["executor"] = executor
    elif isinstance(processor, str) and "cost" not in extra:
        from .processes.parent import rerun_carefully  # a death is rerun in worker processes

        extra["after_death"] = rerun_carefully
    if engine == "dask":
        _refuse_limits_on_dask(opts, bool(extra.get("headers")))
    return Request(Location(input, storage), out, processor, opts, **extra)


def _run_store(where: Any, output: Location, storage: dict[str, Any]) -> RunStore:
    """The checkpoint directory, chosen here once: a path, a URL, or a :class:`Storage`
    (memory with its fault tools, say); by default ``.asyncproc`` beside the output."""
    if where is None:
        return run_store(output.parent.child(DEFAULT_CHECKPOINT))
    if isinstance(where, (str, os.PathLike)):
        return run_store(Location(where, storage))
    return run_store(where)


def _executor(engine: str | None, scheduler: str | None, processes: int) -> Executor | None:
    """The executor an ``engine=`` (and ``processes=``) asks for; None: this event loop."""
    engine = engine or ("processes" if processes > 1 else "local")
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; use {', '.join(ENGINES)}")
    if scheduler is not None and engine != "dask":
        raise ConfigError(
            f"{named('scheduler')} names a Dask scheduler: it needs {option('engine', 'dask')}"
        )
    if processes > 1 and engine != "processes":
        raise ConfigError(
            f"{named('processes')} runs the processes engine; "
            f"drop it for {option('engine', engine)}"
        )
    if engine == "processes":
        from .processes.parent import Processes  # loaded only when asked for

        return Processes(processes if processes > 1 else os.cpu_count() or 1)
    if engine == "dask":
        from .dask.executor import DaskExecutor
        from .processes.parent import rerun_carefully

        return DaskExecutor(scheduler, after_death=rerun_carefully)
    return None


def _refuse_limits_on_dask(opts: Options, headers: bool) -> None:
    """Dask tasks do not carry the run's budgets, pauses or headers yet: say so, never
    run unpaced against an API that was meant to be paced."""
    asked = [named(n) for n, on in (("rate", opts.rate), ("cost_rate", opts.cost_rate),
             ("headers", headers)) if on] + ([option("concurrency", "auto")] if opts.adaptive
             else [])  # fmt: skip
    if asked:
        raise ConfigError(
            f"{', '.join(asked)} cannot be used with {option('engine', 'dask')} yet: its tasks "
            f"would not share the run's limits; use {option('processes', 2)} (or more) instead"
        )


def _auto_concurrency(options: dict[str, Any]) -> None:
    """``concurrency="auto"``: as many lanes as ``max_concurrency``, an adaptive limit on them."""
    if options.get("concurrency") != "auto":
        return
    options["adaptive"] = True
    options["concurrency"] = options.get("max_concurrency") or DEFAULT_MAX_CONCURRENCY


@public
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


@public
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
