"""``asyncproc bench``: the pure knee and percentile functions, and the real command
against a real HTTP server on 127.0.0.1 whose limits put the knee where we expect it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import error_lines, run_cli, run_cmd, summary_of
from hypothesis import given
from hypothesis import strategies as st

from asyncproc import ConfigError
from asyncproc.bench.durability import _order, _row
from asyncproc.bench.measure import (
    Budget,
    LevelResult,
    find_knee,
    p99_limit,
    parse_levels,
    percentile,
    summarize,
)

SERVER_LATENCY = 0.02
SERVER_CAP = 16

SERVER = textwrap.dedent(
    f"""
    import asyncio, sys
    from aiohttp import web

    gate = None

    async def handle(request):
        async with gate:
            await asyncio.sleep({SERVER_LATENCY})
        return web.Response(text="ok")

    async def main():
        global gate
        gate = asyncio.Semaphore({SERVER_CAP})
        app = web.Application()
        app.router.add_get("/", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        print(runner.addresses[0][1], flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())
    """
)

PROCESSOR = textwrap.dedent(
    """
    import aiohttp

    URL = "http://127.0.0.1:{port}/"
    _session = None

    async def fetch(item):
        global _session
        if _session is None:
            _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        async with _session.get(URL) as response:
            response.raise_for_status()
            return await response.text()
    """
)


@pytest.fixture(scope="module")
def server_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    script = tmp_path_factory.mktemp("server") / "server.py"
    script.write_text(SERVER)
    with subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:  # leaving closes stdin: the server exits on EOF
        assert proc.stdout is not None
        yield int(proc.stdout.readline())


@pytest.fixture
def fetch_processor(tmp_path: Path, server_port: int) -> str:
    path = tmp_path / "fetch.py"
    path.write_text(PROCESSOR.format(port=server_port))
    return f"{path}:fetch"


def _bench_json(*args: str) -> dict[str, Any]:
    return summary_of(run_cli("bench", "--json", "--quiet", *args, check=0))


# -- the real server --------------------------------------------------------------------


def test_knee_lands_at_the_servers_concurrency_cap(fetch_processor: str) -> None:
    doc = _bench_json(
        "--processor", fetch_processor, "--synthetic", "100",
        "--concurrency", "1..64x2", "--duration", "0.6", "--no-durability",
    )  # fmt: skip
    by_level = {level["concurrency"]: level["items_per_s"] for level in doc["levels"]}
    assert sorted(by_level) == [1, 2, 4, 8, 16, 32, 64]
    assert doc["knee"] in {16, 32}, by_level
    ceiling = SERVER_CAP / SERVER_LATENCY
    assert max(by_level.values()) < 1.2 * ceiling, by_level
    assert by_level[64] < 1.5 * by_level[16], by_level


def test_json_schema_and_durability(tmp_path: Path) -> None:
    sample = tmp_path / "sample.jsonl"
    sample.write_text("".join(f'{{"n": {i}}}\n' for i in range(50)))
    doc = _bench_json(
        "--processor", "identity", "--input", str(sample), "--concurrency", "1,4",
        "--items", "200", "--durability-items", "300",
    )  # fmt: skip
    keys = {"concurrency", "items_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "error_rate"}
    assert [level["concurrency"] for level in doc["levels"]] == [1, 4]
    for level in doc["levels"]:
        assert keys <= set(level)
        assert level["items"] == 200
        assert level["error_rate"] == 0.0
    rates = [_level(level["concurrency"], level["items_per_s"]) for level in doc["levels"]]
    assert doc["knee"] == find_knee(rates), doc["levels"]
    durability = doc["durability"]
    assert durability["items"] == 300
    assert [row["batch_size"] for row in durability["rows"]] == [1, 10, 100, 1000]
    assert all(row["ratio"] > 0 for row in durability["rows"])
    assert durability["repeats"] == 3
    assert all({"noise", "within_noise"} <= set(row) for row in durability["rows"])
    assert doc["p99_limit_ms"] > 0


def test_errors_count_into_the_error_rate(tmp_path: Path) -> None:
    path = tmp_path / "half.py"
    path.write_text(
        "async def half(item):\n    if int(item.split('-')[1]) % 2:\n"
        "        raise ValueError(item)\n    return item\n"
    )
    doc = _bench_json(
        "--processor", f"{path}:half", "--synthetic", "10", "--concurrency", "2",
        "--items", "100", "--no-durability",
    )  # fmt: skip
    assert doc["levels"][0]["error_rate"] == 0.5


def test_table_output_names_the_knee() -> None:
    proc = run_cli(
        "bench", "--processor", "identity", "--synthetic", "10", "--concurrency", "1,2",
        "--items", "50", "--no-durability", check=0,
    )  # fmt: skip
    assert "recommended: --concurrency" in proc.stdout


def test_plot_without_matplotlib_is_one_clear_line(tmp_path: Path) -> None:
    hide = (
        "import sys; sys.modules['matplotlib'] = None; from asyncproc.cli.main import main; "
        "sys.exit(main(sys.argv[1:]))"
    )
    proc = run_cmd(
        [sys.executable, "-c", hide, "bench", "--processor", "identity", "--synthetic", "5",
         "--items", "5", "--plot", str(tmp_path / "p.png")],
    )  # fmt: skip
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [
        "asyncproc: error: --plot needs matplotlib; install it with: pip install 'asyncproc[plot]'"
    ]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--concurrency", "1,x"], "not a whole number"),
        (["--concurrency", "8..2x2"], "START..STOPxFACTOR"),
        (["--items", "0"], "--items must be at least 1"),
        (["--synthetic", "0"], "--synthetic must be at least 1"),
    ],
)
def test_bad_options_fail_before_work(args: list[str], needle: str) -> None:
    base = ["bench", "--processor", "identity", "--no-durability"]
    if "--synthetic" not in args:
        base += ["--synthetic", "5"]
    proc = run_cli(*base, *args)
    assert proc.returncode == 2, proc.stderr
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and needle in lines[0], proc.stderr


def test_no_checkpoint_refuses_simulate_crash(tmp_path: Path) -> None:
    (tmp_path / "in.txt").write_text("a\nb\n")
    proc = run_cli(
        "run", "--input", tmp_path / "in.txt", "--output", tmp_path / "out.json",
        "--no-checkpoint", "--simulate-crash", "1",
    )  # fmt: skip
    assert proc.returncode == 2
    assert "drop --no-checkpoint" in proc.stderr


def test_no_checkpoint_gives_the_same_bytes(tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text("".join(f"line {i}\n" for i in range(500)))
    for name, extra in (("a.json", ()), ("b.json", ("--no-checkpoint",))):
        run_cli(
            "run", "--input", inp, "--output", tmp_path / name, "--batch-size", "7",
            "--workers", "3", "-q", *extra, check=0,
        )  # fmt: skip
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()


# -- pure functions ---------------------------------------------------------------------


def test_parse_levels_forms() -> None:
    assert parse_levels("1,4,16,64,256,1024") == [1, 4, 16, 64, 256, 1024]
    assert parse_levels("1..1024x4") == [1, 4, 16, 64, 256, 1024]
    assert parse_levels("1..64x2") == [1, 2, 4, 8, 16, 32, 64]
    assert parse_levels("3..100") == [3, 6, 12, 24, 48, 96]
    assert parse_levels("16, 4,4") == [4, 16]
    with pytest.raises(ConfigError):
        parse_levels("0,4")
    with pytest.raises(ConfigError):
        parse_levels("1..8x1")


def test_budget_needs_exactly_one_limit() -> None:
    with pytest.raises(ConfigError):
        Budget()
    with pytest.raises(ConfigError):
        Budget(items=5, seconds=1.0)


def _level(concurrency: int, items_per_s: float) -> LevelResult:
    return LevelResult(concurrency, 1, 0, 1.0, items_per_s, 0, 0, 0, 0, 0)


def _tail(concurrency: int, items_per_s: float, p99_ms: float) -> LevelResult:
    return LevelResult(concurrency, 1, 0, 1.0, items_per_s, 0, 0, p99_ms, 0, 0)


def test_a_level_whose_p99_blew_up_is_not_the_knee() -> None:
    levels = [_tail(1, 50, 20), _tail(4, 200, 20), _tail(16, 800, 21), _tail(64, 850, 80),
              _tail(256, 900, 300)]  # fmt: skip
    assert find_knee(levels) == 16, "64 reaches 90% of 900 only by quadrupling the tail"
    assert p99_limit(levels) == 60
    assert find_knee(levels, slo_p99_ms=100) == 16
    assert find_knee(levels, slo_p99_ms=400) == 64, "a user who accepts 300 ms gets 64"
    assert find_knee([_tail(1, 10, 500), _tail(4, 40, 900)], slo_p99_ms=100) == 1


@given(st.dictionaries(st.integers(1, 4096), st.tuples(st.floats(0, 1e6), st.floats(0, 1e4)),
                       min_size=1), st.none() | st.floats(0.1, 1e4))  # fmt: skip
def test_the_knee_respects_the_latency_limit(
    rates: dict[int, tuple[float, float]], slo: float | None
) -> None:
    levels = [_tail(c, r, p) for c, (r, p) in rates.items()]
    knee, limit = find_knee(levels, slo_p99_ms=slo), p99_limit(levels, slo)
    fine = {c: r for c, (r, p) in rates.items() if p <= limit}
    if fine:
        assert knee in fine and fine[knee] >= 0.9 * max(fine.values())
        assert all(fine[c] < 0.9 * max(fine.values()) for c in fine if c < knee)


def test_durability_says_when_noise_is_larger_than_the_effect() -> None:
    noisy = _row(1000, [98.0, 103.0, 110.0], [100.0, 90.0, 111.0])
    assert noisy.ratio == 1.03 and noisy.within_noise, noisy
    real = _row(1, [40.0, 41.0, 42.0], [100.0, 101.0, 99.0])
    assert real.ratio == 0.41 and not real.within_noise, real
    assert _order((1, 10), 0) == [0, 1, 10] and _order((1, 10), 1) == [10, 1, 0]


def test_knee_is_the_lowest_level_within_ten_percent_of_the_best() -> None:
    rates = {1: 50.0, 2: 100.0, 4: 200.0, 8: 400.0, 16: 790.0, 32: 800.0, 64: 760.0}
    assert find_knee([_level(c, r) for c, r in rates.items()]) == 16
    assert find_knee([_level(1, 0.0), _level(4, 0.0)]) == 1


@given(st.dictionaries(st.integers(1, 4096), st.floats(0, 1e6), min_size=1))
def test_knee_properties(rates: dict[int, float]) -> None:
    levels = [_level(c, r) for c, r in rates.items()]
    knee = find_knee(levels)
    best = max(rates.values())
    assert rates[knee] >= 0.9 * best
    assert all(rates[c] < 0.9 * best for c in rates if c < knee)


@given(st.lists(st.floats(0, 1e6), min_size=1), st.floats(0, 100), st.floats(0, 100))
def test_percentile_properties(values: list[float], q1: float, q2: float) -> None:
    ordered = sorted(values)
    low, high = sorted((q1, q2))
    assert ordered[0] <= percentile(ordered, low) <= percentile(ordered, high) <= ordered[-1]
    assert percentile(ordered, 100) == ordered[-1]
    assert percentile(ordered, 0) == ordered[0]
    assert percentile(ordered, 50) in ordered


def test_summarize_in_milliseconds() -> None:
    result = summarize(4, [0.001 * i for i in range(1, 101)], errors=10, elapsed=2.0)
    assert (result.p50_ms, result.p95_ms, result.p99_ms, result.max_ms) == (50, 95, 99, 100)
    assert result.items == 100 and result.items_per_s == 45.0 and result.error_rate == 0.1
    assert summarize(1, [], 0, 0.0).items_per_s == 0.0


def test_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "knee.png"
    run_cli(
        "bench", "--processor", "identity", "--synthetic", "5", "--concurrency", "1,2,4",
        "--items", "20", "--no-durability", "--json", "--plot", png, check=0,
    )  # fmt: skip
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
