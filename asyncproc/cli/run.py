"""``asyncproc run``: process an input into an output, resuming an unfinished run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
import orjson

from .._api import process_file
from .._errors import ConfigError
from .._options import DEFAULT_CHECKPOINT, DEFAULT_MAX_CONCURRENCY, DEFAULTS
from ..engine.loops import LoopChoice, backend_options
from ..engine.summary import Summary
from ..runs.failures import first_failure
from .group import format_option, processor_arg_option, setup_logging, storage_values
from .printable import printable
from .progress import observer_for

FC = TypeVar("FC", bound=Callable[..., Any])
EXIT_ITEMS_FAILED = 4  # the run finished, but some items failed (see the failed-items file)


def _headers(values: Sequence[str]) -> dict[str, str]:
    """``--header``s, parsed only when given: runs without them never load the http module."""
    if not values:
        return {}
    from ..processors.http import parse_headers

    return parse_headers(values)


def defaulted(flag: str, help: str, metavar: str | None = None) -> Callable[[FC], FC]:
    """A flag whose default is the run option of its name (``DEFAULTS``), shown in --help."""
    default = getattr(DEFAULTS, flag.removeprefix("--").replace("-", "_"))
    return click.option(
        flag, type=type(default), default=default, show_default=True, metavar=metavar, help=help
    )


def concurrency_value(value: str) -> int | str:
    """``--concurrency``: a whole number, or ``auto``."""
    if value.strip().lower() == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"--concurrency takes a whole number or auto, got {value!r}") from None


@click.command(name="run")
@click.option(
    "--input",
    "input_path",
    required=True,
    help="Line-oriented input file (text or JSON lines): a path or an fsspec URL (s3://...).",
)
@click.option(
    "--output",
    "output_path",
    required=True,
    help="Output file: .json for a JSON array, .jsonl for JSON lines; a path or a URL.",
)
@click.option(
    "--checkpoint",
    "checkpoint_dir",
    help=f"Directory where runs live, a path or a URL [default: {DEFAULT_CHECKPOINT} beside "
    "the output].",
)
@click.option(
    "--storage-option",
    "storage_options",
    multiple=True,
    callback=storage_values,
    metavar="KEY=VALUE",
    help="Option for the fsspec file system of every URL, e.g. endpoint_url=http://... "
    "(repeatable; true/false become booleans).",
)
@click.option(
    "--workers",
    type=int,
    help="Work units processed at once; may change on a resume "
    "[default: by input size, at most 8; as planned on a resume].",
)
@defaulted("--processes", "Worker processes on this machine, each with its own event loop.")
@click.option(
    "--engine",
    type=click.Choice(["local", "processes", "dask"]),
    help="Where units run: this event loop, worker processes, or a Dask cluster "
    "[default: local; processes with --processes P].",
)
@click.option(
    "--scheduler",
    metavar="ADDRESS",
    help="With --engine dask: the scheduler to join (tcp://host:8786) "
    "[default: a LocalCluster sized to this machine].",
)
@click.option(
    "--concurrency",
    default=str(DEFAULTS.concurrency),
    show_default=True,
    callback=lambda ctx, param, value: concurrency_value(value),
    metavar="N|auto",
    help="Most items in flight across all workers; auto: an adaptive limit.",
)
@click.option(
    "--max-concurrency",
    type=int,
    help=f"Ceiling of --concurrency auto [default: {DEFAULT_MAX_CONCURRENCY}].",
)
@click.option("--rate", metavar="N/s|N/min", help="Requests per second or minute, whole run.")
@click.option("--cost-rate", metavar="N/s|N/min", help="Cost units (tokens) per second or minute.")
@click.option("--cost", metavar="field:NAME|llm", help="An item's cost for --cost-rate.")
@click.option(
    "--header",
    "headers",
    multiple=True,
    callback=lambda ctx, param, values: _headers(values),
    metavar="'NAME: VALUE'",
    help="HTTP header for the http processor; $VAR is read from the environment (repeatable).",
)
@click.option(
    "--threads",
    type=int,
    help="Worker threads for a plain `def` processor [default: the concurrency].",
)
@defaulted("--batch-size", "Committed items per checkpoint, per work unit.")
@defaulted("--processor", "Built-in name, module:function or path/to/file.py:function.")
@processor_arg_option
@format_option
@defaulted("--retries", "Extra attempts per failing item, with exponential backoff.")
@click.option("--timeout", type=float, help="Seconds allowed per attempt.")
@defaulted("--commit-interval", "Commit at least this often (seconds), even mid-batch.")
@click.option(
    "--max-failures",
    metavar="N|P%",
    help="Stop cleanly once more than N items (or P% of items done) failed.",
)
@defaulted("--early-stop", "Stop if the first N items of this invocation all fail (0: never).", "N")
@defaulted(
    "--stall-warning",
    "Warn when one item has held back its unit this long, then at doubling intervals (0: never).",
    "SECONDS",
)
@defaulted("--grace", "Seconds in-flight items get to finish after Ctrl-C or SIGTERM.")
@click.option(
    "--simulate-crash",
    type=int,
    metavar="N",
    help="Exit hard after N committed items (to try resuming).",
)
@click.option(
    "--no-checkpoint",
    "durable",
    flag_value=False,
    default=DEFAULTS.durable,
    help="No fsyncs, no checkpoint files: faster, but a crash means starting over.",
)
@click.option("--resume", "resume", metavar="RUN_ID", help="Resume this run.")
@click.option(
    "--retry-failed",
    is_flag=True,
    help="Process the run's failed items again; successes take their place in the output.",
)
@click.option("--new-run", is_flag=True, help="Start over even if an unfinished run exists.")
@click.option("--quiet", "-q", is_flag=True, help="No progress on stderr.")
@click.option(
    "--loop",
    type=click.Choice([c.value for c in LoopChoice]),
    default="auto",
    show_default=True,
    help="Event loop: auto = uvloop when installed (pip install 'asyncproc[fast]').",
)
def run_command(
    input_path: str, output_path: str, fmt: str | None, quiet: bool, loop: str, **options: Any
) -> int:
    """Process INPUT into OUTPUT, resuming an unfinished run of the same pair.

    Exits 0 when every item succeeded, 4 when the run finished with failed items.
    """
    setup_logging(quiet)
    summary = anyio.run(
        lambda: process_file(
            input_path,
            output_path,
            format=fmt,
            handle_signals=True,
            exit_on_crash=True,
            observer=observer_for(quiet),
            **options,
        ),
        backend_options=backend_options(loop),
    )
    sys.stdout.buffer.write(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()
    return closing_line(summary, quiet)


def closing_line(summary: Summary, quiet: bool) -> int:
    """The run's last word on stderr, and the exit status: failures are never quiet."""
    where = f"run {summary.run_id}, checkpoint directory {summary.checkpoint_dir}"
    if not summary.failed:
        if not quiet:
            sys.stderr.write(printable(f"asyncproc: done: {summary.processed} items into "
                                       f"{summary.output} ({where})") + "\n")  # fmt: skip
        return 0
    failed_file = summary.failed_items_file or "?"
    sys.stderr.write(printable(
        f"asyncproc: {summary.failed} of {summary.total_items} items failed; first: "
        f"{_first(Path(failed_file))}; failed items in {failed_file} ({where}); process "
        "them again with --retry-failed"
    ) + "\n")  # fmt: skip
    return EXIT_ITEMS_FAILED


def _first(failed_file: Path) -> str:
    entry = first_failure(failed_file)
    if entry is None:
        return "?"
    item = repr(entry.get("item"))
    item = item if len(item) <= 60 else item[:57] + "..."
    return f"item {entry.get('index')} {item}: {entry.get('error_type')}: {entry.get('error')}"
