"""Targets of engine v2, measured against baselines: run before and after the rewrite.

Every scenario runs asyncproc and its baseline side by side in one invocation, each
measured run in a fresh subprocess, alternating the order from repeat to repeat (ap,
base, base, ap, ...) so that drift hits both alike; it reports medians and the median
of the per-repeat ratios, and checks the outputs byte for byte where both sides write
the same bytes. Scenarios (``--only``):

* ``skew``: stragglers. 41,704 items; the first eighth (``slow-NNNNNN``) sleep 20 ms,
  the rest (``fast-NNNNNN``) 1 ms (``_skew.py:work``). asyncproc ``--workers 8
  --concurrency 64``, once in one process and once with ``--processes 2``, against a
  bare asyncio pool of 64 tasks on a queue with the same sleeps. Why: v1 gives each
  shard a fixed share of the lanes, so the shard holding every slow item runs on 8
  lanes while 56 idle. The ideal is the total sleep / 64. Target: >= 0.85x bare.
* ``noop``: start-up and engine cost, the way a user sees them. The whole
  ``python -m asyncproc run ... --processor identity`` process on 200,000 items against
  the whole ``python benchmarks/bare_asyncio.py --processor noop`` process, both at
  concurrency 64: interpreter start-up and imports included. Also each side's import
  time alone (``python -c 'import asyncproc.cli.main'`` against ``python -c 'import
  asyncio, orjson'``, next to ``python -c pass``). Target: >= 0.85x bare.
* ``sync``: a plain ``def`` processor blocking 10 ms (``_sync_work.py:work``) on 20,000
  items at ``--concurrency 256`` against ``ThreadPoolExecutor(256).map`` of the same
  function writing the same JSONL. Why: v1 runs sync processors through anyio's default
  thread limiter (40 threads), whatever --concurrency says. Target: >= 0.85x.
* ``rss``: peak RSS of the whole ``asyncproc run --workers 1`` process on the no-op job
  against the bare pool, at 200,000 and 2,000,000 items. Targets: asyncproc / bare
  <= 1.5 at each size; asyncproc large / small <= 1.2 (memory flat in input size).
* ``resume``: a resume with another parallelism. A ``--workers 4`` run crashed with
  ``--simulate-crash`` at half the items (exit 3) is resumed from copies of its
  checkpoint dir with ``--workers 8``, with ``--workers 4 --processes 2``, and (the
  control) with the same ``--workers 4``. ``_call_log.py:work`` logs every call, so
  the re-executions are counted. Must: output byte-identical to a clean run. Target:
  no variant re-executes more than the control. (v1 silently keeps the planned shards.)

``bench_core.py`` (b), 100,000 items x 10 ms at concurrency 1000 (target after v2 >=
0.95x bare), is not repeated here.

asyncproc runs on the same loop as the baseline: asyncio (``--loop asyncio``), or uvloop
for both with ``--uvloop``. Peak RSS is read with ``/usr/bin/time`` around each process,
not with our own ``wait4`` (see ``run_proc``: a child's ``ru_maxrss`` starts at its
parent's RSS on Linux). Progress goes to stderr, tables (or ``--json``) to stdout.

Usage::

    python benchmarks/bench_v2.py [--quick] [--only skew,noop,sync,rss,resume]
        [--repeats N] [--json] [--check-targets] [--uvloop] [--keep-data]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson
from _skew import SLOW_PREFIX, delay_of
from bench_core import (
    TIME_BIN,
    BenchError,
    compare_outputs,
    log,
    median,
    parse_time_rss,
    tail,
    write_text_input,
)

HERE = Path(__file__).resolve().parent
CHILD = HERE / "_v2_child.py"
BARE = HERE / "bare_asyncio.py"
SKEW = f"{HERE / '_skew.py'}:work"
SYNC = f"{HERE / '_sync_work.py'}:work"
CALL_LOG = f"{HERE / '_call_log.py'}:work"
CALL_LOG_ENV = "ASYNCPROC_BENCH_CALL_LOG"
MARKER = "BENCH_RESULT "
PY = sys.executable
SCENARIO_NAMES = ("skew", "noop", "sync", "rss", "resume")

TARGET_SPEED = 0.85  # skew, noop, sync: asyncproc speed / baseline speed
TARGET_RSS_RATIO = 1.5  # rss: asyncproc / bare at each size
TARGET_RSS_FLAT = 1.2  # rss: asyncproc large / small
SKEW_CONCURRENCY, NOOP_CONCURRENCY, SYNC_CONCURRENCY = 64, 64, 256
RESUME_WORKERS = 4
TIME_FORMAT = "Maximum resident set size (kbytes): %M"  # what parse_time_rss reads
RSS_SOURCE = "/usr/bin/time" if TIME_BIN else "os.wait4, floored at the parent's RSS"


@dataclass(frozen=True)
class Config:
    repeats: int
    only: tuple[str, ...]
    quick: bool
    uvloop: bool
    timeout: float
    keep_data: bool
    as_json: bool
    check_targets: bool
    skew_items: int
    noop_items: int
    sync_items: int
    rss_sizes: tuple[int, int]
    resume_items: int
    import_repeats: int

    @property
    def loop(self) -> str:
        return "uvloop" if self.uvloop else "asyncio"


def parse_args(argv: Sequence[str] | None) -> Config:
    p = argparse.ArgumentParser(description="engine v2 targets: asyncproc vs baselines")
    p.add_argument("--quick", action="store_true", help="smaller inputs, 2 repeats")
    p.add_argument("--only", default=",".join(SCENARIO_NAMES), help="comma-separated scenarios")
    p.add_argument("--repeats", type=int, default=None, help="repeats (default 3, quick 2)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--check-targets", action="store_true", help="exit 1 on a missed target")
    p.add_argument("--uvloop", action="store_true", help="asyncproc and baselines on uvloop")
    p.add_argument("--timeout", type=float, default=600.0, help="per-subprocess timeout (s)")
    p.add_argument("--keep-data", action="store_true", help="keep the temp dir (debugging)")
    a = p.parse_args(argv)
    only = tuple(s.strip() for s in a.only.split(",") if s.strip())
    if not only or not set(only) <= set(SCENARIO_NAMES):
        p.error(f"--only takes a comma-separated subset of {','.join(SCENARIO_NAMES)}")
    repeats = a.repeats if a.repeats is not None else (2 if a.quick else 3)
    if repeats < 1:
        p.error("--repeats must be >= 1")
    q = a.quick
    return Config(
        repeats=repeats,
        only=only,
        quick=q,
        uvloop=a.uvloop,
        timeout=a.timeout,
        keep_data=a.keep_data,
        as_json=a.json,
        check_targets=a.check_targets,
        skew_items=10_424 if q else 41_704,
        noop_items=50_000 if q else 200_000,
        sync_items=5_000 if q else 20_000,
        rss_sizes=(50_000, 500_000) if q else (200_000, 2_000_000),
        resume_items=10_000 if q else 40_000,
        import_repeats=5 if q else 9,
    )


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class Proc:
    """A finished subprocess: exit code, wall time, peak RSS, its output."""

    rc: int
    wall_s: float
    maxrss_kb: int
    stdout: str
    stderr: str


def child_env(call_log: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASYNCPROC_")}
    if call_log is not None:
        env[CALL_LOG_ENV] = str(call_log)
    return env


def _kill_group(pid: int, fired: list[bool]) -> None:
    fired.append(True)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def run_proc(
    cmd: list[str], cfg: Config, cwd: Path, env: dict[str, str] | None = None, *, rss: bool = True
) -> Proc:
    """Run ``cmd`` to completion in its own session; time it, reap it with ``os.wait4``.

    Peak RSS comes from ``/usr/bin/time`` when present (``rss=False``: not wrapped).
    Not from our own ``wait4``: Linux keeps the peak RSS of the memory image a process
    replaces at exec, so every child of this process would report at least this
    process's RSS (about 30 MiB, more than the bare baseline uses). ``/usr/bin/time``
    is a small process, so its child's figure is the child's own.
    """
    if rss and TIME_BIN:
        cmd = [TIME_BIN, "-f", TIME_FORMAT, *cmd]
    fired: list[bool] = []
    with tempfile.TemporaryFile() as so, tempfile.TemporaryFile() as se:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            cmd, stdout=so, stderr=se, cwd=cwd, env=env or child_env(), start_new_session=True
        )
        timer = threading.Timer(cfg.timeout, _kill_group, (p.pid, fired))
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        out, err = so.read().decode(errors="replace"), se.read().decode(errors="replace")
    if fired:
        raise BenchError(f"timed out after {cfg.timeout:.0f}s: {' '.join(cmd)}")
    time_rss = parse_time_rss(err) if rss and TIME_BIN else None
    return Proc(p.returncode, wall, time_rss or ru.ru_maxrss, out, err)


def expect_rc(proc: Proc, rc: int, what: str) -> None:
    if proc.rc != rc:
        raise BenchError(f"{what}: exit {proc.rc}, expected {rc}; stderr:\n{tail(proc.stderr)}")


def timed_child(spec: dict[str, Any], cfg: Config, tmp: Path, what: str) -> dict[str, Any]:
    """Run one ``_v2_child.py`` job (asyncproc with a fresh checkpoint dir); its result."""
    ck = Path(tempfile.mkdtemp(prefix="ck-", dir=tmp))
    if spec["engine"] == "asyncproc":
        spec = {**spec, "options": {**spec["options"], "checkpoint_dir": str(ck)}}
    proc = run_proc([PY, str(CHILD), json.dumps(spec)], cfg, tmp)
    shutil.rmtree(ck, ignore_errors=True)
    expect_rc(proc, 0, what)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result: dict[str, Any] = json.loads(line[len(MARKER) :])
            result["self_maxrss_kb"] = result["maxrss_kb"]  # floored by its parent's, see run_proc
            result["maxrss_kb"] = proc.maxrss_kb
            return result
    raise BenchError(f"{what}: no result line; stdout:\n{tail(proc.stdout)}")


def ap_cli(inp: Path, out: Path, ck: Path, processor: str, cfg: Config, *extra: str) -> list[str]:
    """``python -m asyncproc run`` on a text input, quiet, on the baseline's loop."""
    return [
        PY,
        "-m",
        "asyncproc",
        "run",
        "--input",
        str(inp),
        "--output",
        str(out),
        "--checkpoint",
        str(ck),
        "--processor",
        processor,
        "--format",
        "text",
        "-q",
        "--loop",
        cfg.loop,
        *extra,
    ]


def bare_cli(inp: Path, out: Path, cfg: Config) -> list[str]:
    cmd = [PY, str(BARE), "--input", str(inp), "--output", str(out), "--processor", "noop"]
    return [*cmd, "--concurrency", str(NOOP_CONCURRENCY), *(["--uvloop"] if cfg.uvloop else [])]


def ap_summary(proc: Proc, what: str) -> dict[str, Any]:
    try:
        summary: dict[str, Any] = json.loads(proc.stdout)
    except ValueError as e:
        raise BenchError(f"{what}: stdout is not one JSON summary: {proc.stdout[:300]!r}") from e
    return summary


# --------------------------------------------------------------------------- inputs


def write_lines(path: Path, lines: Iterator[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)


def skew_items(n: int) -> Iterator[str]:
    """The first eighth ``slow-NNNNNN``, the rest ``fast-NNNNNN`` (all the same length)."""
    slow = n // 8
    return (f"{SLOW_PREFIX if i < slow else 'fast-'}{i:06d}" for i in range(n))


def plain_items(n: int, prefix: str = "item-") -> Iterator[str]:
    return (f"{prefix}{i}" for i in range(n))


# --------------------------------------------------------------------------- duels

Runner = Callable[[Path], dict[str, Any]]  # output path -> measurement with elapsed_s


@dataclass(frozen=True)
class Contender:
    name: str
    run: Runner


@dataclass(frozen=True)
class Duel:
    """asyncproc variants against one baseline, on one input, same bytes expected."""

    key: str
    title: str
    n_items: int
    contenders: tuple[Contender, ...]
    baseline: Contender


def measure(duel: Duel, c: Contender, out: Path, rep: int) -> dict[str, Any]:
    what = f"({duel.key}) {c.name} repeat {rep + 1}"
    r = c.run(out)
    if r["items"] != duel.n_items or r.get("failed"):
        raise BenchError(
            f"{what}: {r['items']} items ({r.get('failed')} failed), expected {duel.n_items}"
        )
    log(f"{what}: {r['elapsed_s']:.3f}s, {duel.n_items / r['elapsed_s']:,.0f} items/s")
    return r


def run_duel(cfg: Config, tmp: Path, duel: Duel) -> dict[str, Any]:
    everyone = (*duel.contenders, duel.baseline)
    runs: dict[str, list[dict[str, Any]]] = {c.name: [] for c in everyone}
    mismatch: dict[str, str | None] = {c.name: None for c in duel.contenders}
    for rep in range(cfg.repeats):
        order = everyone if rep % 2 == 0 else everyone[::-1]
        outs = {c.name: tmp / f"{duel.key}-{i}-{rep}.jsonl" for i, c in enumerate(everyone)}
        for c in order:
            runs[c.name].append(measure(duel, c, outs[c.name], rep))
        for c in duel.contenders:
            diff = compare_outputs(outs[c.name], outs[duel.baseline.name])
            if diff and mismatch[c.name] is None:
                mismatch[c.name] = f"repeat {rep + 1}: {diff}"
                log(f"({duel.key}) {c.name}: output differs from the baseline's: {diff}")
        for path in outs.values():
            path.unlink(missing_ok=True)
    return summarize_duel(duel, runs, mismatch)


def summarize_duel(
    duel: Duel, runs: dict[str, list[dict[str, Any]]], mismatch: dict[str, str | None]
) -> dict[str, Any]:
    base = runs[duel.baseline.name]
    rows = []
    for c in duel.contenders:
        ap = runs[c.name]
        ratios = [b["elapsed_s"] / a["elapsed_s"] for a, b in zip(ap, base, strict=True)]
        rows.append(
            row_of(c.name, ap, duel.n_items)
            | {
                "speed_ratio_median": median(ratios),
                "speed_ratios": ratios,
                "output_identical": mismatch[c.name] is None,
                "output_mismatch": mismatch[c.name],
            }
        )
    checks = [
        check(f"{r['name']} speed / {duel.baseline.name}", r["speed_ratio_median"], TARGET_SPEED)
        for r in rows
    ]
    return {
        "scenario": duel.title,
        "items": duel.n_items,
        "rows": rows,
        "baseline": row_of(duel.baseline.name, base, duel.n_items),
        "checks": checks,
        "output_ok": all(r["output_identical"] for r in rows),
        "runs": runs,
    }


def row_of(name: str, runs: list[dict[str, Any]], n_items: int) -> dict[str, Any]:
    elapsed = median(r["elapsed_s"] for r in runs)
    return {
        "name": name,
        "elapsed_s_median": elapsed,
        "items_per_s_median": n_items / elapsed,
        "maxrss_kb_median": median(r["maxrss_kb"] for r in runs),
    }


def check(what: str, value: float, target: float, *, at_most: bool = False) -> dict[str, Any]:
    ok = value <= target if at_most else value >= target
    return {
        "what": what,
        "value": value,
        "target": f"{'<=' if at_most else '>='} {target}",
        "ok": ok,
    }


# --------------------------------------------------------------------------- skew


def child_contender(name: str, base: dict[str, Any], cfg: Config, tmp: Path, key: str) -> Contender:
    def run(out: Path) -> dict[str, Any]:
        return timed_child(
            {**base, "output": str(out), "loop": cfg.loop}, cfg, tmp, f"({key}) {name}"
        )

    return Contender(name, run)


def bench_skew(cfg: Config, tmp: Path) -> dict[str, Any]:
    n = cfg.skew_items
    inp = tmp / "skew.txt"
    write_lines(inp, skew_items(n))
    ideal = sum(delay_of(item) for item in skew_items(n)) / SKEW_CONCURRENCY
    log(f"(skew) {n:,} items, {n // 8:,} slow; ideal {ideal:.2f}s at {SKEW_CONCURRENCY} lanes")
    ap = {"engine": "asyncproc", "input": str(inp), "processor": SKEW}
    opts = {"workers": 8, "concurrency": SKEW_CONCURRENCY}
    duel = Duel(
        "skew",
        f"skew: {n:,} items, first eighth 20 ms, rest 1 ms, concurrency 64",
        n,
        (
            child_contender("asyncproc --workers 8", ap | {"options": opts}, cfg, tmp, "skew"),
            child_contender(
                "asyncproc --workers 8 --processes 2",
                ap | {"options": opts | {"processes": 2}},
                cfg,
                tmp,
                "skew",
            ),
        ),
        child_contender(
            "bare pool",
            {"engine": "bare_skew", "input": str(inp), "concurrency": SKEW_CONCURRENCY},
            cfg,
            tmp,
            "skew",
        ),
    )
    result = run_duel(cfg, tmp, duel)
    for r in (*result["rows"], result["baseline"]):
        r["pct_of_ideal"] = 100 * ideal / r["elapsed_s_median"]
        r["workers"] = result["runs"][r["name"]][0].get("summary", {}).get("workers")
    result["ideal_s"] = ideal
    return result


# --------------------------------------------------------------------------- noop


def cli_contender(
    name: str, make: Callable[[Path, Path], list[str]], cfg: Config, tmp: Path
) -> Contender:
    """A whole process ``make(output, fresh checkpoint dir)``, timed from the outside."""

    def run(out: Path) -> dict[str, Any]:
        ck = Path(tempfile.mkdtemp(prefix="ck-", dir=tmp))
        proc = run_proc(make(out, ck), cfg, tmp)
        shutil.rmtree(ck, ignore_errors=True)
        expect_rc(proc, 0, name)
        doc = ap_summary(proc, name)
        items = doc.get("processed", doc.get("items"))
        return {
            "elapsed_s": proc.wall_s,
            "items": items,
            "failed": doc.get("failed", 0),
            "maxrss_kb": proc.maxrss_kb,
        }

    return Contender(name, run)


def bench_noop(cfg: Config, tmp: Path) -> dict[str, Any]:
    n = cfg.noop_items
    inp = tmp / "noop.txt"
    write_text_input(inp, n)
    log(f"(noop) {n:,} items, {inp.stat().st_size / 1e6:.1f} MB; whole processes")

    def ap(out: Path, ck: Path) -> list[str]:
        return ap_cli(inp, out, ck, "identity", cfg, "--concurrency", str(NOOP_CONCURRENCY))

    def bare(out: Path, ck: Path) -> list[str]:
        return bare_cli(inp, out, cfg)

    duel = Duel(
        "noop",
        f"noop: {n:,} items, whole process, concurrency {NOOP_CONCURRENCY}",
        n,
        (cli_contender("python -m asyncproc run", ap, cfg, tmp),),
        cli_contender("python bare_asyncio.py", bare, cfg, tmp),
    )
    result = run_duel(cfg, tmp, duel)
    result["startup"] = startup_times(cfg, tmp)
    return result


IMPORTS = {
    "python -c pass": "pass",
    "import asyncproc.cli.main": "import asyncproc.cli.main",
    "import asyncio, orjson": "import asyncio, orjson",
}


def startup_times(cfg: Config, tmp: Path) -> dict[str, Any]:
    """Whole-process wall time of importing each side's modules, rotating the order."""
    names = list(IMPORTS)
    walls: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(cfg.import_repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            proc = run_proc([PY, "-c", IMPORTS[name]], cfg, tmp, rss=False)
            expect_rc(proc, 0, f"(noop) {name}")
            walls[name].append(proc.wall_s)
    medians = {name: median(w) for name, w in walls.items()}
    log(
        "(noop) start-up medians: "
        + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in medians.items())
    )
    return {"repeats": cfg.import_repeats, "median_s": medians, "runs_s": walls}


# --------------------------------------------------------------------------- sync


def bench_sync(cfg: Config, tmp: Path) -> dict[str, Any]:
    n = cfg.sync_items
    inp = tmp / "sync.txt"
    write_text_input(inp, n)
    ideal = SYNC_CONCURRENCY / 0.01
    log(f"(sync) {n:,} items x 10 ms blocking; ideal {ideal:,.0f} items/s")
    ap = {
        "engine": "asyncproc",
        "input": str(inp),
        "processor": SYNC,
        "options": {"concurrency": SYNC_CONCURRENCY},
    }
    base = {"engine": "threads", "input": str(inp), "threads": SYNC_CONCURRENCY}
    duel = Duel(
        "sync",
        f"sync: {n:,} items, def + time.sleep(0.01), concurrency 256",
        n,
        (child_contender("asyncproc", ap, cfg, tmp, "sync"),),
        child_contender("ThreadPoolExecutor(256)", base, cfg, tmp, "sync"),
    )
    result = run_duel(cfg, tmp, duel)
    result["ideal_items_per_s"] = ideal
    return result


# --------------------------------------------------------------------------- rss


def rss_run(engine: str, inp: Path, out: Path, cfg: Config, tmp: Path) -> dict[str, Any]:
    """Peak RSS of one whole no-op process (see ``run_proc``)."""
    if engine == "asyncproc":
        ck = Path(tempfile.mkdtemp(prefix="ck-", dir=tmp))
        cmd = ap_cli(
            inp, out, ck, "identity", cfg, "--workers", "1", "--concurrency", str(NOOP_CONCURRENCY)
        )
    else:
        ck, cmd = None, bare_cli(inp, out, cfg)
    proc = run_proc(cmd, cfg, tmp)
    if ck is not None:
        shutil.rmtree(ck, ignore_errors=True)
    expect_rc(proc, 0, f"(rss) {engine}")
    doc = ap_summary(proc, f"(rss) {engine}")
    return {
        "maxrss_kb": proc.maxrss_kb,
        "items": doc.get("processed", doc.get("items")),
        "wall_s": proc.wall_s,
    }


def bench_rss(cfg: Config, tmp: Path) -> dict[str, Any]:
    sizes, engines = cfg.rss_sizes, ("asyncproc", "bare")
    inputs = {n: tmp / f"rss-{n}.txt" for n in sizes}
    for n, path in inputs.items():
        write_lines(path, plain_items(n))
    runs: dict[str, list[dict[str, Any]]] = {f"{e}-{n}": [] for n in sizes for e in engines}
    mismatch: dict[int, str | None] = {n: None for n in sizes}
    for rep in range(cfg.repeats):
        cells = [(n, e) for n in sizes for e in engines]
        for n, e in cells if rep % 2 == 0 else cells[::-1]:
            r = rss_run(e, inputs[n], tmp / f"rss-{e}-{n}.jsonl", cfg, tmp)
            if r["items"] != n:
                raise BenchError(f"(rss) {e} {n:,}: {r['items']} items, expected {n}")
            runs[f"{e}-{n}"].append(r)
            log(
                f"(rss) {e} {n:,} items repeat {rep + 1}: peak {r['maxrss_kb'] / 1024:.1f} MiB, "
                f"{r['wall_s']:.1f}s"
            )
        for n in sizes:
            outs = [tmp / f"rss-{e}-{n}.jsonl" for e in engines]
            mismatch[n] = mismatch[n] or compare_outputs(*outs)
            for path in outs:
                path.unlink(missing_ok=True)
    return summarize_rss(sizes, runs, mismatch)


def summarize_rss(
    sizes: tuple[int, int], runs: dict[str, list[dict[str, Any]]], mismatch: dict[int, str | None]
) -> dict[str, Any]:
    med = {k: median(r["maxrss_kb"] for r in v) for k, v in runs.items()}
    small, large = sizes
    checks = [
        check(
            f"asyncproc / bare peak RSS at {n:,}",
            med[f"asyncproc-{n}"] / med[f"bare-{n}"],
            TARGET_RSS_RATIO,
            at_most=True,
        )
        for n in sizes
    ]
    flat = med[f"asyncproc-{large}"] / med[f"asyncproc-{small}"]
    checks.append(
        check(f"asyncproc {large:,} / {small:,} peak RSS", flat, TARGET_RSS_FLAT, at_most=True)
    )
    return {
        "scenario": f"rss: no-op job, --workers 1, {small:,} and {large:,} items",
        "sizes": list(sizes),
        "maxrss_kb_median": med,
        "bare_large_over_small": med[f"bare-{large}"] / med[f"bare-{small}"],
        "rss_source": RSS_SOURCE,
        "checks": checks,
        "output_ok": not any(mismatch.values()),
        "output_mismatch": {str(n): m for n, m in mismatch.items() if m},
        "runs": runs,
    }


# --------------------------------------------------------------------------- resume


@dataclass(frozen=True)
class ResumeSetup:
    inp: Path
    out: Path  # the crashed run's output path (a resume must name the same one)
    master: Path  # checkpoint dir of the half-done run, copied for every resume
    master_log: Path  # call log of the crash run
    n: int
    expected: bytes  # the output every run must produce


def resume_cmd(s: ResumeSetup, ck: Path, cfg: Config, *extra: str) -> list[str]:
    return ap_cli(s.inp, s.out, ck, CALL_LOG, cfg, "--batch-size", "1000", *extra)


def expected_output(n: int) -> bytes:
    return b"".join(
        orjson.dumps(
            {"index": i, "item": item, "length": len(item)}, option=orjson.OPT_APPEND_NEWLINE
        )
        for i, item in enumerate(plain_items(n, "rec-"))
    )


def count_calls(path: Path) -> collections.Counter[str]:
    if not path.exists():
        return collections.Counter()
    return collections.Counter(path.read_text(encoding="utf-8").splitlines())


def output_problem(path: Path, expected: bytes) -> str | None:
    if not path.exists():
        return f"{path} does not exist"
    got = path.read_bytes()
    if got == expected:
        return None
    at = next(
        (i for i, (a, b) in enumerate(zip(got, expected, strict=False)) if a != b),
        min(len(got), len(expected)),
    )
    return (
        f"{len(got)} bytes vs {len(expected)} expected; first difference at byte {at}: "
        f"{got[max(0, at - 40) : at + 40]!r}"
    )


def clean_run(s: ResumeSetup, cfg: Config, tmp: Path) -> dict[str, Any]:
    ck, out, calls = tmp / "resume-clean-ck", tmp / "resume-clean.jsonl", tmp / "clean.log"
    cmd = ap_cli(
        s.inp, out, ck, CALL_LOG, cfg, "--batch-size", "1000", "--workers", str(RESUME_WORKERS)
    )
    proc = run_proc(cmd, cfg, tmp, child_env(calls))
    expect_rc(proc, 0, "(resume) clean run")
    problem = output_problem(out, s.expected)
    n_calls = sum(count_calls(calls).values())
    log(
        f"(resume) clean run: {proc.wall_s:.1f}s, {n_calls:,} calls, output as expected: "
        f"{problem is None}"
    )
    shutil.rmtree(ck, ignore_errors=True)
    out.unlink(missing_ok=True)
    return {"wall_s": proc.wall_s, "calls": n_calls, "output_problem": problem}


def crash_run(s: ResumeSetup, cfg: Config, tmp: Path) -> dict[str, Any]:
    crash_at = s.n // 2
    cmd = resume_cmd(
        s, s.master, cfg, "--workers", str(RESUME_WORKERS), "--simulate-crash", str(crash_at)
    )
    proc = run_proc(cmd, cfg, tmp, child_env(s.master_log))
    expect_rc(proc, 3, "(resume) crash run")
    committed = parse_committed(proc.stderr)
    n_calls = sum(count_calls(s.master_log).values())
    on_disk = done_on_disk(s.master, cfg, tmp)
    log(
        f"(resume) crash run: exit 3 after {proc.wall_s:.1f}s; says {committed} committed, "
        f"{on_disk:,} done on disk; {n_calls:,} calls"
    )
    return {
        "crash_at": crash_at,
        "committed": committed,
        "done_on_disk": on_disk,
        "calls": n_calls,
        "wall_s": proc.wall_s,
        "stderr_tail": tail(proc.stderr, 3),
    }


def done_on_disk(ck: Path, cfg: Config, tmp: Path) -> int:
    """Items done (processed + failed) in the checkpoints on disk: ``asyncproc list``."""
    proc = run_proc([PY, "-m", "asyncproc", "list", "--json", "--checkpoint", str(ck)], cfg, tmp)
    expect_rc(proc, 0, "(resume) asyncproc list")
    runs = json.loads(proc.stdout)
    if len(runs) != 1:
        raise BenchError(f"(resume) expected one run in {ck}, found {len(runs)}")
    return int(runs[0]["processed"]) + int(runs[0]["failed"])


def parse_committed(stderr: str) -> int | None:
    found = re.findall(r"crash after (\d+) committed items", stderr)
    return int(found[-1]) if found else None


RESUME_VARIANTS: dict[str, tuple[str, ...]] = {
    "--workers 8": ("--workers", "8"),
    "--workers 4 --processes 2": ("--workers", "4", "--processes", "2"),
    "--workers 4 (control)": ("--workers", "4"),
}


def resume_once(
    s: ResumeSetup, crash: dict[str, Any], name: str, cfg: Config, tmp: Path
) -> dict[str, Any]:
    """Resume a copy of the crashed run with variant ``name``; count every call."""
    ck, calls = tmp / "resume-ck", tmp / "resume.log"
    shutil.copytree(s.master, ck, symlinks=True)
    shutil.copyfile(s.master_log, calls)
    proc = run_proc(resume_cmd(s, ck, cfg, *RESUME_VARIANTS[name]), cfg, tmp, child_env(calls))
    expect_rc(proc, 0, f"(resume) {name}")
    summary = ap_summary(proc, f"(resume) {name}")
    counts = count_calls(calls)
    resume_calls = sum(counts.values()) - crash["calls"]
    result = {
        "wall_s": proc.wall_s,
        "resumed": summary.get("resumed"),
        "summary_workers": summary.get("workers"),
        "processed": summary.get("processed"),
        "calls_total": sum(counts.values()),
        "extra_calls": sum(counts.values()) - s.n,
        "resume_calls": resume_calls,
        "resume_surplus": resume_calls - (s.n - crash["done_on_disk"]),
        "items_called_twice_or_more": sum(1 for c in counts.values() if c > 1),
        "items_never_called": s.n - len(counts),
        "output_problem": output_problem(s.out, s.expected),
    }
    shutil.rmtree(ck, ignore_errors=True)
    calls.unlink()
    s.out.unlink(missing_ok=True)
    return result


def bench_resume(cfg: Config, tmp: Path) -> dict[str, Any]:
    n = cfg.resume_items
    s = ResumeSetup(
        tmp / "resume.txt",
        tmp / "resume-out.jsonl",
        tmp / "resume-master",
        tmp / "crash.log",
        n,
        expected_output(n),
    )
    write_lines(s.inp, plain_items(n, "rec-"))
    log(f"(resume) {n:,} items, --workers {RESUME_WORKERS}, crash at {n // 2:,}")
    clean, crash = clean_run(s, cfg, tmp), crash_run(s, cfg, tmp)
    names = list(RESUME_VARIANTS)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for rep in range(cfg.repeats):
        shift = rep % len(names)
        for name in names[shift:] + names[:shift]:
            r = resume_once(s, crash, name, cfg, tmp)
            runs[name].append(r)
            log(
                f"(resume) {name} repeat {rep + 1}: {r['wall_s']:.1f}s, summary workers "
                f"{r['summary_workers']}, {r['extra_calls']:,} calls beyond one per item, "
                f"output identical: {r['output_problem'] is None}"
            )
    return summarize_resume(n, clean, crash, runs)


def summarize_resume(
    n: int, clean: dict[str, Any], crash: dict[str, Any], runs: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    rows = [
        {
            "name": name,
            "wall_s_median": median(r["wall_s"] for r in rs),
            "extra_calls_max": max(r["extra_calls"] for r in rs),
            "extra_calls_median": median(r["extra_calls"] for r in rs),
            "resume_surplus_max": max(r["resume_surplus"] for r in rs),
            "summary_workers": rs[0]["summary_workers"],
            "resumed": all(r["resumed"] is True for r in rs),
            "items_never_called": max(r["items_never_called"] for r in rs),
            "output_identical": all(r["output_problem"] is None for r in rs),
            "output_problem": next((r["output_problem"] for r in rs if r["output_problem"]), None),
        }
        for name, rs in runs.items()
    ]
    control = rows[-1]["extra_calls_max"]
    checks = [
        check(
            f"{r['name']}: extra calls - control's", r["extra_calls_max"] - control, 0, at_most=True
        )
        for r in rows[:-1]
    ]
    ok = clean["output_problem"] is None and all(r["output_identical"] for r in rows)
    return {
        "scenario": f"resume: {n:,} items, crashed --workers 4 run at half, resumed",
        "items": n,
        "clean": clean,
        "crash": crash,
        "rows": rows,
        "checks": checks,
        "output_ok": ok,
        "runs": runs,
    }


# --------------------------------------------------------------------------- report


def mib(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def yes(ok: bool) -> str:
    return "[green]yes[/green]" if ok else "[red]NO[/red]"


def render_duel(r: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"{r['scenario']} (medians)")
    for col in (
        "contender",
        "time s",
        "items/s",
        "speed vs base (median of pairs)",
        "peak RSS MiB (main process)",
        "same bytes as base",
    ):
        t.add_column(col, justify="left" if col == "contender" else "right")
    for row in r["rows"]:
        t.add_row(
            row["name"],
            f"{row['elapsed_s_median']:.3f}",
            f"{row['items_per_s_median']:,.0f}",
            f"{row['speed_ratio_median']:.3f}x",
            mib(row["maxrss_kb_median"]),
            yes(row["output_identical"]),
        )
    b = r["baseline"]
    t.add_row(
        f"{b['name']} (baseline)",
        f"{b['elapsed_s_median']:.3f}",
        f"{b['items_per_s_median']:,.0f}",
        "1",
        mib(b["maxrss_kb_median"]),
        "",
    )
    return t


def duel_notes(key: str, r: dict[str, Any]) -> list[str]:
    notes = [
        f"({key}) per-pair speed ratios: "
        + "; ".join(
            f"{row['name']} " + ", ".join(f"{x:.3f}" for x in row["speed_ratios"])
            for row in r["rows"]
        )
    ]
    if key == "skew":
        notes.append(
            f"(skew) ideal {r['ideal_s']:.2f}s (total sleep / 64); % of ideal: "
            + ", ".join(
                f"{row['name']} {row['pct_of_ideal']:.0f}%" for row in (*r["rows"], r["baseline"])
            )
        )
    if key == "sync":
        notes.append(f"(sync) ideal {r['ideal_items_per_s']:,.0f} items/s (256 / 10 ms)")
    if key == "noop":
        med = r["startup"]["median_s"]
        notes.append(
            "(noop) start-up, whole process, medians of "
            f"{r['startup']['repeats']}: "
            + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in med.items())
        )
    notes += [
        f"[red]({key}) {row['name']} output differs:[/red] {row['output_mismatch']}"
        for row in r["rows"]
        if row.get("output_mismatch")
    ]
    return notes


def render_rss(r: dict[str, Any]) -> Any:
    from rich.table import Table

    small, large = r["sizes"]
    med = r["maxrss_kb_median"]
    t = Table(title=f"{r['scenario']} (peak RSS MiB, medians, {r['rss_source']})")
    for col in ("engine", f"{small:,} items", f"{large:,} items", "large / small"):
        t.add_column(col, justify="left" if col == "engine" else "right")
    for e in ("asyncproc", "bare"):
        a, b = med[f"{e}-{small}"], med[f"{e}-{large}"]
        t.add_row(e, mib(a), mib(b), f"{b / a:.2f}x")
    t.add_row(
        "asyncproc / bare",
        *(f"{med[f'asyncproc-{n}'] / med[f'bare-{n}']:.2f}x" for n in (small, large)),
        "",
    )
    return t


def render_resume(r: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"{r['scenario']} (max over repeats; wall: median)")
    for col in (
        "resume",
        "resumed",
        "summary workers",
        "calls beyond 1/item",
        "resume calls beyond items left",
        "items never called",
        "wall s",
        "output = clean run",
    ):
        t.add_column(col, justify="left" if col == "resume" else "right", no_wrap=col == "resume")
    for row in r["rows"]:
        t.add_row(
            row["name"],
            yes(row["resumed"]),
            str(row["summary_workers"]),
            f"{row['extra_calls_max']:,}",
            f"{row['resume_surplus_max']:,}",
            str(row["items_never_called"]),
            f"{row['wall_s_median']:.2f}",
            yes(row["output_identical"]),
        )
    return t


def resume_notes(r: dict[str, Any]) -> list[str]:
    c, clean = r["crash"], r["clean"]
    notes = [
        f"(resume) crash run (--simulate-crash {c['crash_at']:,}): {c['calls']:,} calls, "
        f"said {c['committed']} committed, {c['done_on_disk']:,} done on disk "
        f"(asyncproc list); clean run: {clean['calls']:,} calls, {clean['wall_s']:.2f}s"
    ]
    problems = [clean["output_problem"], *(row["output_problem"] for row in r["rows"])]
    notes += [f"[red](resume) wrong output:[/red] {p}" for p in problems if p]
    return notes


def render_checks(results: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title="Targets")
    for col in ("scenario", "measure", "value", "target", "met"):
        t.add_column(col, justify="right" if col in ("value", "target") else "left")
    for key in SCENARIO_NAMES:
        r = results.get(key)
        if r is None:
            continue
        if "error" in r:
            t.add_row(key, "[red]ERROR[/red]", "", "", "")
            continue
        t.add_row(key, "output correct", "", "", yes(r["output_ok"]))
        for c in r["checks"]:
            t.add_row(key, c["what"], f"{c['value']:.3f}", c["target"], yes(c["ok"]))
    return t


def render(results: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=160)
    env, conf = results["environment"], results["config"]
    console.print(
        f"python {env['python']}, {env['cpus']} CPUs, loop {conf['loop']}, "
        f"repeats {conf['repeats']}" + (" (QUICK sizes)" if conf["quick"] else "")
    )
    for key in ("skew", "noop", "sync"):
        r = results.get(key)
        if r and "error" not in r:
            console.print(render_duel(r))
            for note in duel_notes(key, r):
                console.print(note, highlight=False)
    if results.get("rss") and "error" not in results["rss"]:
        console.print(render_rss(results["rss"]))
    if results.get("resume") and "error" not in results["resume"]:
        console.print(render_resume(results["resume"]))
        for note in resume_notes(results["resume"]):
            console.print(note, highlight=False)
    console.print(render_checks(results))
    for key in SCENARIO_NAMES:
        err = results.get(key, {}).get("error")
        if err:
            console.print(f"[red]({key}) ERROR:[/red] {err}", highlight=False)


# --------------------------------------------------------------------------- main

SCENARIOS: dict[str, Callable[[Config, Path], dict[str, Any]]] = {
    "skew": bench_skew,
    "noop": bench_noop,
    "sync": bench_sync,
    "rss": bench_rss,
    "resume": bench_resume,
}


def problems_in(results: dict[str, Any], check_targets: bool) -> list[str]:
    problems = []
    for key in SCENARIO_NAMES:
        r = results.get(key)
        if r is None:
            continue
        if "error" in r:
            problems.append(f"({key}) error")
            continue
        if not r["output_ok"]:
            problems.append(f"({key}) wrong output")
        if check_targets:
            problems += [f"({key}) missed: {c['what']}" for c in r["checks"] if not c["ok"]]
    return problems


def run_all(cfg: Config, tmp: Path) -> dict[str, Any]:
    results: dict[str, Any] = {
        "config": asdict(cfg) | {"loop": cfg.loop},
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "time_bin": TIME_BIN,
            "tmp": str(tmp),
        },
    }
    for key in cfg.only:
        started = time.perf_counter()
        try:
            results[key] = SCENARIOS[key](cfg, tmp)
        except (BenchError, OSError, ValueError, KeyError) as e:
            log(f"({key}) FAILED: {e}")
            results[key] = {"error": f"{type(e).__name__}: {e}"}
        log(f"({key}) took {time.perf_counter() - started:.0f}s")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="asyncproc-bench-v2-", dir="/tmp"))
    log(f"data dir {tmp}")
    try:
        results = run_all(cfg, tmp)
    finally:
        if cfg.keep_data:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if cfg.as_json:
        print(json.dumps(results, indent=2, default=str))
    else:
        render(results)
    problems = problems_in(results, cfg.check_targets)
    if problems:
        log("problems: " + "; ".join(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
