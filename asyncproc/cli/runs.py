"""Run-management commands on the ``asyncproc`` group: list, show, status, delete, cleanup.

Importing this module registers them; ``_cli`` does so. All output goes to stdout
(a rich table, or JSON with ``--json``); errors go through the CLI's one-line path.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
import orjson
from rich.console import Console

from .._errors import ConfigError
from .._options import DEFAULT_CHECKPOINT
from .._runs_api import places, runs_in
from ..runs.places import AnyRuns
from ..runs.views import RunView
from ..storage.location import Location
from ..storage.records import RunStatus
from .group import storage_values
from .printable import printable
from .render import run_detail, runs_table

F = TypeVar("F", bound=Callable[..., Any])


def _checkpoint_option(fn: F) -> F:
    """``--checkpoint DIR`` (a path or a URL) with its ``--storage-option``s, as a Location."""
    fn = click.option(
        "--checkpoint",
        "checkpoint_dir",
        default=None,
        callback=_location,
        help="Directory where runs live, a path or a URL: the --checkpoint given to `run` "
        f"[default: {DEFAULT_CHECKPOINT} here, then the checkpoint directories of recent runs, "
        "from the run index].",
    )(fn)
    return click.option(
        "--storage-option",
        multiple=True,
        is_eager=True,
        expose_value=False,
        callback=_remember_storage,
        metavar="KEY=VALUE",
        help="Option for the fsspec file system of a URL --checkpoint (repeatable).",
    )(fn)


def _remember_storage(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> None:
    ctx.meta["asyncproc.storage_options"] = storage_values(ctx, param, values)


def _location(ctx: click.Context, param: click.Parameter, value: str | None) -> Location | None:
    del param
    return None if value is None else Location(value, ctx.meta.get("asyncproc.storage_options"))


def _json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def _run_id_option(fn: F) -> F:
    """``--run-id ID`` as well as the argument: the older loader tool's form."""
    return click.option("--run-id", "run_id_option", metavar="RUN_ID",
                        help="The run, as an option (the same as the argument).")(fn)  # fmt: skip


def _one_run_id(argument: str | None, option: str | None, *, required: bool = True) -> str | None:
    if argument is not None and option is not None and argument != option:
        raise click.UsageError(f"two run ids given: {argument} and --run-id {option}; give one")
    run_id = argument or option
    if run_id is None and required:
        raise click.UsageError("which run? give RUN_ID or --run-id RUN_ID (see `asyncproc list`)")
    return run_id


def _emit_json(data: Any) -> None:
    sys.stdout.buffer.write(orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def _console() -> Console:
    return Console(soft_wrap=False, width=None if sys.stdout.isatty() else 160)


def _warn(lines: list[str]) -> None:
    for line in lines:
        sys.stderr.write(f"asyncproc: {printable(line)}\n")


def _all_option(fn: F) -> F:
    return click.option(
        "--all", "everywhere", is_flag=True,
        help="Without --checkpoint: every run of the run index, not only those started here.",
    )(fn)  # fmt: skip


@click.command(name="list")
@_checkpoint_option
@_all_option
@_json_option
def list_command(checkpoint_dir: Location | None, everywhere: bool, as_json: bool) -> None:
    """List the runs, newest first: under --checkpoint DIR, else those started here
    (./.asyncproc, and beside their outputs), or every run in the run index (--all)."""
    where = places(checkpoint_dir, everywhere=everywhere)
    views, problems = where.views()
    _warn([*problems, f"runs {where.where()}"])
    if as_json:
        _emit_json([v.to_json() for v in views])
    elif not views:
        click.echo(printable(f"no runs {where.where()}"))
    else:
        _console().print(runs_table(views, several=len({v.checkpoint_dir for v in views}) > 1))


@click.command(name="show")
@click.argument("run_id", required=False)
@_run_id_option
@_checkpoint_option
@_json_option
@click.option(
    "--failures", "limit", type=click.IntRange(min=0), default=5, show_default=True,
    help="How many of the most recent failures to show.",
)  # fmt: skip
def show_command(
    run_id: str | None, run_id_option: str | None, checkpoint_dir: Location | None, as_json: bool,
    limit: int,
) -> None:  # fmt: skip
    """Show RUN_ID in detail: options, work units or loaders, throughput, ETA, recent failures."""
    wanted = str(_one_run_id(run_id, run_id_option))
    runs = places(checkpoint_dir).runs_of(wanted)
    view = runs.view(wanted)
    _print_detail(view, runs.failures(view, limit), as_json, options=True)


def _print_detail(
    view: RunView, failures: list[dict[str, Any]], as_json: bool, *, options: bool
) -> None:
    if as_json:
        _emit_json(view.to_json_detail(failures))
    else:
        _console().print(run_detail(view, failures, options))


@click.command(name="status")
@click.argument("run_id", required=False)
@_run_id_option
@_checkpoint_option
@_all_option
@_json_option
@click.option(
    "--watch", type=float, is_flag=False, flag_value=2.0, default=None, metavar="[SECONDS]",
    help="Refresh every SECONDS (default 2) until the run stops; Ctrl-C to quit.",
)  # fmt: skip
def status_command(
    run_id: str | None, run_id_option: str | None, checkpoint_dir: Location | None,
    everywhere: bool, as_json: bool, watch: float | None,
) -> None:  # fmt: skip
    """The merged status of a run going on now (default: the newest unfinished run).

    Read-only and safe while the run works: it reads the unit checkpoints and never
    takes the run's lock. Without --checkpoint it looks at the runs started here (every
    run in the run index with --all, or when given RUN_ID), and says where it found the
    run. --watch refreshes until no process holds the run any more; with --json, one
    JSON document per refresh.
    """
    if watch is not None and not watch > 0:
        raise ConfigError(f"--watch must be a positive number of seconds, got {watch}")
    wanted = _one_run_id(run_id, run_id_option, required=False)
    where = places(checkpoint_dir, everywhere=everywhere or wanted is not None)
    view = where.current() if wanted is None else where.view(wanted)
    if not where.explicit:
        _warn([f"run {view.run_id} is under {view.checkpoint_dir} (looked {where.where()})"])
    _print_detail(view, [], as_json, options=False)
    if watch is not None:
        try:
            _watch(where.runs_of(view.run_id), view, watch, as_json)
        except KeyboardInterrupt:
            return  # Ctrl-C ends watching; the run itself is not touched


def _watch(runs: AnyRuns, view: RunView, seconds: float, as_json: bool) -> None:
    while view.status is RunStatus.RUNNING or view.holder is not None:
        time.sleep(seconds)
        view = runs.view(view.run_id)
        _next_frame(as_json)
        _print_detail(view, [], as_json, options=False)


def _next_frame(as_json: bool) -> None:
    """Separate refreshes: a cleared screen on a terminal, a blank line otherwise."""
    if as_json:
        return
    console = _console()
    if console.is_terminal:
        console.clear()
    else:
        click.echo()


@click.command(name="delete")
@click.argument("run_id", required=False)
@_run_id_option
@_checkpoint_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def delete_command(
    run_id: str | None, run_id_option: str | None, checkpoint_dir: Location | None, yes: bool
) -> int:
    """Delete RUN_ID's directory (checkpoints, segments, manifest); refuses a live run.

    A run whose manifest is damaged can be deleted too. The run's output file, if any,
    is left alone. Answering no to the question exits 1.
    """
    run_id = str(_one_run_id(run_id, run_id_option))
    runs = places(checkpoint_dir).runs_of(run_id)
    view = runs.view(run_id)
    if not yes and not click.confirm(
        printable(f"Delete run {run_id} under {view.checkpoint_dir} ({_what(view)})?"), err=True
    ):
        sys.stderr.write(f"asyncproc: kept run {run_id}\n")
        return 1
    runs.delete(run_id)
    click.echo(f"deleted run {run_id}")
    return 0


def _what(view: RunView) -> str:
    if view.status is RunStatus.DAMAGED:
        return f"damaged: {view.options.get('error')}"
    return f"{view.status.value}, {view.done}/{view.total_items} items"


@click.command(name="cleanup")
@click.option(
    "--keep", type=click.IntRange(min=0), default=5, show_default=True,
    help="How many of the newest finished runs to keep (5, as the older loader tool's CLI).",
)  # fmt: skip
@_checkpoint_option
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
def cleanup_command(keep: int, checkpoint_dir: Location | None, dry_run: bool) -> None:
    """Remove all but the newest KEEP finished (completed) runs of one directory.

    Runs that are running, interrupted, failed or damaged are never touched: remove one
    on purpose with `asyncproc delete`. Without --checkpoint: the default directory only
    (never directories from the run index).
    """
    checkpoint_dir = checkpoint_dir or Location(DEFAULT_CHECKPOINT)
    if dry_run:
        ids = [v.run_id for v in runs_in(checkpoint_dir).cleanup_candidates(keep)]
        verb = "would remove"
    else:
        ids = runs_in(checkpoint_dir).cleanup(keep)
        verb = "removed"
    click.echo(f"{verb} {len(ids)} run(s){': ' if ids else ''}{' '.join(ids)}")
