"""``--simulate-crash N``: the crash lands after exactly N committed items.

Commits stay on batch boundaries, so counting commits alone would overshoot (a crash at
4 with batches of 3 landed at 6). Instead the units of this invocation take (hand to
lanes) at most N items between them: a unit whose next block of lines would pass the
budget queues only what is left and reads no further, then commits what it took in
order, its last commit whatever is left of a batch. When the count of committed items
reaches N every item taken is committed, and the coordinator crashes right there.
"""

from __future__ import annotations


class TakeBudget:
    """How many more items the units of this invocation may take."""

    def __init__(self, items: int) -> None:
        self.left = items

    def grant(self, wanted: int) -> int:
        """Take up to ``wanted`` items from the budget; how many were granted."""
        granted = min(wanted, self.left)
        self.left -= granted
        return granted
