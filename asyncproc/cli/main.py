"""The ``asyncproc`` command's entry point: one stderr line and an exit code per error.

``main`` maps the exception tree to one stderr line and an exit code; stdout carries
only the JSON summary, so scripts can parse it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import click

from .._errors import AsyncprocError
from .group import cli

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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
