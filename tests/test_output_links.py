"""The output's path on shared ground: planted symlinks, other users' files, its format.

As the kernel's ``protected_symlinks``: a symlink in a sticky, world-writable directory
is followed only when we or the directory's owner own it. A file another user owns is
never replaced. The output's format follows the name given, not a link's target.
Another user's files are made with ``os.chown``: those tests need root and skip without.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from conftest import (
    ANOTHER_USER,
    expected_text_stats_array,
    numbered_lines,
    root_only,
    run_args,
    run_cli,
    write_lines,
)
from faultkit import refused

from asyncproc._errors import UnsafeLinkError
from asyncproc.storage.links import may_follow, resolve_safely

PRECIOUS = b"my own private data\n"


def _shared(root: Path, owner: int = 0) -> Path:
    """A directory like /tmp: sticky and world-writable."""
    shared = root / "shared"
    shared.mkdir()
    os.chown(shared, owner, owner)
    shared.chmod(0o1777)
    return shared


def _private_file(root: Path) -> Path:
    home = root / "home"
    home.mkdir(mode=0o700)
    secret = home / "secret.json"
    secret.write_bytes(PRECIOUS)
    secret.chmod(0o600)
    return secret


def _planted(shared: Path, target: Path, owner: int) -> Path:
    link = shared / "out.json"
    link.symlink_to(target)
    os.chown(link, owner, owner, follow_symlinks=False)
    return link


@root_only
def test_a_link_planted_by_another_user_in_a_sticky_directory_is_not_followed(
    tmp_path: Path,
) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(10))
    secret = _private_file(tmp_path)
    link = _planted(_shared(tmp_path), secret, ANOTHER_USER)
    proc = run_cli(*run_args(source, link, tmp_path / "ck"))
    refused(proc, 2, str(link), f"uid {ANOTHER_USER}", "sticky")
    assert secret.read_bytes() == PRECIOUS and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert link.is_symlink()
    with pytest.raises(UnsafeLinkError):
        resolve_safely(link.parent / ".." / "shared" / "out.json")
    folder = link.parent / "results"  # a planted link to a folder, on the way
    folder.symlink_to(secret.parent)
    os.chown(folder, ANOTHER_USER, ANOTHER_USER, follow_symlinks=False)
    refused(run_cli(*run_args(source, folder / "secret.json", tmp_path / "ck")), 2, str(folder))
    assert secret.read_bytes() == PRECIOUS


@root_only
def test_a_link_the_directory_owner_made_is_followed(tmp_path: Path) -> None:
    """The kernel's exception: in a sticky directory of uid N, uid N's links are followed."""
    source = write_lines(tmp_path / "input.txt", numbered_lines(10))
    target = tmp_path / "mine.json"
    link = _planted(_shared(tmp_path, owner=ANOTHER_USER), target, ANOTHER_USER)
    run_cli(*run_args(source, link, tmp_path / "ck"), check=0)
    assert target.read_bytes() == expected_text_stats_array(source.read_bytes())
    assert link.is_symlink() and resolve_safely(link) == target


@root_only
def test_a_file_another_user_owns_is_never_replaced(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(10))
    output = _shared(tmp_path) / "out.json"
    output.write_bytes(b"theirs\n")
    output.chmod(0o666)
    os.chown(output, ANOTHER_USER, ANOTHER_USER)
    proc = run_cli(*run_args(source, output, tmp_path / "ck"))
    refused(proc, 2, str(output), f"belongs to uid {ANOTHER_USER}")
    assert output.read_bytes() == b"theirs\n" and output.stat().st_uid == ANOTHER_USER


@root_only
def test_a_failed_items_file_another_user_owns_is_never_replaced(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(10))
    output = tmp_path / "out.json"
    failed = tmp_path / "out.failed.jsonl"
    failed.write_bytes(b"theirs\n")
    os.chown(failed, ANOTHER_USER, ANOTHER_USER)
    refused(run_cli(*run_args(source, output, tmp_path / "ck")), 2, str(failed))
    assert failed.read_bytes() == b"theirs\n" and not output.exists()


def test_the_output_format_follows_the_name_given(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(3))
    target = tmp_path / "stored.json"
    link = tmp_path / "out.jsonl"
    link.symlink_to(target.name)
    run_cli(*run_args(source, link, tmp_path / "ck"), check=0)
    lines = target.read_bytes().splitlines()
    assert len(lines) == 3 and all(line.startswith(b'{"index":') for line in lines), lines


def test_resolving_safely_is_resolve_on_ordinary_paths(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "up").symlink_to("a/b/..")
    (tmp_path / "abs").symlink_to(tmp_path / "a")
    (tmp_path / "loop").symlink_to("loop")
    for path in [tmp_path / "up" / "b" / "missing" / "x.json", tmp_path / "abs" / "b" / ".",
                 tmp_path / "a" / "b" / ".." / "b", Path("relative/x")]:  # fmt: skip
        assert resolve_safely(path) == path.resolve(), path
    with pytest.raises(OSError, match="Too many levels"):
        resolve_safely(tmp_path / "loop" / "x")


def _stat(mode: int, uid: int) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, uid, 0, 0, 0, 0))


def test_the_kernels_rule_for_following_a_link() -> None:
    me, dir_owner, stranger = os.geteuid(), 4242, 4343
    shared = _stat(stat.S_IFDIR | 0o1777, dir_owner)
    assert may_follow(_stat(stat.S_IFLNK | 0o777, me), shared)
    assert may_follow(_stat(stat.S_IFLNK | 0o777, dir_owner), shared)
    assert not may_follow(_stat(stat.S_IFLNK | 0o777, stranger), shared)
    for mode in (0o0777, 0o1775, 0o0755):  # not sticky, or not world-writable
        assert may_follow(_stat(stat.S_IFLNK | 0o777, stranger), _stat(stat.S_IFDIR | mode, 1))


def test_an_output_that_is_a_link_loop_is_one_line(tmp_path: Path) -> None:
    source = write_lines(tmp_path / "input.txt", numbered_lines(3))
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop.name)
    refused(run_cli(*run_args(source, loop, tmp_path / "ck")), 2, str(loop), "symbolic links")
