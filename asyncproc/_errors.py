"""The one exception tree of asyncproc.

::

    AsyncprocError                  anything asyncproc raises on purpose
    ├── ConfigError                 bad options; nothing was started
    │   └── ProcessorLoadError      the processor cannot be imported or called
    ├── InputError                  the input is missing, a directory or unreadable
    ├── OutputError                 the output cannot be written
    │   └── UnsafeLinkError         a symlink on its way another user may have planted
    ├── CheckpointError             run state on disk cannot be used
    │   ├── CorruptCheckpointError  a record failed to parse or verify
    │   └── UntrustedDirectoryError another user could write the checkpoint directory
    ├── RunError                    the run cannot go on as asked
    │   ├── RunLockedError          another process holds the run
    │   ├── RunNotFoundError        no run with that id
    │   ├── InputChangedError       the input differs from the one planned
    │   ├── IncompatibleRunError    options would change the results
    │   ├── WorkerProcessError      a ``--processes`` child died mid-run
    │   ├── LeaseLostError          another process took the run over (a lapsed lease)
    │   ├── Interrupted             SIGINT / SIGTERM: stopped after a final commit
    │   ├── FailureLimitError       ``--max-failures`` exceeded: stopped after a commit
    │   └── SimulatedCrash          ``--simulate-crash`` fired
    └── ItemError                   one item failed (kept in the dead-letter part)
        ├── ItemTimeoutError        one attempt ran past ``--timeout``
        ├── PoisonItemError         the item killed its worker process twice
        └── RetryAfter              a processor says "slow down": the run pauses, then retries

Every message says what to do next; the CLI prints it as one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from ._public import public


@public
class AsyncprocError(Exception):
    """Root of every error asyncproc raises on purpose."""

    exit_code = 1


@public
class ConfigError(AsyncprocError):
    """An option is out of range or contradicts another; raised before any work."""

    exit_code = 2


@public
class ProcessorLoadError(ConfigError):
    """The processor spec does not name a usable function."""


@public
class InputError(AsyncprocError):
    """The input path cannot be read as a line-oriented file."""

    exit_code = 2


@public
class OutputError(AsyncprocError):
    """The output path cannot be written."""

    exit_code = 2


@public
class UnsafeLinkError(OutputError):
    """A symlink in a sticky, world-writable directory, owned by neither us nor the
    directory's owner, is on the way to the output (the kernel's protected_symlinks)."""


@public
class CheckpointError(AsyncprocError):
    """Run state on disk is unusable and nothing older can be proven good."""


@public
class CorruptCheckpointError(CheckpointError):
    """A record on disk failed to parse, to type-check or to verify its checksum."""


@public
class UntrustedDirectoryError(CheckpointError):
    """A checkpoint or run directory belongs to another user or others may write it."""

    exit_code = 2


@public
class RunError(AsyncprocError):
    """The run cannot go on as asked."""


@public
class RunLockedError(RunError):
    """Another live process holds the run's lock."""


@public
class RunNotFoundError(RunError):
    """No run with the requested id exists under the checkpoint directory."""


@public
class InputChangedError(RunError):
    """The input's size, mtime or fingerprint differs from the planned run."""


@public
class IncompatibleRunError(RunError):
    """Resuming with these options would change the results."""


@public
class WorkerProcessError(RunError):
    """A worker process of ``--processes`` ended before finishing its shards."""


class LeaseLostError(RunError):
    """This process could not renew its lease in time and another one took the run over."""


@public
class Interrupted(RunError):
    """A signal stopped the run; everything finished before it is committed."""

    def __init__(self, message: str, *, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


@public
class FailureLimitError(RunError):
    """More items failed than ``--max-failures`` allows; the run stopped cleanly."""


@public
class SimulatedCrash(RunError):
    """``--simulate-crash`` stopped the run after a durable commit."""

    exit_code = 3


@public
class ItemError(AsyncprocError):
    """One item failed; carries where it came from."""

    def __init__(self, message: str, *, shard: int = -1, index: int = -1) -> None:
        super().__init__(message)
        self.shard = shard
        self.index = index


@public
class ItemTimeoutError(ItemError):
    """One attempt at an item ran past the per-attempt timeout."""


class PoisonItemError(ItemError):
    """The item killed the worker process working on it, twice: it is not called again."""

    retryable = False


@public
class RetryAfter(ItemError):
    """Raised by a processor when the service said "slow down" (a 429 or 503).

    The whole run stops starting calls for ``seconds`` (a pool-wide pause, then a
    ramp back up), and the item is tried again without counting as a failed attempt.
    ``seconds`` None or 0: no pause, only this item backs off a little and an adaptive
    concurrency limit is cut. An item rejected more than 100 times in a row fails.
    """

    MAX_SECONDS = 300.0  # a longer Retry-After is honoured only up to this

    def __init__(self, seconds: float | None = None, message: str = "") -> None:
        if seconds is not None and not seconds >= 0:
            raise ValueError(f"RetryAfter needs seconds >= 0 or None, got {seconds!r}")
        self.seconds = None if seconds is None else min(float(seconds), self.MAX_SECONDS)
        after = "" if seconds is None else f" (retry after {seconds:g}s)"
        super().__init__(message or f"rate limited{after}")


# How messages name options: Python callers never read about command-line flags. The CLI
# switches to flags for the duration of a command (:func:`cli_messages`); a context
# variable, so a library call in another thread or task of the same process is not
# spoken to in flags.
_CLI: ContextVar[bool] = ContextVar("asyncproc_cli_messages", default=False)
# Options whose flag is not their Python name with dashes.
_FLAGS = {"durable": "--no-checkpoint", "processor_args": "--processor-arg", "headers": "--header",
          "checkpoint_dir": "--checkpoint", "resume": "--resume"}  # fmt: skip


@contextmanager
def cli_messages() -> Iterator[None]:
    """Within: messages name options as command-line flags, not as Python arguments."""
    token = _CLI.set(True)
    try:
        yield
    finally:
        _CLI.reset(token)


def speaking_cli() -> bool:
    """Whether messages are for a command line (see :func:`cli_messages`)."""
    return _CLI.get()


def named(name: str) -> str:
    """An option's name as the caller spells it: ``--batch-size`` / ``batch_size``."""
    return _FLAGS.get(name, "--" + name.replace("_", "-")) if _CLI.get() else name


def option(name: str, value: object = True) -> str:
    """An option as the caller spells it: ``--new-run`` / ``new_run=True``,
    ``--timeout 5`` / ``timeout=5``."""
    if not _CLI.get():
        return f"{name}={value!r}"
    flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
    return flag if isinstance(value, bool) else f"{flag} {value}"


def again() -> str:
    """How to go on after a stop: the same command, or the same call."""
    return "run the same command again" if _CLI.get() else "call it again with the same arguments"


def unwrap_group(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error a task group's failure is about: its first asyncproc or OS error.

    Task groups wrap what their tasks raise; callers want the one line that says what
    went wrong. A group holding anything else (a bug) is returned whole.
    """
    for exc in group.exceptions:
        leaf = unwrap_group(exc) if isinstance(exc, BaseExceptionGroup) else exc
        if isinstance(leaf, AsyncprocError | OSError):
            return leaf
    return group
