"""Public names say where users import them from: ``asyncproc``, not a private module."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def public(obj: T) -> T:
    """Mark a class or function of the public API: its ``__module__`` becomes ``asyncproc``.

    Reprs, tracebacks, ``help()`` and pickles then name ``asyncproc.Summary``, which
    users can import, instead of a private module that may move. (Apply it outermost,
    above ``@dataclass``: a slotted dataclass is a new class.)
    """
    obj.__module__ = "asyncproc"
    return obj
