"""The ``asyncproc`` click group and what its commands share.

Commands are loaded when they are used (click's lazy-group pattern): ``asyncproc run``
imports neither the run-management tables nor the bench, and no command module needs
to import another to register itself.
"""

from __future__ import annotations

import importlib
import logging
import shlex
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO, TypeVar

import click

from .._errors import AsyncprocError
from .printable import PrintableFormatter

# command name -> module under asyncproc.cli defining a click command of that name
COMMANDS = {
    "run": "run",
    "bench": "bench",
    "list": "runs",
    "show": "runs",
    "status": "runs",
    "delete": "runs",
    "cleanup": "runs",
    "verify": "verify",
}


# Options of `run` that the older text tool took without a command word.
_RUN_OPTIONS = ("--input", "--output", "--checkpoint", "--batch-size", "--simulate-crash")


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """``asyncproc --input x ...`` is the older tool's form: point to ``asyncproc run``."""
        if args and args[0].split("=", 1)[0] in _RUN_OPTIONS:
            raise click.UsageError(
                f"`asyncproc {args[0]} ...` needs a command: processing a file is "
                f"`asyncproc run {shlex.join(args)}`", ctx
            )  # fmt: skip
        return super().parse_args(ctx, args)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMANDS.get(cmd_name)
        if module is None:
            return None
        loaded = importlib.import_module(f"{__package__}.{module}")
        command = getattr(loaded, cmd_name.replace("-", "_") + "_command", None)
        return command if isinstance(command, click.Command) else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="asyncproc")
def cli() -> None:
    """Process large line-oriented inputs concurrently; resume after any crash."""


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is now, so a live progress bar can redirect it."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        del value


def setup_logging(quiet: bool) -> None:
    logger = logging.getLogger("asyncproc")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(PrintableFormatter("asyncproc: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False


def storage_values(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> dict[str, Any]:
    """Repeatable ``--storage-option KEY=VALUE``: ``true``/``false`` become booleans."""
    from ..storage.location import parse_option

    try:
        return dict(parse_option(value) for value in values)
    except AsyncprocError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def key_values(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    """A repeatable ``KEY=VALUE`` option as a dict."""
    pairs = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {value!r}", ctx, param)
        pairs[key] = val
    return pairs


F = TypeVar("F", bound=Callable[..., Any])


def processor_arg_option(fn: F) -> F:
    """``--processor-arg KEY=VALUE``, as every command that loads a processor takes it."""
    return click.option(
        "--processor-arg", "processor_args", multiple=True, callback=key_values,
        metavar="KEY=VALUE", help="Argument for a built-in processor (repeatable).",
    )(fn)  # fmt: skip


def format_option(fn: F) -> F:
    """``--format text|jsonl``: how a line becomes an item."""
    return click.option(
        "--format", "fmt", type=click.Choice(["text", "jsonl"]),
        help="Input format [default: from the input's extension].",
    )(fn)  # fmt: skip
