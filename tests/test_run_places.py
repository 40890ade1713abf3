"""``list`` and ``status`` without ``--checkpoint``: the runs started here, or ``--all``."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import numbered_lines, run_cli, write_lines


def _crashed_run(started_in: Path, output_dir: Path) -> str:
    """An interrupted run started from ``started_in``, its runs beside its output."""
    output_dir.mkdir(parents=True, exist_ok=True)
    source = write_lines(output_dir / "input.txt", numbered_lines(40))
    run_cli("run", "--input", source, "--output", output_dir / "out.json", "--batch-size", "5",
            "--concurrency", "1", "--simulate-crash", "10", check=3, cwd=started_in)  # fmt: skip
    (run_dir,) = (output_dir / ".asyncproc").glob("run_*")
    return run_dir.name


def _listed(cwd: Path, *args: str) -> list[str]:
    proc = run_cli("list", "--json", *args, check=0, cwd=cwd)
    return [entry["run_id"] for entry in json.loads(proc.stdout)]


def test_list_and_status_show_the_runs_started_here_and_all_of_them_on_request(
    tmp_path: Path, _private_run_index: Path
) -> None:
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    mine.mkdir()
    theirs.mkdir()
    here_run = _crashed_run(mine, mine)  # ./.asyncproc
    beside_output = _crashed_run(mine, tmp_path / "outputs")  # started here, output elsewhere
    other_project = _crashed_run(theirs, theirs)

    assert sorted(_listed(mine)) == sorted([here_run, beside_output])
    assert _listed(theirs) == [other_project]
    assert sorted(_listed(mine, "--all")) == sorted([here_run, beside_output, other_project])
    table = run_cli("list", check=0, cwd=mine)
    assert "of runs started here" in table.stderr and "--all" in table.stderr, table.stderr

    # The newest unfinished run is another project's: a bare status here does not pick it.
    status = run_cli("status", "--json", check=0, cwd=mine)
    assert json.loads(status.stdout)["run_id"] == beside_output, status.stderr
    anywhere = run_cli("status", "--all", "--json", check=0, cwd=mine)
    assert json.loads(anywhere.stdout)["run_id"] == other_project
    named = run_cli("status", other_project, "--json", check=0, cwd=mine)  # a run id: anywhere
    assert json.loads(named.stdout)["run_id"] == other_project
    shown = run_cli("show", other_project, "--json", check=0, cwd=mine)
    assert json.loads(shown.stdout)["run_id"] == other_project
