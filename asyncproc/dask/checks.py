"""Checks made on every worker before a unit is submitted: one clear line each.

These functions run *on the workers* (:meth:`distributed.Client.run`), so they live in
a module the workers import by name: a worker without asyncproc fails to load them,
and that failure is the first check.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path


def worker_version() -> str:
    """The asyncproc version installed where this runs."""
    return version("asyncproc")


def try_processor(spec: str, args: dict[str, str]) -> str | None:
    """None if the processor loads here, else why not (one line)."""
    from ..processors.loading import load_processor

    try:
        load_processor(spec, args)
    except Exception as exc:  # reported to the coordinator, which names the worker
        return f"{type(exc).__name__}: {exc}"
    return None


def shippable_file(spec: str) -> tuple[Path, str] | None:
    """For a ``path/to/file.py:function`` spec whose file exists here: the file and the
    spec that names it once uploaded (``file:function``, by module name)."""
    target, sep, attr = spec.rpartition(":")
    path = Path(target)
    if not sep or path.suffix != ".py" or not path.is_file():
        return None
    return path, f"{path.stem}:{attr}"
