"""The storage protocol's promises, checked against every implementation alike.

Each test takes ``storage``: a :class:`LocalStorage` on a fresh temporary folder, a
:class:`MemoryStorage`, and an :class:`FsspecStorage` on fsspec's ``memory://`` and on a
real S3 API (moto's server on loopback, a fresh root per test). Whatever the engine
may rely on is here: exclusive creation, exact segment reads, the short-segment error,
atomic replacement, prefix listing, and names that cannot reach outside the root.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncproc._errors import CorruptCheckpointError
from asyncproc.storage.localfs import LocalStorage
from asyncproc.storage.location import Location
from asyncproc.storage.memory import MemoryStorage
from asyncproc.storage.protocol import READ_CHUNK, ShortSegmentError, Storage

KINDS = ("local", "memory", "fsspec-memory", "s3")
Factory = Callable[[], Storage]

BAD_NAMES = (
    "", "/abs", "/", "a//b", "a/", "./a", "a/./b", "a/../b", "..", "../escape", ".",
    ".hidden", "a/.hidden", "x.tmp", "a/b.tmp", "a.tmp/b", "a\0b",
)  # fmt: skip


@pytest.fixture(params=KINDS)
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    """A factory of fresh, empty storages of one kind."""
    counter = itertools.count()
    if request.param == "local":
        return lambda: LocalStorage(tmp_path / f"root{next(counter)}")
    if request.param == "fsspec-memory":
        base = f"memory://{tmp_path.name}"
        return lambda: Location(f"{base}/root{next(counter)}").storage()
    if request.param == "s3":
        server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
        base = f"s3://{bucket}/{tmp_path.name}"
        return lambda: Location(f"{base}/root{next(counter)}", server.options()).storage()
    return MemoryStorage


@pytest.fixture
def storage(make: Factory) -> Storage:
    return make()


def read_all(storage: Storage, name: str, start: int, length: int) -> bytes:
    return b"".join(storage.read_segment(name, start, length))


def write_segment(storage: Storage, name: str, *parts: bytes) -> None:
    segment = storage.open_segment(name)
    for part in parts:
        segment.append(part)
    segment.sync()
    segment.close()


# -- names -----------------------------------------------------------------------------


NAME_CALLS: dict[str, Callable[[Storage, str], object]] = {
    "open_segment": lambda s, n: s.open_segment(n),
    "segment_size": lambda s, n: s.segment_size(n),
    "read_segment": lambda s, n: s.read_segment(n, 0, 0),
    "get": lambda s, n: s.get(n),
    "put": lambda s, n: s.put(n, b"x"),
    "create": lambda s, n: s.create(n, b"x"),
    "delete": lambda s, n: s.delete(n),
}


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_that_could_escape_the_root_are_refused(storage: Storage, name: str) -> None:
    for call, attempt in NAME_CALLS.items():
        with pytest.raises(ValueError):
            attempt(storage, name)
            pytest.fail(f"{call}({name!r}) was accepted")
    assert storage.list("") == []


@pytest.mark.parametrize("prefix", ["/", "/a", "a//", "../", "a/../", "./", "a\0"])
def test_list_refuses_prefixes_that_could_escape(storage: Storage, prefix: str) -> None:
    with pytest.raises(ValueError):
        storage.list(prefix)


@pytest.mark.parametrize("prefix", ["", "a", "a/b", "/", "/a/", "../", "a//", "a/../"])
def test_remove_tree_needs_a_folder_prefix_inside_the_root(storage: Storage, prefix: str) -> None:
    storage.put("a/b", b"kept")
    with pytest.raises(ValueError):
        storage.remove_tree(prefix)
    assert storage.get("a/b") == b"kept"


def test_local_names_stay_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    storage = LocalStorage(root)
    for name in BAD_NAMES:
        with pytest.raises(ValueError):
            storage.put(name, b"x")
    storage.put("a/b/c", b"x")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "root", "root/a", "root/a/b", "root/a/b/c",
    ]  # fmt: skip


# -- records ---------------------------------------------------------------------------


def test_missing_record_reads_as_none(storage: Storage) -> None:
    assert storage.get("manifest.json") is None
    assert storage.get("units/0001.a.ckpt") is None


def test_put_then_get_and_replace(storage: Storage) -> None:
    storage.put("units/0003.a.ckpt", b"first", point="checkpoint")
    assert storage.get("units/0003.a.ckpt") == b"first"
    storage.put("units/0003.a.ckpt", b"second, longer", point="checkpoint")
    assert storage.get("units/0003.a.ckpt") == b"second, longer"
    storage.put("units/0003.a.ckpt", b"", point="checkpoint")
    assert storage.get("units/0003.a.ckpt") == b""


def test_put_makes_folders_on_demand(storage: Storage) -> None:
    storage.put("a/b/c/d.json", b"deep", point="manifest")
    assert storage.get("a/b/c/d.json") == b"deep"
    assert storage.list("a/") == ["a/b/c/d.json"]


def test_create_is_exclusive(storage: Storage) -> None:
    assert storage.create("units/split-0003", b"first") is True
    assert storage.create("units/split-0003", b"second") is False
    assert storage.get("units/split-0003") == b"first"


def test_create_refuses_a_name_put_earlier_or_a_segment(storage: Storage) -> None:
    storage.put("manifest.json", b"m")
    write_segment(storage, "segments/s.out", b"data")
    assert storage.create("manifest.json", b"other") is False
    assert storage.create("segments/s.out", b"other") is False
    assert storage.get("manifest.json") == b"m"
    assert read_all(storage, "segments/s.out", 0, 4) == b"data"


def test_put_is_atomic_for_a_concurrent_reader(storage: Storage) -> None:
    """A reader racing many replacements only ever sees a whole old or new record."""
    values = [bytes([65 + i]) * (64 * 1024 + i) for i in range(4)]
    storage.put("r", values[0])
    done = threading.Event()
    seen: set[bytes | None] = set()

    def reader() -> None:
        while not done.is_set():
            seen.add(storage.get("r"))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for value in values * (3 if "s3" in repr(storage) else 25):  # 12 PUTs on S3 suffice
            storage.put("r", value)
    finally:
        done.set()
        thread.join(timeout=30)
    assert seen <= set(values)


def test_delete(storage: Storage) -> None:
    storage.delete("nothing/here")
    storage.put("units/1", b"x")
    storage.delete("units/1")
    assert storage.get("units/1") is None
    storage.delete("units/1")
    write_segment(storage, "segments/a", b"x")
    storage.delete("segments/a")
    assert storage.segment_size("segments/a") is None
    assert storage.list("") == []


def test_a_folder_is_not_a_record_and_a_record_is_not_a_folder(storage: Storage) -> None:
    storage.put("a/b", b"x")
    with pytest.raises(IsADirectoryError):
        storage.put("a", b"y")
    with pytest.raises(IsADirectoryError):
        storage.get("a")
    with pytest.raises(IsADirectoryError):
        storage.delete("a")
    with pytest.raises(FileExistsError):
        storage.open_segment("a")
    assert storage.create("a", b"y") is False
    with pytest.raises(NotADirectoryError):
        storage.put("a/b/c", b"y")
    with pytest.raises(NotADirectoryError):
        storage.open_segment("a/b/c")
    assert storage.list("") == ["a/b"]


# -- segments --------------------------------------------------------------------------


def test_open_segment_is_exclusive(storage: Storage) -> None:
    segment = storage.open_segment("segments/0003.002-9f3c1a.out")
    assert segment.name == "segments/0003.002-9f3c1a.out"
    with pytest.raises(FileExistsError):
        storage.open_segment("segments/0003.002-9f3c1a.out")
    segment.close()
    with pytest.raises(FileExistsError):
        storage.open_segment("segments/0003.002-9f3c1a.out")
    storage.put("manifest.json", b"m")
    with pytest.raises(FileExistsError):
        storage.open_segment("manifest.json")
    assert storage.get("manifest.json") == b"m"


def test_segment_size_counts_every_appended_byte(storage: Storage) -> None:
    assert storage.segment_size("segments/s") is None
    segment = storage.open_segment("segments/s")
    assert storage.segment_size("segments/s") == 0
    segment.append(b"abc")
    segment.sync()
    segment.append(b"de")
    assert storage.segment_size("segments/s") == 5
    segment.append(b"")
    segment.close()
    assert storage.segment_size("segments/s") == 5
    assert storage.get("segments/s") == b"abcde"


def test_read_segment_is_exact(storage: Storage) -> None:
    data = bytes(range(256)) * 3
    write_segment(storage, "segments/s", data[:100], data[100:500], data[500:])
    for start, length in [(0, 768), (0, 0), (5, 0), (768, 0), (1, 1), (99, 2), (300, 468)]:
        assert read_all(storage, "segments/s", start, length) == data[start : start + length]


def test_read_segment_yields_chunks_of_at_most_one_mib(storage: Storage) -> None:
    data = bytes(range(251)) * (5 * READ_CHUNK // 2 // 251)
    write_segment(storage, "segments/big", data[:12345], data[12345:])
    chunks = list(storage.read_segment("segments/big", 7, len(data) - 9))
    assert all(0 < len(chunk) <= READ_CHUNK for chunk in chunks)
    assert len(chunks) >= 3
    assert b"".join(chunks) == data[7:-2]


def test_a_short_segment_raises_before_yielding(storage: Storage) -> None:
    write_segment(storage, "segments/s", b"0123456789")
    with pytest.raises(ShortSegmentError) as caught:
        storage.read_segment("segments/s", 4, 7)  # not iterated: refused at the call
    assert (caught.value.name, caught.value.have, caught.value.want) == ("segments/s", 10, 11)
    assert isinstance(caught.value, CorruptCheckpointError)
    assert "segments/s" in str(caught.value)


def test_a_missing_segment_holds_no_bytes(storage: Storage) -> None:
    assert read_all(storage, "segments/none", 0, 0) == b""
    with pytest.raises(ShortSegmentError) as caught:
        read_all(storage, "segments/none", 0, 1)
    assert (caught.value.have, caught.value.want) == (0, 1)


def test_read_segment_refuses_a_negative_range(storage: Storage) -> None:
    write_segment(storage, "segments/s", b"abc")
    for start, length in [(-1, 1), (0, -1)]:
        with pytest.raises(ValueError):
            storage.read_segment("segments/s", start, length)


def test_a_closed_segment_refuses_more_writes(storage: Storage) -> None:
    segment = storage.open_segment("segments/s")
    segment.append(b"abc")
    segment.close()
    segment.close()
    with pytest.raises(ValueError, match="closed"):
        segment.append(b"more")
    with pytest.raises(ValueError, match="closed"):
        segment.sync()
    assert storage.segment_size("segments/s") == 3


def test_every_backend_hands_out_the_one_segment_writer(storage: Storage) -> None:
    from asyncproc.storage.segment import SegmentWriter

    segment = storage.open_segment("segments/s")
    assert type(segment) is SegmentWriter
    segment.close()


def test_a_failed_append_breaks_the_segment_in_every_backend(
    storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    from asyncproc.storage import faults

    segment = storage.open_segment("segments/s")
    segment.append(b"abc")
    segment.sync()
    monkeypatch.setitem(faults._armed, "segment_write", (1, "ENOSPC"))
    with pytest.raises(OSError, match="injected at segment_write"):
        segment.append(b"lost")
    with pytest.raises(OSError, match="failed earlier"):
        segment.append(b"more")
    with pytest.raises(OSError, match="failed earlier"):
        segment.sync()
    segment.close()
    assert storage.segment_size("segments/s") == 3


def test_appends_after_a_sync_go_on_at_the_end(storage: Storage) -> None:
    segment = storage.open_segment("s")
    expected = b""
    for i in range(20):
        part = str(i).encode() * (i + 1)
        segment.append(part)
        expected += part
        if i % 3 == 0:
            segment.sync()
    segment.sync()
    segment.close()
    assert read_all(storage, "s", 0, len(expected)) == expected


# -- listing and removing --------------------------------------------------------------


def populate(storage: Storage) -> None:
    for name in ["segments/0003.001-aa.out", "segments/0003.001-aa.dead",
                 "segments/0010.001-bb.out", "segments/nested/x.out"]:  # fmt: skip
        write_segment(storage, name, b"x")
    for name in ["manifest.json", "segments.json", "segmentsX/a", "units/0003.a.ckpt"]:
        storage.put(name, b"r")


def test_list_is_sorted_and_respects_folder_prefixes(storage: Storage) -> None:
    populate(storage)
    assert storage.list("segments/") == [
        "segments/0003.001-aa.dead", "segments/0003.001-aa.out",
        "segments/0010.001-bb.out", "segments/nested/x.out",
    ]  # fmt: skip
    assert storage.list("segments/0003.") == [
        "segments/0003.001-aa.dead", "segments/0003.001-aa.out",
    ]  # fmt: skip
    with_dot = sorted([*storage.list("segments/"), "segments.json", "segmentsX/a"])
    assert storage.list("segments") == with_dot
    assert storage.list("units/") == ["units/0003.a.ckpt"]
    assert storage.list("") == sorted(storage.list(""))
    assert len(storage.list("")) == 8
    assert storage.list("nothing/") == []
    assert storage.list("manifest.json/") == []


def test_list_shows_no_leftovers_of_replacements(storage: Storage) -> None:
    for i in range(10):
        storage.put("units/0001.a.ckpt", str(i).encode(), point="checkpoint")
        storage.create(f"units/c{i}", b"c")
    assert storage.list("units/") == ["units/0001.a.ckpt", *(f"units/c{i}" for i in range(10))]


def test_remove_tree_removes_the_folder_only(storage: Storage) -> None:
    populate(storage)
    storage.remove_tree("segments/")
    assert storage.list("segments/") == []
    assert storage.list("") == ["manifest.json", "segments.json", "segmentsX/a",
                                "units/0003.a.ckpt"]  # fmt: skip
    storage.remove_tree("segments/")
    storage.remove_tree("never/made/")
    write_segment(storage, "segments/0003.002-cc.out", b"again")
    assert storage.list("segments/") == ["segments/0003.002-cc.out"]


def test_remove_tree_of_a_nested_folder(storage: Storage) -> None:
    populate(storage)
    storage.remove_tree("segments/nested/")
    assert "segments/nested/x.out" not in storage.list("")
    assert len(storage.list("segments/")) == 3


# -- a property over any sequence of writes --------------------------------------------

WRITES = st.lists(st.tuples(st.binary(max_size=40), st.booleans()), max_size=12)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(writes=WRITES, data=st.data())
def test_any_range_reads_back_exactly(make: Factory, writes: list[tuple[bytes, bool]],
                                      data: st.DataObject, request: pytest.FixtureRequest,
                                      ) -> None:  # fmt: skip
    if "[s3]" in request.node.name:
        pytest.skip("hundreds of PUTs; the same FsspecStorage code runs on fsspec-memory")
    storage = make()
    segment = storage.open_segment("segments/s")
    for part, sync in writes:
        segment.append(part)
        if sync:
            segment.sync()
    whole = b"".join(part for part, _ in writes)
    assert storage.segment_size("segments/s") == len(whole)
    start = data.draw(st.integers(0, len(whole)))
    length = data.draw(st.integers(0, len(whole) - start + 2))
    if start + length > len(whole):
        with pytest.raises(ShortSegmentError):
            storage.read_segment("segments/s", start, length)
    else:
        assert read_all(storage, "segments/s", start, length) == whole[start : start + length]
    segment.close()


@pytest.mark.parametrize("kind", ["fsspec-memory", "s3"])
def test_a_second_storage_on_a_root_sees_a_folder_of_records_as_a_folder(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """A fresh storage (as each new run claim makes) must not mistake a folder holding
    records for a segment: two runs claimed in one second on memory:// once failed so."""
    if kind == "s3":
        server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
        root = Location(f"s3://{bucket}/{tmp_path.name}", server.options())
    else:
        root = Location(f"memory://{tmp_path.name}-again")
    first = root.storage()
    assert first.create("run_1/claim", b"{}")
    first.put("run_1/manifest.json", b"{}")
    again = root.storage()
    assert not again.create("run_1/claim", b"{}")
    assert again.create("run_1-2/claim", b"{}")
    assert again.list("run_1/") == ["run_1/claim", "run_1/manifest.json"]
