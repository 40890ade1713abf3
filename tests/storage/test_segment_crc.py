"""A unit's committed bytes carry a CRC-32 in its checkpoint: loading checks it.

Real stores (local files in a temporary directory; fsspec's ``memory://`` object store
for parts): two commits, then one byte of a committed segment changed or one part
lost, then ``load`` must pass over every checkpoint that names the damaged bytes.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path

from asyncproc.storage.fsspecfs import FsspecStorage
from asyncproc.storage.localfs import LocalStorage
from asyncproc.storage.location import Location
from asyncproc.storage.protocol import Storage
from asyncproc.storage.records import SegmentRef, UnitCheckpoint
from asyncproc.storage.unitstore import SEGMENTS, UnitStore

OUT, DEAD = "0000.001-abcdef.out", "0000.001-abcdef.dead"
FIRST, SECOND = b'{"index":0,"n":10}\n', b'{"index":1,"n":11}\n'


def two_commits(storage: Storage) -> tuple[UnitCheckpoint, UnitCheckpoint]:
    """Generation 1 holds FIRST, generation 2 FIRST + SECOND; both as written."""
    store = UnitStore(storage, 0)
    store.open_segment(OUT)
    store.open_segment(DEAD)
    state = UnitCheckpoint("run_x", 0, 0, 0, 0, 0, 0, 1, (), (), time.time())
    written = []
    for payload in (FIRST, SECOND):
        length = (state.segments[0].length if state.segments else 0) + len(payload)
        state = store.commit({OUT: payload, DEAD: b""}, state.advanced(
            SegmentRef(OUT, length), SegmentRef(DEAD, 0), 1, 0, offset=length
        ))  # fmt: skip
        written.append(state)
    store.close()
    return written[0], written[1]


def test_each_commit_records_the_crc_of_the_committed_bytes(tmp_path: Path) -> None:
    older, newest = two_commits(LocalStorage(tmp_path))
    assert older.segments == (SegmentRef(OUT, len(FIRST), zlib.crc32(FIRST)),)
    assert newest.segments == (SegmentRef(OUT, len(FIRST + SECOND), zlib.crc32(FIRST + SECOND)),)
    assert newest.dead_segments == (SegmentRef(DEAD, 0, 0),)
    loaded = UnitStore(LocalStorage(tmp_path), 0).load()
    assert loaded.checkpoint == newest and loaded.problems == ()


def flip(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] = ord("7") if raw[at] != ord("7") else ord("8")
    path.write_bytes(bytes(raw))


def test_a_changed_byte_in_the_newest_batch_falls_back_one_generation(tmp_path: Path) -> None:
    older, _ = two_commits(LocalStorage(tmp_path))
    flip(tmp_path / SEGMENTS / OUT, len(FIRST) + SECOND.index(b"11"))
    loaded = UnitStore(LocalStorage(tmp_path), 0).load()
    assert loaded.checkpoint == older
    assert any("fails its CRC" in p for p in loaded.problems), loaded.problems
    assert UnitStore(LocalStorage(tmp_path), 0).load(check_bytes=False).checkpoint != older


def test_a_changed_byte_in_the_first_batch_leaves_no_checkpoint(tmp_path: Path) -> None:
    two_commits(LocalStorage(tmp_path))
    flip(tmp_path / SEGMENTS / OUT, FIRST.index(b"10"))
    loaded = UnitStore(LocalStorage(tmp_path), 0).load()
    assert loaded.checkpoint is None
    assert sum("fails its CRC" in p for p in loaded.problems) == 2, loaded.problems


def test_a_part_missing_on_an_object_store_is_damage(tmp_path: Path) -> None:
    location = Location(f"memory://{tmp_path.name}/run")
    storage = location.storage()
    assert isinstance(storage, FsspecStorage)
    _, newest = two_commits(storage)
    part1 = f"{storage.root}/{SEGMENTS}{OUT}/.part-00000001"
    storage.fs.pipe_file(f"{storage.root}/{SEGMENTS}{OUT}/.part-00000003",
                         storage.fs.cat_file(part1))  # fmt: skip
    storage.fs.rm_file(part1)
    assert storage.segment_size(SEGMENTS + OUT) == 0  # the parts after the gap do not count
    loaded = UnitStore(storage, 0).load()
    assert loaded.checkpoint is None, loaded
    assert newest.segments[0].length == len(FIRST + SECOND)
