"""The ``asyncproc`` command: a thin click layer over the Python API.

``main`` maps the exception tree to one stderr line and an exit code; stdout carries
only the JSON summary, so scripts can parse it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import anyio
import click
import orjson

from ._api import process_file
from ._errors import AsyncprocError
from ._loops import LoopChoice, backend_options

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is now, so a live progress bar can redirect it."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        del value


def _setup_logging(quiet: bool) -> None:
    logger = logging.getLogger("asyncproc")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("asyncproc: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def _key_values(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> dict[str, str]:
    pairs = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", ctx, param)
        pairs[key] = val
    return pairs


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="asyncproc")
def cli() -> None:
    """Process large line-oriented inputs concurrently; resume after any crash."""


@cli.command()
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Line-oriented input file (text or JSON lines).",
)
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Output file: .json for a JSON array, .jsonl for JSON lines.",
)
@click.option(
    "--checkpoint",
    "checkpoint_dir",
    type=click.Path(path_type=Path),
    help="Directory where runs live [default: .asyncproc beside the output].",
)
@click.option("--workers", type=int, help="Number of shards [default: by input size, at most 8].")
@click.option(
    "--processes",
    type=int,
    default=1,
    show_default=True,
    help="Worker processes on this machine, each with its own event loop.",
)
@click.option(
    "--concurrency",
    type=int,
    default=64,
    show_default=True,
    help="Most items in flight across all workers.",
)
@click.option(
    "--batch-size",
    type=int,
    default=1000,
    show_default=True,
    help="Committed items per checkpoint, per shard.",
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
    callback=_key_values,
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
def run(
    input_path: Path, output_path: Path, fmt: str | None, quiet: bool, loop: str, **options: Any
) -> None:
    """Process INPUT into OUTPUT, resuming an unfinished run of the same pair."""
    _setup_logging(quiet)
    summary = anyio.run(
        lambda: process_file(
            input_path, output_path, format=fmt, quiet=quiet, handle_signals=True, **options
        ),
        backend_options=backend_options(loop),
    )
    sys.stdout.buffer.write(orjson.dumps(summary.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    sys.stdout.flush()


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"asyncproc: error: {message}\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code instead of raising."""
    return _guarded(lambda: cli.main(args=argv, prog_name="asyncproc", standalone_mode=False))


def _guarded(call: Callable[[], Any]) -> int:
    try:
        result = call()
    except click.exceptions.Abort:
        return _fail("aborted", EXIT_INTERRUPTED)
    except click.ClickException as exc:
        return _fail(exc.format_message().replace("\n", " "), exc.exit_code)
    except AsyncprocError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted; run the same command again to resume", EXIT_INTERRUPTED)
    except OSError as exc:
        return _fail(f"{exc}; fix the cause and run the same command again to resume", 1)
    return result if isinstance(result, int) else 0


# Importing these registers their commands on ``cli``: bench; list, show, status, delete, cleanup.
from . import _cli_bench, _cli_runs  # noqa: E402, F401
