"""Rich tables for the run-management commands (the ``--json`` forms bypass this)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..engine.observer import fmt_duration
from ..runs.views import RunView, iso
from ..storage.records import RunStatus
from .printable import printable

STATUS_STYLE = {
    "damaged": "bold magenta",
    "running": "bold green",
    "interrupted": "yellow",
    "failed": "bold red",
    "merged": "cyan",
    "completed": "green",
}


def cell(text: object) -> Text:
    """A table cell from data: printable, and plain text (``[...]`` is never markup)."""
    return Text(printable(text))


def _when(ts: float | None) -> str:
    text = iso(ts)
    return "-" if text is None else text.replace("T", " ").replace("+00:00", "Z")


def _status(view: RunView) -> Text:
    return Text(view.status.value, style=STATUS_STYLE.get(view.status.value, ""))


def _progress(view: RunView) -> str:
    if view.status is RunStatus.DAMAGED:
        return "-"
    return f"{view.done}/{view.total_items} ({view.percent:.1f}%)"


def runs_table(views: list[RunView], *, several: bool = False) -> Table:
    """One row per run; a description column when any run has one (keyed runs), a
    checkpoint column when the runs come from ``several`` directories."""
    table = Table(title="asyncproc runs (newest first)")
    described = any(v.description for v in views)
    columns = ("run id", "status", *(("description",) if described else ()), "input",
               "progress", "failed", "started", "duration",
               *(("checkpoint",) if several else ()))  # fmt: skip
    for column in columns:
        table.add_column(column, no_wrap=column not in ("input", "description", "checkpoint"))
    for view in views:
        table.add_row(
            cell(view.run_id), _status(view),
            *((cell(view.description or ""),) if described else ()), cell(view.input),
            _progress(view), str(view.failed), _when(view.started_at),
            fmt_duration(view.duration), *((cell(view.checkpoint_dir),) if several else ()),
        )  # fmt: skip
    return table


def _facts(view: RunView) -> Table:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    eta = view.eta
    rows: list[tuple[str, str | Text]] = [
        ("run", cell(view.run_id)), ("status", _status(view)),
        *((("description", cell(view.description)),) if view.description else ()),
        ("input", cell(view.input)),
        ("output", cell(view.output)), ("progress", _progress(view)), ("failed", str(view.failed)),
        ("started", _when(view.started_at)), ("ended", _when(view.ended_at)),
        ("last activity", _when(view.updated_at)), ("duration", fmt_duration(view.duration)),
        ("throughput", f"{view.throughput:.1f} items/s"),
        ("concurrency limit", "-" if view.concurrency_limit is None
         else str(view.concurrency_limit)),
        ("ETA", "-" if eta is None else fmt_duration(eta)), ("held by", cell(view.holder or "-")),
    ]  # fmt: skip
    for name, value in rows:
        facts.add_row(name, value)
    return facts


def _options(view: RunView) -> Table:
    table = Table(title="options", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for key in sorted(view.options):
        if key != "loaders":  # a keyed run's loaders have a table of their own
            table.add_row(cell(key), cell(repr(view.options[key])))
    return table


def _units(view: RunView) -> Table:
    table = Table(title="units")
    for column in ("unit", "range", "items", "done", "failed", "attempts", "checkpoint"):
        table.add_column(column)
    for s in view.units:
        table.add_row(
            str(s.unit_id), f"{s.start}-{s.end}", str(s.items),
            f"{s.processed + s.failed}{' ✓' if s.done else ''}", str(s.failed),
            str(s.attempts), _when(s.checkpoint_at),
        )  # fmt: skip
    return table


def _loaders(view: RunView) -> Table:
    """A keyed run's loaders: status, counts and the error of a failed one (first line)."""
    table = Table(title="loaders")
    for column in ("loader", "status", "processed", "failed", "total", "percent", "error"):
        table.add_column(column, overflow="fold")
    for name, c in sorted(view.options.get("loaders", {}).items()):
        total = c.get("total_items")
        percent = f"{100.0 * c['processed'] / total:.1f}%" if total else "-"
        error = (c.get("error") or "-").splitlines()[0]
        table.add_row(cell(name), cell(c.get("status", "-")), str(c["processed"]),
                      str(c["failed"]), "-" if total is None else str(total), percent,
                      cell(error))  # fmt: skip
    return table


def _failures(failures: list[dict[str, Any]]) -> Table:
    table = Table(title="most recent failures")
    for column in ("index/key", "item", "error"):
        table.add_column(column, overflow="fold")
    for entry in failures:
        error = f"{entry.get('error_type', '')}: {entry.get('error', '')}"
        where = entry["index"] if "index" in entry else entry.get("key")
        item = repr(entry["item"])[:80] if "item" in entry else "-"
        table.add_row(cell(where), cell(item), cell(error))
    return table


def run_detail(view: RunView, failures: list[dict[str, Any]], options: bool) -> Group:
    parts: list[RenderableType] = [_facts(view)]
    if options:
        parts.append(_options(view))
    if view.units:
        parts.append(_units(view))
    if view.kind == "keyed":
        parts.append(_loaders(view))
    if failures:
        parts.append(_failures(failures))
    return Group(*parts)
