"""Rate-limited APIs end to end, against ``asyncproc.bench.server`` on 127.0.0.1.

The server enforces what real APIs do (a token bucket, a cap on requests in flight, an
outage), each answering 429 with ``Retry-After``, and counts the requests for every
path: every claim below is checked against the server's own counts. Synchronisation is
by the server (a request held until released, a long poll that answers once it is
held), never by sleeping.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    cli_command,
    describe,
    error_lines,
    files_under,
    run_args,
    run_cli,
    run_ok,
    summary_of,
)
from test_readme_examples import _run, blocks

import asyncproc
from asyncproc.bench.server import DEFAULTS

Stats = dict[str, Any]


class Server:
    """The test's handle on the server process: configure, reset, read its counts."""

    def __init__(self, base: str) -> None:
        self.base = base

    def _call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}{path}", data=data,
                                         method="GET" if body is None else "POST")  # fmt: skip
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)

    def limits(self, **config: Any) -> None:
        """Exactly these limits (the rest off), counters cleared."""
        self._call("/_config", {**DEFAULTS, **config})
        self._call("/_reset", {})

    def stats(self) -> Stats:
        stats: Stats = self._call("/_stats")
        return stats

    def wait_held(self, count: int) -> Stats:
        """Returns once ``count`` requests are held (a long poll on the server)."""
        stats: Stats = self._call(f"/_held?count={count}")
        return stats

    def urls(self, path: Path, prefix: str, count: int) -> Path:
        path.write_text("".join(f"{self.base}/{prefix}/{i}\n" for i in range(count)))
        return path


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    command = [sys.executable, "-m", "asyncproc.bench.server", "--port", "0", "--exit-on-eof"]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:  # fmt: skip  leaving closes stdin: it exits
        assert proc.stdout is not None
        yield Server(f"http://127.0.0.1:{int(proc.stdout.readline())}")


def ids_record(count: int) -> bytes:
    """The output of a clean run over ``count`` URLs ``.../<i>``."""
    return b"".join(
        json.dumps({"index": i, "status": 200, "body": {"id": str(i)}},
                   separators=(",", ":")).encode() + b"\n"
        for i in range(count)
    )  # fmt: skip


def http_run(tmp: Path, source: Path, *options: str) -> dict[str, Any]:
    return run_ok(*run_args(source, tmp / "out.jsonl", tmp / "ck"), "--processor", "http",
                  "--quiet", *options)  # fmt: skip


# -- the processor ------------------------------------------------------------------------


def test_http_records_failures_and_headers(server: Server, tmp_path: Path) -> None:
    server.limits()
    base = server.base
    items = [
        f'"{base}/r/1"',
        json.dumps({"url": f"{base}/r/2", "json": {"q": "hi"}}),
        f'"{base}/r/status-404"',
        f'"{base}/r/status-500"',
        f'"{base}/headers/3"',
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(items) + "\n")
    summary = summary_of(run_cli(
        *run_args(source, tmp_path / "out.jsonl", tmp_path / "ck"), "--processor", "http",
        "--header", "Authorization: Bearer $API_TOKEN", "--quiet", check=4,
        env={"API_TOKEN": "s3cret-token"},
    ))  # fmt: skip
    assert (summary["processed"], summary["failed"]) == (3, 2)
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert records == [
        {"index": 0, "status": 200, "body": {"id": "1"}},
        {"index": 1, "status": 200, "body": {"id": "2", "echo": {"q": "hi"}}},
        {"index": 4, "status": 200, "body": {"id": "3", "authorization": "Bearer s3cret-token"}},
    ]
    failed = [json.loads(line) for line in (tmp_path / "out.failed.jsonl").read_text().splitlines()]
    assert failed[0]["error"] == 'HTTP 404 Not Found: {"error":"status-404"}'
    assert failed[0]["attempts"] == 1  # a 4xx is final
    assert failed[1]["error"].startswith("HTTP 500") and failed[1]["attempts"] == 3
    counts = server.stats()["by_path"]
    assert counts["/r/status-404"] == 1 and counts["/r/status-500"] == 3
    for path in files_under(tmp_path / "ck"):  # the header's value is never stored
        assert b"s3cret-token" not in path.read_bytes(), path


def test_http_is_loaded_only_when_used(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("a\nb\n")
    code = (
        "import sys; from asyncproc.cli.main import main; "
        f"rc = main(['run', '--input', {str(source)!r}, '--output', "
        f"{str(tmp_path / 'out.json')!r}, '--processor', 'identity', '--quiet']); "
        "assert 'aiohttp' not in sys.modules, 'aiohttp was imported'; "
        "assert 'asyncproc.processors.http' not in sys.modules, 'the http module was'; "
        "sys.exit(rc)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, describe(proc)


# -- limits ---------------------------------------------------------------------------------


@pytest.mark.parametrize("processes", [1, 2])
def test_rate_paces_a_token_bucket(server: Server, tmp_path: Path, processes: int) -> None:
    server.limits(rate=100, burst=10, latency=0.005)
    source = server.urls(tmp_path / "in.txt", f"b{processes}", 150)
    summary = http_run(tmp_path, source, "--rate", "100/s", "--concurrency", "32",
                       "--processes", str(processes))  # fmt: skip
    stats = server.stats()
    assert summary["processed"] == 150 and stats["ok"] == 150
    assert stats["rejected"] <= 0.05 * stats["requests"], stats["rejected"]
    assert stats["ok_span_s"] >= (150 - 10) / 100 * 0.9  # paced, not a burst
    assert (tmp_path / "out.jsonl").read_bytes() == ids_record(150)


def test_concurrency_auto_finds_the_cap(server: Server, tmp_path: Path) -> None:
    server.limits(max_in_flight=16, latency=0.02)
    source = server.urls(tmp_path / "in.txt", "auto", 600)
    proc = run_cli(*run_args(source, tmp_path / "out.jsonl", tmp_path / "ck"),
                   "--processor", "http", "--concurrency", "auto", "--max-concurrency", "64",
                   "--batch-size", "50", check=0)  # fmt: skip
    summary, stats = summary_of(proc), server.stats()
    assert summary["processed"] == 600 and stats["ok"] == 600
    assert summary["concurrency"] == 64 and 8 <= summary["concurrency_limit"] <= 24, summary
    assert stats["rejected"] <= 0.1 * stats["requests"], stats["rejected"]
    assert "(auto)" in proc.stderr and "concurrency" in proc.stderr


def test_an_overrun_answered_with_retry_after_shrinks_the_limit_not_the_pool(
    server: Server, tmp_path: Path
) -> None:
    """Many APIs answer a concurrency overrun with 429 + ``Retry-After: 1``. While the
    other calls succeed, that is a signal to shrink: the rejected item waits its second,
    the pool goes on, so requests keep arriving while the server's Retry-After runs."""
    server.limits(max_in_flight=16, latency=0.02, overrun_retry_after="1")
    source = server.urls(tmp_path / "in.txt", "overrun", 600)
    summary = http_run(tmp_path, source, "--concurrency", "auto", "--max-concurrency", "64")
    stats = server.stats()
    assert summary["processed"] == 600 and stats["ok"] == 600
    assert stats["rejected"] >= 1, "the run never went over the cap: nothing was shown"
    assert summary["rejected"] == stats["rejected"]
    assert stats["arrived_while_waited"] >= 100, stats  # the pool did not pause
    assert summary["concurrency_limit"] <= 24, summary
    assert (tmp_path / "out.jsonl").read_bytes() == ids_record(600)


@pytest.mark.parametrize("processes", [1, 2])
def test_outage_pool_waits_together(server: Server, tmp_path: Path, processes: int) -> None:
    server.limits(latency=0.005, outage_after=60, outage_seconds=1.0)
    source = server.urls(tmp_path / "in.txt", f"o{processes}", 300)
    summary = http_run(tmp_path, source, "--concurrency", "16", "--processes", str(processes))
    stats = server.stats()
    assert summary["processed"] == 300 and stats["ok"] == 300
    assert 1 <= stats["rejected"] <= 2 * 16, stats["rejected"]
    assert summary["rejected"] == stats["rejected"]


# -- a SIGKILL in the middle of a rate-limited run -------------------------------------------


def _committed(checkpoint: Path, at_least: int, proc: subprocess.Popen[str]) -> int:
    """Wait until the run's checkpoints hold ``at_least`` items (polling its files)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the run ended before it was killed"
        runs = asyncproc.list_runs(checkpoint)
        if runs and runs[0].processed >= at_least:
            return runs[0].processed
        time.sleep(0.05)
    raise AssertionError(f"fewer than {at_least} items were committed in 30 s")


def test_sigkill_mid_run_never_repeats_a_committed_request(server: Server, tmp_path: Path) -> None:
    server.limits(rate=200, burst=10, latency=0.002, hold_from=120)
    source = server.urls(tmp_path / "in.txt", "k", 200)
    args = [*run_args(source, tmp_path / "out.jsonl", tmp_path / "ck"), "--processor", "http",
            "--rate", "200/s", "--concurrency", "8", "--workers", "1", "--batch-size", "10",
            "--commit-interval", "0.1", "--quiet"]  # fmt: skip
    with subprocess.Popen(cli_command(*args), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True) as proc:  # fmt: skip
        server.wait_held(8)  # items 120.. hold every lane: the run cannot get past 119
        committed = _committed(tmp_path / "ck", 120, proc)
        status = summary_of(run_cli("status", "--checkpoint", tmp_path / "ck", "--json",
                                    check=0))  # fmt: skip
        os.kill(proc.pid, signal.SIGKILL)
    assert committed == 120 and status["concurrency_limit"] == 8
    before = server.stats()["by_path"]
    server.limits(rate=200, burst=10, latency=0.002)  # releases the held requests
    summary = run_ok(*args)
    after = server.stats()["by_path"]
    assert summary["processed"] == 200 and summary["resumed"] is True
    assert (tmp_path / "out.jsonl").read_bytes() == ids_record(200)
    for i in range(committed):  # requested before the kill, and never again
        assert before.get(f"/k/{i}", 0) >= 1 and f"/k/{i}" not in after, i
    assert all(after.get(f"/k/{i}", 0) >= 1 for i in range(committed, 200))


# -- bad options ------------------------------------------------------------------------------

BAD = {
    "rate-zero": ["--rate", "0"],
    "rate-words": ["--rate", "abc"],
    "rate-unit": ["--rate", "5/fortnight"],
    "header-no-colon": ["--processor", "http", "--header", "Authorization Bearer x"],
    "header-unset-variable": ["--processor", "http", "--header", "X: $ASYNCPROC_NOT_SET_0"],
    "header-not-http": ["--header", "X: y"],
    "max-without-auto": ["--max-concurrency", "8"],
    "cost-without-rate": ["--cost", "llm"],
    "cost-unknown": ["--cost", "tokens", "--cost-rate", "10/s"],
    "concurrency-words": ["--concurrency", "lots"],
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_limit_options_fail_in_one_line(case: str, tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("a\n")
    proc = run_cli(*run_args(source, tmp_path / "out.json", tmp_path / "ck"), *BAD[case])
    assert proc.returncode == 2, describe(proc)
    assert len(proc.stderr.splitlines()) == 1 and len(error_lines(proc.stderr)) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out.json").exists()


def test_bench_compares_the_knee_with_auto(server: Server, tmp_path: Path) -> None:
    """The knee is the server's cap, 16: 4 reaches a quarter of its rate, and 64 only adds
    calls the server rejects. A generous ``--slo-p99`` takes the tail out of the choice
    (a loaded machine's tail at 16 against level 4's is noise here): throughput decides."""
    server.limits(max_in_flight=16, latency=0.02)
    source = server.urls(tmp_path / "in.txt", "bench", 50)
    doc = summary_of(run_cli("bench", "--json", "--quiet", "--processor", "http", "--input",
                             source, "--concurrency", "4,16,64", "--duration", "0.5",
                             "--slo-p99", "5000", "--no-durability", "--auto",
                             check=0))  # fmt: skip
    levels = {level["concurrency"]: level for level in doc["levels"]}
    assert levels[16]["errors"] == 0 and levels[64]["errors"] > 0, levels  # over the cap
    rate = {c: level["items_per_s"] for c, level in levels.items()}
    assert rate[4] < 0.9 * rate[16] and rate[64] < rate[16] / 0.9, rate
    assert doc["knee"] == 16, levels
    auto = doc["auto"]
    assert auto["maximum"] == 64 and 8 <= auto["concurrency_limit"] <= 24, auto


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder whose ``bin`` puts this interpreter's ``asyncproc`` and ``python`` first."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, run in (("asyncproc", "-m asyncproc "), ("python", "")):
        shim = bin_dir / name  # a script, not a symlink: a venv's python finds its packages
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" {run}"$@"\n')
        shim.chmod(0o755)
    return tmp_path


def test_readme_example_runs_as_written(workdir: Path) -> None:
    script = "\n".join(blocks("Calling rate-limited APIs", "bash"))
    guarded = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script
    proc = _run(["bash", "-euo", "pipefail", "-c", guarded], workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    pages = (workdir / "pages.jsonl").read_text().splitlines()
    assert len(pages) == 100 and json.loads(pages[0]) == {
        "index": 0,
        "status": 200,
        "body": {"id": "0"},
    }
    answers = [json.loads(line) for line in (workdir / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 50 and answers[3]["body"]["echo"]["max_tokens"] == 20
