"""LocalStorage on untrusted ground: symlinks, modes, partial writes and real crashes.

A planted symlink is never followed: a file outside the root stays byte-for-byte as it
was whatever the storage is asked to do. ``put`` replaces a link standing at its name
(rename acts on the link itself); ``create`` and ``open_segment`` refuse it like any
existing name; reads refuse it with ``ELOOP``. Crashes are real: a child process dies
at a named crash point (``os._exit``) or is SIGKILLed mid-write, and what it leaves is
read back.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncproc.storage import faults, localfs
from asyncproc.storage.faults import CRASH_EXIT
from asyncproc.storage.localfs import LocalStorage

SECRET = b"outside the root: must never change"
CHILD_TIMEOUT = 60


class Ground:
    """A storage root and, beside it, a folder that stands for everything outside."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path / "root"
        self.outside = tmp_path / "outside"
        self.outside.mkdir()
        self.secret = self.outside / "secret"
        self.secret.write_bytes(SECRET)
        self.storage = LocalStorage(self.root)
        self.root.mkdir()

    def plant(self, name: str, target: Path) -> Path:
        link = self.root / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)
        return link

    def assert_outside_untouched(self) -> None:
        assert sorted(p.name for p in self.outside.iterdir()) == ["secret"]
        assert self.secret.read_bytes() == SECRET
        assert stat.S_IMODE(self.secret.stat().st_mode) != 0  # not chmodded through a link


@pytest.fixture
def ground(tmp_path: Path) -> Iterator[Ground]:
    ground = Ground(tmp_path)
    yield ground
    ground.assert_outside_untouched()


# -- symlinks --------------------------------------------------------------------------


def test_open_segment_refuses_a_symlink(ground: Ground) -> None:
    ground.plant("segments/0001.001-aa.out", ground.secret)
    ground.plant("segments/0001.001-bb.out", ground.outside / "new")  # dangling
    for name in ("segments/0001.001-aa.out", "segments/0001.001-bb.out"):
        with pytest.raises(FileExistsError):
            ground.storage.open_segment(name)


def test_create_refuses_a_symlink(ground: Ground) -> None:
    ground.plant("units/a", ground.secret)
    ground.plant("units/b", ground.outside / "new")
    assert ground.storage.create("units/a", b"data") is False
    assert ground.storage.create("units/b", b"data") is False


def test_put_replaces_the_symlink_itself(ground: Ground) -> None:
    link = ground.plant("units/0001.a.ckpt", ground.secret)
    dangling = ground.plant("units/0001.b.ckpt", ground.outside / "new")
    ground.storage.put("units/0001.a.ckpt", b"checkpoint", point="checkpoint")
    ground.storage.put("units/0001.b.ckpt", b"checkpoint", point="checkpoint")
    for path in (link, dangling):
        assert not path.is_symlink()
        assert path.read_bytes() == b"checkpoint"


def test_reads_refuse_a_symlink(ground: Ground) -> None:
    ground.plant("manifest.json", ground.secret)
    ground.plant("segments/s", ground.secret)
    with pytest.raises(OSError) as caught:
        ground.storage.get("manifest.json")
    assert caught.value.errno == errno.ELOOP
    with pytest.raises(OSError):
        ground.storage.segment_size("segments/s")
    with pytest.raises(OSError):
        ground.storage.read_segment("segments/s", 0, 1)
    assert ground.storage.list("") == []  # a link is not a stored name


def test_delete_removes_the_symlink_not_its_target(ground: Ground) -> None:
    link = ground.plant("units/x", ground.secret)
    ground.storage.delete("units/x")
    assert not link.is_symlink()


def test_a_symlink_at_a_temporary_name_is_never_written_through(
    ground: Ground, monkeypatch: pytest.MonkeyPatch
) -> None:
    ground.storage.put("units/r", b"old")
    monkeypatch.setattr(secrets, "token_hex", lambda n: "0" * (2 * n))
    ground.plant(f"units/.r.{'0' * 16}.tmp", ground.secret)
    ground.plant(f"units/.q.{'0' * 16}.tmp", ground.outside / "new")
    with pytest.raises(FileExistsError):
        ground.storage.put("units/r", b"new")
    with pytest.raises(FileExistsError):
        ground.storage.create("units/q", b"new")
    assert ground.storage.get("units/r") == b"old"
    assert ground.storage.get("units/q") is None


def test_a_symlinked_folder_is_never_entered(ground: Ground) -> None:
    (ground.outside / "x").write_bytes(b"x")
    ground.plant("segments", ground.outside)
    storage = ground.storage
    for attempt in (
        lambda: storage.open_segment("segments/new"),
        lambda: storage.put("segments/new", b"n"),
        lambda: storage.create("segments/new", b"n"),
        lambda: storage.get("segments/x"),
        lambda: storage.segment_size("segments/x"),
        lambda: storage.delete("segments/x"),
        lambda: storage.put("segments/deeper/new", b"n"),
    ):
        with pytest.raises(OSError) as caught:
            attempt()
        assert "never follows" in str(caught.value)
    assert storage.list("segments/") == []
    assert (ground.outside / "x").read_bytes() == b"x"
    storage.remove_tree("segments/")  # removes the link, never what it points at
    assert not (ground.root / "segments").exists()
    (ground.outside / "x").unlink()


def test_remove_tree_does_not_follow_links_inside_the_folder(ground: Ground) -> None:
    ground.storage.put("segments/a", b"a")
    ground.plant("segments/link", ground.outside)
    ground.plant("segments/sub/link", ground.secret)
    ground.storage.remove_tree("segments/")
    assert not (ground.root / "segments").exists()


def test_a_planted_fifo_does_not_block_a_read(ground: Ground) -> None:
    os.mkfifo(ground.root / "manifest.json")
    with pytest.raises(OSError):
        ground.storage.get("manifest.json")


# -- modes, partial writes, leftovers --------------------------------------------------


def test_files_are_owner_only(ground: Ground) -> None:
    storage = ground.storage
    storage.put("units/a", b"a")
    storage.create("units/b", b"b")
    storage.open_segment("segments/s").close()
    for name in ("units/a", "units/b", "segments/s"):
        assert stat.S_IMODE((ground.root / name).stat().st_mode) == 0o600
    for folder in ("units", "segments"):
        assert stat.S_IMODE((ground.root / folder).stat().st_mode) == 0o700


class ShortWrites:
    """``os`` as localfs sees it, but ``write`` takes at most three bytes a call."""

    def __getattr__(self, name: str) -> object:
        return getattr(os, name)

    @staticmethod
    def write(fd: int, data: bytes | memoryview) -> int:
        return os.write(fd, data[:3])


def test_partial_writes_are_completed(ground: Ground, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localfs, "os", ShortWrites())
    data = bytes(range(256)) * 4
    ground.storage.put("r", data)
    assert ground.storage.create("c", data) is True
    segment = ground.storage.open_segment("s")
    segment.append(data)
    segment.sync()
    segment.close()
    monkeypatch.undo()
    assert (ground.root / "r").read_bytes() == data
    assert (ground.root / "c").read_bytes() == data
    assert (ground.root / "s").read_bytes() == data


def test_create_without_hard_links_still_refuses_an_existing_name(
    ground: Ground, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that refuses link() gets an in-place O_EXCL create instead."""

    def no_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    assert ground.storage.create("units/c", b"first") is True
    assert ground.storage.create("units/c", b"second") is False
    assert ground.storage.get("units/c") == b"first"
    assert os.listdir(ground.root / "units") == ["c"]


def test_leftover_temporary_files_are_not_listed(ground: Ground) -> None:
    (ground.root / "shards").mkdir()
    (ground.root / "shards" / "0003.a.ckpt.abcd1234.tmp").write_bytes(b"older engine")
    (ground.root / "shards" / ".0003.a.ckpt.0123456789abcdef.tmp").write_bytes(b"ours")
    ground.storage.put("shards/0003.a.ckpt", b"c")
    assert ground.storage.list("") == ["shards/0003.a.ckpt"]


def test_a_missing_root_is_empty_and_made_on_first_write(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "not" / "yet")
    assert storage.get("manifest.json") is None
    assert storage.segment_size("segments/s") is None
    assert storage.list("") == []
    storage.delete("manifest.json")
    storage.remove_tree("segments/")
    storage.put("manifest.json", b"m")
    assert storage.get("manifest.json") == b"m"


# -- named crash points ----------------------------------------------------------------


def arm(monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    """Arm a crash point in this process through the seam; disarmed after the test."""
    monkeypatch.setattr(faults, "_armed", {})
    faults.arm(spec)


@pytest.mark.parametrize("kind", ["checkpoint", "manifest"])
@pytest.mark.parametrize(
    ("step", "visible"), [("write", b"old"), ("before_rename", b"old"), ("after_rename", b"new")]
)
def test_put_passes_its_named_points(
    ground: Ground, monkeypatch: pytest.MonkeyPatch, kind: str, step: str, visible: bytes
) -> None:
    ground.storage.put("units/r", b"old", point=kind)
    arm(monkeypatch, f"{step}_{kind}:1:EIO")
    with pytest.raises(OSError, match=f"injected at {step}_{kind}"):
        ground.storage.put("units/r", b"new", point=kind)
    assert ground.storage.get("units/r") == visible
    assert os.listdir(ground.root / "units") == ["r"]  # the temporary file was removed


def test_append_passes_segment_write_and_a_failure_breaks_the_segment(
    ground: Ground, monkeypatch: pytest.MonkeyPatch
) -> None:
    segment = ground.storage.open_segment("segments/s")
    segment.append(b"first")
    arm(monkeypatch, "segment_write:1:ENOSPC")
    with pytest.raises(OSError, match="injected at segment_write"):
        segment.append(b"second")
    with pytest.raises(OSError, match="failed earlier"):
        segment.append(b"third")
    with pytest.raises(OSError, match="failed earlier"):
        segment.sync()
    segment.close()
    assert ground.storage.get("segments/s") == b"first"


CHILD = """
import sys
from pathlib import Path
from asyncproc.storage import faults
from asyncproc.storage.localfs import LocalStorage

faults.arm(sys.argv[3])
storage = LocalStorage(Path(sys.argv[1]))
if sys.argv[2] == "segment":
    segment = storage.open_segment("segments/s")
    for part in (b"synced ", b"lost"):
        segment.append(part)
        segment.sync()
else:
    storage.put("units/r", b"new", point=sys.argv[2])
"""


def run_child(root: Path, what: str, crash_at: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(root), what, crash_at],
        capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("point", "visible", "temp_left"),
    [
        ("write_checkpoint", b"old", False),
        ("before_rename_checkpoint", b"old", True),
        ("after_rename_checkpoint", b"new", False),
        ("before_rename_manifest", b"old", True),
    ],
)
def test_a_process_dying_inside_put_leaves_old_or_new(
    ground: Ground, point: str, visible: bytes, temp_left: bool
) -> None:
    ground.storage.put("units/r", b"old")
    kind = point.rpartition("_")[2]
    proc = run_child(ground.root, kind, f"{point}:1")
    assert proc.returncode == CRASH_EXIT, proc.stderr
    assert f"crash point {point} reached" in proc.stderr
    assert ground.storage.get("units/r") == visible
    assert ground.storage.list("") == ["units/r"]
    temps = [n for n in os.listdir(ground.root / "units") if n.endswith(".tmp")]
    assert len(temps) == temp_left
    if temp_left:
        assert (ground.root / "units" / temps[0]).read_bytes() == b"new"


def test_a_process_dying_before_an_append_keeps_what_was_synced(ground: Ground) -> None:
    proc = run_child(ground.root, "segment", "segment_write:2")
    assert proc.returncode == CRASH_EXIT, proc.stderr
    assert ground.storage.get("segments/s") == b"synced "


KILLED_CHILD = """
import sys
from pathlib import Path
from asyncproc.storage.localfs import LocalStorage

storage = LocalStorage(Path(sys.argv[1]))
values = [bytes([65 + i]) * (256 * 1024 + i) for i in range(3)]
i = 0
while True:
    storage.put("units/r", values[i % 3])
    i += 1
    print(i, flush=True)
"""


def test_sigkill_during_puts_leaves_a_whole_record(ground: Ground) -> None:
    """Killed at whatever instant its 20th put lands in, the record is whole."""
    values = {bytes([65 + i]) * (256 * 1024 + i) for i in range(3)}
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(KILLED_CHILD), str(ground.root)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        for _ in range(20):
            assert child.stdout.readline(), "the child stopped writing"
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=CHILD_TIMEOUT)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert ground.storage.get("units/r") in values
    assert ground.storage.list("") == ["units/r"]
