"""asyncproc: push a large line-oriented input through an async function, crash-proof.

The public API is what ``__all__`` lists; every other module is private. Names are
imported when first used (PEP 562), so ``import asyncproc`` (and every ``asyncproc``
command, which imports the package first) loads only what it touches: ``asyncproc run``
never loads the keyed layer, run management or the processes executor.
"""

import importlib as _importlib
import typing as _typing

from ._errors import (
    AsyncprocError,
    CheckpointError,
    ConfigError,
    CorruptCheckpointError,
    FailureLimitError,
    IncompatibleRunError,
    InputChangedError,
    InputError,
    Interrupted,
    ItemError,
    ItemTimeoutError,
    OutputError,
    ProcessorLoadError,
    RetryAfter,
    RunError,
    RunLockedError,
    RunNotFoundError,
    SimulatedCrash,
    UnsafeLinkError,
    UntrustedDirectoryError,
    WorkerProcessError,
)

if _typing.TYPE_CHECKING:
    from ._api import process_file, run_file
    from ._options import InputFormat, Options, OutputKind
    from ._runs_api import cleanup_runs, delete_run, get_run, list_runs
    from .engine.context import ItemInfo, current_item
    from .engine.summary import Summary
    from .keyed.decorator import ItemsReport, LoaderContext, checkpointed
    from .keyed.loader import LoaderCheckpoint, LoaderStats
    from .keyed.records import KeyFailure, LoaderStatus
    from .keyed.run import CheckpointManager, KeyedRun, KeyedRunInfo
    from .runs.views import RunView, UnitView
    from .storage.records import RunStatus

# public name -> the private module that defines it
_LAZY = {
    "process_file": "._api", "run_file": "._api",
    "InputFormat": "._options", "Options": "._options", "OutputKind": "._options",
    "cleanup_runs": "._runs_api", "delete_run": "._runs_api", "get_run": "._runs_api",
    "list_runs": "._runs_api",
    "ItemInfo": ".engine.context", "current_item": ".engine.context",
    "Summary": ".engine.summary",
    "ItemsReport": ".keyed.decorator", "LoaderContext": ".keyed.decorator",
    "checkpointed": ".keyed.decorator",
    "LoaderCheckpoint": ".keyed.loader", "LoaderStats": ".keyed.loader",
    "KeyFailure": ".keyed.records", "LoaderStatus": ".keyed.records",
    "CheckpointManager": ".keyed.run", "KeyedRun": ".keyed.run", "KeyedRunInfo": ".keyed.run",
    "RunView": ".runs.views", "UnitView": ".runs.views",
    "RunStatus": ".storage.records",
}  # fmt: skip


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncproc' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "AsyncprocError",
    "CheckpointError",
    "CheckpointManager",
    "ConfigError",
    "CorruptCheckpointError",
    "FailureLimitError",
    "IncompatibleRunError",
    "InputChangedError",
    "InputError",
    "InputFormat",
    "Interrupted",
    "ItemError",
    "ItemInfo",
    "ItemTimeoutError",
    "ItemsReport",
    "KeyFailure",
    "KeyedRun",
    "KeyedRunInfo",
    "LoaderCheckpoint",
    "LoaderContext",
    "LoaderStats",
    "LoaderStatus",
    "Options",
    "OutputError",
    "OutputKind",
    "ProcessorLoadError",
    "RetryAfter",
    "RunError",
    "RunLockedError",
    "RunNotFoundError",
    "RunStatus",
    "RunView",
    "SimulatedCrash",
    "Summary",
    "UnitView",
    "UnsafeLinkError",
    "UntrustedDirectoryError",
    "WorkerProcessError",
    "__version__",
    "checkpointed",
    "cleanup_runs",
    "current_item",
    "delete_run",
    "get_run",
    "list_runs",
    "process_file",
    "run_file",
]
