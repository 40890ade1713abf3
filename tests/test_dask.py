"""``--engine dask`` on real clusters started here: end to end, a SIGKILLed worker, two
live attempts at one unit, a threads-only cluster, and the checks made up front.

One 2-process ``LocalCluster`` on loopback serves the module (it starts in about a
second); each run joins it with ``scheduler=``, as ``--scheduler`` would.
"""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import numbered_lines, run_cli, wait_until, write_lines
from faultkit import refused
from v2kit import start

import asyncproc
from asyncproc._errors import ConfigError
from asyncproc._options import Options
from asyncproc.dask.task import run_unit
from asyncproc.dask.wire import TaskArgs
from asyncproc.engine.choose import Wanted, new_run
from asyncproc.engine.merge import committed_chunks
from asyncproc.engine.units import UnitSpec, first_checkpoint
from asyncproc.engine.wire import WorkerSetup, encode_checkpoint
from asyncproc.runs.store import run_store
from asyncproc.storage.localfs import LocalStorage
from asyncproc.storage.location import Location
from asyncproc.storage.records import UnitCheckpoint

distributed = pytest.importorskip("distributed")

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),  # sockets of distributed's own
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]

PROCESSOR = """
import os, pathlib, time
from collections import Counter

import asyncproc

MARK = pathlib.Path({mark!r})
CALLS = {calls!r}
seen = Counter()


def work(item):
    fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (item + "\\n").encode())
    os.close(fd)
    info = asyncproc.current_item()
    seen[info.unit] += 1
    if seen[info.unit] == 60 and not MARK.exists():  # one item, once: wait to be killed
        mine = MARK.with_name(f"mark.{{os.getpid()}}")
        mine.write_text(f"{{os.getpid()}} {{info.unit}}")
        try:  # exclusive: both workers may reach their 60th item at the same moment
            os.link(mine, MARK)
        except FileExistsError:
            return {{"item": item}}
        while True:
            time.sleep(0.05)
    return {{"item": item}}
"""

REFERENCE = """
def work(item):
    return {"item": item}
"""

# Each attempt's first call waits until two attempts (two worker processes) have begun.
TOGETHER = """
import os, pathlib, time

GATE = pathlib.Path({gate!r})
waited = False


def work(item):
    global waited
    if not waited:
        (GATE / str(os.getpid())).touch()
        deadline = time.monotonic() + 30
        while len(list(GATE.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        waited = True
    return {{"item": item}}
"""


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=":0",
    ) as local:  # fmt: skip
        yield local


def clean_output(tmp_path: Path, source: Path, suffix: str = ".jsonl") -> bytes:
    """The bytes a clean one-process run gives."""
    reference = tmp_path / "reference.py"
    reference.write_text(REFERENCE)
    out = tmp_path / f"clean{suffix}"
    asyncproc.run_file(source, out, f"{reference}:work", checkpoint_dir=tmp_path / "clean-ck",
                       quiet=True)  # fmt: skip
    return out.read_bytes()


def test_a_run_on_the_cluster_is_byte_identical(tmp_path: Path, cluster: Any) -> None:
    source = write_lines(tmp_path / "in.txt", numbered_lines(3000))
    out = tmp_path / "out.json"
    summary = asyncproc.run_file(source, out, "text_stats", engine="dask",
                                 scheduler=cluster.scheduler_address, batch_size=50,
                                 checkpoint_dir=tmp_path / "ck", quiet=True)  # fmt: skip
    local = tmp_path / "local.json"
    asyncproc.run_file(source, local, "text_stats", checkpoint_dir=tmp_path / "ck2", quiet=True)
    assert out.read_bytes() == local.read_bytes()
    assert (summary.processes, summary.units, summary.processed) == (2, 8, 3000)


def test_a_killed_worker_costs_only_its_units_uncommitted_work(
    tmp_path: Path, cluster: Any
) -> None:
    """SIGKILL the worker process holding an item after its unit's first commit: Dask
    runs the task again, it resumes from that checkpoint, and the bytes are clean."""
    source = write_lines(tmp_path / "in.txt", numbered_lines(3000))
    mark, calls = tmp_path / "mark", tmp_path / "calls"
    processor = tmp_path / "slow.py"
    processor.write_text(PROCESSOR.format(mark=str(mark), calls=str(calls)))
    out, ck = tmp_path / "out.jsonl", tmp_path / "ck"
    result: dict[str, Any] = {}

    def coordinator() -> None:
        try:
            result["summary"] = asyncproc.run_file(
                source, out, f"{processor}:work", engine="dask", batch_size=10,
                scheduler=cluster.scheduler_address, checkpoint_dir=ck, quiet=True,
            )  # fmt: skip
        except BaseException as exc:  # reported by the assertion below
            result["error"] = exc

    thread = threading.Thread(target=coordinator)
    thread.start()
    wait_until(mark.exists, "an item to hold its worker")
    pid, unit = map(int, mark.read_text().split())
    committed = wait_until_committed(ck, unit)
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert "error" not in result, result.get("error")
    assert out.read_bytes() == clean_output(tmp_path, source)
    counts = Counter(calls.read_text().splitlines())
    assert set(counts) == set(numbered_lines(3000))
    done_before_kill = numbered_lines(3000)[committed.next_index - 50 : committed.next_index]
    assert all(counts[item] == 1 for item in done_before_kill), "the unit restarted"


def wait_until_committed(ck: Path, unit: int) -> UnitCheckpoint:
    """The unit's first checkpoint past its start, once it is on disk."""
    found: list[UnitCheckpoint] = []

    def look() -> bool:
        for path in ck.glob(f"run_*/units/{unit:04d}.*.ckpt"):
            checkpoint = UnitCheckpoint.from_bytes(path.read_bytes(), str(path))
            if checkpoint.processed >= 50:
                found.append(checkpoint)
                return True
        return False

    wait_until(look, f"unit {unit} to commit 50 items")
    return found[0]


def test_two_live_attempts_at_one_unit_cannot_corrupt_it(tmp_path: Path, cluster: Any) -> None:
    """The same unit submitted twice at once under two keys (what graceful retirement
    does): each attempt writes its own segments, and either one's final checkpoint
    merges to the clean bytes."""
    source = write_lines(tmp_path / "in.txt", numbered_lines(2000))
    processor, gate = tmp_path / "together.py", tmp_path / "gate"
    gate.mkdir()
    processor.write_text(TOGETHER.format(gate=str(gate)))
    args = unit_task(tmp_path, source, f"{processor}:work")
    with distributed.Client(cluster.scheduler_address, set_as_default=False) as client:
        client.wait_for_workers(2)  # a worker killed by an earlier test is back
        first = client.submit(run_unit, args, key="attempt-a", workers=[_workers(client)[0]])
        second = client.submit(run_unit, args, key="attempt-b", workers=[_workers(client)[1]])
        texts = [f.result(timeout=90) for f in (first, second)]
        finals = [UnitCheckpoint.from_bytes(text.encode(), "final") for text in texts]
    assert len(list(gate.iterdir())) == 2, "the attempts did not run at the same time"
    names = [c.segments[-1].name for c in finals]
    assert names[0] != names[1]
    assert all(len(c.segments) == 1 for c in finals), "an attempt resumed from the other"
    clean = clean_output(tmp_path, source)
    storage = LocalStorage(tmp_path / "ck" / args["spec"]["run_id"])
    for final in finals:
        assert b"".join(committed_chunks(storage, [final], dead=False)) == clean


def unit_task(tmp_path: Path, source: Path, processor: str) -> dict[str, Any]:
    """A planned one-unit run of ``source`` under ``tmp_path/ck``, and its unit's task
    arguments (no commit before the end: a whole attempt is one commit)."""
    out, ck = tmp_path / "out.jsonl", tmp_path / "ck"
    ck.mkdir()
    options = Options(processor=processor, workers=1).resolved(source, out)
    chosen = new_run(run_store(ck), Wanted(Location(source), Location(out), options))
    unit, manifest = chosen.manifest.units[0], chosen.manifest
    spec = UnitSpec(
        run_id=chosen.run.run_id, run_dir=str(chosen.run.path), unit_id=unit.unit_id,
        start=unit.start, end=manifest.input.size, first_index=0,
        end_index=manifest.total_items, input_path=str(source),
        fingerprint=manifest.input.fingerprint, format="text", output_kind="jsonl",
        batch_size=100_000, retries=0, timeout=None, commit_interval=60.0,
    )  # fmt: skip
    setup = WorkerSetup(
        processor=processor, processor_args={}, format=spec.format, output_kind=spec.output_kind,
        retries=spec.retries, timeout=spec.timeout, fingerprint=spec.fingerprint, workers=1,
        concurrency=4, threads=4, loop="asyncio", grace=1.0,
    )  # fmt: skip
    start = encode_checkpoint(first_checkpoint(spec.run_id, unit))
    return TaskArgs(spec=asdict(spec), start=start, setup=setup).to_dict()


def _workers(client: Any) -> list[str]:
    return sorted(client.scheduler_info()["workers"])


def test_an_in_process_threads_cluster(tmp_path: Path) -> None:
    """Tasks on threads of this very process: nothing may assume the main thread."""
    source = write_lines(tmp_path / "in.txt", numbered_lines(500))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=":0") as threads:  # fmt: skip
        summary = asyncproc.run_file(source, tmp_path / "out.jsonl", "identity", engine="dask",
                                     scheduler=threads.scheduler_address, batch_size=20,
                                     checkpoint_dir=tmp_path / "ck", quiet=True)  # fmt: skip
    local = tmp_path / "local.jsonl"
    asyncproc.run_file(source, local, "identity", checkpoint_dir=tmp_path / "ck2", quiet=True)
    assert (tmp_path / "out.jsonl").read_bytes() == local.read_bytes()
    assert summary.units == 8


def test_a_processor_the_workers_cannot_import_is_refused(
    tmp_path: Path, cluster: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module importable here only (on this process's path, not the workers')."""
    source = write_lines(tmp_path / "in.txt", numbered_lines(10))
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "only_here_xyz.py").write_text(REFERENCE)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    with pytest.raises(ConfigError, match=r"cannot be loaded on Dask worker .*install it"):
        asyncproc.run_file(source, tmp_path / "o.json", "only_here_xyz:work", engine="dask",
                           scheduler=cluster.scheduler_address, checkpoint_dir=tmp_path / "ck",
                           quiet=True)  # fmt: skip


def test_an_unreachable_scheduler_is_one_clear_line(tmp_path: Path) -> None:
    import dask

    source = write_lines(tmp_path / "in.txt", numbered_lines(10))
    with (
        dask.config.set({"distributed.comm.timeouts.connect": "1s"}),
        pytest.raises(
            ConfigError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"
        ),
    ):
        asyncproc.run_file(source, tmp_path / "o.json", engine="dask",
                           scheduler="tcp://127.0.0.1:9", checkpoint_dir=tmp_path / "ck",
                           quiet=True)  # fmt: skip


def test_engine_options_are_checked(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "in.txt", numbered_lines(10))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"scheduler": "tcp://x:1"}, "needs engine='dask'"),
        ({"engine": "dask", "processes": 2}, "drop it for engine='dask'"),
        ({"engine": "spark"}, "unknown engine"),
        ({"engine": "dask", "rate": "10/s"}, "rate cannot be used with engine='dask' yet"),
        ({"engine": "dask", "concurrency": "auto"}, "concurrency='auto' cannot be used"),
    ]
    for options, message in cases:
        with pytest.raises(ConfigError, match=message):
            asyncproc.run_file(source, tmp_path / "o.json", quiet=True, **options)


def test_workers_share_the_run_on_s3(
    tmp_path: Path, cluster: Any, s3_server: Any, s3_bucket: str
) -> None:
    """Input, checkpoints and output on S3: the worker processes reach them with the
    storage options the coordinator was given, nothing else."""
    source = write_lines(tmp_path / "in.txt", numbered_lines(1000))
    base = f"s3://{s3_bucket}/{tmp_path.name}"
    fs = Location(base, s3_server.options()).fs
    fs.pipe_file(f"{s3_bucket}/{tmp_path.name}/in.txt", source.read_bytes())
    summary = asyncproc.run_file(
        f"{base}/in.txt", f"{base}/out.json", "text_stats", engine="dask", batch_size=100,
        scheduler=cluster.scheduler_address, checkpoint_dir=f"{base}/ck",
        storage_options=s3_server.options(), quiet=True,
    )  # fmt: skip
    local = tmp_path / "local.json"
    asyncproc.run_file(source, local, "text_stats", checkpoint_dir=tmp_path / "ck", quiet=True)
    assert fs.cat_file(f"{s3_bucket}/{tmp_path.name}/out.json") == local.read_bytes()
    assert summary.units == 8


# Holds every call after the first 200 of each worker process until a gate file exists.
GATED = """
import os, pathlib, time

GATE = pathlib.Path({gate!r})
calls = 0


def work(item):
    global calls
    calls += 1
    while calls > 200 and not GATE.exists():
        time.sleep(0.01)
    return {{"item": item}}
"""


def test_sigint_stops_the_tasks_gracefully_and_the_run_resumes(
    tmp_path: Path, cluster: Any
) -> None:
    """Ctrl-C is the coordinator's: its tasks on the cluster hear it through a Dask event,
    commit what finished and return; the run says interrupted and resumes to the bytes."""
    source = write_lines(tmp_path / "in.txt", numbered_lines(3000))
    gate = tmp_path / "gate"
    processor = tmp_path / "gated.py"
    processor.write_text(GATED.format(gate=str(gate)))
    args = [
        "run", "--input", source, "--output", tmp_path / "out.jsonl", "--checkpoint",
        tmp_path / "ck", "--processor", f"{processor}:work", "--engine", "dask",
        "--scheduler", cluster.scheduler_address, "--batch-size", "20", "--grace", "1",
    ]  # fmt: skip
    proc = start(args, os.environ, tmp_path)
    wait_until(lambda: "%" in (tmp_path / "stderr").read_text(), "a first commit", proc)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, (tmp_path / "stderr").read_text()
    assert "interrupted by you (SIGINT, Ctrl-C)" in (tmp_path / "stderr").read_text()
    gate.touch()
    done = run_cli(*args, check=0)
    assert '"resumed": true' in done.stdout
    assert (tmp_path / "out.jsonl").read_bytes() == clean_output(tmp_path, source)


# Every call is logged, says the task has begun, and waits for a gate file.
HELD = """
import os, pathlib, time

STARTED, GATE, CALLS = pathlib.Path({started!r}), pathlib.Path({gate!r}), {calls!r}


def work(item):
    fd = os.open(CALLS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    os.write(fd, (item + "\\n").encode())
    os.close(fd)
    STARTED.touch()
    deadline = time.monotonic() + 60
    while not GATE.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    return {{"item": item}}
"""
REATTACH = "asyncproc-reattach"


def _task_on_scheduler(dask_scheduler: Any, key: str) -> tuple[str, int] | None:
    """The scheduler's view of ``key``: its state and how many clients want it."""
    task = dask_scheduler.tasks.get(key)
    return None if task is None else (task.state, len(task.who_wants))


def test_the_same_key_from_two_clients_is_one_task(tmp_path: Path, cluster: Any) -> None:
    """What lets a restarted coordinator reattach: a second client asking for a unit's key
    while the first's task is still running gets that task's result, not a second run.

    The task is held (its processor waits for a gate file) until the scheduler shows it
    running and wanted by both clients: the two submissions overlapped on one task."""
    source = write_lines(tmp_path / "in.txt", numbered_lines(500))
    started, gate, calls = tmp_path / "started", tmp_path / "gate", tmp_path / "calls"
    processor = tmp_path / "held.py"
    processor.write_text(HELD.format(started=str(started), gate=str(gate), calls=str(calls)))
    args = unit_task(tmp_path, source, f"{processor}:work")
    address = cluster.scheduler_address
    with (
        distributed.Client(address, set_as_default=False) as first,
        distributed.Client(address, set_as_default=False) as second,
    ):
        mine = first.submit(run_unit, args, key=REATTACH)
        wait_until(started.exists, "the first client's task to begin")
        theirs = second.submit(run_unit, args, key=REATTACH)

        def both_want_it() -> bool:
            seen = first.run_on_scheduler(_task_on_scheduler, key=REATTACH)
            assert seen is None or seen[0] in {"processing", "waiting", "released"}, seen
            return bool(seen == ("processing", 2))

        wait_until(both_want_it, "one running task wanted by both clients")
        assert not mine.done() and not theirs.done()
        gate.touch()
        results = {mine.result(), theirs.result()}
    assert len(results) == 1
    (final,) = results
    assert len(UnitCheckpoint.from_bytes(final.encode(), "final").segments) == 1
    logged = calls.read_text().splitlines()
    assert sorted(Counter(logged).values()) == [1] * 500, "an item was run twice"


def test_relative_paths_reach_workers_started_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers whose cwd is another directory: the default ``.asyncproc`` and a relative
    --input/--output are resolved by the coordinator, so every worker writes where the
    merge reads (before: the merge found empty segments, on every rerun)."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    project.mkdir()
    elsewhere.mkdir()
    source = write_lines(project / "in.txt", numbered_lines(2000))
    monkeypatch.chdir(elsewhere)  # the workers start here
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as local:  # fmt: skip
        monkeypatch.chdir(project)
        proc = run_cli("run", "--input", "in.txt", "--output", "out.jsonl", "--engine", "dask",
                       "--scheduler", local.scheduler_address, "--batch-size", "100",
                       cwd=project)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    local = tmp_path / "local.jsonl"
    asyncproc.run_file(source, local, "text_stats", checkpoint_dir=tmp_path / "ck", quiet=True)
    assert (project / "out.jsonl").read_bytes() == local.read_bytes()
    assert list(elsewhere.iterdir()) == [], "a worker wrote relative to its own directory"


CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def test_credentials_the_workers_lack_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_server: Any, s3_bucket: str
) -> None:
    """S3 credentials only in the coordinator's environment: the workers cannot sign a
    request. One line saying to give the workers credentials, not a 300-line group."""
    base = f"s3://{s3_bucket}/{tmp_path.name}"
    Location(base, s3_server.options()).fs.pipe_file(
        f"{s3_bucket}/{tmp_path.name}/in.txt", "\n".join(numbered_lines(300)).encode()
    )
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no wait for a metadata server
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None,
    ) as local:  # fmt: skip
        proc = run_cli("run", "--input", f"{base}/in.txt", "--output", f"{base}/out.jsonl",
                       "--checkpoint", f"{base}/ck", "--engine", "dask",
                       "--scheduler", local.scheduler_address,
                       "--storage-option", f"endpoint_url={s3_server.endpoint}",
                       env=CREDENTIALS)  # fmt: skip
    refused(proc, 1, "credentials", "Dask workers")


BLOCKS = """
import pathlib, time

MARK = pathlib.Path({mark!r})


def work(item):
    if item.startswith("line 000050 "):
        MARK.touch()
        time.sleep(3600)  # until the cluster goes away
    return {{"item": item}}
"""


def test_a_dead_scheduler_is_one_line(tmp_path: Path) -> None:
    """SIGKILL the scheduler mid-run: the coordinator says so in one line and how to go
    on (before: a raw FutureCancelledError traceback)."""
    import subprocess
    import sys

    source = write_lines(tmp_path / "in.txt", numbered_lines(300))
    mark, processor = tmp_path / "mark", tmp_path / "blocks.py"
    processor.write_text(BLOCKS.format(mark=str(mark)))
    file = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler = subprocess.Popen([*dask, "--host", "127.0.0.1", "--port", "0",
                                  "--no-dashboard", "--scheduler-file", file],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    worker = None
    try:
        wait_until(file.exists, "the scheduler's file")
        worker = subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", file,
             "--nthreads", "1", "--no-dashboard"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        address = orjson.loads(file.read_bytes())["address"]
        with distributed.Client(address) as client:
            client.wait_for_workers(1, timeout=60)
        run = start(["run", "--input", source, "--output", tmp_path / "out.jsonl",
                     "--checkpoint", tmp_path / "ck", "--engine", "dask", "--scheduler", address,
                     "--processor", f"{processor}:work", "--batch-size", "10"],
                    os.environ, tmp_path)  # fmt: skip
        assert wait_until(mark.exists, "the item that blocks", run)
        scheduler.kill()
        code = run.wait(timeout=120)
        out, err = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
        refused(subprocess.CompletedProcess(run.args, code, out, err), 1, "Dask scheduler",
                "run the same command again")  # fmt: skip
    finally:
        scheduler.kill()
        if worker is not None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        scheduler.wait()


KILLER = """
import os, pathlib

DEATHS = pathlib.Path({deaths!r})


def work(item):
    if item.startswith("line 000777 "):
        with DEATHS.open("a") as fh:
            fh.write(f"{{os.getpid()}}\\n")
        os._exit(3)
    return {{"item": item}}
"""


def test_an_item_that_kills_its_workers_is_dead_lettered(tmp_path: Path) -> None:
    """The task of the unit holding the item kills its worker; Dask gives up on it
    (KilledWorker, after one death here), the coordinator reruns what it had in flight
    one item at a time in a careful worker process of its own, the item kills that too
    (two deaths) and is dead-lettered, and the unit goes back to the cluster."""
    import dask

    lines = numbered_lines(2000)
    source = write_lines(tmp_path / "in.txt", lines)
    deaths = tmp_path / "deaths"
    processor = tmp_path / "killer.py"
    processor.write_text(KILLER.format(deaths=str(deaths)))
    out = tmp_path / "out.jsonl"
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address=None,
        ) as local,
    ):  # fmt: skip
        proc = run_cli("run", "--input", source, "--output", out, "--checkpoint",
                       tmp_path / "ck", "--engine", "dask", "--scheduler",
                       local.scheduler_address, "--processor", f"{processor}:work",
                       "--batch-size", "50")  # fmt: skip
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(deaths.read_text().split()) in (2, 3), proc.stderr
    rows = [orjson.loads(row) for row in out.read_bytes().splitlines()]
    assert [r["index"] for r in rows] == [i for i in range(2000) if i != 777]
    failed = out.with_name("out.failed.jsonl")
    (dead,) = [orjson.loads(row) for row in failed.read_bytes().splitlines()]
    assert dead["index"] == 777 and "killed its worker (exit 3)" in dead["error"], dead
