"""``asyncproc verify``: try the crash-safety promise on the user's own processor and data.

In a scratch directory, on a prefix of the user's input, it runs the processor:

1. twice cleanly: two runs that differ mean the processor is not deterministic, and
   then no tool can promise byte-identical output for it;
2. once more while killing it (SIGKILL, to its whole process group) ``kills`` times, each
   at a random moment after that attempt made real progress (a new checkpoint), and
   resuming it each time with the same command: the result must be the clean bytes.

Every run is a real ``asyncproc run`` subprocess. The processor is wrapped in a shim
module in the scratch directory that appends the index of each call to a log (one
``O_APPEND`` write per call: lines never interleave), so the most calls any item got
across the kills is counted, not guessed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .._errors import ConfigError, RunError
from .._options import format_for
from ..engine.planning import check_input
from ..processors.loading import load_processor

POLL = 0.005  # seconds between looks at the checkpoint directory
MOST_DELAY = 0.02  # a kill lands up to this long after the checkpoint that allowed it
SHIM = """\
import os

import asyncproc
from asyncproc.processors.loading import load_processor

_PROCESSOR = load_processor({spec!r}, {args!r})
_LOG = os.open(os.environ["ASYNCPROC_VERIFY_CALLS"], os.O_WRONLY | os.O_CREAT | os.O_APPEND,
               0o600)


def _called():
    os.write(_LOG, b"%d\\n" % asyncproc.current_item().index)


if _PROCESSOR.is_async:
    async def work(item):
        _called()
        return await _PROCESSOR.fn(item)
else:
    def work(item):
        _called()
        return _PROCESSOR.fn(item)
"""


@dataclass(frozen=True, slots=True)
class VerifyRequest:
    """What to verify, and how hard."""

    input: Path
    processor: str
    processor_args: dict[str, str] = field(default_factory=dict)
    format: str | None = None
    kills: int = 3
    items: int = 2000
    batch_size: int = 10
    concurrency: int | None = None
    processes: int | None = None
    seed: int | None = None
    keep: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``verify`` found; ``to_dict`` is its ``--json`` output."""

    items: int
    kills: int  # kills that landed: the process was still running when it was killed
    kills_asked: int
    identical: bool  # the killed-and-resumed output is the clean run's bytes
    deterministic: bool  # two clean runs gave the same bytes
    max_calls_per_item: int  # the most calls one item got over the killed attempts
    processor: str
    scratch: str | None  # kept on request, or when something did not match
    elapsed_s: float

    @property
    def ok(self) -> bool:
        return self.identical and self.deterministic

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Scratch:
    """The scratch directory: the input prefix, the shim, and one folder per run."""

    def __init__(self, request: VerifyRequest) -> None:
        self.request = request
        self.root = Path(tempfile.mkdtemp(prefix="asyncproc-verify-"))
        self.format = request.format or str(format_for(request.input))
        self.input = self.root / f"input{request.input.suffix or '.txt'}"
        self.items = _copy_prefix(request.input, self.input, request.items)
        self.shim = self.root / "asyncproc_verify_shim.py"
        spec = load_processor(request.processor, request.processor_args).spec
        self.shim.write_text(SHIM.format(spec=spec, args=request.processor_args))

    def argv(self, name: str) -> list[str]:
        run = self.root / name
        run.mkdir(exist_ok=True)
        argv = [
            sys.executable, "-m", "asyncproc", "run", "--input", str(self.input),
            "--output", str(run / "out.jsonl"), "--checkpoint", str(run / "ck"),
            "--processor", f"{self.shim}:work", "--format", self.format,
            "--batch-size", str(self.request.batch_size), "--quiet",
        ]  # fmt: skip
        for flag, value in (("--concurrency", self.request.concurrency),
                            ("--processes", self.request.processes)):  # fmt: skip
            if value is not None:
                argv += [flag, str(value)]
        return argv

    def env(self, name: str) -> dict[str, str]:
        return {**os.environ, "ASYNCPROC_VERIFY_CALLS": str(self.root / name / "calls.log")}

    def result(self, name: str) -> tuple[bytes, bytes]:
        """The output and the failed-items file of a finished run."""
        run = self.root / name
        failed = run / "out.failed.jsonl"
        return (run / "out.jsonl").read_bytes(), failed.read_bytes() if failed.exists() else b""

    def calls(self, name: str) -> Counter[int]:
        log = self.root / name / "calls.log"
        if not log.exists():
            return Counter()
        return Counter(int(line) for line in log.read_bytes().split())


def _copy_prefix(source: Path, target: Path, items: int) -> int:
    """Copy lines of ``source`` up to its ``items``-th non-blank one; return the count."""
    found = 0
    with source.open("rb") as src, target.open("wb") as dst:
        for line in src:
            if found == items:
                break
            dst.write(line if line.endswith(b"\n") else line + b"\n")
            found += bool(line.strip())
    return found


def verify(request: VerifyRequest) -> Verdict:
    """Run the clean runs and the killed one, and say what they showed."""
    _check(request)
    started = time.monotonic()
    scratch = _Scratch(request)
    keep = True
    try:
        clean = _finish(scratch, "clean")
        deterministic = _finish(scratch, "again") == clean
        landed = _killed(scratch, random.Random(request.seed))
        identical = _finish(scratch, "killed") == clean
        keep = request.keep or not (identical and deterministic)
        return Verdict(
            items=scratch.items, kills=landed, kills_asked=request.kills, identical=identical,
            deterministic=deterministic,
            max_calls_per_item=max(scratch.calls("killed").values(), default=0),
            processor=request.processor, scratch=str(scratch.root) if keep else None,
            elapsed_s=round(time.monotonic() - started, 2),
        )  # fmt: skip
    finally:
        if not keep:
            shutil.rmtree(scratch.root, ignore_errors=True)


def _check(request: VerifyRequest) -> None:
    check_input(request.input)
    if request.kills < 0 or request.items < 1 or request.batch_size < 1:
        raise ConfigError("--kills must be at least 0, --items and --batch-size at least 1")
    load_processor(request.processor, request.processor_args)  # refused before any work


def _finish(scratch: _Scratch, name: str) -> tuple[bytes, bytes]:
    """Run (or resume) ``name`` to its end; its output and failed-items file."""
    proc = subprocess.run(
        scratch.argv(name), env=scratch.env(name), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
        raise RunError(
            f"the {name} run of the processor failed (exit {proc.returncode}): {last}; "
            f"`asyncproc run` on this input fails the same way: fix that first "
            f"(scratch directory kept: {scratch.root})"
        )
    return scratch.result(name)


def _killed(scratch: _Scratch, rng: random.Random) -> int:
    """Start the run again and again, killing each attempt after it made progress.

    Returns how many kills landed; stops early when an attempt finishes first.
    """
    landed = 0
    while landed < scratch.request.kills:
        outcome = _one_attempt(scratch, rng)
        if outcome is None:
            break  # it finished before a kill could land
        landed += outcome
    return landed


def _one_attempt(scratch: _Scratch, rng: random.Random) -> int | None:
    """1 if the kill landed, None if the attempt finished first."""
    ck = scratch.root / "killed" / "ck"
    before = _checkpoints(ck)
    with _started(scratch) as proc:
        while proc.poll() is None and _checkpoints(ck) == before:
            time.sleep(POLL)
        if proc.poll() is None:
            time.sleep(rng.uniform(0, MOST_DELAY))
        if proc.poll() is not None:
            _require_success(proc, scratch)
            return None
        os.killpg(proc.pid, signal.SIGKILL)
        if proc.wait() != -signal.SIGKILL:  # it ended just before the kill
            _require_success(proc, scratch)
            return None
    return 1


def _require_success(proc: subprocess.Popen[bytes], scratch: _Scratch) -> None:
    if proc.returncode != 0:
        raise RunError(
            f"a killed-and-resumed attempt failed on its own (exit {proc.returncode}); "
            f"its run is in {scratch.root / 'killed'}"
        )


@contextmanager
def _started(scratch: _Scratch) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        scratch.argv("killed"), env=scratch.env("killed"), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:  # interrupted: leave nothing running
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _checkpoints(ck: Path) -> dict[Path, tuple[int, int]]:
    """Every checkpoint file with its inode and mtime: a commit replaces one by rename."""
    found = {}
    for path in ck.glob("run_*/units/*.ckpt"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        found[path] = (st.st_ino, st.st_mtime_ns)
    return found
