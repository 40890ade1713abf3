"""What a unit's Dask task failing means, in one line that says what to do.

A task's error comes back to the coordinator as whatever the worker raised, wrapped in
the task's own exception groups, or as Dask's word that the task is gone. Each is named
here by its type's name (distributed and botocore are optional imports), and turned into
one :class:`~asyncproc._errors.AsyncprocError`; committed work is safe in every case.
"""

from __future__ import annotations

from collections.abc import Iterator

from .._errors import AsyncprocError, WorkerProcessError, again
from ..engine.units import UnitSpec

CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}
MAX_DETAIL = 300  # characters of a worker's message kept in the line


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """Every error inside ``exc``: the members of its groups and what caused each."""
    seen: set[int] = set()
    stack = [exc]
    while stack:
        error = stack.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, BaseExceptionGroup):
            stack.extend(reversed(error.exceptions))
            continue
        yield error
        if error.__cause__ is not None:
            stack.append(error.__cause__)


def detail(exc: BaseException) -> str:
    """``Type: message`` on one line, cut short."""
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


class _KilledWorkers(WorkerProcessError):
    """The workers running a unit's task kept dying: perhaps one of its items kills them."""


def killed_workers(exc: BaseException) -> bool:
    return isinstance(exc, _KilledWorkers)


def task_error(spec: UnitSpec, exc: Exception) -> AsyncprocError:
    """The one line for the failure of unit ``spec``'s task."""
    found = list(leaves(exc))
    safe = f"committed work is safe: {again()} to resume"
    for error in found:
        if isinstance(error, AsyncprocError):
            return error
    for error in found:
        name = type(error).__name__
        if name == "KilledWorker":
            return _KilledWorkers(
                f"the Dask workers running unit {spec.unit_id} kept dying ({detail(error)}); {safe}"
            )
        if name in CREDENTIALS:
            return WorkerProcessError(
                f"the Dask workers found no S3 credentials for unit {spec.unit_id} "
                f"({detail(error)}): credentials in this process's environment stay here; "
                "give every worker its own (environment or ~/.aws), or pass them with "
                f"--storage-option key=... --storage-option secret=...; {safe}"
            )
        if name == "FutureCancelledError" and "scheduler-connection-lost" in str(error):
            return WorkerProcessError(
                f"lost the Dask scheduler while unit {spec.unit_id} ran: check that it is "
                f"running (or drop --scheduler for a local cluster); {safe}"
            )
        if name in ("FutureCancelledError", "CancelledError"):
            return WorkerProcessError(
                f"the Dask task of unit {spec.unit_id} was cancelled on the cluster "
                f"({detail(error)}); {safe}"
            )
    first = found[0] if found else exc
    return WorkerProcessError(
        f"unit {spec.unit_id} failed on a Dask worker ({detail(first)}); fix the cause on "
        f"the workers, then {again()} to resume"
    )
