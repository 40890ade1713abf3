"""asyncproc: push a large line-oriented input through an async function, crash-proof.

The public API is what ``__all__`` lists; every other module is private.
"""

from ._api import process_file, run_file
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
from ._options import InputFormat, Options, OutputKind
from ._records import RunStatus
from ._summary import Summary

__version__ = "0.1.0"

__all__ = [
    "AsyncprocError",
    "CheckpointError",
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
    "Options",
    "OutputError",
    "OutputKind",
    "ProcessorLoadError",
    "RunError",
    "RunLockedError",
    "RunNotFoundError",
    "RunStatus",
    "SimulatedCrash",
    "Summary",
    "WorkerProcessError",
    "__version__",
    "current_item",
    "process_file",
    "run_file",
]
