"""What the older loader project's own files use, beyond ``test_compat``'s ported script.

Its zaak loader imports ``checkpoint_zaak_loader`` (keys ``<nummer>_<id>``), its main
module prints ``manager._format_config_summary(config)``, it opens a loader after
``complete_run()`` (the run stays current), it retries failed keys across runs (the
progress counts each key once), its CLI's ``cleanup`` keeps 5 runs without ``--keep``,
and its loaders print their one-line progress and failures when nothing configured
logging.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import CLI_TIMEOUT, run_cli

import asyncproc.compat
from asyncproc.compat import CheckpointManager, LoaderCheckpoint


class Zaak:
    def __init__(self, nummer: str, id: str) -> None:
        self.nummer, self.id = nummer, id


def test_zaak_loader_keys_zaken_by_nummer_and_id(tmp_path: Path) -> None:
    assert "checkpoint_zaak_loader" in asyncproc.compat.__all__
    from asyncproc.compat import checkpoint_zaak_loader

    manager = CheckpointManager(checkpoint_dir=tmp_path)
    manager.start_new_run("zaken")
    stored: list[str] = []

    @checkpoint_zaak_loader(checkpoint_interval=2)
    def load_zaken(zaken: list[Zaak], _checkpoint_context: Any = None) -> None:
        _checkpoint_context.process_items(zaken, lambda zaak: stored.append(zaak.id))

    zaken = [Zaak("2024Z001", "a"), Zaak("2024Z002", "b"), Zaak("2024Z002", "c")]
    load_zaken(zaken, checkpoint_manager=manager)
    load_zaken(zaken, checkpoint_manager=manager)  # all done: nothing again
    assert sorted(stored) == ["a", "b", "c"]
    done = LoaderCheckpoint(manager, "load_zaken").processed_ids
    assert done == {"2024Z001_a", "2024Z002_b", "2024Z002_c"}
    manager.close()


def test_config_summary_is_one_line(tmp_path: Path) -> None:
    manager = CheckpointManager(checkpoint_dir=tmp_path)
    text = manager._format_config_summary(
        {"start_date": "2024-01-01", "threaded": True, "max_workers": 4, "skip_count": 0,
         "overwrite": False, "skip_zaken": 10}
    )  # fmt: skip
    assert "\n" not in text
    assert "start_date=2024-01-01" in text and "max_workers=4" in text
    assert "skip_zaken=10" in text and "threaded=True" in text
    assert "overwrite" not in text and "skip_count" not in text  # unset: not shown
    assert manager._format_config_summary({}) == "default settings"


def test_a_loader_opens_after_complete_run(tmp_path: Path) -> None:
    manager = CheckpointManager(checkpoint_dir=tmp_path)
    run_id = manager.start_new_run("done soon")
    first = LoaderCheckpoint(manager, "rows")
    first.set_total_items(3)
    first.mark_processed("a")
    manager.complete_run()
    assert manager.current_run_id == run_id  # the run stays current, as it did
    after = LoaderCheckpoint(manager, "rows")
    assert after.is_processed("a") and after.get_progress_stats()["processed_count"] == 1
    after.mark_processed("b")
    after.save_progress()
    assert LoaderCheckpoint(manager, "rows").is_processed("b")
    manager.close()
    assert [(r["run_id"], r["status"]) for r in manager.list_runs()] == [(run_id, "completed")]
    assert manager.resume_run() is None  # still completed: nothing to resume


def _progress(ck: Path, run_id: str) -> dict[str, Any]:
    shown: dict[str, Any] = json.loads(
        run_cli("show", "--run-id", run_id, "--checkpoint", ck, "--json", check=0).stdout
    )
    return shown


def test_progress_counts_each_key_once_across_runs(tmp_path: Path) -> None:
    manager = CheckpointManager(checkpoint_dir=tmp_path)
    run_id = manager.start_new_run("retries")
    for attempt in range(3):  # key 9 fails in the first two runs, succeeds in the third
        if attempt:
            assert manager.resume_run() == run_id
        loader = LoaderCheckpoint(manager, "rows")
        loader.set_total_items(10)
        for key in range(10):
            if loader.is_processed(key):
                continue
            if key == 9 and attempt < 2:
                loader.mark_failed(key, "not yet")
            else:
                loader.mark_processed(key)
        manager.close()
        shown = _progress(tmp_path, run_id)
        assert shown["percent"] == 100.0, shown  # 9 done + 1 failing, then 10 done, of 10
        assert shown["failed"] == (1 if attempt < 2 else 0), shown
        rows = shown["options"]["loaders"]["rows"]
        assert rows["processed"] + rows["failed"] == 10, rows


def test_cleanup_without_keep_keeps_five(tmp_path: Path) -> None:
    manager = CheckpointManager(checkpoint_dir=tmp_path)
    for n in range(7):
        manager.start_new_run(f"run {n}")
        manager.complete_run()
    manager.close()
    run_cli("cleanup", "--checkpoint", tmp_path, check=0)
    assert [r["description"] for r in manager.list_runs()] == [f"run {n}" for n in range(6, 1, -1)]


LOADER = """\
import sys
{logging}
from asyncproc.compat import CheckpointManager, checkpoint_loader


class Row:
    def __init__(self, id):
        self.id = id


@checkpoint_loader(checkpoint_interval=10)
def load_rows(rows, _checkpoint_context=None):
    def one(row):
        if row.id == 13:
            raise ValueError("row 13 is malformed")

    _checkpoint_context.process_items(rows, one)


manager = CheckpointManager(checkpoint_dir=sys.argv[1])
manager.start_new_run("printing")
load_rows([Row(i) for i in range(30)], checkpoint_manager=manager)
manager.complete_run()
"""


def _loader_run(tmp_path: Path, logging: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "load.py"
    script.write_text(LOADER.format(logging=logging))
    return subprocess.run([sys.executable, str(script), str(tmp_path / "ck")], text=True,
                          capture_output=True, timeout=CLI_TIMEOUT, check=True)  # fmt: skip


def test_loaders_print_their_lines_when_logging_is_not_configured(tmp_path: Path) -> None:
    out = _loader_run(tmp_path, "").stdout.splitlines()
    progress = [line for line in out if "Progress: " in line and "Final" not in line]
    assert [line.split("Progress: ")[1] for line in progress] == [
        "10/30 (33.3%)", "20/30 (66.7%)"
    ], out  # fmt: skip
    assert any("Failed to process item 13: row 13 is malformed" in line for line in out), out
    assert any("Final Progress for load_rows: 29/30 (96.7%)" in line for line in out), out
    assert any("1 items failed during processing" in line for line in out), out
    logged = _loader_run(tmp_path, "import logging; logging.basicConfig(level=logging.INFO)")
    assert "Progress: " not in logged.stdout and "Failed to process" not in logged.stdout
    assert "row 13 is malformed" in logged.stderr  # through the logging the script set up
