"""``--retry-failed`` on S3 (moto's server on loopback): the same guarantees as on disk.

A run whose processor fails some items (``FLAKY``), then ``--retry-failed`` with the
failures switched off: the output object holds a clean local run's bytes and the
failed-items object is gone. Crashed mid-retry or mid-publication, the same command
again goes on: nothing committed is processed again (a call log counts the calls) and
nothing is spliced twice (the bytes say so).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import describe, logging_processor, run_cli, run_ok
from faultkit import assert_no_traceback

import asyncproc
from asyncproc.engine.replay.state import PLAN, RetryPlan
from asyncproc.engine.sources import publish_object
from asyncproc.storage.faults import CRASH_EXIT
from asyncproc.storage.location import Location
from asyncproc.storage.records import UnitCheckpoint
from asyncproc.storage.subfolder import Subfolder
from asyncproc.storage.unitstore import UnitStore

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

ITEMS = 300
FAILED = 30  # FLAKY=all: every tenth item
STILL = 3  # FLAKY=some: every hundredth item, still failing after a retry

PROCESSOR = logging_processor(
    """
import asyncproc


async def fn(item):
    log_call(item)
    index = asyncproc.current_item().index
    await anyio.sleep(float(os.environ.get("DELAY", "0")))  # commits land mid-retry
    mode = os.environ.get("FLAKY", "")
    if mode == "all" and index % 10 == 7:
        raise ValueError(f"flaky on {item}")
    if mode in ("all", "some") and index % 100 == 17:
        raise ValueError(f"still flaky on {item}")
    return {"text": item, "n": len(item)}
"""
)


@dataclass(frozen=True)
class Refs:
    """The input and processor, and the bytes of local runs to compare with."""

    source: Path
    module: Path
    clean: bytes  # no item ever failed
    some: bytes  # only the FLAKY=some items failed
    some_failed: bytes  # and their failed-items file


def _args(refs: Refs, source: str, out: str, ck: str, *extra: str) -> list[str]:
    return ["run", "--input", source, "--output", out, "--checkpoint", ck, "--processor",
            f"{refs.module}:fn", "--retries", "0", "--workers", "2", "--batch-size", "50",
            "-q", *extra]  # fmt: skip


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> Refs:
    """Local runs in this process (no CLI start-up to wait for): clean, and FLAKY=some."""
    base = tmp_path_factory.mktemp("s3_retry")
    source = base / "in.txt"
    source.write_text("".join(f"item {i:05d} of the s3 retry tests\n" for i in range(ITEMS)))
    module = base / "flaky.py"
    module.write_text(PROCESSOR)
    outs = {}
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ASYNCPROC_TEST_CALL_LOG", str(base / "log"))
        for mode in ("", "some"):
            env.setenv("FLAKY", mode)
            out = outs[mode] = base / f"ref-{mode or 'clean'}.json"
            ck = base / f"ck-{mode}"
            asyncproc.run_file(source, out, f"{module}:fn", retries=0, workers=2,
                               batch_size=50, checkpoint_dir=ck, quiet=True)  # fmt: skip
    failed = base / "ref-some.failed.jsonl"
    return Refs(source, module, outs[""].read_bytes(), outs["some"].read_bytes(),
                failed.read_bytes())  # fmt: skip


@dataclass(frozen=True)
class S3Run:
    """A completed run with FAILED failed items, its places given as URLs or paths."""

    refs: Refs
    server: Any
    source: str
    out: str
    ck: str
    tmp: Path

    def args(self, *extra: str) -> list[str]:
        options = [f"--storage-option={k}={v}" for k, v in self.server.options().items()]
        return [*_args(self.refs, self.source, self.out, self.ck, *extra), *options]

    def env(self, log: str, **extra: str) -> dict[str, str]:
        return {"ASYNCPROC_TEST_CALL_LOG": str(self.tmp / log), **extra}

    def calls(self, log: str) -> int:
        path = self.tmp / log
        return len(path.read_bytes().splitlines()) if path.exists() else 0

    def location(self, where: str) -> Location:
        return Location(where, self.server.options())

    def read(self, where: str) -> bytes | None:
        """A file's or an object's bytes; None if it is missing."""
        place = self.location(where)
        if place.is_local:
            return place.path.read_bytes() if place.path.exists() else None
        return bytes(place.fs.cat_file(place.key)) if place.fs.exists(place.key) else None

    @property
    def failed(self) -> str:
        return self.out.removesuffix(".json") + ".failed.jsonl"

    def retry_state(self) -> Subfolder:
        """The ``retry/`` folder of the run's storage on S3."""
        ck = self.location(self.ck)
        (run_id,) = [p.rstrip("/").rpartition("/")[2] for p in ck.fs.ls(ck.key, detail=False)
                     if "run_" in p]  # fmt: skip
        return Subfolder(ck.child(run_id).storage(), "retry/")

    def retry_checkpoint(self) -> UnitCheckpoint | None:
        """The retry's newest good checkpoint, as a resume would load it."""
        return UnitStore(self.retry_state(), 0).load().checkpoint


def _s3_run(refs: Refs, server: Any, bucket: str, tmp: Path) -> S3Run:
    """Input, output and checkpoints on S3: a run with FLAKY=all, FAILED items failed."""
    base = f"s3://{bucket}/{tmp.name}"
    source = Location(f"{base}/in.txt", server.options())
    source.fs.pipe_file(source.key, refs.source.read_bytes())
    run = S3Run(refs, server, source.url, f"{base}/out.json", f"{base}/ck", tmp)
    first = run_ok(*run.args(), env=run.env("log0", FLAKY="all"))
    assert (first["processed"], first["failed"]) == (ITEMS - FAILED, FAILED), first
    assert first["failed_items_file"] == run.failed, first
    assert run.read(run.failed) is not None, "the run left no failed-items object"
    return run


def _retry(run: S3Run) -> list[str]:
    """The retry command: small batches, so that it commits several times."""
    return run.args("--retry-failed", "--batch-size", "10", "--concurrency", "2")


def test_retry_failed_on_s3_restores_the_clean_bytes(
    refs: Refs, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    run = _s3_run(refs, s3_server, s3_bucket, tmp_path)
    assert run.read(run.out) != refs.clean, "the failed items were not missing"
    done = run_ok(*_retry(run), env=run.env("log1"))
    assert (done["processed"], done["failed"], done["failed_items_file"]) == (ITEMS, 0, None)
    assert run.calls("log1") == FAILED, "only the failed items are processed again"
    assert run.read(run.out) == refs.clean, "output differs from a clean local run"
    assert run.read(run.failed) is None, "the failed-items object is still there"


def test_a_retry_on_s3_crashed_mid_way_then_in_its_publication_splices_once(
    refs: Refs, s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """Killed after its second commit, the retry goes on from its checkpoint; killed
    again once the output object is replaced, it redoes the publication over it, then a
    pass over the items still failing: each success is in the output once."""
    run = _s3_run(refs, s3_server, s3_bucket, tmp_path)
    _crash(run, "log1", "retry_committed:2")
    checkpoint = run.retry_checkpoint()
    assert checkpoint is not None and 0 < checkpoint.next_index < FAILED, checkpoint
    assert run.calls("log1") >= checkpoint.next_index
    plan = RetryPlan.from_bytes(run.retry_state().get(PLAN) or b"", "the retry's plan")
    assert (plan.failed.path, plan.items) == (run.failed, FAILED), plan

    _crash(run, "log2", "retry_after_output:1")
    assert run.calls("log2") == FAILED - checkpoint.next_index, "committed items ran again"
    assert run.read(run.out) == refs.some, "the crash came before the output was replaced"
    assert run.read(run.failed) not in (None, refs.some_failed), "failed items replaced"

    done = run_ok(*_retry(run), env=run.env("log3", FLAKY="some"))
    assert (done["processed"], done["failed"]) == (ITEMS - STILL, STILL), done
    assert run.calls("log3") == STILL, "only the items still failing are processed again"
    assert run.read(run.out) == refs.some, "output differs: spliced twice, or items lost"
    assert run.read(run.failed) == refs.some_failed, "failed-items object differs"
    assert run.retry_checkpoint() is None, "the retry's state is still there"


def _crash(run: S3Run, log: str, at: str) -> None:
    """The retry with FLAKY=some, killed at the crash point ``at`` (name:count)."""
    env = run.env(log, FLAKY="some", DELAY="0.01", ASYNCPROC_CRASH_AT=at)
    crashed = run_cli(*_retry(run), env=env)
    assert_no_traceback(crashed)
    assert crashed.returncode == CRASH_EXIT, describe(crashed, f"expected exit {CRASH_EXIT}")
    point = at.partition(":")[0]
    assert f"crash point {point} reached" in crashed.stderr, describe(crashed)


def test_an_upload_that_fails_half_way_leaves_the_old_object(
    s3_server: Any, s3_bucket: str, tmp_path: Path
) -> None:
    """fsspec completes an upload when its file closes, even on an error: ours does not."""
    target = Location(f"s3://{s3_bucket}/{tmp_path.name}/out.jsonl", s3_server.options())
    target.fs.pipe_file(target.key, b'{"index": 0}\n')

    def chunks() -> Any:
        yield b'{"index": 0}\n{"index": 1}\n'
        raise OSError("the segments cannot be read")

    with pytest.raises(OSError, match="cannot be read"):
        publish_object(target, chunks(), False)
    assert target.fs.cat_file(target.key) == b'{"index": 0}\n'


@pytest.mark.parametrize(
    ("output", "ck"), [("memory", "memory"), ("local", "memory"), ("memory", "local")]
)  # fmt: skip
def test_retry_failed_with_any_mix_of_urls_and_paths(output: str, ck: str, tmp_path: Path) -> None:
    """In this process, on fsspec's memory store: each place a URL or a path, the same bytes."""
    failing = {"on": True}

    def fn(item: str) -> dict[str, str]:
        if failing["on"] and asyncproc.current_item().index % 10 == 7:
            raise ValueError(f"flaky on {item}")
        return {"text": item}

    base = f"memory://{tmp_path.name}"
    source = Location(f"{base}/in.txt")
    source.fs.pipe_file(source.key, b"".join(b"line %d\n" % i for i in range(100)))
    where = {"memory": base, "local": str(tmp_path)}
    out, checkpoint = f"{where[output]}/out.json", f"{where[ck]}/ck"

    def run(**extra: Any) -> asyncproc.Summary:
        return asyncproc.run_file(source.url, out, fn, checkpoint_dir=checkpoint, retries=0,
                                  quiet=True, **extra)  # fmt: skip

    assert run().failed == 10
    failed = Location(out.removesuffix(".json") + ".failed.jsonl")
    assert failed.info()["size"] > 0
    failing["on"] = False
    done = run(retry_failed=True)
    assert (done.processed, done.failed, done.failed_items_file) == (100, 0, None)
    clean = f"{base}/clean.json"
    asyncproc.run_file(source.url, clean, fn, checkpoint_dir=f"{base}/ck-clean", quiet=True)
    with Location(out).open_read() as got, Location(clean).open_read() as want:
        assert got.read() == want.read()
    with pytest.raises(FileNotFoundError):
        failed.info()
