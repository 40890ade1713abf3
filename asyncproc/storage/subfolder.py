"""A folder of a storage seen as a storage of its own: a run inside a checkpoint
directory, a retry's state inside its run, a keyed loader inside its run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from .protocol import Segment, Storage


class Subfolder:
    """A folder of a storage, seen as a storage of its own: names are relative to it.

    Every call goes to the parent storage with the folder in front of the name, so the
    parent's checks (names, symlinks, durability) apply unchanged.
    """

    def __init__(self, storage: Storage, folder: str) -> None:
        if not folder.endswith("/"):
            raise ValueError(f"a subfolder name ends with '/', got {folder!r}")
        self._storage, self._folder = storage, folder

    def open_segment(self, name: str) -> Segment:
        return self._storage.open_segment(self._folder + name)

    def segment_size(self, name: str) -> int | None:
        return self._storage.segment_size(self._folder + name)

    def read_segment(self, name: str, start: int, length: int) -> Iterator[bytes]:
        return self._storage.read_segment(self._folder + name, start, length)

    def get(self, name: str) -> bytes | None:
        return self._storage.get(self._folder + name)

    def put(self, name: str, data: bytes, *, point: str = "record") -> None:
        self._storage.put(self._folder + name, data, point=point)

    def create(self, name: str, data: bytes) -> bool:
        return self._storage.create(self._folder + name, data)

    def delete(self, name: str) -> None:
        self._storage.delete(self._folder + name)

    def list(self, prefix: str) -> list[str]:
        cut = len(self._folder)
        return [name[cut:] for name in self._storage.list(self._folder + prefix)]

    def remove_tree(self, prefix: str) -> None:
        self._storage.remove_tree(self._folder + prefix)


if TYPE_CHECKING:  # mypy proves that the view keeps the protocol
    _storage: type[Storage] = Subfolder
