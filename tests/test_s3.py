"""Input, output and checkpoints on a real S3 API: moto's server on loopback.

The CLI runs in a subprocess, exactly as a user runs it, with the endpoint and the
credentials as ``--storage-option``s. A simulated crash, then ``status`` on the URL
checkpoint directory, then a resume: the output object holds the clean run's bytes.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import numbered_lines, run_cli, run_ok, summary_of, write_lines

import asyncproc
from asyncproc._errors import RunLockedError
from asyncproc.runs.lease import holder, take
from asyncproc.runs.remote import output_lease
from asyncproc.storage.location import Location

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def storage_args(server: Any) -> list[str]:
    return [f"--storage-option={k}={v}" for k, v in server.options().items()]


def test_a_run_on_s3_crashes_and_resumes_to_the_clean_bytes(
    tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    source = write_lines(tmp_path / "in.txt", numbered_lines(400))
    base = f"s3://{s3_bucket}/{tmp_path.name}"
    fs = Location(base, s3_server.options()).fs
    fs.pipe_file(f"{s3_bucket}/{tmp_path.name}/in.txt", source.read_bytes())
    args = [
        "run", "--input", f"{base}/in.txt", "--output", f"{base}/out.json",
        "--checkpoint", f"{base}/ck", "--batch-size", "50", "--concurrency", "4", "--quiet",
        *storage_args(s3_server),
    ]  # fmt: skip
    crashed = run_cli(*args, "--simulate-crash", "120", cwd=tmp_path)
    assert crashed.returncode == 3, crashed.stderr
    status = run_ok("status", "--json", "--checkpoint", f"{base}/ck", *storage_args(s3_server))
    assert status["status"] == "interrupted"
    assert 120 <= status["processed"] < 400
    parts = fs.find(f"{s3_bucket}/{tmp_path.name}/ck")
    assert any("/segments/" in p and "/.part-" in p for p in parts), parts
    resumed = summary_of(run_cli(*args, cwd=tmp_path, check=0))
    assert resumed["resumed"] is True
    clean = tmp_path / "clean.json"
    asyncproc.run_file(source, clean, checkpoint_dir=tmp_path / "ck", quiet=True)
    assert fs.cat_file(f"{s3_bucket}/{tmp_path.name}/out.json") == clean.read_bytes()
    listed = run_cli("list", "--json", "--checkpoint", f"{base}/ck", *storage_args(s3_server))
    done = json.loads(listed.stdout)
    assert [r["status"] for r in done] == ["completed"]


def test_the_python_api_takes_storage_options(
    tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    source = write_lines(tmp_path / "in.jsonl", [f'{{"n": {i}}}' for i in range(50)])
    base = f"s3://{s3_bucket}/{tmp_path.name}"
    summary = asyncproc.run_file(
        source, f"{base}/out.jsonl", "identity", quiet=True, checkpoint_dir=f"{base}/ck",
        storage_options=s3_server.options(),
    )  # fmt: skip
    assert summary.processed == 50
    fs = Location(base, s3_server.options()).fs
    local = tmp_path / "local.jsonl"
    asyncproc.run_file(source, local, "identity", checkpoint_dir=tmp_path / "ck", quiet=True)
    assert fs.cat_file(f"{s3_bucket}/{tmp_path.name}/out.jsonl") == local.read_bytes()


def test_a_bad_storage_option_is_one_line(tmp_path: Path) -> None:
    proc = run_cli("run", "--input", "s3://nowhere/in.txt", "--output", "o.json",
                   "--storage-option", "no_such_option=1", cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("asyncproc: error: bad --storage-option"), proc.stderr


def test_a_lease_refuses_a_second_holder_and_frees_a_dead_one(tmp_path: Path) -> None:
    storage = Location(f"memory://{tmp_path.name}/ck").storage()
    lease = take(storage, "run", "run r")
    try:
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()} on .*expires at"):
            take(storage, "run", "run r")
        assert holder(storage, "run") is not None
    finally:
        lease.release()
    assert holder(storage, "run") is None
    dead = 2**22 + 12345  # above the default pid_max: no such process
    storage.put("lease/run.000007", b'{"pid": %d, "host": "%s", "expires_at": 9e12}'
                % (dead, socket.gethostname().encode()))  # fmt: skip
    taken = take(storage, "run", "run r")
    assert taken.name == "lease/run.000008"
    taken.release()


def test_a_url_output_is_held_for_the_whole_run(
    tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    """Two runs never write one object, whatever their checkpoint directories: a run
    refuses an output whose lease another process holds, and goes on once it is free."""
    source = write_lines(tmp_path / "in.txt", numbered_lines(50))
    base = f"s3://{s3_bucket}/{tmp_path.name}"
    output = Location(f"{base}/out.jsonl", s3_server.options())
    args: list[str | Path] = ["run", "--input", source, "--output", output.url, "--quiet",
                              *storage_args(s3_server)]  # fmt: skip
    with output_lease(output):
        held = output.fs.find(f"{s3_bucket}/{tmp_path.name}/.asyncproc/lease/")
        assert len(held) == 1 and "/lease/output-" in held[0], held
        refused = run_cli(*args, "--checkpoint", tmp_path / "ck-a", cwd=tmp_path)
    assert refused.returncode == 1, refused.stderr
    assert f"a run writing {output.url} is in progress in pid {os.getpid()}" in refused.stderr
    assert not output.fs.exists(output.key), "the refused run wrote the output"
    done = summary_of(run_cli(*args, "--checkpoint", tmp_path / "ck-b", cwd=tmp_path, check=0))
    assert done["processed"] == 50
    assert output.fs.find(f"{s3_bucket}/{tmp_path.name}/.asyncproc/lease/") == []


SHORT_LEASES = """
import sys

from asyncproc.runs import lease

lease.take.__kwdefaults__["ttl"] = 2.0  # leases lapse in 2 s, not 30: the test waits less

from asyncproc.cli.main import main

sys.exit(main(sys.argv[1:]))
"""

SLOW = """
import time


def work(item):
    time.sleep(0.02)
    return item
"""


def test_a_run_taken_over_after_its_lease_lapsed_writes_nothing_more(
    tmp_path: Path, s3_server: Any, s3_bucket: str
) -> None:
    """A is stopped (SIGSTOP) past its lease; B takes the run over and finishes it. A,
    continued, must not merge or mark the run (before: it published the output a second
    time over B's, or died on "The specified key does not exist"): one line, exit 1."""
    import signal
    import subprocess
    import sys
    import time

    source = write_lines(tmp_path / "in.txt", numbered_lines(3000))
    base = f"s3://{s3_bucket}/{tmp_path.name}"
    fs = Location(base, s3_server.options()).fs
    fs.pipe_file(f"{s3_bucket}/{tmp_path.name}/in.txt", source.read_bytes())
    (tmp_path / "runner.py").write_text(SHORT_LEASES)
    (tmp_path / "slow.py").write_text(SLOW)
    slow = f"{tmp_path / 'slow.py'}:work"
    args = [sys.executable, str(tmp_path / "runner.py"), "run", "--input", f"{base}/in.txt",
            "--output", f"{base}/out.jsonl", "--checkpoint", f"{base}/ck", "--batch-size",
            "100", "--concurrency", "4", "--processor", slow, *storage_args(s3_server)]  # fmt: skip
    a_err = (tmp_path / "a.err").open("w")
    a = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=a_err, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not any("/units/" in p for p in fs.find(f"{s3_bucket}/{tmp_path.name}/ck")):
            assert time.monotonic() < deadline and a.poll() is None, "A never committed"
            fs.invalidate_cache()
            time.sleep(0.05)
        a.send_signal(signal.SIGSTOP)
        for _ in range(100):  # B is refused while A's lease lives, then takes the run
            b = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
            if "in progress" not in b.stderr:
                break
        assert b.returncode == 0, b.stderr
        published = fs.cat_file(f"{s3_bucket}/{tmp_path.name}/out.jsonl")
        a.send_signal(signal.SIGCONT)
        code = a.wait(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
        a_err.close()
    stderr = (tmp_path / "a.err").read_text()
    lines = [line for line in stderr.splitlines() if line.startswith("asyncproc: error:")]
    assert code == 1 and len(lines) == 1, stderr
    assert "took run" in lines[0] and "over" in lines[0] and "Traceback" not in stderr, stderr
    fs.invalidate_cache()
    assert fs.cat_file(f"{s3_bucket}/{tmp_path.name}/out.jsonl") == published
    listed = run_cli("list", "--json", "--checkpoint", f"{base}/ck", *storage_args(s3_server))
    assert [r["status"] for r in json.loads(listed.stdout)] == ["completed"]
