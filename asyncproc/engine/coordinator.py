"""The coordinator: choose or plan the run, hand its units to an executor, merge, finish.

Blocking steps (planning, loading state, the merge) run in worker threads. Every
decision about the run happens while the checkpoint directory's lock is held, and all
work while the run's own lock is held. The coordinator alone writes the manifest: at the
start, at each split (the plan with the new unit) and at the end.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import anyio

from .._errors import (
    AsyncprocError,
    ConfigError,
    FailureLimitError,
    Interrupted,
    LeaseLostError,
    RunError,
    SimulatedCrash,
    again,
    named,
    option,
    unwrap_group,
)
from .._options import Options
from ..limits.gate import Cost, Gate, LimitConfig
from ..processors.loading import Fn, Processor, load_processor
from ..runs.lease import TTL, lost_lease
from ..runs.rundir import RunDir
from ..runs.store import RunStore
from ..storage import faults
from ..storage.faults import CRASH_EXIT
from ..storage.location import Location
from ..storage.records import LineIndex, Manifest, RunStatus, UnitPlan
from .budget import TakeBudget
from .choose import (
    Chosen,
    Wanted,
    check_output,
    existing,
    held_output,
    new_run,
    require_unchanged,
)
from .executor import AfterDeath, Executor, InProcess, Job, RunSetup
from .finish import finish, merge_output
from .livelimits import publish_limits, show_limits
from .loops import running_loop
from .observer import LogProgress, RunObserver
from .scheduler import Scheduler
from .sources import check_input, check_remote_output, plan_input
from .state import RunState, load_state, recut_state
from .stopping import Stopper, StopReason
from .summary import Summary
from .unit import Commit
from .units import Extent, Plan, UnitSpec
from .wire import WorkerSetup

log = logging.getLogger("asyncproc")


@dataclass(frozen=True, slots=True)
class Request:
    """What the caller asked for, before anything was checked against the disk."""

    input: Location  # a local path or an fsspec URL, with the storage options
    output: Location
    processor: str | Fn
    options: Options
    run_store: RunStore  # the checkpoint directory, chosen by the caller (see runs.store)
    new_run: bool = False
    resume: str | None = None
    handle_signals: bool = False
    retry_failed: bool = False
    observer: RunObserver | None = None  # default: progress lines on the log
    executor: Executor | None = None  # default: every unit on this event loop
    headers: dict[str, str] | None = None  # for the http processor; never stored
    cost: Cost | None = None  # an item's cost from Python (else options.cost, a spec)
    exit_on_crash: bool = False  # --simulate-crash exits the process (CLI) instead of raising
    # One process: after a death, rerun what was in flight in careful worker processes
    # (asyncproc.processes.parent.rerun_carefully); None: resume as if nothing happened.
    after_death: AfterDeath | None = None


def _held(output: Location) -> AbstractContextManager[object]:
    """The output held for the whole run: a lock file beside it, or a lease at a URL."""
    if output.is_local:
        return held_output(output.path)
    from ..runs.remote import output_lease  # a local run never loads remote storage

    return output_lease(output)


class Coordinator:
    """One invocation of a run: fresh or resumed."""

    def __init__(self, request: Request) -> None:
        self.request = request
        self.started = time.monotonic()
        self._stopper = Stopper(request.options.grace)
        self._failure_limit = request.options.failure_limit()
        self._observer: RunObserver = request.observer or LogProgress()
        self._executor: Executor = request.executor or InProcess()
        self._committed_here = self._failed_here = 0
        self._after_death = 0  # lanes for a careful pass after a death (0: none due)
        self._dead: Manifest | None = None  # the manifest as the dead invocation left it
        self._last_error: str | None = None
        self._gate = Gate(LimitConfig.from_options(request.options), request.cost)
        self.store = request.run_store

    async def run(self) -> Summary:
        req = self.request
        processor = load_processor(req.processor, req.options.processor_args, req.headers)
        check_input(req.input)
        if req.output.is_local:  # a URL input is never the local output: check its folder
            check_output(req.output.path, req.input.local or req.output.path.parent)
        else:
            check_remote_output(req.output, req.input)
        resolved = req.options.resolved(req.input.given, req.output.given)
        options = replace(resolved, processor=processor.spec)
        wanted = Wanted(req.input, req.output, options, req.new_run, req.resume, req.retry_failed)
        with _held(req.output):  # for the whole run: one writer per output
            self.store.prepare()
            async with self._executor.started():
                summary = await self._run(wanted, processor, options)
        return replace(summary, checkpoint_dir=self.store.where)

    async def _run(self, wanted: Wanted, processor: Processor, options: Options) -> Summary:
        req = self.request
        with ExitStack() as stack:
            chosen = await anyio.to_thread.run_sync(self._choose, wanted, stack)
            if chosen.manifest.status is RunStatus.COMPLETED:  # done before: say so
                summary = replace(Summary.from_dict(chosen.manifest.summary or {}), resumed=True)
            else:
                summary = await self._work(chosen, processor, options)
            if req.retry_failed:  # also clears what an interrupted retry left
                from .replay.failed import retry_failed  # loaded only for --retry-failed

                summary = await retry_failed(
                    chosen.run, processor, options, summary, self._gate, req.input.options
                )
            return summary

    def _choose(self, wanted: Wanted, stack: ExitStack) -> Chosen:
        with self.store.directory_lock():
            chosen = existing(self.store, wanted) or new_run(self.store, wanted)
            stack.enter_context(chosen.run.locked())
        self.store.noted(chosen.run.run_id)  # so `asyncproc list` finds it anywhere
        return chosen

    # -- working ---------------------------------------------------------------------------

    async def _work(self, chosen: Chosen, processor: Processor, options: Options) -> Summary:
        run, manifest = chosen.run, chosen.manifest
        if manifest.status is RunStatus.MERGED:
            return await anyio.to_thread.run_sync(finish, run, manifest, chosen.resumed)
        self._require_reachable(run)
        workers = self._workers(manifest, options)
        self._after_death = self._followed_death(chosen, options)
        state = await anyio.to_thread.run_sync(load_state, run, manifest, self._indexer(manifest))
        state = await anyio.to_thread.run_sync(recut_state, state, workers)
        self._manifest = await anyio.to_thread.run_sync(
            self._record_start, run, manifest, options, state, workers
        )
        try:
            state = await self._execute(run, state, processor, options, workers)
        except BaseExceptionGroup as group:
            cause = unwrap_group(group)
            if not isinstance(cause, SimulatedCrash):  # a crash writes nothing more
                await self._stopped(run, RunStatus.FAILED, str(cause))
            raise cause from (None if cause is group else group)
        except SimulatedCrash:
            raise
        except (AsyncprocError, OSError) as exc:
            await self._stopped(run, RunStatus.FAILED, str(exc))
            raise
        if self._stopper.reason is not None:
            raise await self._stopped_early(run, state, self._stopper.reason)
        manifest = self._manifest
        await anyio.to_thread.run_sync(
            require_unchanged, manifest.input, run.run_id, "while", self.request.input.options
        )
        return await anyio.to_thread.run_sync(
            self._merge_and_finish, run, state, workers, chosen.resumed
        )

    def _followed_death(self, chosen: Chosen, options: Options) -> int:
        """After a death in one process (the manifest still says running: nothing recorded
        how the last invocation ended), the lanes it had, for the careful rerun of what
        they may have had in flight (:data:`Request.after_death`); 0: none is due."""
        if not isinstance(self._executor, InProcess) or self.request.after_death is None:
            return 0
        if chosen.run.url is None:  # worker processes could not find it (a memory store)
            return 0
        died = chosen.resumed and chosen.manifest.status is RunStatus.RUNNING
        if not died or options.simulate_crash is not None:
            return 0
        self._dead = chosen.manifest
        before = chosen.manifest.options.get("concurrency")
        return max(options.concurrency, before if isinstance(before, int) else 0)

    def _caught(self, jobs: list[Job]) -> list[Job]:
        """The units the dead invocation was working on: those it committed, and as many
        of the rest as its other slots took (the next ones in order, as now)."""
        dead = self._dead
        if dead is None:
            return jobs
        since = dead.resumed_at or 0.0
        busy = [j for j in jobs if j[1].generation > 0 and j[1].updated_at >= since]
        slots = dead.options.get("workers")
        left = (slots if isinstance(slots, int) else len(jobs)) - len(busy)
        return busy + [j for j in jobs if j not in busy][: max(0, left)]

    def _indexer(self, manifest: Manifest) -> Callable[[], LineIndex]:
        """Index the input again (one read of it), for a run whose index is not its own."""
        fmt = str(manifest.options.get("format") or "text")
        return lambda: plan_input(self.request.input, lambda _: 1, fmt).index

    def _require_reachable(self, run: RunDir) -> None:
        """Units in other processes find the run by its path or URL: it must have one."""
        if run.url is None and not isinstance(self._executor, InProcess):
            raise ConfigError(
                f"run {run.run_id} lives in {self.store.where}, which only this process can "
                "reach; run it on this event loop (processes=1, no engine=), or give a "
                f"{named('checkpoint_dir')} on disk or at a URL"
            )

    def _workers(self, manifest: Manifest, options: Options) -> int:
        """Units worked on at once: as asked now, else as the run was planned."""
        planned = int(manifest.options.get("workers", len(manifest.units)))
        wanted = max(options.workers or planned, self._executor.processes)
        return max(wanted, int(getattr(self._executor, "units", 0)))  # Dask: cut up front

    def _record_start(
        self, run: RunDir, manifest: Manifest, options: Options, state: RunState, workers: int
    ) -> Manifest:
        """Record this invocation's options (and a re-cut plan) before any work, and when it
        began with how much done (status measures throughput over running time only)."""
        stored = {**options.to_dict(), "workers": workers}
        return run.set_status(
            manifest, RunStatus.RUNNING, options=stored, units=state.plan.units,
            resumed_at=time.time(), done_at_resume=state.done,
        )  # fmt: skip

    async def _execute(
        self, run: RunDir, state: RunState, processor: Processor, options: Options, workers: int
    ) -> RunState:
        budget = self._crash_budget(options)
        scheduler = Scheduler(
            state.plan, state.index, dict(state.states),
            spec_for=partial(self._spec, run, options),
            record=partial(self._record_plan, run),
            stopping=lambda: self._stopper.reason is not None,
            on_commit=self._on_commit, splits=budget is None,
        )  # fmt: skip
        setup = replace(self._setup(run, processor, options, workers), budget=budget)
        self._observer.started(state.plan.total_items, state.done, state.failed)
        try:
            async with anyio.create_task_group() as outer:
                if self.request.handle_signals:
                    outer.start_soon(self._stopper.watch_signals)
                if self._gate.config.configured:
                    outer.start_soon(publish_limits, run, self._gate)
                    show_limits(self._observer, self._gate)
                async with anyio.create_task_group() as tg:
                    self._stopper.scope = tg.cancel_scope
                    tg.start_soon(self._run_units, run, scheduler, setup)
                outer.cancel_scope.cancel()
        finally:
            self._observer.stopped()
        return RunState(scheduler.plan, state.index, scheduler.states)

    async def _run_units(self, run: RunDir, scheduler: Scheduler, setup: RunSetup) -> None:
        if self._after_death and self.request.after_death is not None:
            log.warning(
                "the last invocation of run %s ended without a word (killed, or a crash); "
                "rerunning what it had in flight in worker processes first, to find any item "
                "that kills its process", run.run_id,
            )  # fmt: skip
            await self.request.after_death(scheduler, setup, self._caught(scheduler.waiting()),
                                           self._after_death)  # fmt: skip
        await self._executor.run(scheduler, setup)

    def _crash_budget(self, options: Options) -> TakeBudget | None:
        """``--simulate-crash N`` in one process: units take N items between them, so the
        crash lands after exactly N commits (no split may return a taken line)."""
        if options.simulate_crash is None or self._executor.processes > 1:
            return None
        return TakeBudget(options.simulate_crash)

    def _setup(self, run: RunDir, processor: Processor, options: Options, workers: int) -> RunSetup:
        shared = WorkerSetup(
            processor=processor.spec, processor_args=options.processor_args,
            format=str(options.format), output_kind=str(options.output_kind),
            retries=options.retries, timeout=options.timeout,
            fingerprint=self._manifest.input.fingerprint, workers=workers,
            concurrency=options.concurrency, threads=options.threads or options.concurrency,
            loop=running_loop(), grace=self._stopper.grace, headers=self.request.headers,
            stall_after=options.stall_warning, input_path=self._manifest.input.path,
            faults=faults.armed_spec(),
        )  # fmt: skip
        return RunSetup.made(
            shared, lambda spec: run.unit_store(spec.unit_id, durable=spec.durable),
            self._stopper, self._gate, processor=processor,
        )  # fmt: skip

    def _spec(self, run: RunDir, options: Options, unit: UnitPlan, extent: Extent) -> UnitSpec:
        return UnitSpec(
            run_id=run.run_id, run_dir=run.url or "", unit_id=unit.unit_id,
            start=unit.start, end=extent.end, first_index=unit.first_index,
            end_index=extent.end_index, input_path=self._manifest.input.path,
            fingerprint=self._manifest.input.fingerprint, format=str(options.format),
            output_kind=str(options.output_kind), batch_size=options.batch_size,
            retries=options.retries, timeout=options.timeout,
            commit_interval=options.commit_interval, durable=options.durable,
            # --simulate-crash wants the crash on the exact item count: no coalescing.
            one_batch_per_commit=options.simulate_crash is not None,
            storage_options=self.request.input.options,
        )  # fmt: skip

    async def _record_plan(self, run: RunDir, plan: Plan) -> None:
        """A split's durable record: the manifest with the new unit in its plan."""
        self._still_held(run)
        manifest = replace(self._manifest, units=plan.units, updated_at=time.time())
        await anyio.to_thread.run_sync(run.write, manifest)
        self._manifest = manifest

    # -- accounting ------------------------------------------------------------------------

    def _still_held(self, run: RunDir) -> None:
        """Write nothing more of a run another process took over (a lease that lapsed)."""
        name = lost_lease()
        if name is not None:
            raise LeaseLostError(
                f"another process took run {run.run_id} over while this one could not renew "
                f"its lease {name} (stalled or cut off for over {TTL:g} s); this one stopped "
                "without writing more: see `asyncproc status` for how the run stands, and "
                f"{again()} if it is not finished"
            )

    def _on_commit(self, commit: Commit) -> None:
        if lost_lease() is not None:  # stop at once; the merge and the manifest are refused
            self._stopper.request(StopReason(None, "the run was taken over by another process"))
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
                f"{option('max_failures', str(limit))} (last error: {self._last_error})"
            )))  # fmt: skip
        elif self._all_failed_so_far():
            self._stopper.request(StopReason(None, (
                f"the first {self.request.options.early_stop} items all failed "
                f"({self._committed_here} tried so far, none succeeded; last error: "
                f"{self._last_error}); to go on regardless, give {option('early_stop', 0)}"
            )))  # fmt: skip

    def _all_failed_so_far(self) -> bool:
        """The first ``early_stop`` items of this invocation all failed: something is broken."""
        first = self.request.options.early_stop
        done = self._committed_here
        return 0 < first <= done and self._failed_here == done

    def _simulated_crash(self, run_id: str) -> None:
        """Stop hard, as a crash would: the CLI exits the process, Python gets an error."""
        where = self.store.where
        if not self.request.exit_on_crash:
            raise SimulatedCrash(
                f"simulated crash after {self._committed_here} committed items in run "
                f"{run_id} (checkpoint directory {where}); call again without "
                "simulate_crash to resume"
            )
        sys.stderr.write(
            f"asyncproc: simulated crash after {self._committed_here} committed items in run "
            f"{run_id} (checkpoint directory {where}); run the same command again (without "
            "--simulate-crash) to resume\n"
        )
        sys.stderr.flush()
        os._exit(CRASH_EXIT)

    # -- stopping --------------------------------------------------------------------------

    async def _stopped(self, run: RunDir, status: RunStatus, why: str) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._mark, run, status, why)

    def _mark(self, run: RunDir, status: RunStatus, why: str) -> None:
        self._still_held(run)
        try:
            run.set_status(self._manifest, status, summary={"error": why})
        except OSError:
            log.warning("could not record in its manifest why run %s stopped", run.run_id)

    async def _stopped_early(self, run: RunDir, state: RunState, reason: StopReason) -> RunError:
        resume = f"{again()} to resume"
        where = f"run {run.run_id} (checkpoint directory {self.store.where})"
        if reason.signum is None:
            await self._stopped(run, RunStatus.FAILED, reason.message)
            return FailureLimitError(
                f"{reason.message}; {where} stopped after committing {state.done} items; "
                f"fix the cause and {resume}"
            )
        await self._stopped(run, RunStatus.INTERRUPTED, reason.message)
        return Interrupted(f"{reason.message}; {where} has {state.done} of "
                           f"{state.plan.total_items} items committed; {resume}",
                           signum=reason.signum)  # fmt: skip

    # -- finishing (blocking, in a thread) -------------------------------------------------

    def _merge_and_finish(
        self, run: RunDir, state: RunState, workers: int, resumed: bool
    ) -> Summary:
        self._still_held(run)
        failed_file = merge_output(run, self._manifest, state, self.request.input.options)
        summary = self._summary(run, state, workers, failed_file, resumed)
        manifest = run.set_status(self._manifest, RunStatus.MERGED, summary=summary.to_dict())
        return finish(run, manifest, resumed)

    def _summary(
        self, run: RunDir, state: RunState, workers: int, failed_file: Path | str | None,
        resumed: bool,
    ) -> Summary:  # fmt: skip
        elapsed = time.monotonic() - self.started
        manifest, here = self._manifest, self._committed_here
        return Summary(
            run_id=run.run_id, status=RunStatus.COMPLETED, input=manifest.input.path,
            output=manifest.output, total_items=manifest.total_items,
            processed=state.done - state.failed, failed=state.failed,
            failed_items_file=str(failed_file) if failed_file else None,
            checkpoint_cleared=True, resumed=resumed, workers=workers,
            concurrency=int(manifest.options["concurrency"]), elapsed_s=round(elapsed, 3),
            items_per_s=round(here / elapsed, 1) if elapsed > 0 else 0.0,
            processes=self._executor.processes, units=len(state.plan),
            concurrency_limit=self._gate.limit, rejected=self._gate.rejected,
        )  # fmt: skip
