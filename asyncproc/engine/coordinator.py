"""The coordinator: choose or plan the run, run its shards, merge, finish.

Blocking steps (planning, loading checkpoints, the merge) run in worker threads; the
shard workers run under one task group. Every decision about the run happens while the
checkpoint directory's lock is held, and all work while the run's own lock is held.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import anyio

from .._errors import (
    AsyncprocError,
    CheckpointError,
    ConfigError,
    FailureLimitError,
    IncompatibleRunError,
    InputChangedError,
    Interrupted,
    OutputError,
    RunError,
    unwrap_group,
)
from .._options import DEFAULT_CHECKPOINT, Options, auto_workers
from ..runs.rundir import RunDir, directory_lock, find_resumable, new_run_dir
from ..storage.faults import CRASH_EXIT, crashpoint
from ..storage.local import ShardStore
from ..storage.records import Manifest, RunStatus, ShardCheckpoint
from .executor import Executor, InProcess
from .merge import merge
from .observer import LogProgress, RunObserver
from .planning import change_in, check_input, plan
from .processors import Fn, Processor, load_processor
from .retry_failed import retry_failed
from .stopping import Stopper, StopReason
from .summary import Summary
from .worker import Commit, ShardSpec, first_checkpoint

log = logging.getLogger("asyncproc")


@dataclass(frozen=True, slots=True)
class Request:
    """What the caller asked for, before anything was checked against the disk."""

    input: Path
    output: Path
    processor: str | Fn
    options: Options
    checkpoint_dir: Path | None = None
    new_run: bool = False
    resume: str | None = None
    handle_signals: bool = False
    retry_failed: bool = False
    observer: RunObserver | None = None  # default: progress lines on the log
    executor: Executor | None = None  # default: every shard on this event loop


@dataclass(frozen=True, slots=True)
class Chosen:
    """The run this invocation works on."""

    run: RunDir
    manifest: Manifest
    resumed: bool


def check_output(output: Path, input_path: Path) -> None:
    """Refuse an output that cannot be written, before any work."""
    if output.resolve() == input_path.resolve():
        raise ConfigError(f"output {output} is the input; choose another --output")
    if output.is_dir():
        raise OutputError(f"output {output} is a directory; give a file path")
    parent = output.parent
    if not parent.is_dir():
        raise OutputError(f"output directory {parent} does not exist; create it first")
    _probe_writable(parent)


def _probe_writable(directory: Path) -> None:
    """Create and remove a file there: permission bits alone miss root, ACLs, read-only mounts."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".asyncproc-probe-"):
            pass
    except OSError as exc:
        raise OutputError(
            f"output directory {directory} is not writable ({exc.strerror}); "
            "check its permissions or choose another --output"
        ) from None


def lane_counts(concurrency: int, shards: int) -> list[int]:
    """Spread the global concurrency over the shards, at least one lane each."""
    base, extra = divmod(concurrency, max(shards, 1))
    return [max(1, base + (1 if k < extra else 0)) for k in range(shards)]


class Coordinator:
    """One invocation of a run: fresh or resumed."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.started = time.monotonic()
        self._committed_here = 0
        self._states: dict[int, ShardCheckpoint] = {}
        self._observer: RunObserver = request.observer or LogProgress()
        self._executor: Executor = request.executor or InProcess()
        self._stopper = Stopper(request.options.grace)
        self._failure_limit = request.options.failure_limit()
        self._failed_here = 0
        self._last_error: str | None = None

    async def run(self) -> Summary:
        req = self.request
        processor = load_processor(req.processor, req.options.processor_args)
        check_input(req.input)
        check_output(req.output, req.input)
        options = replace(req.options.resolved(req.input, req.output), processor=processor.spec)
        checkpoint_dir = self._checkpoint_dir()
        with ExitStack() as stack:
            chosen = await anyio.to_thread.run_sync(self._choose, checkpoint_dir, options, stack)
            if chosen.manifest.status is RunStatus.COMPLETED:
                summary = Summary.from_dict(chosen.manifest.summary or {})
            else:
                summary = await self._work(chosen, processor, options)
            if req.retry_failed and summary.failed_items_file:
                summary = await retry_failed(chosen.run, processor, options, summary)
            return summary

    def _checkpoint_dir(self) -> Path:
        path = self.request.checkpoint_dir or self.request.output.parent / DEFAULT_CHECKPOINT
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create checkpoint directory {path}: {exc.strerror}") from exc
        return path

    # -- choosing the run (blocking, in a thread) ----------------------------------------

    def _choose(self, checkpoint_dir: Path, options: Options, stack: ExitStack) -> Chosen:
        with directory_lock(checkpoint_dir):
            chosen = self._existing(checkpoint_dir, options) or self._plan(checkpoint_dir, options)
            stack.enter_context(chosen.run.locked())
            return chosen

    def _existing(self, checkpoint_dir: Path, options: Options) -> Chosen | None:
        req = self.request
        if req.resume:
            run = RunDir(checkpoint_dir / req.resume)
        elif req.new_run:
            return None
        else:
            found = find_resumable(
                checkpoint_dir,
                str(req.input.resolve()),
                str(req.output.resolve()),
                completed=req.retry_failed,
            )
            if found is None:
                return None
            run = found
        manifest = run.read()
        if manifest.status is RunStatus.COMPLETED and not req.retry_failed:
            raise RunError(
                f"run {run.run_id} is already completed; run without --resume to start anew"
            )
        self._verify(run, manifest, options)
        return Chosen(run, manifest, resumed=True)

    def _verify(self, run: RunDir, manifest: Manifest, options: Options) -> None:
        change = change_in(manifest.input)
        if change:
            raise InputChangedError(
                f"input {manifest.input.path} changed ({change}) since run {run.run_id} was "
                "planned; restore it, or start over with --new-run"
            )
        differences = options.result_differences(manifest.options)
        if differences:
            raise IncompatibleRunError(
                f"run {run.run_id} was started with other options ({'; '.join(differences)}); "
                "resume with the same options, or start over with --new-run"
            )

    def _plan(self, checkpoint_dir: Path, options: Options) -> Chosen:
        req = self.request
        size = req.input.stat().st_size
        identity, shards = plan(
            req.input, options.workers, max(options.processes, auto_workers(size))
        )
        run = new_run_dir(checkpoint_dir)
        now = time.time()
        manifest = Manifest(
            run_id=run.run_id, status=RunStatus.RUNNING, created_at=now, updated_at=now,
            input=identity, output=str(req.output.resolve()),
            options={**options.to_dict(), "workers": len(shards)}, shards=shards,
            total_items=sum(s.items for s in shards),
        )  # fmt: skip
        run.write(manifest)
        log.info(
            "planned run %s: %d items in %d shard(s)", run.run_id, manifest.total_items, len(shards)
        )
        return Chosen(run, manifest, resumed=False)

    # -- working ---------------------------------------------------------------------------

    async def _work(self, chosen: Chosen, processor: Processor, options: Options) -> Summary:
        run, manifest = chosen.run, chosen.manifest
        if manifest.status is RunStatus.MERGED:
            return await anyio.to_thread.run_sync(self._finish, run, manifest, chosen.resumed)
        self._states = await anyio.to_thread.run_sync(self._load_states, run, manifest)
        manifest = self._record_options(run, manifest, options)
        try:
            await self._run_shards(run, manifest, processor, options)
        except BaseExceptionGroup as group:
            await self._stopped(run, manifest, RunStatus.FAILED, str(unwrap_group(group)))
            cause = unwrap_group(group)
            raise cause from (None if cause is group else group)
        except (AsyncprocError, OSError) as exc:
            await self._stopped(run, manifest, RunStatus.FAILED, str(exc))
            raise
        if self._stopper.reason is not None:
            raise await self._stopped_early(run, manifest, self._stopper.reason)
        await anyio.to_thread.run_sync(self._check_input_unchanged, run, manifest)
        return await anyio.to_thread.run_sync(self._merge_and_finish, run, manifest, chosen.resumed)

    async def _stopped(self, run: RunDir, manifest: Manifest, status: RunStatus, why: str) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._mark, run, manifest, status, why)

    async def _stopped_early(self, run: RunDir, manifest: Manifest, reason: StopReason) -> RunError:
        done = sum(c.processed + c.failed for c in self._states.values())
        resume = "run the same command again to resume"
        if reason.signum is None:
            await self._stopped(run, manifest, RunStatus.FAILED, reason.message)
            return FailureLimitError(
                f"{reason.message}; run {run.run_id} stopped after "
                f"committing {done} items; fix the cause and {resume}"
            )
        await self._stopped(run, manifest, RunStatus.INTERRUPTED, reason.message)
        return Interrupted(f"{reason.message}; run {run.run_id} has {done} of "
                           f"{manifest.total_items} items committed; {resume}",
                           signum=reason.signum)  # fmt: skip

    def _check_input_unchanged(self, run: RunDir, manifest: Manifest) -> None:
        change = change_in(manifest.input)
        if change:
            raise InputChangedError(
                f"input {manifest.input.path} changed ({change}) while run {run.run_id} was "
                "running; its output would mix two versions: start over with --new-run"
            )

    def _record_options(self, run: RunDir, manifest: Manifest, options: Options) -> Manifest:
        stored = {**options.to_dict(), "workers": len(manifest.shards)}
        if stored == manifest.options and manifest.status is RunStatus.RUNNING:
            return manifest
        return run.set_status(manifest, RunStatus.RUNNING, options=stored)

    def _load_states(self, run: RunDir, manifest: Manifest) -> dict[int, ShardCheckpoint]:
        states = {}
        for shard in manifest.shards:
            spec = self._spec(run, manifest, shard.shard_id, 1)
            loaded = ShardStore(run.path, shard.shard_id).load()
            checkpoint = loaded.checkpoint or first_checkpoint(spec)
            for problem in loaded.problems:
                log.warning("shard %d: %s", shard.shard_id, problem)
            if loaded.problems and loaded.checkpoint is None:
                log.warning(
                    "shard %d: no usable checkpoint; redoing it from its start", shard.shard_id
                )
            elif loaded.problems:
                log.warning(
                    "shard %d: resuming from checkpoint generation %d (item %d)",
                    shard.shard_id,
                    checkpoint.generation,
                    checkpoint.next_index,
                )
            states[shard.shard_id] = checkpoint
        self._log_status(run, manifest, states)
        return states

    def _log_status(
        self, run: RunDir, manifest: Manifest, states: dict[int, ShardCheckpoint]
    ) -> None:
        done = sum(c.processed + c.failed for c in states.values())
        if not done and not any(c.attempts for c in states.values()):
            return
        pending = sum(1 for c in states.values() if not c.done)
        log.info(
            "resuming run %s: %d/%d items done (%d failed), %d of %d shard(s) left",
            run.run_id, done, manifest.total_items, sum(c.failed for c in states.values()),
            pending, len(states),
        )  # fmt: skip

    def _spec(self, run: RunDir, manifest: Manifest, shard_id: int, lanes: int) -> ShardSpec:
        opts = manifest.options
        return ShardSpec(
            run_id=run.run_id, run_dir=str(run.path), input_path=manifest.input.path,
            shard=manifest.shards[shard_id], format=str(opts["format"]),
            output_kind=str(opts["output_kind"]), lanes=lanes,
            batch_size=int(opts["batch_size"]), retries=int(opts["retries"]),
            timeout=opts["timeout"], commit_interval=float(opts["commit_interval"]),
            durable=bool(opts.get("durable", True)),
            fingerprint=manifest.input.fingerprint,
            # --simulate-crash wants the crash on the exact item count: no coalescing.
            one_batch_per_commit=bool(self.request.options.simulate_crash),
        )  # fmt: skip

    async def _run_shards(
        self, run: RunDir, manifest: Manifest, processor: Processor, options: Options
    ) -> None:
        pending = [c for c in self._states.values() if not c.done]
        lanes = lane_counts(options.concurrency, len(pending))
        jobs = [
            (self._spec(run, manifest, s.shard_id, n), s)
            for s, n in zip(pending, lanes, strict=True)
        ]
        done = sum(c.processed + c.failed for c in self._states.values())
        failed = sum(c.failed for c in self._states.values())
        self._observer.started(manifest.total_items, done, failed)
        try:
            async with anyio.create_task_group() as outer:
                if self.request.handle_signals:
                    outer.start_soon(self._stopper.watch_signals)
                async with anyio.create_task_group() as tg:
                    self._stopper.scope = tg.cancel_scope
                    tg.start_soon(
                        self._executor.run, jobs, processor, self._stopper, self._on_commit,
                        options.concurrency,
                    )  # fmt: skip
                outer.cancel_scope.cancel()
        finally:
            self._observer.stopped()

    def _on_commit(self, commit: Commit) -> None:
        self._states[commit.shard_id] = commit.checkpoint
        self._observer.committed(commit.processed, commit.failed)
        self._committed_here += commit.processed + commit.failed
        self._failed_here += commit.failed
        self._last_error = commit.last_error or self._last_error
        crash_after = self.request.options.simulate_crash
        if crash_after is not None and self._committed_here >= crash_after:
            self._simulated_crash(commit.checkpoint.run_id)
        limit = self._failure_limit
        if limit is not None and limit.exceeded(self._failed_here, self._committed_here):
            self._stopper.request(StopReason(None, (
                f"{self._failed_here} of {self._committed_here} items failed, over "
                f"--max-failures {limit} (last error: {self._last_error})"
            )))  # fmt: skip

    def _simulated_crash(self, run_id: str) -> None:
        sys.stderr.write(
            f"asyncproc: simulated crash after {self._committed_here} committed items in run "
            f"{run_id}; run the same command again (without --simulate-crash) to resume\n"
        )
        sys.stderr.flush()
        os._exit(CRASH_EXIT)

    def _mark(self, run: RunDir, manifest: Manifest, status: RunStatus, why: str) -> None:
        try:
            run.set_status(manifest, status, summary={"error": why})
        except OSError:
            log.warning("could not record in its manifest why run %s stopped", run.run_id)

    # -- finishing (blocking, in a thread) -------------------------------------------------

    def _merge_and_finish(self, run: RunDir, manifest: Manifest, resumed: bool) -> Summary:
        states = [self._states[s.shard_id] for s in manifest.shards]
        if not all(c.done for c in states):
            raise CheckpointError(f"run {run.run_id} has unfinished shards after its workers ended")
        as_array = manifest.options["output_kind"] == "json"
        failed_file = merge(run.path, states, Path(manifest.output), as_array)
        summary = self._summary(run, manifest, states, failed_file, resumed)
        manifest = run.set_status(manifest, RunStatus.MERGED, summary=summary.to_dict())
        return self._finish(run, manifest, resumed)

    def _finish(self, run: RunDir, manifest: Manifest, resumed: bool) -> Summary:
        crashpoint("before_clear")
        run.clear_state()
        crashpoint("after_clear")
        manifest = run.set_status(manifest, RunStatus.COMPLETED)
        summary = Summary.from_dict(manifest.summary or {})
        return replace(summary, resumed=resumed, checkpoint_cleared=True)

    def _summary(
        self, run: RunDir, manifest: Manifest, states: list[ShardCheckpoint],
        failed_file: Path | None, resumed: bool,
    ) -> Summary:  # fmt: skip
        elapsed = time.monotonic() - self.started
        here = self._committed_here
        return Summary(
            run_id=run.run_id, status=RunStatus.COMPLETED.value, input=manifest.input.path,
            output=manifest.output, total_items=manifest.total_items,
            processed=sum(c.processed for c in states), failed=sum(c.failed for c in states),
            failed_items_file=str(failed_file) if failed_file else None,
            checkpoint_cleared=True, resumed=resumed, workers=len(manifest.shards),
            concurrency=int(manifest.options["concurrency"]), elapsed_s=round(elapsed, 3),
            items_per_s=round(here / elapsed, 1) if elapsed > 0 else 0.0,
        )  # fmt: skip
