"""Benchmarks of asyncproc's core engine against a hand-written asyncio program.

Scenarios (see benchmarks/README.md):

(a) no-op throughput: 200,000 items, processor ``identity`` (bare: ``noop``),
    concurrency 64.  Target: asyncproc >= 0.7x the bare program.
(b) latency-bound throughput: 100,000 items sleeping 10 ms, concurrency 1000
    (ideal 100,000 items/s).  Target: asyncproc >= 0.9x the bare program.
(c) resume start-up: time from starting ``asyncproc run`` on a half-done run to
    its first processed item, for a >= 5,000,000-line input vs a 10-line input.
    Target: large / tiny <= 1.5; peak RSS flat in input size.

(a) and (b) alternate asyncproc and the bare program, each run in a fresh
subprocess (``benchmarks/_runner.py``) timing only the job.  The outputs of the
first pair are compared byte for byte.

Usage::

    python benchmarks/bench_core.py [--quick] [--only a,b,c] [--repeats N] [--json]
"""

from __future__ import annotations

import argparse
import filecmp
import itertools
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "_runner.py"
FIRST_ITEM = HERE / "_first_item.py"
FIRST_ITEM_ENV = "ASYNCPROC_BENCH_FIRST_ITEM"
ITEM_DELAY_ENV = "ASYNCPROC_BENCH_ITEM_DELAY"
MARKER = "BENCH_RESULT "
PY = sys.executable
TIME_BIN: str | None = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None

TARGET_A = 0.7
TARGET_B = 0.9
TARGET_C = 1.5
TARGET_RSS = 1.5  # "flat": large-input peak RSS within this factor of the tiny input's
ENGINES = ("asyncproc", "bare")
TINY_LINES = 10
RESUME_KINDS = ("large", "medium", "tiny")
RESUME_KEYS = ("startup_s", "rss_at_first_item_kb", "peak_rss_kb", "resume_wall_s")


class BenchError(RuntimeError):
    """A measured run failed or misbehaved; the message says how."""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tail(text: str, n: int = 12) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[-n:])


def median(values: Iterable[float]) -> float:
    return float(statistics.median(list(values)))


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Config:
    repeats: int
    only: frozenset[str]
    items_a: int
    items_b: int
    lines_c: int
    quick: bool
    workers: int | None
    bare_uvloop: bool
    timeout: float
    keep_data: bool
    as_json: bool
    check_targets: bool
    concurrency_a: int = 64
    concurrency_b: int = 1000
    latency_b: float = 0.01


def parse_args(argv: list[str] | None) -> Config:
    p = argparse.ArgumentParser(description="asyncproc core benchmarks vs bare asyncio")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke sizes: 20,000 / 10,000 items, 500,000 resume lines, 2 repeats",
    )
    p.add_argument("--only", default="a,b,c", help="comma-separated subset of a,b,c")
    p.add_argument("--repeats", type=int, default=None, help="repeats (default 5, quick 2)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="asyncproc --workers for (a)/(b) (default: the engine's choice)",
    )
    p.add_argument(
        "--bare-uvloop",
        action="store_true",
        help="run both programs on uvloop (default: both on asyncio)",
    )
    p.add_argument("--timeout", type=float, default=1800.0, help="per-subprocess timeout (s)")
    p.add_argument("--keep-data", action="store_true", help="keep the temp dir (debugging)")
    p.add_argument(
        "--check-targets",
        action="store_true",
        help="exit 1 when a target is missed (not only on errors)",
    )
    a = p.parse_args(argv)
    only = frozenset(s.strip() for s in a.only.split(",") if s.strip())
    if not only or not only <= {"a", "b", "c"}:
        p.error("--only takes a comma-separated subset of a,b,c")
    repeats = a.repeats if a.repeats is not None else (2 if a.quick else 5)
    if repeats < 1:
        p.error("--repeats must be >= 1")
    return Config(
        repeats=repeats,
        only=only,
        items_a=20_000 if a.quick else 200_000,
        items_b=10_000 if a.quick else 100_000,
        lines_c=500_000 if a.quick else 5_000_000,
        quick=a.quick,
        workers=a.workers,
        bare_uvloop=a.bare_uvloop,
        timeout=a.timeout,
        keep_data=a.keep_data,
        as_json=a.json,
        check_targets=a.check_targets,
    )


# --------------------------------------------------------------------------- inputs

WORDS = (
    "the quick brown fox jumps over the lazy dog",
    "naïve café — ünïcode ✓",
    "日本語のテキスト",
    "tab\tinside",
    'quotes "and" \\backslashes\\',
    "x" * 60,
)


def write_text_input(path: Path, n_items: int) -> None:
    """Write ``n_items`` non-blank lines, with some blank, padded and CRLF lines mixed in."""
    with open(path, "wb") as f:
        chunk: list[str] = []
        for i in range(n_items):
            line = f"{i:07d} {WORDS[i % len(WORDS)]}"
            if i % 97 == 0:
                line = f"  {line} \r"  # surrounding whitespace and a CRLF ending
            chunk.append(line)
            if i % 1000 == 999:
                chunk.append(" \t ")  # blank: not an item
            if len(chunk) >= 20_000:
                f.write(("\n".join(chunk) + "\n").encode())
                chunk.clear()
        if chunk:
            f.write(("\n".join(chunk) + "\n").encode())


def resume_item(i: int) -> str:
    return f"item-{i}"


def write_resume_input(path: Path, n_lines: int) -> None:
    with open(path, "wb") as f:
        for start in range(0, n_lines, 100_000):
            stop = min(n_lines, start + 100_000)
            f.write("".join(f"{resume_item(i)}\n" for i in range(start, stop)).encode())


def verify_resume_output(path: Path, n_items: int) -> str | None:
    """None if ``path`` is exactly the identity .jsonl output, else what differs."""
    if not path.exists():
        return f"{path} does not exist"
    count = 0
    with open(path, "rb") as f:
        for i, line in enumerate(f):
            expected = orjson.dumps(
                {"index": i, "result": resume_item(i)}, option=orjson.OPT_APPEND_NEWLINE
            )
            if line != expected:
                return f"line {i + 1}: got {line[:120]!r}, expected {expected!r}"
            count += 1
    if count != n_items:
        return f"{count} lines, expected {n_items}"
    return None


def compare_outputs(a: Path, b: Path) -> str | None:
    """None if the files are byte-identical, else the first difference."""
    if filecmp.cmp(a, b, shallow=False):
        return None
    with open(a, "rb") as fa, open(b, "rb") as fb:
        for n, (la, lb) in enumerate(itertools.zip_longest(fa, fb), start=1):
            if la != lb:
                return (
                    f"sizes {a.stat().st_size} vs {b.stat().st_size} bytes; first difference "
                    f"at line {n}: asyncproc={la[:160] if la else la!r} "
                    f"bare={lb[:160] if lb else lb!r}"
                )
    return "files differ"


# --------------------------------------------------------------------------- subprocesses


def run_child(cmd: list[str], timeout: float, what: str, cwd: Path) -> dict[str, Any]:
    """Run a ``_runner.py`` command; return its BENCH_RESULT object."""
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"{what}: timed out after {timeout:.0f}s") from e
    if proc.returncode != 0:
        raise BenchError(f"{what}: exit {proc.returncode}; stderr:\n{tail(proc.stderr)}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(MARKER):
            result: dict[str, Any] = json.loads(line[len(MARKER) :])
            return result
    raise BenchError(f"{what}: no result line; stdout:\n{tail(proc.stdout)}")


def wait4_with_timeout(
    p: subprocess.Popen[bytes], timeout: float, cmd: list[str]
) -> tuple[int, Any]:
    """Reap ``p`` with os.wait4 (to get its rusage); kill its process group on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid == p.pid:
            p.returncode = os.waitstatus_to_exitcode(status)
            return p.returncode, ru
        if time.monotonic() > deadline:
            os.killpg(p.pid, signal.SIGKILL)
            os.wait4(p.pid, 0)
            p.returncode = -9
            raise BenchError(f"timed out after {timeout:.0f}s: {' '.join(cmd)}")
        time.sleep(0.01)


_TIME_RSS = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")


def parse_time_rss(stderr: str) -> int | None:
    found = _TIME_RSS.findall(stderr)
    return int(found[-1]) if found else None


# --------------------------------------------------------------------------- (a) and (b)


@dataclass(frozen=True)
class PairSpec:
    key: str
    title: str
    n_items: int
    ap_processor: str
    bare_processor: str
    concurrency: int
    latency: float | None
    target: float
    ideal_items_per_s: float | None


def runner_cmd(
    engine: str, spec: PairSpec, inp: Path, out: Path, ck: Path, cfg: Config
) -> list[str]:
    cmd = [
        PY,
        str(RUNNER),
        engine,
        "--input",
        str(inp),
        "--output",
        str(out),
        "--concurrency",
        str(spec.concurrency),
    ]
    if spec.latency is not None:
        cmd += ["--latency", repr(spec.latency)]
    if engine == "asyncproc":
        cmd += ["--processor", spec.ap_processor, "--checkpoint", str(ck)]
        if cfg.workers is not None:
            cmd += ["--workers", str(cfg.workers)]
    else:
        cmd += ["--processor", spec.bare_processor]
        if cfg.bare_uvloop:
            cmd.append("--bare-uvloop")
    return cmd


def run_pair(cfg: Config, tmp: Path, spec: PairSpec, inp: Path, rep: int) -> dict[str, Any]:
    """One asyncproc run and one bare run (order alternating by ``rep``)."""
    order = ENGINES if rep % 2 == 0 else ENGINES[::-1]
    ck = tmp / f"{spec.key}-checkpoint-{rep}"
    res: dict[str, Any] = {}
    outs: dict[str, Path] = {}
    for engine in order:
        out = tmp / f"{spec.key}-{engine}-{rep}.jsonl"
        what = f"({spec.key}) {engine} repeat {rep + 1}"
        r = run_child(runner_cmd(engine, spec, inp, out, ck, cfg), cfg.timeout, what, tmp)
        if r["items"] != spec.n_items or r.get("failed"):
            raise BenchError(
                f"{what}: processed {r['items']} items (failed {r.get('failed')}),"
                f" expected {spec.n_items}: {r}"
            )
        log(
            f"{what}: {r['items_per_s']:,.0f} items/s, {r['elapsed_s']:.3f}s, "
            f"maxrss {r['maxrss_kb'] / 1024:.1f} MiB"
        )
        res[engine], outs[engine] = r, out
    if rep == 0:
        res["mismatch"] = compare_outputs(outs["asyncproc"], outs["bare"])
        log(
            f"({spec.key}) outputs byte-identical: {res['mismatch'] is None}"
            + (f" -- {res['mismatch']}" if res["mismatch"] else "")
        )
    for p in outs.values():
        p.unlink(missing_ok=True)
    shutil.rmtree(ck, ignore_errors=True)
    return res


def bench_pair(cfg: Config, tmp: Path, spec: PairSpec) -> dict[str, Any]:
    inp = tmp / f"{spec.key}-input.txt"
    write_text_input(inp, spec.n_items)
    log(
        f"({spec.key}) {spec.title}: input {inp.stat().st_size / 1e6:.1f} MB, {cfg.repeats} repeats"
    )
    pairs = [run_pair(cfg, tmp, spec, inp, rep) for rep in range(cfg.repeats)]
    inp.unlink()
    return summarize_pair(cfg, spec, pairs)


def summarize_pair(cfg: Config, spec: PairSpec, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    ap = [p["asyncproc"] for p in pairs]
    bare = [p["bare"] for p in pairs]
    ratios = [a["items_per_s"] / b["items_per_s"] for a, b in zip(ap, bare, strict=True)]
    mismatch = pairs[0]["mismatch"]
    out: dict[str, Any] = {
        "scenario": spec.title,
        "items": spec.n_items,
        "concurrency": spec.concurrency,
        "repeats": len(pairs),
        "asyncproc_items_per_s_median": median(r["items_per_s"] for r in ap),
        "bare_items_per_s_median": median(r["items_per_s"] for r in bare),
        "ratio_median": median(ratios),
        "ratios": ratios,
        "asyncproc_items_per_s": [r["items_per_s"] for r in ap],
        "bare_items_per_s": [r["items_per_s"] for r in bare],
        "asyncproc_maxrss_kb_median": median(r["maxrss_kb"] for r in ap),
        "bare_maxrss_kb_median": median(r["maxrss_kb"] for r in bare),
        "asyncproc_children_maxrss_kb_max": max(r["children_maxrss_kb"] for r in ap),
        "asyncproc_workers": ap[0].get("workers"),
        "asyncproc_uvloop_loaded": any(r["uvloop_loaded"] for r in ap),
        "bare_loop": "uvloop" if cfg.bare_uvloop else "asyncio",
        "output_identical": mismatch is None,
        "output_mismatch": mismatch,
        "target_ratio": spec.target,
    }
    out["meets_target"] = out["ratio_median"] >= spec.target
    if spec.ideal_items_per_s:
        out["ideal_items_per_s"] = spec.ideal_items_per_s
        out["asyncproc_pct_of_ideal"] = (
            100 * out["asyncproc_items_per_s_median"] / (spec.ideal_items_per_s)
        )
        out["bare_pct_of_ideal"] = 100 * out["bare_items_per_s_median"] / spec.ideal_items_per_s
    return out


def bench_a(cfg: Config, tmp: Path) -> dict[str, Any]:
    spec = PairSpec(
        "a",
        f"(a) {cfg.items_a:,} no-op items, concurrency {cfg.concurrency_a}",
        cfg.items_a,
        "identity",
        "noop",
        cfg.concurrency_a,
        None,
        TARGET_A,
        None,
    )
    return bench_pair(cfg, tmp, spec)


def bench_b(cfg: Config, tmp: Path) -> dict[str, Any]:
    ideal = cfg.concurrency_b / cfg.latency_b
    spec = PairSpec(
        "b",
        f"(b) {cfg.items_b:,} items x {cfg.latency_b * 1000:g} ms sleep, "
        f"concurrency {cfg.concurrency_b}",
        cfg.items_b,
        "sleep",
        "sleep",
        cfg.concurrency_b,
        cfg.latency_b,
        TARGET_B,
        ideal,
    )
    return bench_pair(cfg, tmp, spec)


# --------------------------------------------------------------------------- (c) resume


@dataclass(frozen=True)
class ResumeCase:
    kind: str
    input: Path
    output: Path
    master: Path  # checkpoint dir holding the half-done run; copied for each repeat
    n_items: int
    workers: int
    batch_size: int
    crash_at: int
    concurrency: int | None  # None: asyncproc's default
    crash_item_delay: float  # seconds per item in the crash run only (see _first_item.py)


def asyncproc_cmd(case: ResumeCase, checkpoint: Path, *, crash: bool) -> list[str]:
    cmd = [
        PY,
        "-m",
        "asyncproc",
        "run",
        "--input",
        str(case.input),
        "--output",
        str(case.output),
        "--checkpoint",
        str(checkpoint),
        "--processor",
        f"{FIRST_ITEM}:fn",
        "--format",
        "text",
        "--workers",
        str(case.workers),
        "--batch-size",
        str(case.batch_size),
        "--quiet",
    ]
    if case.concurrency is not None:
        cmd += ["--concurrency", str(case.concurrency)]
    if crash:
        cmd += ["--simulate-crash", str(case.crash_at)]
    return cmd


def child_env(stamp: Path | None = None, item_delay: float = 0.0) -> dict[str, str]:
    drop = (FIRST_ITEM_ENV, ITEM_DELAY_ENV, "ASYNCPROC_CRASH_AT")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    if stamp is not None:
        env[FIRST_ITEM_ENV] = str(stamp)
    if item_delay:
        env[ITEM_DELAY_ENV] = repr(item_delay)
    return env


def make_half_done(case: ResumeCase, cfg: Config, tmp: Path) -> dict[str, Any]:
    """Run asyncproc with --simulate-crash at half the items; expect exit 3."""
    cmd = asyncproc_cmd(case, case.master, crash=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=cfg.timeout,
            env=child_env(item_delay=case.crash_item_delay),
            cwd=tmp,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"(c) crash run ({case.kind}) timed out after {cfg.timeout:.0f}s") from e
    elapsed = time.perf_counter() - t0
    if proc.returncode != 3:
        raise BenchError(
            f"(c) crash run ({case.kind}) exited {proc.returncode}, expected 3 "
            f"(simulated crash); command: {' '.join(cmd)}\nstderr:\n{tail(proc.stderr)}"
        )
    if not case.master.is_dir() or not any(case.master.iterdir()):
        raise BenchError(f"(c) crash run ({case.kind}) left no run under {case.master}")
    committed = parse_committed(proc.stderr)
    if committed is not None and committed >= case.n_items:
        raise BenchError(
            f"(c) crash run ({case.kind}) committed {committed} of {case.n_items} items "
            "before crashing: nothing left to resume"
        )
    log(
        f"(c) half-done {case.kind} run: crashed as asked (exit 3) after {elapsed:.1f}s, "
        f"{committed} of {case.n_items} items committed"
    )
    return {
        "crash_run_s": elapsed,
        "committed_at_crash": committed,
        "crash_stderr_tail": tail(proc.stderr, 3),
    }


_COMMITTED = re.compile(r"crash after (\d+) committed items")


def parse_committed(stderr: str) -> int | None:
    """Items committed when --simulate-crash fired, from asyncproc's stderr message."""
    found = _COMMITTED.findall(stderr)
    return int(found[-1]) if found else None


def check_resume_summary(stdout: str, case: ResumeCase) -> dict[str, Any]:
    try:
        summary: dict[str, Any] = json.loads(stdout)
    except ValueError as e:
        raise BenchError(
            f"(c) resume ({case.kind}): stdout is not one JSON object: {stdout[:300]!r}"
        ) from e
    problems = []
    if summary.get("resumed") is not True:
        problems.append(f"resumed={summary.get('resumed')!r}")
    if summary.get("status") != "completed":
        problems.append(f"status={summary.get('status')!r}")
    if summary.get("total_items") != case.n_items or summary.get("processed") != case.n_items:
        problems.append(
            f"total_items={summary.get('total_items')!r} "
            f"processed={summary.get('processed')!r}, expected {case.n_items}"
        )
    if problems:
        raise BenchError(f"(c) resume ({case.kind}) summary unexpected: {'; '.join(problems)}")
    return summary


def measure_resume(case: ResumeCase, cfg: Config, tmp: Path, rep: int) -> dict[str, Any]:
    """Resume a copy of the half-done run; time start -> first processed item."""
    ck = tmp / f"c-{case.kind}-checkpoint-{rep}"
    shutil.copytree(case.master, ck, symlinks=True)
    stamp = tmp / f"c-{case.kind}-first-{rep}.json"
    out_f, err_f = tmp / "c-resume.stdout", tmp / "c-resume.stderr"
    cmd = asyncproc_cmd(case, ck, crash=False)
    if TIME_BIN:
        cmd = [TIME_BIN, "-v", *cmd]
    with open(out_f, "wb") as so, open(err_f, "wb") as se:
        t0 = time.time()
        p = subprocess.Popen(
            cmd, stdout=so, stderr=se, env=child_env(stamp), cwd=tmp, start_new_session=True
        )
        rc, ru = wait4_with_timeout(p, cfg.timeout, cmd)
        wall = time.time() - t0
    stderr = err_f.read_text(errors="replace")
    if rc != 0:
        raise BenchError(f"(c) resume ({case.kind}) exited {rc}; stderr:\n{tail(stderr)}")
    if not stamp.exists():
        raise BenchError(
            f"(c) resume ({case.kind}) exited 0 but never called the processor (was every "
            f"item already committed when the crash run stopped?); stdout: "
            f"{out_f.read_text()[:400]!r}; stderr:\n{tail(stderr)}"
        )
    first = json.loads(stamp.read_text())
    summary = check_resume_summary(out_f.read_text(), case)
    time_rss = parse_time_rss(stderr) if TIME_BIN else None
    shutil.rmtree(ck, ignore_errors=True)
    stamp.unlink()
    return {
        "startup_s": first["t"] - t0,
        "rss_at_first_item_kb": first["maxrss_kb"],
        "peak_rss_kb": time_rss if time_rss is not None else ru.ru_maxrss,
        "rss_source": "/usr/bin/time -v" if time_rss is not None else "os.wait4",
        "wait4_maxrss_kb": ru.ru_maxrss,
        "resume_wall_s": wall,
        "elapsed_s_summary": summary.get("elapsed_s"),
    }


def make_cases(cfg: Config, tmp: Path) -> dict[str, ResumeCase]:
    cases = {
        "large": ResumeCase(
            kind="large",
            input=tmp / "c-large.txt",
            output=tmp / "c-large-out.jsonl",
            master=tmp / "c-large-master",
            n_items=cfg.lines_c,
            workers=8,
            batch_size=20_000,
            crash_at=cfg.lines_c // 2,
            concurrency=None,
            crash_item_delay=0.0,
        ),
        # Same options as "large" on a 10x smaller input: large / medium isolates the
        # effect of input size on start-up and memory.
        "medium": ResumeCase(
            kind="medium",
            input=tmp / "c-medium.txt",
            output=tmp / "c-medium-out.jsonl",
            master=tmp / "c-medium-master",
            n_items=cfg.lines_c // 10,
            workers=8,
            # 20,000 in the full run; smaller with --quick so that each shard still
            # commits several times and the crash leaves work to resume.
            batch_size=min(20_000, max(1, cfg.lines_c // 10 // 8 // 3)),
            crash_at=cfg.lines_c // 20,
            concurrency=None,
            crash_item_delay=0.0,
        ),
        # An instant processor lets the committer take all 10 items in one commit
        # whatever --batch-size says, so the tiny crash run goes one item at a time,
        # 50 ms each: commits then happen item by item and the crash leaves 5 to do.
        "tiny": ResumeCase(
            kind="tiny",
            input=tmp / "c-tiny.txt",
            output=tmp / "c-tiny-out.jsonl",
            master=tmp / "c-tiny-master",
            n_items=TINY_LINES,
            workers=1,
            batch_size=1,
            crash_at=TINY_LINES // 2,
            concurrency=1,
            crash_item_delay=0.05,
        ),
    }
    for case in cases.values():
        write_resume_input(case.input, case.n_items)
    log(
        f"(c) inputs: large {cfg.lines_c:,} lines "
        f"({cases['large'].input.stat().st_size / 1e6:.0f} MB), medium "
        f"{cases['medium'].n_items:,} lines, tiny {TINY_LINES} lines"
    )
    return cases


def bench_c(cfg: Config, tmp: Path) -> dict[str, Any]:
    cases = make_cases(cfg, tmp)
    crash_runs = {kind: make_half_done(case, cfg, tmp) for kind, case in cases.items()}
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in RESUME_KINDS}
    verified: dict[str, str | None] = {}
    for rep in range(cfg.repeats):
        shift = rep % len(RESUME_KINDS)  # rotate the order from repeat to repeat
        for kind in RESUME_KINDS[shift:] + RESUME_KINDS[:shift]:
            r = measure_resume(cases[kind], cfg, tmp, rep)
            runs[kind].append(r)
            log(
                f"(c) resume {kind} repeat {rep + 1}: start-up {r['startup_s'] * 1000:.0f} ms, "
                f"RSS at first item {r['rss_at_first_item_kb'] / 1024:.1f} MiB, "
                f"peak {r['peak_rss_kb'] / 1024:.1f} MiB, whole resume {r['resume_wall_s']:.1f}s"
            )
            if rep == 0:
                verified[kind] = verify_resume_output(cases[kind].output, cases[kind].n_items)
                log(
                    f"(c) {kind} output after crash+resume correct: {verified[kind] is None}"
                    + (f" -- {verified[kind]}" if verified[kind] else "")
                )
    return summarize_resume(cfg, cases, runs, crash_runs, verified)


def summarize_resume(
    cfg: Config,
    cases: dict[str, ResumeCase],
    runs: dict[str, list[dict[str, Any]]],
    crash_runs: dict[str, dict[str, Any]],
    verified: dict[str, str | None],
) -> dict[str, Any]:
    def med(kind: str, key: str) -> float:
        return median(r[key] for r in runs[kind])

    out: dict[str, Any] = {
        "scenario": f"(c) resume start-up, {cfg.lines_c:,} vs {TINY_LINES} lines",
        "repeats": cfg.repeats,
        "cases": {
            k: asdict(c) | {"input": str(c.input), "output": str(c.output), "master": str(c.master)}
            for k, c in cases.items()
        },
        "crash_runs": crash_runs,
        "runs": runs,
        "output_verified": {k: v is None for k, v in verified.items()},
        "output_problems": {k: v for k, v in verified.items() if v},
        "rss_source": runs["large"][0]["rss_source"],
        "target_ratio": TARGET_C,
        "target_rss_ratio": TARGET_RSS,
    }
    for kind in RESUME_KINDS:
        for key in RESUME_KEYS:
            out[f"{kind}_{key}_median"] = med(kind, key)
    for num, den in (("large", "tiny"), ("large", "medium")):
        for key in RESUME_KEYS:
            out[f"{key}_ratio_{num}_{den}"] = (
                out[f"{num}_{key}_median"] / out[f"{den}_{key}_median"]
            )
    out["startup_ratio"] = out["startup_s_ratio_large_tiny"]
    out["startup_ratio_pairs_median"] = median(
        a["startup_s"] / b["startup_s"] for a, b in zip(runs["large"], runs["tiny"], strict=True)
    )
    out["meets_target"] = out["startup_ratio"] <= TARGET_C
    # Flat in input size: the large run against the medium one (same options, 1/10 input).
    out["memory_flat_at_first_item"] = out["rss_at_first_item_kb_ratio_large_medium"] <= TARGET_RSS
    out["memory_flat_peak"] = out["peak_rss_kb_ratio_large_medium"] <= TARGET_RSS
    return out


# --------------------------------------------------------------------------- report


def mib(kb: float) -> str:
    return f"{kb / 1024:.1f}"


def verdict(ok: bool) -> str:
    return "[green]yes[/green]" if ok else "[red]NO[/red]"


def render_pairs(results: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title="Throughput: asyncproc vs bare asyncio (medians)")
    for col in (
        "scenario",
        "asyncproc items/s",
        "bare items/s",
        "ratio ap/bare",
        "target",
        "met",
        "% of ideal ap / bare",
        "peak RSS MiB ap / bare",
        "identical output",
    ):
        t.add_column(col, justify="left" if col == "scenario" else "right")
    for key in ("a", "b"):
        r = results.get(key)
        if r is None:
            continue
        if "error" in r:
            t.add_row(f"({key})", "[red]ERROR[/red]", "", "", "", "", "", "", "")
            continue
        ideal = (
            f"{r['asyncproc_pct_of_ideal']:.1f}% / {r['bare_pct_of_ideal']:.1f}%"
            if "ideal_items_per_s" in r
            else "-"
        )
        t.add_row(
            r["scenario"],
            f"{r['asyncproc_items_per_s_median']:,.0f}",
            f"{r['bare_items_per_s_median']:,.0f}",
            f"{r['ratio_median']:.3f}x",
            f">= {r['target_ratio']}x",
            verdict(r["meets_target"]),
            ideal,
            f"{mib(r['asyncproc_maxrss_kb_median'])} / {mib(r['bare_maxrss_kb_median'])}",
            verdict(r["output_identical"]),
        )
    return t


def render_resume(r: dict[str, Any]) -> Any:
    from rich.table import Table

    t = Table(title=f"{r['scenario']} (medians of {r['repeats']})")
    for col in (
        "input",
        "start-up to 1st item",
        "RSS at 1st item MiB",
        f"peak RSS MiB ({r['rss_source']})",
        "whole resume s",
        "output ok",
    ):
        t.add_column(col, justify="left" if col == "input" else "right")
    for kind in reversed(RESUME_KINDS):
        t.add_row(
            f"{kind} ({r['cases'][kind]['n_items']:,} lines)",
            f"{r[f'{kind}_startup_s_median'] * 1000:.0f} ms",
            mib(r[f"{kind}_rss_at_first_item_kb_median"]),
            mib(r[f"{kind}_peak_rss_kb_median"]),
            f"{r[f'{kind}_resume_wall_s_median']:.2f}",
            verdict(r["output_verified"].get(kind, False)),
        )
    t.add_row(
        "[bold]large / tiny[/bold]",
        f"{r['startup_ratio']:.2f}x (<= {TARGET_C}x: {verdict(r['meets_target'])})",
        f"{r['rss_at_first_item_kb_ratio_large_tiny']:.2f}x",
        f"{r['peak_rss_kb_ratio_large_tiny']:.2f}x",
        "",
        "",
    )
    t.add_row(
        "[bold]large / medium[/bold] (flat?)",
        f"{r['startup_s_ratio_large_medium']:.2f}x",
        f"{r['rss_at_first_item_kb_ratio_large_medium']:.2f}x "
        f"({verdict(r['memory_flat_at_first_item'])})",
        f"{r['peak_rss_kb_ratio_large_medium']:.2f}x ({verdict(r['memory_flat_peak'])})",
        "",
        "",
    )
    return t


def render(results: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=150)
    env = results["environment"]
    console.print(
        f"python {env['python']} on {env['machine']}, {env['cpus']} CPUs; "
        f"repeats {results['config']['repeats']}"
        + (" (QUICK sizes)" if results["config"]["quick"] else "")
    )
    if "a" in results or "b" in results:
        console.print(render_pairs(results))
        for key in ("a", "b"):
            r = results.get(key, {})
            if r.get("output_mismatch"):
                console.print(f"[red]({key}) outputs differ:[/red] {r['output_mismatch']}")
            if "asyncproc_uvloop_loaded" in r:
                console.print(
                    f"({key}) asyncproc workers={r['asyncproc_workers']}, uvloop "
                    f"loaded={r['asyncproc_uvloop_loaded']}; bare loop="
                    f"{r['bare_loop']}; per-pair ratios "
                    + ", ".join(f"{x:.3f}" for x in r["ratios"])
                )
    c = results.get("c")
    if c is not None and "error" not in c:
        console.print(render_resume(c))
        console.print(
            "(c) per-repeat start-up (ms): "
            + "; ".join(
                f"{kind} " + ", ".join(f"{x['startup_s'] * 1000:.0f}" for x in c["runs"][kind])
                for kind in RESUME_KINDS
            )
        )
    for key in ("a", "b", "c"):
        err = results.get(key, {}).get("error")
        if err:
            console.print(f"[red]({key}) ERROR:[/red] {err}", markup=True, highlight=False)


# --------------------------------------------------------------------------- main

SCENARIOS: dict[str, Callable[[Config, Path], dict[str, Any]]] = {
    "a": bench_a,
    "b": bench_b,
    "c": bench_c,
}


def problems_in(results: dict[str, Any], check_targets: bool) -> list[str]:
    problems = []
    for key in ("a", "b", "c"):
        r = results.get(key)
        if r is None:
            continue
        if "error" in r:
            problems.append(f"({key}) error")
            continue
        if r.get("output_identical") is False or r.get("output_problems"):
            problems.append(f"({key}) wrong output")
        if check_targets and not r["meets_target"]:
            problems.append(f"({key}) target missed")
        if check_targets and key == "c" and not r["memory_flat_at_first_item"]:
            problems.append("(c) memory not flat")
    return problems


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="asyncproc-bench-", dir="/tmp"))
    results: dict[str, Any] = {
        "config": {
            k: (sorted(v) if isinstance(v, frozenset) else v) for k, v in asdict(cfg).items()
        },
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "time_bin": TIME_BIN,
            "tmp": str(tmp),
        },
    }
    log(f"data dir {tmp}")
    try:
        for key, fn in SCENARIOS.items():
            if key not in cfg.only:
                continue
            try:
                results[key] = fn(cfg, tmp)
            except (BenchError, OSError, ValueError, KeyError) as e:
                log(f"({key}) FAILED: {e}")
                results[key] = {"error": f"{type(e).__name__}: {e}"}
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
