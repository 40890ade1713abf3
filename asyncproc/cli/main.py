"""The ``asyncproc`` command's entry point: one stderr line and an exit code per error.

``main`` maps the exception tree to one stderr line and an exit code; stdout carries
only the JSON summary, so scripts can parse it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import click

from .._errors import AsyncprocError, Interrupted, cli_messages
from ..dask.errors import CREDENTIALS, detail, leaves
from ..storage import faults
from .group import cli
from .printable import printable

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
THREADS_MAY_FINISH = 1.0  # seconds non-daemon threads get to end before the exit


CTRL_C = "interrupted by you (Ctrl-C); run the same command again to go on"


def _fail(message: str, code: int, *, kind: str = "error: ") -> int:
    sys.stderr.write(f"asyncproc: {kind}{printable(message)}\n")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit code instead of raising.

    For the command's duration, messages name options as flags (``--new-run``), not as
    the Python arguments the API's callers know them by.
    """
    refused = _arm_faults()
    if refused is not None:
        return refused
    with cli_messages():
        code = _guarded(lambda: cli.main(args=argv, prog_name="asyncproc", standalone_mode=False))
    return _not_held_by_threads(code)


def _arm_faults() -> int | None:
    """Arm the fault points ``ASYNCPROC_CRASH_AT`` names, saying so; an exit code if bad.

    The only place the variable is read: the crash tests drive real commands with it,
    and a run that may be made to die on purpose must say so where a person looks.
    """
    spec = os.environ.get(faults.ENV, "")
    if not spec:
        return None
    try:
        faults.arm(spec)
    except ValueError as exc:
        return _fail(f"{faults.ENV}: {exc}; fix it, or unset it for a real run", EXIT_USAGE)
    sys.stderr.write(f"asyncproc: fault injection is on ({faults.ENV}={spec}); "
                     "unset it for a real run\n")  # fmt: skip
    return None


def _not_held_by_threads(code: int) -> int:
    """Exit now if a thread the processor started would keep the process alive.

    Python waits for every non-daemon thread before it exits; one a processor started
    and never ended would hold the command forever after its summary. Everything the
    command had to do is done (and flushed): leave without waiting.
    """
    main_thread = threading.main_thread()
    others = [t for t in threading.enumerate() if t is not main_thread and not t.daemon]
    deadline = time.monotonic() + THREADS_MAY_FINISH
    for thread in others:  # threads on their way out (the loop's own) end on their own
        thread.join(max(0.0, deadline - time.monotonic()))
    held = [t.name for t in others if t.is_alive()]
    if not held:
        return code
    sys.stderr.write(
        f"asyncproc: not waiting for thread(s) {printable(', '.join(held))} started by the "
        "processor\n"
    )
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _guarded(call: Callable[[], Any]) -> int:
    try:
        result = call()
    except click.exceptions.Abort as exc:  # Ctrl-C or end of input at a prompt
        if isinstance(exc.__context__, KeyboardInterrupt):
            return _fail(CTRL_C, EXIT_INTERRUPTED, kind="")
        return _fail("no answer; nothing was done", 1)
    except click.ClickException as exc:
        return _fail(exc.format_message().replace("\n", " "), exc.exit_code)
    except Interrupted as exc:  # the user's own stop is no error
        return _fail(str(exc), exc.exit_code, kind="")
    except AsyncprocError as exc:
        return _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _fail(CTRL_C, EXIT_INTERRUPTED, kind="")
    except OSError as exc:
        return _fail(f"{exc}; fix the cause and run the same command again to resume", 1)
    except Exception as exc:
        message = remote_storage_error(exc)
        if message is None:
            raise
        return _fail(message, 1)
    return result if isinstance(result, int) else 0


STORAGE_LIBRARIES = ("botocore", "aiobotocore", "s3fs", "gcsfs", "google", "fsspec", "adlfs")
RESUME = "committed work is safe: run the same command again to resume"


def remote_storage_error(exc: BaseException) -> str | None:
    """One line for an object store's own error (no credentials, no endpoint, refused),
    or None when ``exc`` is not one: those libraries are optional, so known by name."""
    for error in leaves(exc):
        library = type(error).__module__.split(".")[0]
        if library not in STORAGE_LIBRARIES:
            continue
        name = type(error).__name__
        if name in CREDENTIALS:
            return (f"no credentials for the object store ({detail(error)}): set them in the "
                    "environment or ~/.aws, or pass --storage-option key=... --storage-option "
                    f"secret=...; {RESUME}")  # fmt: skip
        if name == "EndpointConnectionError":
            return (f"cannot reach the object store ({detail(error)}): check "
                    f"--storage-option endpoint_url=... and the network; {RESUME}")  # fmt: skip
        return f"the object store refused a request ({detail(error)}); {RESUME}"
    return None
