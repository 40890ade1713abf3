"""Issue 11's targets: rate-limited APIs, against ``asyncproc.bench.server`` on 127.0.0.1.

Scenarios (each prints measured vs target; medians of ``--repeats`` runs):

bucket    a 200 requests/s token bucket with a burst of 20, ``--rate 200/s``:
          >= 85% of the allowed rate, <= 5% rejected, every item succeeds
auto      at most 32 requests at once, 20 ms each (ideal 1,600/s), ``--concurrency auto``:
          >= 75% of ideal, <= 5% rejected
overrun   auto, but the server answers an overrun with Retry-After: 1 (a common
          policy): an isolated rejection shrinks the limit, the pool does not pause
outage    a 2 s outage answered with 429 + Retry-After, concurrency 64:
          rejected <= 2 x concurrency, every item succeeds
overhead  the http processor through the whole engine vs a hand-written aiohttp pool,
          concurrency 200, a 5 ms server: asyncproc >= 0.9x the hand-written pool
clients   the library choice: hand-written aiohttp vs httpx pools, same server

The server runs in its own process; each client run is a fresh ``asyncproc run``
process (or a fresh process for a hand-written pool). Rates are the server's: successes
over the time from the first success to the last.

Usage::

    python benchmarks/bench_limits.py [bucket,auto,overrun,outage,overhead,clients] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
POOL = HERE / "_http_pool.py"
PY = sys.executable


@contextmanager
def server(*args: str) -> Iterator[str]:
    """A limit server in its own process; yields its base URL."""
    command = [PY, "-m", "asyncproc.bench.server", "--port", "0", "--exit-on-eof", *args]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          text=True) as proc:  # fmt: skip
        assert proc.stdout is not None and proc.stdin is not None
        base = f"http://127.0.0.1:{int(proc.stdout.readline())}"
        try:
            yield base
        finally:
            proc.stdin.close()
            proc.wait(10)


def stats(base: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{base}/_stats", timeout=10) as response:
        data: dict[str, Any] = json.load(response)
    return data


def reset(base: str) -> None:
    request = urllib.request.Request(f"{base}/_reset", data=b"{}", method="POST")
    urllib.request.urlopen(request, timeout=10).close()


def urls(folder: Path, base: str, count: int) -> Path:
    path = folder / "urls.txt"
    path.write_text("".join(f"{base}/item/{i}\n" for i in range(count)))
    return path


def run(folder: Path, source: Path, *options: str) -> dict[str, Any]:
    """One ``asyncproc run`` of the http processor; its summary."""
    out = folder / "out.jsonl"
    command = [PY, "-m", "asyncproc", "run", "--input", str(source), "--output", str(out),
               "--checkpoint", str(folder / "ck"), "--new-run", "--quiet",
               "--processor", "http", *options]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"asyncproc failed ({done.returncode}): {done.stderr[-2000:]}")
    summary: dict[str, Any] = json.loads(done.stdout)
    return summary


def served(base: str, summary: dict[str, Any], items: int) -> dict[str, float]:
    """What the server saw of one run."""
    seen = stats(base)
    span = seen["ok_span_s"] or 1.0
    return {
        "rate": (seen["ok"] - 1) / span,
        "rejected": seen["rejected"],
        "rejected_share": seen["rejected"] / max(1, seen["requests"]),
        "succeeded": summary["processed"] / items,
        "limit": summary["concurrency_limit"],
    }


def repeat(times: int, once: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Medians of each figure over ``times`` runs."""
    runs = [once() for _ in range(times)]
    for k, one in enumerate(runs, 1):
        print(f"    run {k}: " + ", ".join(f"{key} {value:.3g}" for key, value in one.items()),
              file=sys.stderr)  # fmt: skip
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def report(name: str, rows: list[tuple[str, float, str, bool]]) -> None:
    print(f"\n{name}")
    for what, value, target, ok in rows:
        print(f"  {what:<34} {value:>10.3f}   target {target:<12} {'met' if ok else 'MISSED'}")


def bucket(folder: Path, repeats: int) -> None:
    items = 2000
    with server("--rate", "200", "--burst", "20", "--latency", "0.005") as base:
        source = urls(folder, base, items)

        def once() -> dict[str, float]:
            reset(base)
            return served(base, run(folder, source, "--rate", "200/s", "--concurrency", "64"),
                          items)  # fmt: skip

        m = repeat(repeats, once)
    report("bucket: 200/s, burst 20, --rate 200/s, 2,000 items", [
        ("share of the allowed rate", m["rate"] / 200, ">= 0.85", m["rate"] / 200 >= 0.85),
        ("rejected share", m["rejected_share"], "<= 0.05", m["rejected_share"] <= 0.05),
        ("items succeeded", m["succeeded"], "1.0", m["succeeded"] == 1.0),
    ])  # fmt: skip


def auto(folder: Path, repeats: int, overrun: str = "0") -> None:
    """``overrun``: the server's Retry-After for a request over its cap."""
    items, ideal = 8000, 32 / 0.02
    runs: dict[str, list[dict[str, float]]] = {"auto": [], "32": []}
    with server("--max-in-flight", "32", "--latency", "0.02",
                "--overrun-retry-after", overrun) as base:  # fmt: skip
        source = urls(folder, base, items)
        for k in range(repeats):  # alternating: the machine's load drifts
            for level in ("auto", "32") if k % 2 == 0 else ("32", "auto"):
                reset(base)
                runs[level].append(served(base, run(folder, source, "--concurrency", level),
                                          items))  # fmt: skip
            print(f"    pair {k + 1}: auto {runs['auto'][-1]}, fixed 32 {runs['32'][-1]}",
                  file=sys.stderr)  # fmt: skip
    m = {key: statistics.median(r[key] for r in runs["auto"]) for key in runs["auto"][0]}
    fixed = statistics.median(r["rate"] for r in runs["32"])
    ratios = statistics.median(a["rate"] / f["rate"] for a, f in zip(runs["auto"], runs["32"],
                                                                    strict=True))  # fmt: skip
    report(f"{'auto' if overrun == '0' else 'overrun'}: <= 32 in flight (429 + Retry-After: "
           f"{overrun} beyond), 20 ms, --concurrency auto, 8,000 items", [
        ("items/s", m["rate"], "", True),
        ("share of ideal 1,600/s", m["rate"] / ideal, ">= 0.75", m["rate"] / ideal >= 0.75),
        ("rejected share", m["rejected_share"], "<= 0.05", m["rejected_share"] <= 0.05),
        ("concurrency limit at the end", m["limit"], "about 32", True),
        ("fixed --concurrency 32: share of ideal", fixed / ideal, "(the ceiling)", True),
        ("auto / fixed 32 (per pair)", ratios, "", True),
    ])  # fmt: skip


def overrun(folder: Path, repeats: int) -> None:
    """``auto`` against a server that answers an overrun with ``Retry-After: 1`` (a common
    policy): an isolated rejection must shrink the limit, not pause the pool."""
    auto(folder, repeats, overrun="1")


def outage(folder: Path, repeats: int) -> None:
    items, concurrency = 3000, 64
    with server("--latency", "0.01", "--outage-after", "1000", "--outage-seconds", "2") as base:
        source = urls(folder, base, items)

        def once() -> dict[str, float]:
            reset(base)
            summary = run(folder, source, "--concurrency", str(concurrency))
            return served(base, summary, items)

        m = repeat(repeats, once)
    report(f"outage: 2 s of 429 + Retry-After, concurrency {concurrency}, 3,000 items", [
        ("rejected requests", m["rejected"], f"<= {2 * concurrency}",
         m["rejected"] <= 2 * concurrency),
        ("items succeeded", m["succeeded"], "1.0", m["succeeded"] == 1.0),
    ])  # fmt: skip


def pool(base: str, library: str, items: int, concurrency: int) -> float:
    """A hand-written pool in a fresh process; its requests per second."""
    command = [PY, str(POOL), library, base, str(items), str(concurrency)]
    done = subprocess.run(command, capture_output=True, text=True, check=True, timeout=600)
    return float(done.stdout.strip())


def overhead(folder: Path, repeats: int) -> None:
    """Both sides measured by the server: successes over the time from first to last."""
    items, concurrency = 10_000, 200
    ratios: list[float] = []
    mine: list[float] = []
    bare: list[float] = []
    with server("--latency", "0.005") as base:
        source = urls(folder, base, items)
        for k in range(repeats):
            for who in ("asyncproc", "bare") if k % 2 == 0 else ("bare", "asyncproc"):
                reset(base)
                if who == "bare":
                    pool(base, "aiohttp", items, concurrency)
                else:
                    run(folder, source, "--concurrency", str(concurrency), "--loop", "asyncio")
                rate = served(base, {"processed": items, "concurrency_limit": 0}, items)["rate"]
                (bare if who == "bare" else mine).append(rate)
            ratios.append(mine[-1] / bare[-1])
            print(f"    pair {k + 1}: asyncproc {mine[-1]:,.0f}/s, aiohttp pool "
                  f"{bare[-1]:,.0f}/s", file=sys.stderr)  # fmt: skip
    ratio = statistics.median(ratios)
    report(f"overhead: http processor vs hand-written aiohttp pool, c={concurrency}, 5 ms", [
        ("asyncproc requests/s", statistics.median(mine), "", True),
        ("hand-written aiohttp requests/s", statistics.median(bare), "", True),
        ("ratio (median of pairs)", ratio, ">= 0.90", ratio >= 0.9),
    ])  # fmt: skip


def clients(folder: Path, repeats: int) -> None:
    del folder
    items, concurrency = 4_000, 200  # httpx is slow here: fewer requests keep it short
    found: dict[str, list[float]] = {"aiohttp": [], "httpx": []}
    with server("--latency", "0.005") as base:
        for k in range(repeats):
            for library in ("aiohttp", "httpx") if k % 2 == 0 else ("httpx", "aiohttp"):
                found[library].append(pool(base, library, items, concurrency))
    a, h = statistics.median(found["aiohttp"]), statistics.median(found["httpx"])
    report(f"clients: hand-written pools, c={concurrency}, 5 ms server, {items:,} requests", [
        ("aiohttp requests/s", a, "", True),
        ("httpx requests/s", h, "", True),
        ("aiohttp / httpx", a / h, "", True),
    ])  # fmt: skip


SCENARIOS = {"bucket": bucket, "auto": auto, "overrun": overrun, "outage": outage,
             "overhead": overhead, "clients": clients}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("only", nargs="?", default="bucket,auto,overrun,outage,overhead")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.only.split(","):
            started = time.perf_counter()
            SCENARIOS[name](Path(tmp), args.repeats)
            print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
