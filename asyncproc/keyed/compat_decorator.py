"""The older tool's decorators (``with_checkpoint``, ``checkpoint_loader``,
``checkpoint_zaak_loader``) over the keyed layer.

The decorated function is called with ``checkpoint_manager=`` (a
:class:`~.compat.CheckpointManager` with a current run; none: no checkpointing) and
receives ``_checkpoint_context``, a :class:`CheckpointContext`. Its ``process_items``
is the native :meth:`~.decorator.LoaderContext.process_items` (the one item pipeline:
plain functions run in worker threads, ``concurrency`` of them at once), so the older
tool's first wish, parallel items with checkpoint coordination, is one argument away.
The run is bound when the function is called, not when it is decorated.
"""

from __future__ import annotations

import functools
import logging
import threading
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from .._errors import ConfigError
from .compat import DEFAULT_INTERVAL, CheckpointManager, LoaderCheckpoint, as_key, say
from .decorator import ItemsReport, LoaderContext

log = logging.getLogger("asyncproc")
R = TypeVar("R")


def _default_id(item: Any) -> Any:
    return getattr(item, "id", str(item))


def _default_total(items: Any) -> int:
    return len(items) if hasattr(items, "__len__") else 0


def _say_progress(name: str, done: int, total: int, failed: int, final: bool = False) -> None:
    """The older tool's progress line (see :func:`~.compat.say`)."""
    percent = 100.0 * done / total if total else 0.0
    line = (f"📊 Final Progress for {name}: " if final else "    📊 Progress: ") + (
        f"{done}/{total} ({percent:.1f}%)"
    )
    say(line, "%s%s: %d/%d (%.1f%%), %d failed", "final progress of " if final else "", name,
        done, total, percent, failed)  # fmt: skip
    if final and failed:
        say(f"⚠️ {failed} items failed during processing", "%s: %d items failed", name, failed,
            level=logging.WARNING)  # fmt: skip


def _log_stats(name: str, checkpoint: LoaderCheckpoint, final: bool = False) -> None:
    stats = checkpoint.get_progress_stats()
    _say_progress(name, stats["processed_count"], stats["total_items"],
                  stats["failure_count"], final)  # fmt: skip


def _say_failed(item_id: Any, error: BaseException) -> None:
    message = f"Failed to process item {item_id}: {error}"
    say(f"    ❌ {message}", "%s", message, level=logging.WARNING)


class _Telling:
    """Wraps a loader's item function to print, as the older tool did, each failure and
    the progress after every ``interval``-th success (marks follow in the native layer)."""

    def __init__(self, context: CheckpointContext, fn: Callable[[Any], Any]) -> None:
        self.context, self.fn = context, fn
        self.lock = threading.Lock()
        checkpoint = context.checkpoint
        self.done = 0 if checkpoint is None else checkpoint.get_progress_stats()["processed_count"]
        self.succeeded = 0

    def __call__(self, item: Any) -> Any:
        try:
            value = self.fn(item)
        except Exception as exc:
            _say_failed(self.context.get_item_id(item), exc)
            raise
        checkpoint, interval = self.context.checkpoint, self.context.checkpoint_interval
        with self.lock:
            self.succeeded += 1
            if checkpoint is not None and self.succeeded % interval == 0:
                stats = checkpoint.get_progress_stats()
                _say_progress(self.context.loader_name, self.done + self.succeeded,
                              stats["total_items"], stats["failure_count"])  # fmt: skip
        return value


class CheckpointContext:
    """What a decorated loader receives as ``_checkpoint_context``."""

    def __init__(
        self, checkpoint: LoaderCheckpoint | None, checkpoint_interval: int,
        get_item_id: Callable[[Any], Any], get_total_items: Callable[[Any], int],
        loader_name: str,
    ) -> None:  # fmt: skip
        self.checkpoint = checkpoint
        self.checkpoint_interval = checkpoint_interval
        self.get_item_id, self.get_total_items = get_item_id, get_total_items
        self.loader_name = loader_name
        self.processed_count = self.failed_count = 0

    def set_total_items(self, items: Iterable[Any] | int) -> None:
        """The total to expect: a number, or the items (counted by ``get_total_items``)."""
        if self.checkpoint is not None:
            total = items if isinstance(items, int) else self.get_total_items(items)
            self.checkpoint.set_total_items(total)

    def is_processed(self, item: Any) -> bool:
        return self.checkpoint is not None and self.checkpoint.is_processed(self.get_item_id(item))

    def mark_processed(self, item: Any) -> None:
        if self.checkpoint is not None:
            self.checkpoint.mark_processed(self.get_item_id(item))
        self.processed_count += 1

    def mark_failed(self, item: Any, error_message: str | BaseException) -> None:
        if self.checkpoint is not None:
            self.checkpoint.mark_failed(self.get_item_id(item), error_message)
        self.failed_count += 1

    def save_progress_if_needed(self, current_index: int) -> None:
        """Every ``checkpoint_interval``-th index: wait for a save, log the progress."""
        if self.checkpoint is not None and current_index % self.checkpoint_interval == 0:
            self.checkpoint.save_progress()
            _log_stats(self.loader_name, self.checkpoint)

    def process_items(
        self, items: Iterable[Any], process_func: Callable[[Any], Any], *, concurrency: int = 1
    ) -> ItemsReport:
        """Run ``process_func`` on each item not done yet, ``concurrency`` at a time.

        The total is set from the items; a failing item is recorded with its error and
        the others go on; every ``checkpoint_interval``-th mark waits for a save.
        """
        if concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {concurrency}")
        self.set_total_items(items)
        if self.checkpoint is None:
            return self._without_checkpoint(items, process_func, concurrency)
        manager = self.checkpoint.checkpoint_manager
        native = manager.native_loader(self.loader_name)
        context = LoaderContext[Any](
            native, lambda item: as_key(self.get_item_id(item)), manager.current_run_id or ""
        )
        report = manager.call(partial(
            context.process_items, items, _Telling(self, process_func), concurrency=concurrency
        ))  # fmt: skip
        self.processed_count += report.succeeded
        self.failed_count += report.failed
        return report

    def _without_checkpoint(
        self, items: Iterable[Any], process_func: Callable[[Any], Any], concurrency: int
    ) -> ItemsReport:
        """No manager: every item runs, failures are logged and counted, nothing is saved."""

        def one(item: Any) -> bool:
            try:
                process_func(item)
            except Exception as exc:
                _say_failed(self.get_item_id(item), exc)
                return False
            return True

        if concurrency == 1:
            outcomes = [one(item) for item in items]
        else:
            with ThreadPoolExecutor(concurrency) as pool:
                outcomes = list(pool.map(one, items))
        succeeded = sum(outcomes)
        self.processed_count += succeeded
        self.failed_count += len(outcomes) - succeeded
        return ItemsReport(succeeded, len(outcomes) - succeeded, 0)


def with_checkpoint(
    checkpoint_interval: int = DEFAULT_INTERVAL,
    get_item_id: Callable[[Any], Any] | None = None,
    get_total_items: Callable[[Any], int] | None = None,
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Checkpoint a loader function: see the module docstring.

    ``get_item_id`` names an item (default: its ``id`` attribute, else its ``str``);
    ``get_total_items`` counts the items (default: ``len``). If the function raises, the
    loader is recorded as failed with the error and the error propagates.
    """
    if checkpoint_interval < 1:
        raise ConfigError(f"checkpoint_interval must be at least 1, got {checkpoint_interval}")

    def decorator(func: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> R:
            manager = kwargs.pop("checkpoint_manager", None)
            if manager is not None and not isinstance(manager, CheckpointManager):
                raise ConfigError(
                    "checkpoint_manager must be an asyncproc.compat.CheckpointManager"
                )
            return _call(func, manager, checkpoint_interval, get_item_id, get_total_items,
                         args, kwargs)  # fmt: skip

        return wrapper

    return decorator


def _call(
    func: Callable[..., R], manager: CheckpointManager | None, interval: int,
    get_item_id: Callable[[Any], Any] | None, get_total_items: Callable[[Any], int] | None,
    args: tuple[Any, ...], kwargs: dict[str, Any],
) -> R:  # fmt: skip
    name = func.__name__
    checkpoint = None if manager is None else LoaderCheckpoint(manager, name, interval)
    kwargs["_checkpoint_context"] = CheckpointContext(
        checkpoint, interval, get_item_id or _default_id, get_total_items or _default_total, name
    )
    try:
        result = func(*args, **kwargs)
        if checkpoint is not None:
            checkpoint.save_progress()
    except Exception as exc:
        if manager is not None:
            manager.mark_loader_failed(name, f"{exc}\n{traceback.format_exc()}")
        raise
    if checkpoint is not None:
        _log_stats(name, checkpoint, final=True)
    return result


def checkpoint_loader(
    checkpoint_interval: int = DEFAULT_INTERVAL,
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """``with_checkpoint`` for items that carry their key in an ``id`` attribute."""
    return with_checkpoint(checkpoint_interval, get_item_id=lambda item: item.id)


def _zaak_key(item: Any) -> str:
    return f"{item.nummer}_{item.id}"


def checkpoint_zaak_loader(
    checkpoint_interval: int = DEFAULT_INTERVAL,
) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """``with_checkpoint`` for zaken: a zaak's key is ``<nummer>_<id>``, as the older tool's
    zaak loaders recorded it (so their runs resume where they stopped)."""
    return with_checkpoint(checkpoint_interval, get_item_id=_zaak_key)
