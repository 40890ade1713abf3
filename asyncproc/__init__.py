"""asyncproc: push a large line-oriented input through an async function, crash-proof.

The public API is what ``__all__`` lists; every other module is private.
"""

from ._api import process_file, run_file
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
    RunError,
    RunLockedError,
    RunNotFoundError,
    SimulatedCrash,
    WorkerProcessError,
)
from ._options import InputFormat, Options, OutputKind
from ._runs_api import cleanup_runs, delete_run, get_run, list_runs
from .engine.context import ItemInfo, current_item
from .engine.summary import Summary
from .keyed.decorator import ItemsReport, LoaderContext, checkpointed
from .keyed.loader import LoaderCheckpoint, LoaderStats
from .keyed.records import KeyFailure
from .keyed.run import CheckpointManager, KeyedRun, KeyedRunInfo
from .runs.views import RunView, UnitView
from .storage.records import RunStatus

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
    "Options",
    "OutputError",
    "OutputKind",
    "ProcessorLoadError",
    "RunError",
    "RunLockedError",
    "RunNotFoundError",
    "RunStatus",
    "RunView",
    "SimulatedCrash",
    "Summary",
    "UnitView",
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
