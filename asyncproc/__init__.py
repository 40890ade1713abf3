"""asyncproc: push a large line-oriented input through an async function, crash-proof.

The public API is what ``__all__`` lists; every other module is private.
"""

from ._api import process_file, run_file
from ._checkpointed import ItemsReport, LoaderContext, checkpointed
from ._context import ItemInfo, current_item
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
from ._keyed import LoaderCheckpoint, LoaderStats
from ._keyed_records import KeyFailure
from ._keyed_run import CheckpointManager, KeyedRun, KeyedRunInfo
from ._options import InputFormat, Options, OutputKind
from ._records import RunStatus
from ._runs_api import cleanup_runs, delete_run, get_run, list_runs
from ._summary import Summary
from ._views import RunView, ShardView

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
    "ShardView",
    "SimulatedCrash",
    "Summary",
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
