"""When to commit: the one loop behind a unit's commits and a retry's.

Commit each batch as it fills, or what there is once ``interval`` seconds pass
mid-batch. A commit that fell behind takes every whole batch ordered meanwhile, so
checkpoints stay on batch boundaries and a slow fsync means bigger commits, not stalled
lanes; ``capped`` (``--simulate-crash``) takes one batch per commit instead, so the crash
lands where asked. What a commit writes is the caller's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import anyio

from .ordering import Ordering, Point
from .signal import Signal

Commit = Callable[[Point, bool], Awaitable[None]]  # (where to cut, is it the last commit)


async def commit_batches(
    order: Ordering, batch: Signal, interval: float, over: Callable[[], bool], commit: Commit,
    *, capped: bool = False,
) -> None:  # fmt: skip
    """Commit until ``over()``: then once more, the final commit, and return."""
    due = anyio.current_time() + interval
    while True:
        if not (over() or order.marks):
            with anyio.move_on_after(due - anyio.current_time()):
                await batch.wait()
        if over():
            while capped and order.marks and order.marks[0].next < order.next:
                await commit(order.marks[0], False)
            await commit(order.here(), True)
            return
        if order.marks:
            await commit(order.marks[0] if capped else order.marks[-1], False)
        elif anyio.current_time() >= due and order.next > order.durable:
            await commit(order.here(), False)  # the interval passed mid-batch
        else:
            continue
        due = anyio.current_time() + interval
