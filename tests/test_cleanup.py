"""``cleanup`` is one implementation for a local checkpoint directory and a URL one.

A run being worked on when clean-up reaches it is passed over, on either kind, never
an error that stops the clean-up halfway.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import asyncproc
from asyncproc._runs_api import runs_in
from asyncproc.runs.cleanup import Cleanup
from asyncproc.runs.manage import Runs
from asyncproc.runs.remote import RemoteRuns


def test_both_run_managers_clean_up_through_one_implementation() -> None:
    for kind in (Runs, RemoteRuns):
        assert issubclass(kind, Cleanup)
        assert "cleanup" not in vars(kind) and "cleanup_candidates" not in vars(kind), kind


def test_a_leased_run_at_a_url_is_passed_over_then_removed(tmp_path: Path) -> None:
    source = tmp_path / "in.txt"
    source.write_text("a\nb\nc\n")
    url = f"memory://cleanup-{uuid.uuid4().hex}"
    summary = asyncproc.run_file(source, tmp_path / "out.json", checkpoint_dir=url)
    runs = runs_in(url)
    assert isinstance(runs, RemoteRuns)
    assert [v.run_id for v in runs.cleanup_candidates(0)] == [summary.run_id]
    run, _ = runs.find(summary.run_id)
    with run.locked():  # as if a process had started it again
        assert asyncproc.cleanup_runs(0, url) == []
    assert runs.has(summary.run_id)
    assert asyncproc.cleanup_runs(0, url) == [summary.run_id]
    assert not runs.has(summary.run_id)
