"""The in-order commit of one unit attempt: a plain class, no event loop, no I/O.

Lanes take items in sequence (``seq`` 0, 1, 2, ... from the unit's first item) and
finish them in any order. :class:`Ordering` keeps each result until everything before
it has finished, appends it to the *ordered prefix* (output records and dead letters in
two byte buffers), and marks a :class:`Point` every ``batch_size`` ordered items. A
commit cuts the prefix at a point (:meth:`Ordering.cut`); whatever was ordered after
that point stays for the next commit. ``durable`` counts the items whose commit has
returned (:meth:`Ordering.made_durable`), so ``taken - durable`` is how far lanes have
run ahead of the last durable commit: the window, and what a crash may redo.

Results that finish far ahead of their turn are copied to their exact size: orjson
over-allocates what it returns (4 KiB for a 60-byte record), which, held for long,
made the window cost about fifty times what it holds.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

# A result at most this far ahead of its turn waits as it is; one further ahead is
# copied to its exact size first.
NEAR = 64


class Point(NamedTuple):
    """A place in the ordered prefix, with every running total as it stood there."""

    next: int  # sequence number of the first item after the point
    out_len: int  # output bytes ordered up to the point, counted from the attempt's start
    dead_len: int  # dead-letter bytes, likewise
    ok: int  # succeeded items up to the point
    failed: int  # failed items up to the point
    offset: int  # input offset just past the last item before the point


class Cut(NamedTuple):
    """What one commit takes: the bytes between the previous cut and ``point``."""

    point: Point
    out: bytes
    dead: bytes
    ok: int  # succeeded items in this cut
    failed: int  # failed items in this cut


class Ordering:
    """Results in any order in, an ordered prefix cut at batch boundaries out."""

    __slots__ = (
        "_batch", "_cut_to", "_dead", "_dead_base", "_ends", "_failed", "_failed_cut",
        "_mark_at", "_ok", "_ok_cut", "_out", "_out_base", "_parked", "_parked_dead",
        "durable", "marks", "next", "offset", "taken",
    )  # fmt: skip

    def __init__(self, batch_size: int, offset: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._batch = batch_size
        self.taken = 0  # sequence numbers handed to lanes
        self.next = 0  # the first sequence number not yet ordered
        self.durable = 0  # the first sequence number not yet durable (see made_durable)
        self._cut_to = 0  # the first sequence number not yet cut
        self.offset = offset  # input offset just past the last ordered item
        self._ok = self._failed = self._ok_cut = self._failed_cut = 0
        self._out, self._dead = bytearray(), bytearray()
        self._out_base = self._dead_base = 0  # bytes already cut off each buffer
        # Results that finished ahead of their turn, by sequence number: the end offset
        # of the line and the record. Flat dicts and a set of ints: containers of ints
        # and bytes that the cyclic garbage collector does not track.
        self._ends: dict[int, int] = {}
        self._parked: dict[int, bytes] = {}
        self._parked_dead: set[int] = set()
        self.marks: deque[Point] = deque()  # batch boundaries reached and not yet cut
        self._mark_at = batch_size

    def take(self) -> int:
        """Hand out the next sequence number."""
        seq = self.taken
        self.taken = seq + 1
        return seq

    @property
    def in_flight(self) -> int:
        """Items handed out and not yet durable: what a crash now would redo."""
        return self.taken - self.durable

    @property
    def complete(self) -> bool:
        """Every item handed out so far is ordered."""
        return self.next == self.taken

    def finish(self, seq: int, end: int, record: bytes, failed: bool) -> bool:
        """Record the result of item ``seq``; True when a batch boundary was reached.

        ``end`` is the input offset just past the item's line; ``record`` is its output
        line, or its dead letter when ``failed``. The in-order case is inline: it is
        most items' only path.
        """
        if seq != self.next or seq == self.taken:  # out of order, or never handed out
            self._park(seq, end, record, failed)
            return False
        if failed:
            self._dead += record
            self._failed += 1
        else:
            self._out += record
            self._ok += 1
        self.offset = end
        nxt = seq + 1
        if nxt in self._ends or nxt >= self._mark_at:
            return self._drain(nxt)
        self.next = nxt
        return False

    def _park(self, seq: int, end: int, record: bytes, failed: bool) -> None:
        if not self.next <= seq < self.taken or seq in self._ends:
            raise ValueError(f"item {seq} was not handed out, or finished twice")
        self._ends[seq] = end
        if failed:
            self._parked_dead.add(seq)
        self._parked[seq] = record if seq - self.next < NEAR else bytes(memoryview(record))

    def _drain(self, nxt: int) -> bool:
        """Extend the ordered prefix with waiting results, marking each batch boundary."""
        ends, records, dead = self._ends, self._parked, self._parked_dead
        marked = False
        while True:
            if nxt >= self._mark_at:
                self.next = nxt
                self.marks.append(self.here())
                self._mark_at += self._batch
                marked = True
            if nxt not in ends:
                break
            self.offset = ends.pop(nxt)
            if dead and nxt in dead:
                dead.discard(nxt)
                self._dead += records.pop(nxt)
                self._failed += 1
            else:
                self._out += records.pop(nxt)
                self._ok += 1
            nxt += 1
        self.next = nxt
        return marked

    def here(self) -> Point:
        """The end of the ordered prefix as it stands now."""
        return Point(
            self.next,
            self._out_base + len(self._out),
            self._dead_base + len(self._dead),
            self._ok,
            self._failed,
            self.offset,
        )

    def cut(self, point: Point) -> Cut:
        """Take the ordered prefix up to ``point`` (a mark, or :meth:`here`)."""
        if not self._cut_to <= point.next <= self.next:
            raise ValueError(f"cannot cut at item {point.next}: not ordered or already cut")
        out = self._take(self._out, point.out_len - self._out_base)
        dead = self._take(self._dead, point.dead_len - self._dead_base)
        self._out_base, self._dead_base = point.out_len, point.dead_len
        ok, failed = point.ok - self._ok_cut, point.failed - self._failed_cut
        self._ok_cut, self._failed_cut = point.ok, point.failed
        self._cut_to = point.next
        while self.marks and self.marks[0].next <= point.next:
            self.marks.popleft()
        if point.next == self.next:
            # Everything ordered is cut (an interval commit, the end): boundaries restart.
            self._mark_at = point.next + self._batch
        return Cut(point, out, dead, ok, failed)

    def made_durable(self, point: Point) -> None:
        """The commit of the cut up to ``point`` returned: its items are durable now.

        Only then does the window move. While a commit is being made durable its items
        are not, and a crash redoes them: lanes measure how far they run ahead from the
        last commit that returned, so a crash redoes at most one window per unit.
        """
        self.durable = point.next

    @staticmethod
    def _take(buffer: bytearray, size: int) -> bytes:
        with memoryview(buffer) as view:
            taken = bytes(view[:size])
        del buffer[:size]
        return taken
