"""Shared helpers for the CLI tests: run the real ``asyncproc`` in a subprocess.

The helpers are plain functions (importable as ``from conftest import ...``) and are
also offered as fixtures for tests that prefer injection.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLE_INPUT = REPO / "data" / "sample_input.txt"
CLI_TIMEOUT = 60.0

# The one place the suite keeps a stray fault spec (the command line arms it) away from
# every command it starts; a test arms faults by passing the variable itself.
os.environ.pop("ASYNCPROC_CRASH_AT", None)

ANOTHER_USER = 65534  # nobody: owns the files "another user" planted
root_only = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: files of another user are made with os.chown"
)

SUMMARY_KEYS = (
    "run_id",
    "status",
    "input",
    "output",
    "total_items",
    "processed",
    "failed",
    "failed_items_file",
    "checkpoint_cleared",
    "resumed",
    "workers",
    "concurrency",
    "elapsed_s",
    "items_per_s",
)


def _env(env: Mapping[str, str] | None) -> dict[str, str]:
    merged = dict(os.environ)
    merged["PYTHONUNBUFFERED"] = "1"
    if env:
        merged.update(env)
    return merged


def cli_command(*args: str | os.PathLike[str]) -> list[str]:
    """The argv that runs ``python -m asyncproc`` with ``args``."""
    return [sys.executable, "-m", "asyncproc", *(os.fspath(a) for a in args)]


def run_cmd(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    check: int | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run any command in text mode, capturing output; ``check`` asserts the exit code."""
    proc = subprocess.run(
        [os.fspath(a) for a in argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=CLI_TIMEOUT,
        env=_env(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if check is not None:
        assert proc.returncode == check, describe(proc, f"expected exit code {check}")
    return proc


def run_cli(
    *args: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    check: int | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m asyncproc *args``; ``check`` asserts the exit code."""
    return run_cmd(cli_command(*args), env=env, check=check, cwd=cwd)


def describe(proc: subprocess.CompletedProcess[str], what: str = "") -> str:
    """A readable account of a finished process, for assertion messages."""
    return (
        f"{what}\ncommand: {proc.args}\nexit code: {proc.returncode}\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
    )


def summary_of(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """Parse stdout as exactly one JSON object (the summary) and return it."""
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise AssertionError(describe(proc, f"stdout is not one JSON value: {exc}")) from None
    assert isinstance(data, dict), describe(proc, "stdout is not a JSON object")
    return data


def run_args(
    source: str | os.PathLike[str], output: str | os.PathLike[str],
    checkpoint: str | os.PathLike[str] | None = None,
) -> list[str | os.PathLike[str]]:  # fmt: skip
    """The start of an ``asyncproc run`` command line: input, output, checkpoint dir."""
    args: list[str | os.PathLike[str]] = ["run", "--input", source, "--output", output]
    return [*args, "--checkpoint", checkpoint] if checkpoint is not None else args


def run_status(checkpoint: str | os.PathLike[str]) -> dict[str, Any]:
    """``asyncproc status --json``: the run going on now, else the newest unfinished one."""
    return summary_of(run_cli("status", "--checkpoint", checkpoint, "--json", check=0))


EXIT_ITEMS_FAILED = 4  # `asyncproc run` finished, but some items failed


def run_ok(*args: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run the CLI to the end and return the parsed summary: exit code 0, or 4 when the
    summary counts failed items (asserted either way)."""
    proc = run_cli(*args, env=env)
    summary = summary_of(proc)
    expected = EXIT_ITEMS_FAILED if summary.get("failed") else 0
    assert proc.returncode == expected, describe(proc, f"expected exit code {expected}")
    return summary


def error_lines(stderr: str) -> list[str]:
    """The closing lines of a failed or stopped command (a stop is no error, so it says so)."""
    closing = ("asyncproc: error:", "asyncproc: interrupted")
    return [line for line in stderr.splitlines() if line.startswith(closing)]


# -- building inputs and expected outputs ----------------------------------------------


def numbered_lines(n: int) -> list[str]:
    """``n`` distinct lines of varying word counts and some surrounding spaces."""
    return [f"line {i:06d} " + "word " * (i % 7) + f"end{i % 13}" for i in range(n)]


def write_lines(path: Path, lines: Iterable[str], newline: str = "\n") -> Path:
    path.write_bytes("".join(line + newline for line in lines).encode("utf-8"))
    return path


def text_items(raw: bytes) -> list[str]:
    """The items of a text input, as the older text tool made them: the file decoded as
    UTF-8 (a byte-order mark dropped), ``str.splitlines()``, each line ``str.strip()``-ed,
    blank lines left out."""
    lines = raw.decode("utf-8-sig").splitlines()
    return [line.strip() for line in lines if line.strip()]


def text_stats(item: str) -> dict[str, Any]:
    return {
        "original": item,
        "length": len(item),
        "word_count": len(item.split()),
        "uppercase": item.upper(),
    }


def array_record(index: int, result: Any) -> bytes:
    if isinstance(result, dict):
        return orjson.dumps({**result, "index": index})
    return orjson.dumps({"result": result, "index": index})


def jsonl_record(index: int, result: Any) -> bytes:
    if isinstance(result, dict):
        return orjson.dumps({"index": index, **result})
    return orjson.dumps({"index": index, "result": result})


def expected_array(results: Iterable[tuple[int, Any]]) -> bytes:
    """The exact bytes of a ``.json`` output holding these (index, result) pairs."""
    records = [b"  " + array_record(i, r) for i, r in results]
    if not records:
        return b"[]\n"
    return b"[\n" + b",\n".join(records) + b"\n]\n"


def expected_jsonl(results: Iterable[tuple[int, Any]]) -> bytes:
    """The exact bytes of a ``.jsonl`` output holding these (index, result) pairs."""
    return b"".join(jsonl_record(i, r) + b"\n" for i, r in results)


def expected_text_stats_array(raw: bytes) -> bytes:
    return expected_array((i, text_stats(s)) for i, s in enumerate(text_items(raw)))


def expected_identity_array(raw: bytes) -> bytes:
    return expected_array(enumerate(text_items(raw)))


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def change_input(source: Path, how: str) -> None:
    """Change an input the way a careless user might: ``append`` a line, ``touch`` it (same
    bytes, newer mtime) or ``same-size-and-mtime`` (one word rewritten near the start, size
    and mtime put back, so only the fingerprint can tell)."""
    st = source.stat()
    if how == "append":
        with source.open("ab") as fh:
            fh.write(b"one appended line\n")
    elif how == "touch":
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    else:
        raw = bytearray(source.read_bytes())
        raw[0:4] = b"LINE"
        source.write_bytes(bytes(raw))
        os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
        assert source.stat().st_size == st.st_size


def run_dirs(checkpoint: Path) -> list[Path]:
    """Run directories (``run_*``) under a checkpoint directory."""
    if not checkpoint.is_dir():
        return []
    return sorted(p for p in checkpoint.iterdir() if p.is_dir() and p.name.startswith("run_"))


# -- watching a live run ----------------------------------------------------------------

POLL = 0.01
# Checkpoint files of every run, whatever the engine calls the folder that holds them.
CHECKPOINT_GLOB = "run_*/*/*.ckpt"

CheckpointFiles = dict[Path, tuple[int, int, int]]


def checkpoint_files(checkpoint: Path) -> CheckpointFiles:
    """The checkpoint files under a checkpoint directory, each with (inode, mtime, size).

    A commit replaces a checkpoint by rename, so a new commit shows as a changed entry.
    """
    found: CheckpointFiles = {}
    for path in checkpoint.glob(CHECKPOINT_GLOB):
        try:
            st = path.stat()
        except FileNotFoundError:  # replaced or cleared between glob and stat
            continue
        found[path] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


def committed_since(checkpoint: Path, before: CheckpointFiles) -> bool:
    """Whether a checkpoint was written since the snapshot ``before``."""
    now = checkpoint_files(checkpoint)
    return any(before.get(path) != stamp for path, stamp in now.items())


def wait_until(
    done: Callable[[], bool],
    what: str,
    proc: subprocess.Popen[Any] | None = None,
    timeout: float = CLI_TIMEOUT,
    *,
    exit_ok: bool = False,
) -> bool:
    """Poll ``done()`` until it is true (then True); a timeout fails the test.

    If ``proc`` ends first, that fails the test too, unless ``exit_ok``: then False, for
    a caller to whom a run that finished early is an answer (a kill that came too late).
    """
    deadline = time.monotonic() + timeout
    while not done():
        if proc is not None and proc.poll() is not None:
            assert exit_ok, f"the run exited ({proc.returncode}) before {what}"
            return False
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(POLL)
    return True


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session", autouse=True)
def _session_run_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Module- and session-scoped fixtures run before any test's own index: they get one too."""
    before = os.environ.get("XDG_STATE_HOME")
    os.environ["XDG_STATE_HOME"] = str(tmp_path_factory.mktemp("session-state"))
    yield
    if before is None:
        os.environ.pop("XDG_STATE_HOME", None)
    else:
        os.environ["XDG_STATE_HOME"] = before


@pytest.fixture(autouse=True)
def _private_run_index(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """Each test gets its own per-user run index (``XDG_STATE_HOME``), subprocesses too:
    the suite never writes to the real ``~/.local/state`` nor sees another test's runs."""
    state = tmp_path_factory.mktemp("state")
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


@pytest.fixture
def make_input(tmp_path: Path) -> Callable[..., Path]:
    """Write an input of ``n`` numbered lines; returns its path."""

    def make(n: int, name: str = "input.txt", newline: str = "\n") -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_lines(path, numbered_lines(n), newline)

    return make


@pytest.fixture
def sample_copy(tmp_path: Path) -> Path:
    """A private copy of data/sample_input.txt."""
    path = tmp_path / "sample_input.txt"
    path.write_bytes(SAMPLE_INPUT.read_bytes())
    return path


@pytest.fixture
def cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_cli


@pytest.fixture
def summary() -> Callable[[subprocess.CompletedProcess[str]], dict[str, Any]]:
    return summary_of


_CALL_LOG = """\
import os

import anyio

LOG = os.environ["ASYNCPROC_TEST_CALL_LOG"]


def log_call(item):
    # One O_APPEND write per call: lines from concurrent calls never interleave.
    fd = os.open(LOG, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (item + "\\n").encode("utf-8"))
    finally:
        os.close(fd)

"""


def logging_processor(body: str) -> str:
    """Source of a processor module whose ``log_call(item)`` appends to the call log.

    The log is the file named by ``ASYNCPROC_TEST_CALL_LOG``; counting its lines tells
    how often the processor was really called, across kills and resumes.
    """
    return _CALL_LOG + textwrap.dedent(body)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    """A moto S3 server on loopback for the whole session (see ``motokit``)."""
    from motokit import serve

    yield from serve()


@pytest.fixture(scope="session")
def s3_bucket(s3_server: Any) -> str:
    """One bucket for the session; tests keep apart by their own prefixes."""
    name: str = s3_server.bucket()
    return name


# -- files of another user: only root can make them ----------------------------------------

NEEDS_ROOT = "needs root: only root can give a file to another user (os.chown)"


def give_to_another_user(path: Path) -> int:
    """Make ``path`` belong to another user (:data:`ANOTHER_USER`); its uid. Only root can:
    for a developer who is not root, the test is skipped here, saying why (a test that
    needs another user's files throughout is marked :data:`root_only` instead)."""
    if os.geteuid() != 0:
        pytest.skip(NEEDS_ROOT)
    os.chown(path, ANOTHER_USER, ANOTHER_USER)
    return ANOTHER_USER


def take_back(path: Path) -> None:
    """Give ``path`` back to whoever runs the tests (after :func:`give_to_another_user`)."""
    os.chown(path, os.geteuid(), os.getegid())


def another_group() -> int:
    """A group other than our own primary one that we may give our files to: any group for
    root, else one of our supplementary groups; skips the test when there is none."""
    if os.geteuid() == 0:
        return 4242
    groups = [g for g in os.getgroups() if g != os.getegid()]
    if not groups:
        pytest.skip("needs a second group to give a file to (or root)")
    return groups[0]
