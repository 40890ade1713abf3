"""The ``asyncproc`` command's entry point: one stderr line and an exit code per error.

``main`` maps the exception tree to one stderr line and an exit code; stdout carries
only the JSON summary, so scripts can parse it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from .._errors import AsyncprocError, speak_cli
from .group import cli

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"asyncproc: error: {message}\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code instead of raising.

    For the command's duration, messages name options as flags (``--new-run``), not as
    the Python arguments the API's callers know them by.
    """
    previous = speak_cli(True)
    try:
        return _guarded(lambda: cli.main(args=argv, prog_name="asyncproc", standalone_mode=False))
    finally:
        speak_cli(previous)


def _guarded(call: Callable[[], Any]) -> int:
    try:
        result = call()
    except click.exceptions.Abort as exc:  # Ctrl-C or end of input at a prompt
        if isinstance(exc.__context__, KeyboardInterrupt):
            return _fail("interrupted", EXIT_INTERRUPTED)
        return _fail("no answer; nothing was done", 1)
    except click.ClickException as exc:
        return _fail(exc.format_message().replace("\n", " "), exc.exit_code)
    except AsyncprocError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail("interrupted; run the same command again to resume", EXIT_INTERRUPTED)
    except OSError as exc:
        return _fail(f"{exc}; fix the cause and run the same command again to resume", 1)
    return result if isinstance(result, int) else 0
