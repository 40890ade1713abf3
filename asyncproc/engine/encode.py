"""Turning lines into items and results into the bytes a segment holds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from ..storage.records import DeadLetter

_DUMP = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS


def _text(raw: bytes) -> str:
    return raw.decode("utf-8").strip()


def decoder_for(fmt: str) -> Callable[[bytes], Any]:
    """A text item is the line decoded, then stripped as ``str.strip()`` does (NBSP and
    ideographic spaces too, as the older text tool did); a JSONL item is the line's JSON
    value."""
    return orjson.loads if fmt == "jsonl" else _text


class Encoder:
    """Encodes records for one output layout, by the item's index among all items."""

    __slots__ = ("_index_last",)

    def __init__(self, output_kind: str) -> None:
        self._index_last = output_kind == "json"

    def record(self, index: int, value: Any) -> bytes:
        """One output line: index first for JSON lines, last for the JSON array."""
        if self._index_last:
            body = (
                {**value, "index": index}
                if type(value) is dict
                else {"result": value, "index": index}
            )
        else:
            body = (
                {"index": index, **value}
                if type(value) is dict
                else {"index": index, "result": value}
            )
        return orjson.dumps(body, option=_DUMP)

    @staticmethod
    def dead(index: int, offset: int, item: Any, error: BaseException, attempts: int) -> bytes:
        """One failed-items line, keeping the last attempt's error."""
        if isinstance(item, bytes):
            item = item.decode("utf-8", "backslashreplace")
        return DeadLetter(
            index=index,
            offset=offset,
            item=item,
            error_type=type(error).__name__,
            error=str(error),
            attempts=attempts,
        ).to_line()
