"""MemoryStorage's fault tools: power cuts, injected I/O errors, held calls, the journal.

These are what make it worth having: the commit protocol can be stopped at any step,
in a thread, without processes or sleeps, and what a crash would leave examined.
"""

from __future__ import annotations

import errno
import random
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncproc.storage.memory import Event, Gate, MemoryStorage, Op
from asyncproc.storage.protocol import ShortSegmentError, Storage

JOIN_TIMEOUT = 30


@contextmanager
def in_thread(call: Callable[[], object]) -> Iterator[list[BaseException]]:
    """Run ``call`` in a thread for the duration of the block; collect what it raised."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            call()
        except BaseException as exc:  # reported to the test, never lost
            raised.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    try:
        yield raised
    finally:
        thread.join(timeout=JOIN_TIMEOUT)
        assert not thread.is_alive(), "the storage call never finished"


# -- crashed() -------------------------------------------------------------------------


def test_a_crash_keeps_synced_bytes_and_every_record() -> None:
    storage = MemoryStorage()
    storage.put("manifest.json", b"m")
    assert storage.create("units/split", b"s")
    kept = storage.open_segment("segments/kept")
    kept.append(b"durable ")
    kept.sync()
    kept.append(b"volatile")
    lost = storage.open_segment("segments/never-synced")
    lost.append(b"gone")
    storage.put("units/deleted", b"d")
    storage.delete("units/deleted")

    after = storage.crashed()
    assert after.list("") == ["manifest.json", "segments/kept", "units/split"]
    assert after.get("segments/kept") == b"durable "
    assert after.get("manifest.json") == b"m"
    assert storage.get("segments/kept") == b"durable volatile"  # the original is untouched


def test_a_crashed_copy_is_independent_and_fully_usable() -> None:
    storage = MemoryStorage()
    segment = storage.open_segment("s")
    segment.append(b"abc")
    segment.sync()
    after = storage.crashed()
    segment.append(b"def")
    segment.sync()
    assert after.get("s") == b"abc"
    with pytest.raises(FileExistsError):
        after.open_segment("s")
    assert after.synced_size("s") == 3
    after.put("s", b"replaced")
    assert storage.get("s") == b"abcdef"


SEGMENT_OPS = st.lists(st.one_of(st.binary(min_size=1, max_size=20), st.just(None)), max_size=30)


@given(ops=SEGMENT_OPS)
def test_a_crash_keeps_exactly_the_synced_prefix(ops: list[bytes | None]) -> None:
    """Any appends (bytes) and syncs (None), then a crash: the synced prefix, no more."""
    storage = MemoryStorage()
    segment = storage.open_segment("segments/s")
    appended, synced, ever_synced = b"", b"", False
    for op in ops:
        if op is None:
            segment.sync()
            synced, ever_synced = appended, True
        else:
            segment.append(op)
            appended += op
    after = storage.crashed()
    assert after.get("segments/s") == (synced if ever_synced else None)
    assert storage.synced_size("segments/s") == (len(synced) if ever_synced else None)
    assert storage.segment_size("segments/s") == len(appended)


@given(ops=SEGMENT_OPS, seed=st.integers(0, 2**32))
def test_a_torn_crash_keeps_the_synced_prefix_and_a_prefix_of_the_rest(
    ops: list[bytes | None], seed: int
) -> None:
    storage = MemoryStorage()
    segment = storage.open_segment("s")
    appended, synced = b"", None
    for op in ops:
        if op is None:
            segment.sync()
            synced = appended
        else:
            segment.append(op)
            appended += op
    kept = storage.crashed(torn=random.Random(seed)).get("s")
    if synced is not None:
        assert kept is not None and kept.startswith(synced)
    if kept is not None:
        assert appended.startswith(kept)


# -- fail_next() -----------------------------------------------------------------------


def test_fail_next_fails_one_call_and_changes_nothing() -> None:
    storage = MemoryStorage()
    storage.put("units/r", b"old")
    storage.fail_next("put")
    with pytest.raises(OSError) as caught:
        storage.put("units/r", b"new")
    assert caught.value.errno == errno.ENOSPC
    assert storage.get("units/r") == b"old"
    storage.put("units/r", b"new")
    assert storage.get("units/r") == b"new"


def test_fail_next_aims_at_a_prefix_and_counts() -> None:
    storage = MemoryStorage()
    storage.fail_next(Op.PUT, errno.EIO, prefix="units/")
    storage.fail_next(Op.PUT, errno.EIO, prefix="units/")
    storage.put("manifest.json", b"m")  # another prefix: not affected
    for _ in range(2):
        with pytest.raises(OSError, match="injected at put"):
            storage.put("units/r", b"x")
    storage.put("units/r", b"x")
    assert storage.list("") == ["manifest.json", "units/r"]


def test_fail_next_takes_an_error_instance_and_refuses_unknown_ops() -> None:
    storage = MemoryStorage()
    error = PermissionError(errno.EACCES, "read-only")
    storage.fail_next("get", error)
    with pytest.raises(PermissionError) as caught:
        storage.get("x")
    assert caught.value is error
    with pytest.raises(ValueError):
        storage.fail_next("rename")


@pytest.mark.parametrize("op", [Op.APPEND, Op.SYNC])
def test_a_failed_append_or_sync_breaks_the_segment(op: Op) -> None:
    storage = MemoryStorage()
    segment = storage.open_segment("s")
    segment.append(b"abc")
    storage.fail_next(op, errno.EIO)
    with pytest.raises(OSError, match="injected"):
        segment.append(b"def") if op is Op.APPEND else segment.sync()
    with pytest.raises(OSError, match="failed earlier"):
        segment.append(b"ghi")
    with pytest.raises(OSError, match="failed earlier"):
        segment.sync()
    assert storage.crashed().get("s") is None


@pytest.mark.parametrize(
    ("op", "call"),
    [
        (Op.OPEN_SEGMENT, lambda s: s.open_segment("n")),
        (Op.SEGMENT_SIZE, lambda s: s.segment_size("n")),
        (Op.READ_SEGMENT, lambda s: s.read_segment("n", 0, 0)),
        (Op.GET, lambda s: s.get("n")),
        (Op.CREATE, lambda s: s.create("n", b"")),
        (Op.DELETE, lambda s: s.delete("n")),
        (Op.LIST, lambda s: s.list("")),
        (Op.REMOVE_TREE, lambda s: s.remove_tree("n/")),
    ],
)
def test_every_operation_can_fail(op: Op, call: Callable[[Storage], object]) -> None:
    storage = MemoryStorage()
    storage.fail_next(op, errno.EIO)
    with pytest.raises(OSError, match=f"injected at {op}"):
        call(storage)
    call(storage)  # once only


# -- hold() ----------------------------------------------------------------------------


def test_a_put_held_before_its_effect_leaves_the_old_record() -> None:
    storage = MemoryStorage()
    storage.put("units/r", b"old")
    gate = storage.hold("put", prefix="units/")
    with in_thread(lambda: storage.put("units/r", b"new", point="checkpoint")) as raised:
        gate.wait()
        assert storage.get("units/r") == b"old"
        assert storage.crashed().get("units/r") == b"old"
        storage.put("manifest.json", b"m")  # other calls go on meanwhile
        gate.release()
    assert not raised
    assert storage.get("units/r") == b"new"


def test_a_put_held_after_its_effect_is_visible_and_durable() -> None:
    storage = MemoryStorage()
    gate = storage.hold(Op.PUT, after=True)
    with in_thread(lambda: storage.put("r", b"new")):
        gate.wait()
        assert storage.get("r") == b"new"
        assert storage.crashed().get("r") == b"new"
        gate.release()


def test_a_held_sync_keeps_its_bytes_out_of_a_crash() -> None:
    storage = MemoryStorage()
    segment = storage.open_segment("s")
    segment.append(b"abc")
    segment.sync()
    segment.append(b"def")
    gate = storage.hold(Op.SYNC, prefix="s")
    with in_thread(segment.sync):
        gate.wait()
        assert storage.crashed().get("s") == b"abc"
        assert storage.segment_size("s") == 6  # appended, visible, not durable
        gate.release()
    assert storage.crashed().get("s") == b"abcdef"


def test_a_hold_and_a_failure_on_one_call() -> None:
    """The call is held first, then fails: a slow disk that ends in an error."""
    storage = MemoryStorage()
    gate = storage.hold(Op.CREATE)
    storage.fail_next(Op.CREATE, errno.EIO)
    with in_thread(lambda: storage.create("c", b"x")) as raised:
        gate.wait()
        gate.release()
    assert [type(e) for e in raised] == [OSError]
    assert storage.get("c") is None


def test_a_gate_times_out_rather_than_hang() -> None:
    gate = Gate(timeout=0.01)
    with pytest.raises(TimeoutError):
        gate.wait(timeout=0.01)
    with pytest.raises(TimeoutError):
        gate.hold()
    assert gate.reached


# -- the journal, and a commit stopped at every step -----------------------------------


def commit(storage: Storage, segment_name: str, data: bytes, generation: int) -> None:
    """A miniature commit: append, sync, then the checkpoint naming the synced length."""
    segment = storage.open_segment(segment_name)
    segment.append(data)
    segment.sync()
    storage.put("units/0000.ckpt", b"%d:%d" % (generation, len(data)), point="checkpoint")
    segment.close()


def test_the_journal_lists_changes_in_order() -> None:
    storage = MemoryStorage()
    commit(storage, "segments/a", b"12345", 1)
    assert storage.journal() == (
        Event(Op.OPEN_SEGMENT, "segments/a", 0),
        Event(Op.APPEND, "segments/a", 5),
        Event(Op.SYNC, "segments/a", 5),
        Event(Op.PUT, "units/0000.ckpt", 3),
    )


STEPS = [(op, after) for op in (Op.OPEN_SEGMENT, Op.APPEND, Op.SYNC, Op.PUT) for after in (0, 1)]


@pytest.mark.parametrize(("op", "after"), STEPS)
def test_a_crash_at_any_step_of_a_commit_leaves_a_checkpoint_naming_durable_bytes(
    op: Op, after: int
) -> None:
    storage = MemoryStorage()
    commit(storage, "segments/a", b"first", 1)
    gate = storage.hold(op, after=bool(after))
    with in_thread(lambda: commit(storage, "segments/b", b"second!", 2)):
        gate.wait()
        crashed = storage.crashed()
        gate.release()
    generation, length = map(int, (crashed.get("units/0000.ckpt") or b"").split(b":"))
    segment = "segments/a" if generation == 1 else "segments/b"
    assert b"".join(crashed.read_segment(segment, 0, length)) in (b"first", b"second!")
    with pytest.raises(ShortSegmentError):
        crashed.read_segment(segment, 0, length + 1)


def test_concurrent_writers_in_threads() -> None:
    storage = MemoryStorage()
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        segment = storage.open_segment(f"segments/{i}")
        barrier.wait(timeout=JOIN_TIMEOUT)
        for j in range(200):
            segment.append(b"%d," % j)
            if j % 10 == 0:
                segment.sync()
            storage.put(f"units/{i}", b"%d" % j)
        segment.sync()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=JOIN_TIMEOUT)
    expected = b"".join(b"%d," % j for j in range(200))
    for i in range(8):
        assert storage.get(f"segments/{i}") == expected
        assert storage.get(f"units/{i}") == b"199"
    assert len(storage.journal()) == 8 * (1 + 200 + 20 + 200 + 1)
