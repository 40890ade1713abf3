"""One shard of a keyed loader: acknowledged keys and failures, on the engine's protocol.

A :class:`KeyShard` buffers key lines and failure lines in memory, and counts keys
once: its checkpoint's ``processed`` is the keys acknowledged, ``failed`` the keys
failing now (a key that failed twice counts once, and not at all once it succeeds), so
progress never passes 100% when failed keys are retried across runs; :meth:`snapshot`
takes them (on the event loop, no awaiting) and :meth:`commit` makes them durable in a
worker thread through :class:`UnitStore`: segments fsynced first, then the checkpoint
that records their committed lengths. Loading reads only committed bytes, so a torn
tail or a corrupt newest checkpoint costs at most the keys of one save.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import orjson

from .._errors import CorruptCheckpointError
from ..storage.protocol import Storage
from ..storage.records import SegmentRef, UnitCheckpoint
from ..storage.unitstore import UnitStore
from .records import Key, KeyFailure


@dataclass(frozen=True, slots=True)
class Pending:
    """One shard's buffered lines and the checkpoint that will point past them."""

    data: dict[str, bytes]
    checkpoint: UnitCheckpoint


@dataclass(frozen=True, slots=True)
class LoadedShard:
    """What a shard has durably acknowledged."""

    keys: set[Key]
    failures: dict[Key, KeyFailure]
    problems: tuple[str, ...]


def _lines(store: UnitStore, refs: tuple[SegmentRef, ...]) -> Iterator[bytes]:
    carry = b""
    for ref in refs:
        for chunk in store.read_committed(ref):
            block = carry + chunk
            cut = block.rfind(b"\n") + 1
            carry = block[cut:]
            yield from block[:cut].splitlines()
        if carry:
            raise CorruptCheckpointError(f"segment {ref.name} ends inside a line")


class KeyShard:
    """The segments, checkpoints and unsaved buffers of one shard of one loader."""

    def __init__(self, loader: Storage, shard_id: int, run_id: str) -> None:
        self.shard_id = shard_id
        self._store = UnitStore(loader, shard_id)
        self._state = UnitCheckpoint(
            run_id=run_id, unit_id=shard_id, generation=0, offset=0, next_index=0,
            processed=0, failed=0, attempts=0, segments=(), dead_segments=(),
            updated_at=time.time(),
        )  # fmt: skip
        self._keys, self._fails = bytearray(), bytearray()
        self._new_keys = self._new_fails = 0
        self._names: tuple[str, str] | None = None
        self._opened = False
        self._lengths = [0, 0]

    # -- loading (blocking) -----------------------------------------------------------

    def load(self) -> LoadedShard:
        loaded = self._store.load()
        if loaded.checkpoint is None:
            return LoadedShard(set(), {}, loaded.problems)
        self._state = loaded.checkpoint
        try:
            keys: set[Key] = {
                orjson.loads(line) for line in _lines(self._store, self._state.segments)
            }
            failures = {}
            for line in _lines(self._store, self._state.dead_segments):
                failure = KeyFailure.from_line(line)
                failures[failure.key] = failure
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CorruptCheckpointError(
                f"shard {self.shard_id} of {self._store.storage}: a committed line "
                f"does not decode ({exc}); restore the file from a backup or start a new run"
            ) from exc
        return LoadedShard(keys, failures, loaded.problems)

    # -- buffering (on the loop) --------------------------------------------------------

    def add_key(self, key: Key, was_failing: bool = False) -> None:
        """A key done; ``was_failing``: it had failed (in this run or before a resume)."""
        self._keys += orjson.dumps(key)
        self._keys += b"\n"
        self._new_keys += 1
        self._new_fails -= was_failing

    def add_failure(self, failure: KeyFailure, new: bool = True) -> None:
        """A key failed; ``new``: it was not failing already (each key counts once)."""
        self._fails += failure.to_line()
        self._new_fails += new

    @property
    def dirty(self) -> bool:
        return bool(self._keys or self._fails)

    def snapshot(self) -> Pending:
        """Take the buffered lines and build the checkpoint that will cover them."""
        if self._names is None:
            attempt = f"{self.shard_id:04d}.{self._state.attempts + 1:03d}-{secrets.token_hex(3)}"
            self._names = (f"{attempt}.keys", f"{attempt}.fail")
            self._state = replace(self._state, attempts=self._state.attempts + 1)
        keys, fails = bytes(self._keys), bytes(self._fails)
        self._keys.clear()
        self._fails.clear()
        self._lengths[0] += len(keys)
        self._lengths[1] += len(fails)
        self._state = self._advance(self._state, self._new_keys, self._new_fails)
        self._new_keys = self._new_fails = 0
        return Pending({self._names[0]: keys, self._names[1]: fails}, self._state)

    def _advance(self, previous: UnitCheckpoint, keys: int, fails: int) -> UnitCheckpoint:
        assert self._names is not None
        key_name, fail_name = self._names
        return previous.advanced(
            SegmentRef(key_name, self._lengths[0]),
            SegmentRef(fail_name, self._lengths[1]),
            keys,
            fails,
        )

    # -- committing (blocking, one thread at a time per shard) ---------------------------

    def commit(self, pending: Pending) -> None:
        if not self._opened:
            for name in pending.data:
                self._store.open_segment(name)
            self._opened = True
        self._store.commit(pending.data, pending.checkpoint)

    def close(self) -> None:
        self._store.close()
