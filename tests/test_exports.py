"""The public API is exactly ``__all__``: sorted, importable, and nothing public left out."""

from __future__ import annotations

import functools
import json
import sys
import types
from pathlib import Path

import anyio
import pytest

import asyncproc

EXPECTED = {
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
    "UnitView",
    "UnsafeLinkError",
    "UntrustedDirectoryError",
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
}


def test_all_is_the_expected_set_and_sorted() -> None:
    assert set(asyncproc.__all__) == EXPECTED, (
        f"added: {sorted(set(asyncproc.__all__) - EXPECTED)}, "
        f"missing: {sorted(EXPECTED - set(asyncproc.__all__))}"
    )
    assert list(asyncproc.__all__) == sorted(asyncproc.__all__)
    assert len(asyncproc.__all__) == len(set(asyncproc.__all__))


def test_every_name_in_all_is_importable() -> None:
    namespace: dict[str, object] = {}
    exec("from asyncproc import *", namespace)
    for name in asyncproc.__all__:
        assert hasattr(asyncproc, name), name
        if name != "__version__":
            assert name in namespace, name


def test_no_public_attribute_is_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(asyncproc).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public <= set(asyncproc.__all__), sorted(public - set(asyncproc.__all__))


def _defined_here(value: object) -> bool:
    """A class or function of this package (not a dependency's, re-exported), found again
    under its own module and name: what pickling across processes and the docs rely on."""
    if not isinstance(value, type | types.FunctionType):
        return False
    module = value.__module__
    if module != "asyncproc" and not module.startswith("asyncproc."):
        return False
    found: object = sys.modules[module]
    for part in value.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is value


def test_exported_objects_claim_the_public_package() -> None:
    assert not _defined_here(anyio.Event), "the check must refuse a dependency's class"
    assert not _defined_here(functools.partial(asyncproc.run_file)), "and a non-function"

    def stranger() -> None: ...

    stranger.__module__, stranger.__qualname__ = "asyncprocx", "run_file"
    assert not _defined_here(stranger), "and a look-alike module"
    for name in asyncproc.__all__:
        if name != "__version__":
            assert _defined_here(getattr(asyncproc, name)), name


def test_exported_objects_say_they_live_in_asyncproc() -> None:
    """Reprs, tracebacks and pickles name ``asyncproc.Summary``, not a private module."""
    wrong = {
        name: value.__module__
        for name in asyncproc.__all__
        if isinstance(value := getattr(asyncproc, name), type | types.FunctionType)
        and value.__module__ != "asyncproc"
    }
    assert wrong == {}


def test_summary_status_is_the_exported_enum(tmp_path: Path) -> None:
    """``Summary.status`` is a ``RunStatus`` (a str enum: it still equals its text)."""
    source = tmp_path / "in.txt"
    source.write_text("a\nb\n")
    summary = asyncproc.run_file(source, tmp_path / "out.json")
    assert summary.status is asyncproc.RunStatus.COMPLETED
    text: str = summary.status  # still a str where one is expected
    assert text == "completed"
    assert json.loads(json.dumps(summary.to_dict()))["status"] == "completed"
    again = asyncproc.run_file(source, tmp_path / "out.json")  # read back from the manifest
    assert again.status is asyncproc.RunStatus.COMPLETED
    assert asyncproc.Summary.from_dict(summary.to_dict()).status is asyncproc.RunStatus.COMPLETED


def test_a_stored_summary_with_an_unknown_status_is_refused() -> None:
    data = {"run_id": "r", "status": "bogus"}
    with pytest.raises(asyncproc.CorruptCheckpointError, match="unknown status 'bogus'"):
        asyncproc.Summary.from_dict(data)
