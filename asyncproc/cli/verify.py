"""``asyncproc verify``: kill the user's own processor on their own data, and compare."""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from .._errors import RunError
from ..cli.killtest import Verdict, VerifyRequest, verify
from .group import format_option, processor_arg_option, setup_logging


@click.command(name="verify")
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Input whose first items are processed (text or JSON lines).",
)
@click.option(
    "--processor", required=True, help="Built-in name, module:function or path/to/file.py:function."
)
@processor_arg_option
@format_option
@click.option(
    "--kills",
    type=int,
    default=3,
    show_default=True,
    help="SIGKILLs to land, each after the run made progress.",
)
@click.option(
    "--items",
    type=int,
    default=2000,
    show_default=True,
    help="How many items of the input to use (a prefix).",
)
@click.option(
    "--batch-size",
    type=int,
    default=10,
    show_default=True,
    help="Items per checkpoint (small: many moments to kill at).",
)
@click.option("--concurrency", type=int, help="As for run [default: run's].")
@click.option("--processes", type=int, help="As for run [default: 1].")
@click.option("--seed", type=int, help="Seed for the kill moments, to repeat a verification.")
@click.option("--keep", is_flag=True, help="Keep the scratch directory (kept anyway on failure).")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
def verify_command(
    input_path: Path, processor: str, processor_args: dict[str, str], fmt: str | None,
    kills: int, items: int, batch_size: int, concurrency: int | None, processes: int | None,
    seed: int | None, keep: bool, as_json: bool,
) -> int:  # fmt: skip
    """Kill runs of PROCESSOR on INPUT at random moments; check the output is a clean run's.

    Exits 0 when the output after the kills is byte-identical to a clean run's and the
    processor is deterministic, 1 otherwise.
    """
    setup_logging(quiet=True)
    verdict = verify(VerifyRequest(
        input=input_path, processor=processor, processor_args=processor_args, format=fmt,
        kills=kills, items=items, batch_size=batch_size, concurrency=concurrency,
        processes=processes, seed=seed, keep=keep,
    ))  # fmt: skip
    if as_json:
        sys.stdout.buffer.write(orjson.dumps(verdict.to_dict(), option=orjson.OPT_INDENT_2) + b"\n")
    else:
        click.echo(_report(verdict, input_path))
    sys.stdout.flush()
    if not verdict.ok:
        raise RunError(_failure(verdict))
    return 0


def _report(v: Verdict, input_path: Path) -> str:
    kills = f"{v.kills} of {v.kills_asked} landed, each after a checkpoint"
    if v.kills < v.kills_asked:
        kills += "; the run finished first (try more --items)"
    identical = ("yes: the killed and resumed output is the clean run's, byte for byte"
                 if v.identical else "NO: the killed and resumed output differs")  # fmt: skip
    deterministic = ("yes: two clean runs gave the same bytes" if v.deterministic
                     else "NO: two clean runs gave different bytes")  # fmt: skip
    calls = (f"at most {v.max_calls_per_item} (an item in flight at a kill runs again; "
             "asyncproc.current_item().key makes side effects idempotent)")  # fmt: skip
    lines = [
        f"asyncproc verify: {v.items:,} items of {input_path} through {v.processor} "
        f"({v.elapsed_s:g} s)",
        f"  kills           {kills}",
        f"  identical       {identical}",
        f"  deterministic   {deterministic}",
        f"  calls per item  {calls}",
    ]
    if v.scratch:
        lines.append(f"  scratch         {v.scratch}")
    return "\n".join(lines)


def _failure(v: Verdict) -> str:
    if not v.deterministic:
        return (
            "two clean runs of this processor gave different bytes, so the byte-identical "
            "promise cannot hold for it (no kill needed): make its results depend on the "
            f"item only; the runs are in {v.scratch}"
        )
    return (
        "the output after kills and resumes differs from a clean run of a deterministic "
        f"processor: please report this as a bug, with the runs in {v.scratch}"
    )
