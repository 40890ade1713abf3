"""``Ordering`` in isolation: results in any order in, an ordered prefix cut at batch
boundaries out.

* A reference model (every finished result in a dict, the prefix recomputed from scratch
  at every step) is run beside the class by a hypothesis state machine: takes, finishes
  in any order, cuts at the first mark, the last mark, ``here()`` or a saved point, at
  any moment, and every kind of misuse, with the whole visible state compared each step.
* A property test drives whole attempts (any item count, batch size, completion order,
  record size and cut policy) and checks what the commits add up to.
* Plain tests pin the documented edges: boundaries, the restart after a cut that takes
  everything, refusals, and the memory discipline (far-ahead results copied to their
  exact size, nothing kept after a cut).
"""

from __future__ import annotations

import sys
from typing import Literal, NamedTuple

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from asyncproc.engine.ordering import NEAR, Cut, Ordering, Point

CutAt = Literal["first", "last", "here"]


class Item(NamedTuple):
    """One finished result: the input offset past its line, its record, its outcome."""

    end: int
    record: bytes
    failed: bool


class Model:
    """The obvious way: every finished result in a dict, the prefix recomputed on demand.

    Marks are the batch boundaries counted from ``base`` (the last cut that took all that
    was ordered, or the start) that lie after ``durable`` and within the ordered prefix.
    """

    def __init__(self, batch_size: int, offset: int) -> None:
        self.batch, self.start = batch_size, offset
        self.taken = self.durable = self.base = 0
        self.results: dict[int, Item] = {}

    @property
    def next(self) -> int:
        seq = 0
        while seq in self.results:
            seq += 1
        return seq

    def points(self) -> list[Point]:
        """``points()[s]`` is the point just before item ``s``, for ``s`` up to ``next``."""
        point = Point(0, 0, 0, 0, 0, self.start)
        points = [point]
        for seq in range(self.next):
            item, (out, dead, ok, failed, _) = self.results[seq], point[1:]
            size = len(item.record)
            if item.failed:
                point = Point(seq + 1, out, dead + size, ok, failed + 1, item.end)
            else:
                point = Point(seq + 1, out + size, dead, ok + 1, failed, item.end)
            points.append(point)
        return points

    def point(self, seq: int) -> Point:
        return self.points()[seq]

    def marks(self) -> list[Point]:
        points = self.points()
        ends = range(self.base + self.batch, self.next + 1, self.batch)
        return [points[seq] for seq in ends if seq > self.durable]

    def finish(self, seq: int, item: Item) -> bool:
        before = len(self.marks())
        self.results[seq] = item
        return len(self.marks()) > before

    def between(self, first: int, stop: int) -> tuple[list[bytes], list[bytes]]:
        """The records and the dead letters of items ``first`` to ``stop - 1``."""
        items = [self.results[s] for s in range(first, stop)]
        out = [item.record for item in items if not item.failed]
        return out, [item.record for item in items if item.failed]

    def cut(self, seq: int) -> Cut:
        out, dead = self.between(self.durable, seq)
        cut = Cut(self.point(seq), b"".join(out), b"".join(dead), len(out), len(dead))
        if seq == self.next:
            self.base = seq
        self.durable = seq
        return cut


def state_of(o: Ordering) -> tuple[object, ...]:
    """Everything a caller can see of an ``Ordering``."""
    return (o.taken, o.next, o.durable, o.offset, o.in_flight, o.complete, o.here(), *o.marks)


def ordered(batch_size: int, records: list[bytes], offset: int = 0) -> Ordering:
    """An ``Ordering`` that took and finished ``records`` in order, line ``i`` ending at i+1."""
    o = Ordering(batch_size, offset)
    for record in records:
        seq = o.take()
        o.finish(seq, offset + seq + 1, record, False)
    return o


def cut_point(o: Ordering, at: CutAt) -> Point:
    if at == "here" or not o.marks:
        return o.here()
    return o.marks[0] if at == "first" else o.marks[-1]


# -- the state machine against the model -------------------------------------------------

RECORDS = st.binary(max_size=12)
WINDOW = NEAR + 8  # lanes take no more while this far ahead of the ordered prefix
MISUSES = [
    "finish twice",
    "finish not taken",
    "finish negative",
    "cut not ordered",
    "cut already cut",
]


class OrderingMachine(RuleBasedStateMachine):
    """``Ordering`` and ``Model`` side by side; after every step they must agree."""

    def __init__(self) -> None:
        super().__init__()
        self.o = Ordering(1, 0)
        self.model = Model(1, 0)
        self.saved: list[Point] = []  # points taken with here() at random moments

    @initialize(batch_size=st.integers(1, 6), offset=st.integers(0, 2**40))
    def start(self, batch_size: int, offset: int) -> None:
        self.o = Ordering(batch_size, offset)
        self.model = Model(batch_size, offset)

    @property
    def pending(self) -> list[int]:
        return [s for s in range(self.model.taken) if s not in self.model.results]

    @precondition(lambda self: self.model.taken - self.model.next < WINDOW)
    @rule(count=st.integers(1, 4) | st.integers(1, 4) | st.integers(NEAR - 2, NEAR + 8))
    def take(self, count: int) -> None:
        for _ in range(count):
            assert self.o.take() == self.model.taken
            self.model.taken += 1

    @precondition(lambda self: self.pending)
    @rule(data=st.data(), count=st.integers(1, 10))
    def finish(self, data: st.DataObject, count: int) -> None:
        for _ in range(min(count, len(self.pending))):
            # Mostly one of the first two waiting, so that the prefix moves on.
            soon = st.sampled_from(self.pending[:2])
            seq = data.draw(soon | soon | st.sampled_from(self.pending), label="seq")
            record, failed = data.draw(RECORDS, "record"), data.draw(st.booleans(), "failed")
            end = data.draw(st.integers(0, 2**40), label="end")
            ahead = seq - self.o.next
            marked = self.o.finish(seq, end, record, failed)
            assert marked == self.model.finish(seq, Item(end, record, failed))
            if ahead:
                event("parked far ahead" if ahead >= NEAR else "parked near")
                assert_parked(self.o, seq, record, ahead)
            self.agrees_with_model()

    @precondition(lambda self: self.o.next > self.o.durable)  # empty cuts: plain tests
    @rule(data=st.data(), at=st.sampled_from(["first", "last", "here", "saved"]))
    def cut(self, data: st.DataObject, at: CutAt | Literal["saved"]) -> None:
        live = [p for p in self.saved if p.next >= self.model.durable]
        if at == "saved" and live:
            point = data.draw(st.sampled_from(live), label="saved point")
        else:
            point = cut_point(self.o, "here" if at == "saved" else at)
        event("cut everything ordered" if point.next == self.o.next else "cut part")
        event(f"cut with {len(self.o.marks)} marks")
        assert self.o.cut(point) == self.model.cut(point.next)
        self.o.made_durable(point)  # the caller's commit returned

    @rule()
    def save(self) -> None:
        self.saved.append(self.o.here())

    @rule(data=st.data(), misuse=st.sampled_from(MISUSES))
    def refuse(self, data: st.DataObject, misuse: str) -> None:
        """Every misuse raises ValueError and changes nothing (the invariants check that)."""
        o, m = self.o, self.model
        stale = [p for p in self.saved if p.next < m.durable]
        if misuse == "cut already cut" and stale:
            with pytest.raises(ValueError, match="already cut"):
                o.cut(data.draw(st.sampled_from(stale), label="stale point"))
        elif misuse == "cut not ordered":
            beyond = data.draw(st.integers(1, 3), label="beyond")
            with pytest.raises(ValueError, match="not ordered"):
                o.cut(o.here()._replace(next=o.next + beyond))
        else:
            if misuse == "finish twice" and m.results:
                seq = data.draw(st.sampled_from(sorted(m.results)), label="seq")
            elif misuse == "finish negative":
                seq = data.draw(st.integers(-3, -1), label="seq")
            else:  # not taken
                seq = m.taken + data.draw(st.integers(0, 3), label="beyond")
            with pytest.raises(ValueError, match=f"item {seq} was not handed out"):
                o.finish(seq, 0, b"x", False)

    @invariant()
    def agrees_with_model(self) -> None:
        m = self.model
        here = m.point(m.next)
        expected = (m.taken, m.next, m.durable, here.offset, m.taken - m.durable)
        assert state_of(self.o) == (*expected, m.next == m.taken, here, *m.marks())

    @invariant()
    def holds_only_what_is_not_cut(self) -> None:
        o, m = self.o, self.model
        out, dead = m.between(m.durable, m.next)
        assert (bytes(o._out), bytes(o._dead)) == (b"".join(out), b"".join(dead))
        parked = {s for s in m.results if s > m.next}
        assert set(o._parked) == set(o._ends) == parked
        assert o._parked_dead == {s for s in parked if m.results[s].failed}


def assert_parked(o: Ordering, seq: int, record: bytes, ahead: int) -> None:
    """A result waits as it is when near its turn, as an exact-size copy when far ahead."""
    kept = o._parked[seq]
    assert kept == record
    if ahead < NEAR:
        assert kept is record
    else:
        assert type(kept) is bytes
        assert sys.getsizeof(kept) == sys.getsizeof(b"") + len(record)
        assert len(record) <= 1 or kept is not record  # b"" and 1-byte bytes are shared


def test_ordering_agrees_with_the_model() -> None:
    run_state_machine_as_test(
        OrderingMachine,
        settings=settings(max_examples=75, stateful_step_count=50, deadline=None),
    )


# -- whole attempts: what the commits add up to ------------------------------------------


class Attempt(NamedTuple):
    """One attempt's script: items, the order lanes finish them, when commits cut."""

    batch_size: int
    offset: int
    items: list[Item]  # by sequence number
    order: list[int]  # the order lanes finish them in
    leads: list[int]  # before each finish, how many more items lanes take beyond it
    cuts: list[CutAt | None]  # after each finish, the commit that cuts (or none)


# After each finish: mostly no commit, else one that cuts at the first mark, the last, here.
COMMITS: st.SearchStrategy[CutAt | None] = st.sampled_from(
    [None, None, None, "first", "last", "here"]
)


@st.composite
def attempts(draw: st.DrawFn) -> Attempt:
    n = draw(st.integers(0, 110))
    payloads = draw(st.lists(st.binary(max_size=10), min_size=n, max_size=n))
    # Distinct records make any misordering visible; empty ones stay empty.
    records = [p and b"%d:" % i + p for i, p in enumerate(payloads)]
    failed = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    offset = draw(st.integers(0, 2**40))
    ends, end = [], offset
    for length in draw(st.lists(st.integers(1, 300), min_size=n, max_size=n)):
        end += length
        ends.append(end)
    items = [Item(*fields) for fields in zip(ends, records, failed, strict=True)]
    return Attempt(
        batch_size=draw(st.integers(1, 12)),
        offset=offset,
        items=items,
        order=draw(st.permutations(range(n))),
        leads=draw(st.lists(st.integers(0, 2 * NEAR), min_size=n, max_size=n)),
        cuts=draw(st.lists(COMMITS, min_size=n, max_size=n)),
    )


class Run(NamedTuple):
    cuts: list[Cut]
    final: Ordering


class Grid:
    """Where the marks must be: boundaries from the last cut that took all that was ordered."""

    def __init__(self, batch_size: int) -> None:
        self.batch, self.base = batch_size, 0

    def check(self, o: Ordering) -> None:
        expected = range(self.base + self.batch, o.next + 1, self.batch)
        assert [m.next for m in o.marks] == [s for s in expected if s > o.durable]

    def cut(self, o: Ordering, point: Point) -> Cut:
        if point.next == o.next:
            self.base = point.next
        before = o.durable
        cut = o.cut(point)
        assert o.durable == before, "durable before its commit returned"
        o.made_durable(point)  # the caller's commit returned
        assert o.durable == point.next >= before
        assert o.in_flight == o.taken - o.durable
        return cut


def play(attempt: Attempt) -> Run:
    """Run the script, checking marks and finish's answer at every step."""
    o, grid, cuts = Ordering(attempt.batch_size, attempt.offset), Grid(attempt.batch_size), []
    for seq, lead, at in zip(attempt.order, attempt.leads, attempt.cuts, strict=False):
        while o.taken <= min(seq + lead, len(attempt.items) - 1):
            o.take()
        marks, item = len(o.marks), attempt.items[seq]
        assert o.finish(seq, item.end, item.record, item.failed) == (len(o.marks) > marks)
        grid.check(o)
        if at is not None:
            cuts.append(grid.cut(o, cut_point(o, at)))
            grid.check(o)
    cuts.append(grid.cut(o, o.here()))
    return Run(cuts, o)


def assert_cut_is(cut: Cut, items: list[Item], first: int, offset: int) -> None:
    """``cut`` takes items ``first`` up to its point, and its point has the right totals."""
    stop = cut.point.next
    assert cut.point.offset == (items[stop - 1].end if stop else offset)
    for taken, totals in ((items[first:stop], cut), (items[:stop], cut.point)):
        assert (totals.ok, totals.failed) == (
            sum(not i.failed for i in taken),
            sum(i.failed for i in taken),
        )
    assert cut.out == b"".join(i.record for i in items[first:stop] if not i.failed)
    assert cut.dead == b"".join(i.record for i in items[first:stop] if i.failed)
    assert cut.point.out_len == sum(len(i.record) for i in items[:stop] if not i.failed)
    assert cut.point.dead_len == sum(len(i.record) for i in items[:stop] if i.failed)


@settings(max_examples=100, deadline=None)
@given(attempt=attempts())
def test_commits_add_up_to_the_results_in_order(attempt: Attempt) -> None:
    items, run, first = attempt.items, play(attempt), 0
    for cut in run.cuts:
        assert_cut_is(cut, items, first, attempt.offset)
        first = cut.point.next
    assert b"".join(c.out for c in run.cuts) == b"".join(i.record for i in items if not i.failed)
    assert b"".join(c.dead for c in run.cuts) == b"".join(i.record for i in items if i.failed)
    assert sum(c.ok for c in run.cuts) == sum(not i.failed for i in items)
    assert sum(c.failed for c in run.cuts) == sum(i.failed for i in items)
    o, n = run.final, len(items)
    assert (o.taken, o.next, o.durable, o.in_flight, o.complete) == (n, n, n, 0, True)
    assert not o.marks


# -- the documented edges ------------------------------------------------------------------


def test_a_fresh_ordering_has_nothing_to_cut() -> None:
    o = Ordering(3, 1000)
    assert (o.taken, o.next, o.durable, o.in_flight, o.complete) == (0, 0, 0, 0, True)
    assert o.here() == Point(0, 0, 0, 0, 0, 1000)
    assert not o.marks
    assert o.cut(o.here()) == Cut(Point(0, 0, 0, 0, 0, 1000), b"", b"", 0, 0)


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_below_one_is_refused(batch_size: int) -> None:
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        Ordering(batch_size, 0)


def test_results_in_order_mark_every_batch() -> None:
    o, answers, heres = Ordering(3, 0), [], []
    for record in [b"a", b"bb", b"c", b"d", b"e", b"f", b"g"]:
        seq = o.take()
        answers.append(o.finish(seq, 10 * (seq + 1), record, failed=seq == 4))
        heres.append(o.here())
    assert answers == [False, False, True, False, False, True, False]
    assert list(o.marks) == [heres[2], heres[5]]
    assert heres[5] == Point(6, 6, 1, 5, 1, 60)


def test_one_finish_can_reach_several_boundaries() -> None:
    o = Ordering(2, 0)
    for _ in range(5):
        o.take()
    assert not any(o.finish(seq, seq + 1, b"r", False) for seq in (4, 2, 3, 1))
    assert not o.marks and o.next == 0
    assert o.finish(0, 1, b"r", False)
    assert [m.next for m in o.marks] == [2, 4] and o.next == 5 and o.complete


def test_a_cut_at_a_mark_keeps_the_boundaries() -> None:
    o = ordered(3, [b"r"] * 7)  # marks at 3 and 6, and item 6 ordered past them
    cut = o.cut(o.marks[0])
    assert o.durable == 0, "not durable until its commit returns"
    o.made_durable(cut.point)
    assert (cut.point.next, cut.out, o.durable) == (3, b"rrr", 3)
    assert not o.finish(o.take(), 8, b"r", False)
    assert o.finish(o.take(), 9, b"r", False)
    assert [m.next for m in o.marks] == [6, 9]


def test_a_cut_at_an_earlier_point_keeps_the_boundaries() -> None:
    o = ordered(3, [b"r"] * 4)
    earlier = o.here()
    o.finish(o.take(), 5, b"r", False)
    assert o.cut(earlier).point.next == 4
    assert o.finish(o.take(), 6, b"r", False)
    assert [m.next for m in o.marks] == [6]


def test_a_cut_of_everything_ordered_restarts_the_boundaries() -> None:
    o = ordered(4, [b"r"] * 6)
    assert o.cut(o.here()).out == b"r" * 6 and not o.marks
    assert not any(o.finish(o.take(), 0, b"r", False) for _ in range(3))
    assert o.finish(o.take(), 0, b"r", False)
    assert [m.next for m in o.marks] == [10]


def test_a_cut_while_items_are_in_flight_takes_only_the_prefix() -> None:
    o = Ordering(100, 5)
    for _ in range(5):
        o.take()
    for seq, failed in ((4, False), (0, False), (1, True), (3, False)):
        o.finish(seq, 10 * (seq + 1), b"<%d>" % seq, failed)
    first = o.cut(o.here())
    assert first == Cut(Point(2, 3, 3, 1, 1, 20), b"<0>", b"<1>", 1, 1)
    assert (o.durable, o.in_flight) == (0, 5), "a commit in progress redoes its items"
    o.made_durable(first.point)
    assert (o.next, o.durable, o.in_flight, o.complete) == (2, 2, 3, False)
    o.finish(2, 30, b"<2>", True)
    assert (o.next, o.offset, o.complete, o.in_flight) == (5, 50, True, 3)
    last = o.cut(o.here())
    assert last == Cut(Point(5, 9, 6, 3, 2, 50), b"<3><4>", b"<2>", 2, 1)
    assert o.in_flight == 3
    o.made_durable(last.point)
    assert o.in_flight == 0


def test_cutting_again_at_the_same_point_takes_nothing() -> None:
    # A point at ``durable`` is allowed (the last commit cuts here() even when nothing is
    # new), so cutting twice at one mark is an empty cut, not an error.
    o = ordered(2, [b"a", b"b", b"c"])
    mark = o.marks[0]
    assert o.cut(mark).out == b"ab"
    assert o.cut(mark) == Cut(mark, b"", b"", 0, 0)
    o.made_durable(mark)
    assert (o.durable, bytes(o._out)) == (2, b"c")


def test_empty_records_are_ordered_like_any_other() -> None:
    o = Ordering(2, 0)
    for _ in range(3):
        o.take()
    o.finish(2, 3, b"", True)
    o.finish(1, 2, b"", False)
    assert o.finish(0, 1, b"", False)
    assert o.cut(o.here()) == Cut(Point(3, 0, 0, 2, 1, 3), b"", b"", 2, 1)


# -- refusals --------------------------------------------------------------------------------


def in_flight_ordering() -> Ordering:
    """Items 0-5 taken; 0 and 1 ordered and cut, 2 ordered, 4 parked; 3 and 5 running."""
    o = Ordering(2, 0)
    for _ in range(6):
        o.take()
    for seq in (0, 1):
        o.finish(seq, seq + 1, b"r", False)
    o.cut(o.here())
    o.finish(4, 5, b"r", False)
    o.finish(2, 3, b"r", False)
    return o


@pytest.mark.parametrize(
    ("seq", "why"),
    [(0, "ordered and cut"), (2, "ordered"), (4, "parked"), (6, "not taken"), (-1, "negative")],
)
def test_finishing_what_was_not_handed_out_or_twice_is_refused(seq: int, why: str) -> None:
    o = in_flight_ordering()
    before = state_of(o)
    with pytest.raises(ValueError, match=f"item {seq} was not handed out, or finished twice"):
        o.finish(seq, 99, b"again", False)
    assert state_of(o) == before, why


def test_finishing_the_next_seq_before_it_is_taken_is_refused() -> None:
    o = Ordering(1, 0)
    with pytest.raises(ValueError, match="item 0 was not handed out"):
        o.finish(0, 10, b"x", False)  # take() was never called
    assert (o.taken, o.next, o.complete, o.in_flight) == (0, 0, True, 0)


def test_cutting_at_a_point_not_yet_ordered_is_refused() -> None:
    o, ahead = in_flight_ordering(), in_flight_ordering()
    ahead.finish(3, 4, b"r", False)  # a twin that has ordered further
    before = state_of(o)
    with pytest.raises(ValueError, match="cannot cut at item 5: not ordered or already cut"):
        o.cut(ahead.here())
    assert state_of(o) == before


def test_cutting_at_a_point_already_cut_is_refused() -> None:
    o = ordered(2, [b"r"] * 5)
    first, last = o.marks
    o.cut(last)
    before = state_of(o)
    with pytest.raises(ValueError, match="cannot cut at item 2: not ordered or already cut"):
        o.cut(first)
    assert state_of(o) == before


# -- memory: far-ahead results at their exact size, nothing kept after a cut --------------


def parked_at(ahead: int, record: bytes) -> Ordering:
    """An ``Ordering`` holding ``record`` for the item ``ahead`` of its turn."""
    o = Ordering(1000, 0)
    for _ in range(ahead + 1):
        o.take()
    o.finish(ahead, ahead + 1, record, False)
    return o


@pytest.mark.parametrize("ahead", [1, NEAR - 1, NEAR, NEAR + 1, 5 * NEAR])
def test_results_far_ahead_wait_as_exact_size_copies(ahead: int) -> None:
    # orjson returns bytes with room to spare; a fresh, distinct bytes object stands in.
    record = b"".join([b"{", b"x" * 58, b"}"])
    o = parked_at(ahead, record)
    assert_parked(o, ahead, record, ahead)
    assert (o._parked[ahead] is record) == (ahead < NEAR)


def test_a_parked_result_is_let_go_once_ordered() -> None:
    near, far = b"".join([b"near"] * 8), b"".join([b"far"] * 8)
    refs = sys.getrefcount(near), sys.getrefcount(far)
    o = Ordering(1000, 0)
    for _ in range(NEAR + 2):
        o.take()
    o.finish(1, 2, near, False)
    o.finish(NEAR + 1, NEAR + 2, far, False)
    assert (sys.getrefcount(near), sys.getrefcount(far)) == (refs[0] + 1, refs[1])
    for seq in [0, *range(2, NEAR + 1)]:
        o.finish(seq, seq + 1, b"", False)
    assert o.complete and not (o._parked or o._ends or o._parked_dead)
    assert (sys.getrefcount(near), sys.getrefcount(far)) == refs


def test_a_cut_leaves_no_bytes_behind() -> None:
    o = Ordering(10, 0)
    for _ in range(1000):
        seq = o.take()
        o.finish(seq, seq + 1, b"r" * 50, failed=seq % 2 == 1)
    empty = sys.getsizeof(bytearray())
    partial = o.cut(o.marks[0])
    assert (type(partial.out), type(partial.dead)) == (bytes, bytes)
    assert (len(partial.out), len(partial.dead)) == (250, 250)
    for buffer in (o._out, o._dead):
        assert sys.getsizeof(buffer) <= empty + 2 * len(buffer) + 1
    whole = o.cut(o.here())
    assert (len(whole.out), len(whole.dead)) == (50 * 495, 50 * 495)
    for buffer in (o._out, o._dead):
        assert len(buffer) == 0 and sys.getsizeof(buffer) <= empty + 1
