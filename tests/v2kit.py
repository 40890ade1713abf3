"""Helpers for the engine v2 tests: skewed jobs, call logs, run state read between kills.

Everything here observes a real ``asyncproc run`` from outside: its call log (one line
per processor call, see :func:`conftest.logging_processor`), its manifest (the plan, with
every split), its unit checkpoints (what is committed) and its worker processes. Waiting
is always for observable state, polled, with a deadline that fails clearly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
from collections.abc import Mapping
from pathlib import Path

from conftest import CLI_TIMEOUT, cli_command, logging_processor, run_dirs

from asyncproc._errors import CheckpointError
from asyncproc.runs.rundir import local_run
from asyncproc.storage.records import Manifest

Arg = str | os.PathLike[str]
LOG_ENV = "ASYNCPROC_TEST_CALL_LOG"


def item_number(item: str) -> int:
    """The number in an item of :func:`conftest.numbered_lines` (``line 000123 ...``)."""
    return int(item.split()[1])


def call_env(log: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a run whose processor logs its calls to ``log``."""
    env = dict(os.environ)
    env[LOG_ENV] = str(log)
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **(extra or {})}


def calls(log: Path) -> list[str]:
    """Every call the processor logged, in order (items repeat if called again)."""
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


# -- run state on disk ------------------------------------------------------------------


def the_run(ck: Path) -> Path | None:
    """The one planned run under ``ck`` (None before it is planned).

    A run killed before its manifest was written leaves a directory without one, which
    the next run does not resume: it plans a new run beside it.
    """
    runs = [r for r in run_dirs(ck) if (r / "manifest.json").exists()]
    assert len(runs) <= 1, f"expected at most one planned run under {ck}: {runs}"
    return runs[0] if runs else None


def manifest_of(run_dir: Path) -> Manifest | None:
    """The run's manifest, or None while it does not exist yet (it is replaced atomically)."""
    path = run_dir / "manifest.json"
    try:
        return Manifest.from_bytes(path.read_bytes(), str(path))
    except FileNotFoundError:
        return None


def units_now(ck: Path) -> int:
    """How many units the run's manifest lists now (0 before the run is planned)."""
    run_dir = the_run(ck)
    manifest = manifest_of(run_dir) if run_dir is not None else None
    return len(manifest.units) if manifest is not None else 0


def extents(manifest: Manifest) -> dict[int, tuple[int, int, int, int]]:
    """Each unit's ``(start, end, first_index, end_index)``: a unit ends where the next begins."""
    units = sorted(manifest.units, key=lambda u: u.start)
    ends = [(u.start, u.first_index) for u in units[1:]]
    ends.append((manifest.input.size, manifest.total_items))
    return {
        u.unit_id: (u.start, end, u.first_index, end_index)
        for u, (end, end_index) in zip(units, ends, strict=True)
    }


def committed(run_dir: Path) -> set[int]:
    """Indices of the items durably committed: what a resume will not process again.

    Each unit's newest checkpoint that fits its extent (what the engine itself loads).
    """
    manifest = manifest_of(run_dir)
    if manifest is None:
        return set()
    done: set[int] = set()
    for unit_id, (start, end, first, _) in extents(manifest).items():
        try:
            loaded = local_run(run_dir).unit_store(unit_id).load(start, end).checkpoint
        except CheckpointError:  # a checkpoint being replaced right now: read it next time
            continue
        if loaded is not None:
            done.update(range(first, loaded.next_index))
    return done


def committed_now(ck: Path) -> set[int]:
    run_dir = the_run(ck)
    return committed(run_dir) if run_dir is not None else set()


# -- processes ----------------------------------------------------------------------------


def start(argv: list[Arg], env: Mapping[str, str], work: Path) -> subprocess.Popen[bytes]:
    """Start ``asyncproc`` in its own session (so its whole group can be killed).

    Its stdout replaces ``work/stdout``; its stderr is appended to ``work/stderr``.
    """
    with (work / "stdout").open("wb") as out, (work / "stderr").open("ab") as err:
        return subprocess.Popen(
            cli_command(*argv), env=dict(env), stdout=out, stderr=err,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def kill_group(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL the run's process group; True if it was still running (the kill landed)."""
    landed = proc.poll() is None
    if landed:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=CLI_TIMEOUT)
    return landed


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


# -- a skewed processor -------------------------------------------------------------------

# Items numbered below ASYNCPROC_TEST_SLOW_BELOW take 3 ms, the rest nothing: the unit
# holding the slow ones is left running alone, and an idle slot splits it. Items numbered
# in ASYNCPROC_TEST_GATED ("from:to") wait until a file matches ASYNCPROC_TEST_GATE (a
# glob); ASYNCPROC_TEST_OPENS ("number:path") makes the call with that item create path.
SKEWED = logging_processor(
    """
import glob


def _env_range(name):
    low, high = os.environ.get(name, "0:0").split(":")
    return range(int(low), int(high))


SLOW_BELOW = int(os.environ.get("ASYNCPROC_TEST_SLOW_BELOW", "0"))
GATE = os.environ.get("ASYNCPROC_TEST_GATE", "")
GATED = _env_range("ASYNCPROC_TEST_GATED")
OPENS_AT, _, OPENS = os.environ.get("ASYNCPROC_TEST_OPENS", "-1:").partition(":")
_open = False


async def _gate():
    global _open
    while not _open:
        _open = bool(glob.glob(GATE))
        if not _open:
            await anyio.sleep(0.002)


async def work(item):
    log_call(item)
    number = int(item.split()[1])
    if number == int(OPENS_AT):
        open(OPENS, "a").close()
    if number in GATED:
        await _gate()
    if number < SLOW_BELOW:
        await anyio.sleep(0.003)
    return {"item": item}
"""
)


def write_processor(path: Path, source: str = SKEWED) -> Path:
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path
