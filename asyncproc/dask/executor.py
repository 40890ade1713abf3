"""The ``--engine dask`` executor: every unit is one Dask task, the coordinator stays here.

The coordinator keeps what it keeps with ``--processes``: the run lock, planning,
progress, the failure limit, SIGINT/SIGTERM and the final merge. This executor:

* starts a ``LocalCluster`` sized to the machine (one single-threaded worker process per
  core, Dask's statistical profiler off), or joins the scheduler named by ``--scheduler``;
* checks every worker up front: asyncproc importable and the same version, the
  processor importable (a ``file.py:function`` is uploaded with
  :meth:`~distributed.Client.upload_file` when the workers cannot load it by path);
* submits each unit as a task keyed by run, unit and starting offset (:func:`.wire.task_key`):
  a coordinator restarted against a running cluster asks for the same keys and Dask
  hands back the running task instead of starting a duplicate;
* hears every durable commit as an event on the run's topic (progress and the failure
  limit), and stops tasks gracefully through a Dask ``Event``.

**No live splits.** A unit task retried by Dask after a worker death, or run twice by
graceful retirement, is a second live attempt at the same range; a cap would have to
reach exactly one of them, and the other would go on past the new end. Instead the run
is cut up front into :data:`UNITS_PER_THREAD` units per worker thread (at indexed
points, like any re-cut), so the cluster is balanced to within a quarter of a unit per
thread and a unit's end never moves while a task runs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup

from .._errors import ConfigError, WorkerProcessError, unwrap_group
from ..engine.executor import AfterDeath, RunSetup, WorkSource
from ..engine.units import UnitSpec
from ..engine.wire import decode_checkpoint, decode_commit, encode_checkpoint
from ..storage.records import UnitCheckpoint
from .checks import shippable_file, try_processor, worker_version
from .errors import killed_workers, task_error
from .task import run_unit
from .wire import TaskArgs, stop_event, task_key, topic

log = logging.getLogger("asyncproc")

UNITS_PER_THREAD = 4
INSTALL = "pip install 'asyncproc[dask]'"
# Dask's statistical profiler wakes each worker's event loop every 10 ms to sample the
# unit's thread, taking the GIL from it each time: off, the cpu benchmark runs 6% faster
# (worker CPU per item 9% lower). Only a dashboard reads it, and our LocalCluster has none.
LOCAL_WORKER_CONFIG = {"distributed.worker.profile.enabled": False}  # dotted: set in the worker


def import_distributed() -> Any:
    """The ``distributed`` package, or one line saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise ConfigError(f"--engine dask needs Dask distributed: {INSTALL}") from None
    return distributed


def local_cluster_options(workers: int) -> dict[str, Any]:
    """The ``LocalCluster`` asyncproc starts without ``--scheduler`` (the benchmark starts
    the same one, so that its figures describe this cluster)."""
    return {
        "n_workers": workers, "threads_per_worker": 1, "processes": True,
        "host": "127.0.0.1", "dashboard_address": None, "config": LOCAL_WORKER_CONFIG,
    }  # fmt: skip


def local_workers() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


class DaskExecutor:
    """Units as Dask tasks on a local or a running cluster."""

    def __init__(
        self, scheduler: str | None = None, *, workers: int | None = None,
        after_death: AfterDeath | None = None,
    ) -> None:  # fmt: skip
        self.scheduler = scheduler
        self.after_death = after_death  # a unit that kept killing workers: find the item
        self.processes = 1  # Dask workers, known once started
        self.units = 1  # units to cut the run into, known once started
        self._local_workers = workers
        self._client: Any = None
        self._threads = 1

    @asynccontextmanager
    async def started(self) -> AsyncIterator[None]:
        """Start (or reach) the cluster while nothing else runs yet; close it at the end."""
        distributed = import_distributed()
        async with AsyncExitStack() as stack:
            stack.enter_context(_quiet_client())
            address: Any = self.scheduler
            if address is None:
                address = await self._local_cluster(distributed, stack)
            self._client = await _connect(distributed, address, stack)
            await self._measure()
            try:
                yield
            finally:
                self._client = None

    async def _local_cluster(self, distributed: Any, stack: AsyncExitStack) -> Any:
        options = local_cluster_options(self._local_workers or local_workers())
        cluster = await distributed.LocalCluster(**options, asynchronous=True)
        stack.push_async_callback(cluster.close)
        return cluster

    async def _measure(self) -> None:
        nthreads: dict[str, int] = await self._client.nthreads()
        if not nthreads:
            raise ConfigError(
                f"the Dask cluster at {self.scheduler} has no workers; start some, then retry"
            )
        self.processes = len(nthreads)
        self._threads = sum(nthreads.values())
        self.units = UNITS_PER_THREAD * self._threads

    async def run(self, work: WorkSource, setup: RunSetup) -> None:
        processor = await self._checked_processor(setup)
        runner = _Runner(self._client, work, setup, processor, self._threads, self.after_death)
        try:
            await runner.run()
        except ExceptionGroup as group:
            raise unwrap_group(group) from None

    # -- checks up front -----------------------------------------------------------------

    async def _checked_processor(self, setup: RunSetup) -> str:
        """The processor spec the workers can load; ConfigError naming a worker otherwise."""
        await self._check_versions()
        spec, args = setup.processor.spec, setup.shared.processor_args
        problems = await self._processor_problems(spec, args)
        shipped = shippable_file(spec) if problems else None
        if shipped is not None:
            path, spec = shipped
            await self._client.upload_file(str(path), load=False)
            problems = await self._processor_problems(spec, args)
        if problems:
            address, why = next(iter(problems.items()))
            raise ConfigError(
                f"processor {setup.processor.spec} cannot be loaded on Dask worker {address} "
                f"({why}); install it on the workers, or name it as path/to/file.py:function "
                "so that asyncproc ships the file"
            )
        return spec

    async def _check_versions(self) -> None:
        mine = worker_version()
        try:
            found: dict[str, str] = await self._client.run(worker_version)
        except Exception as exc:
            raise ConfigError(
                f"asyncproc is not importable on the Dask workers ({type(exc).__name__}: "
                f"{exc}); install asyncproc=={mine} there"
            ) from None
        for address, version in sorted(found.items()):
            if version != mine:
                raise ConfigError(
                    f"Dask worker {address} has asyncproc {version}, this coordinator "
                    f"{mine}; install the same version on every worker"
                )

    async def _processor_problems(self, spec: str, args: dict[str, str]) -> dict[str, str]:
        found: dict[str, str | None] = await self._client.run(try_processor, spec, args)
        return {address: why for address, why in sorted(found.items()) if why is not None}


QUIET_LOGS = ("distributed.client", "distributed.batched")


@contextmanager
def _quiet_client() -> Iterator[None]:
    """Keep the client's own error logs (a traceback per lost connection, and one from its
    batched sender when a failing run closes the client) off stderr: a lost scheduler or a
    failed task ends the run with one line of ours (:func:`.errors.task_error`)."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


async def _connect(distributed: Any, address: Any, stack: AsyncExitStack) -> Any:
    """An asynchronous client on this event loop; one line if the scheduler is unreachable
    (after Dask's ``distributed.comm.timeouts.connect``, 30 s by default)."""
    try:
        client = await distributed.Client(address, asynchronous=True, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(
            f"cannot reach the Dask scheduler at {address} ({exc}); check --scheduler and "
            "that the scheduler is running"
        ) from None
    stack.push_async_callback(client.close)
    return client


def _share(total: int, threads: int) -> int:
    return max(1, -(-total // threads))


class _Runner:
    """One invocation's units on the cluster: slots that submit a task each and await it."""

    def __init__(
        self, client: Any, work: WorkSource, setup: RunSetup, processor: str, threads: int,
        after_death: AfterDeath | None = None,
    ) -> None:  # fmt: skip
        self._client, self._work, self._setup = client, work, setup
        self._after_death = after_death
        self._latest: dict[int, UnitCheckpoint] = {}  # each unit's last commit heard of
        self._killers: set[str] = set()  # task keys that kept killing their workers
        self._processor = processor
        self._lanes = _share(setup.shared.concurrency, threads)
        self._threads = _share(setup.shared.threads, threads)
        self._run_id: str | None = None
        self._stopped = False
        self._attaching = anyio.Lock()

    async def run(self) -> None:
        stopper = self._setup.stopper
        try:
            async with anyio.create_task_group() as tg:
                stop = _DaskStop(self, tg)
                if not stopper.attach(stop):
                    return
                try:
                    async with anyio.create_task_group() as slots:
                        for _ in range(self._setup.shared.workers):
                            slots.start_soon(self._slot)
                finally:
                    stopper.detach(stop)
        finally:
            if self._run_id is not None:
                self._client.unsubscribe_topic(topic(self._run_id))

    async def _attach(self, run_id: str) -> None:
        """Once per run: hear its commits, and forget a stop left by an earlier invocation."""
        async with self._attaching:
            if self._run_id is not None:
                return
            self._run_id = run_id
            self._client.subscribe_topic(topic(run_id), self._on_event)
            if not self._stopped:
                await self._event().clear()

    def _event(self) -> Any:
        from distributed import Event

        assert self._run_id is not None
        return Event(stop_event(self._run_id), client=self._client)  # type: ignore[no-untyped-call]

    def _on_event(self, event: tuple[float, dict[str, Any]]) -> None:
        commit = decode_commit(event[1], "Dask commit")
        self._latest[commit.unit_id] = commit.checkpoint
        self._work.committed(commit)

    async def _slot(self) -> None:
        while (job := await self._work.next_unit()) is not None:
            spec, start = job
            await self._attach(spec.run_id)
            try:
                final = await self._submit(spec, start)
            except WorkerProcessError as exc:
                if not await self._killed_workers(spec, start, exc):
                    raise
                continue  # given back to the run from its new checkpoint
            self._work.finished(spec.unit_id, final)

    async def _killed_workers(
        self, spec: UnitSpec, start: UnitCheckpoint, exc: WorkerProcessError
    ) -> bool:
        """A unit whose task kept killing its workers: rerun what it may have had in
        flight in careful worker processes here (:mod:`asyncproc.processes.poison`),
        dead-lettering an item that kills one of them too, then hand it back to the run.
        False: nothing to do that with, or not that kind of failure."""
        key = task_key(spec, start)
        if self._after_death is None or not killed_workers(exc) or key in self._killers:
            return False  # a second time from the same start: the careful rerun found none
        self._killers.add(key)
        log.warning("%s; rerunning what it had in flight in careful workers here", exc)
        begin = self._latest.get(spec.unit_id, start)
        if begin.offset < start.offset:
            begin = start
        await self._after_death(self._work, self._setup, [(spec, begin)], self._lanes)
        return True

    async def _submit(self, spec: UnitSpec, start: UnitCheckpoint) -> UnitCheckpoint:
        from dataclasses import asdict, replace

        setup = replace(
            self._setup.shared, processor=self._processor, workers=1, concurrency=self._lanes,
            threads=self._threads, limits=None, headers=None, stall_after=0.0, faults="",
        )  # fmt: skip
        args = TaskArgs(spec=asdict(spec), start=encode_checkpoint(start), setup=setup)
        future = self._client.submit(run_unit, args.to_dict(), key=task_key(spec, start))
        try:
            text: str = await future
        except Exception as exc:  # the task's own failure: one line, never a traceback
            raise task_error(spec, exc) from None
        return decode_checkpoint(text, f"unit {spec.unit_id} result")

    async def stop_tasks(self) -> None:
        self._stopped = True
        if self._run_id is not None:
            await self._event().set()


class _DaskStop:
    """Stands for the run's tasks in the :class:`Stopper`: a stop sets the run's event."""

    def __init__(self, runner: _Runner, tg: TaskGroup) -> None:
        self._runner, self._tg = runner, tg

    def stop(self, grace: float) -> None:
        del grace  # each task was handed the run's grace
        self._tg.start_soon(self._runner.stop_tasks)
