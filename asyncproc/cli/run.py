"""``asyncproc run``: process an input into an output, resuming an unfinished run."""

from __future__ import annotations

import sys
from typing import Any

import anyio
import click
import orjson

from .._api import process_file
from ..engine.loops import LoopChoice, backend_options
from .group import key_values, setup_logging, storage_values
from .progress import observer_for


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
    help="Directory where runs live, a path or a URL [default: .asyncproc beside the output].",
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
@click.option(
    "--processes",
    type=int,
    default=1,
    show_default=True,
    help="Worker processes on this machine, each with its own event loop.",
)
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
    type=int,
    default=64,
    show_default=True,
    help="Most items in flight across all workers.",
)
@click.option(
    "--threads",
    type=int,
    help="Worker threads for a plain `def` processor [default: the concurrency].",
)
@click.option(
    "--batch-size",
    type=int,
    default=1000,
    show_default=True,
    help="Committed items per checkpoint, per work unit.",
)
@click.option(
    "--processor",
    default="text_stats",
    show_default=True,
    help="Built-in name, module:function or path/to/file.py:function.",
)
@click.option(
    "--processor-arg",
    "processor_args",
    multiple=True,
    callback=key_values,
    metavar="KEY=VALUE",
    help="Argument for a built-in processor (repeatable).",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "jsonl"]),
    help="Input format [default: from the input's extension].",
)
@click.option(
    "--retries",
    type=int,
    default=2,
    show_default=True,
    help="Extra attempts per failing item, with exponential backoff.",
)
@click.option("--timeout", type=float, help="Seconds allowed per attempt.")
@click.option(
    "--commit-interval",
    type=float,
    default=5.0,
    show_default=True,
    help="Commit at least this often (seconds), even mid-batch.",
)
@click.option(
    "--max-failures",
    metavar="N|P%",
    help="Stop cleanly once more than N items (or P% of items done) failed.",
)
@click.option(
    "--grace",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds in-flight items get to finish after Ctrl-C or SIGTERM.",
)
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
    default=True,
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
) -> None:
    """Process INPUT into OUTPUT, resuming an unfinished run of the same pair."""
    setup_logging(quiet)
    summary = anyio.run(
        lambda: process_file(
            input_path,
            output_path,
            format=fmt,
            handle_signals=True,
            observer=observer_for(quiet),
            **options,
        ),
        backend_options=backend_options(loop),
    )
    sys.stdout.buffer.write(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()
