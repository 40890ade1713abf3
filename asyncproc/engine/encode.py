"""Turning lines into items and results into the bytes a segment holds.

Values pass through exactly (:mod:`.exact`): integers of any size, and never a NaN
written as ``null``. A result that is an object gets the item's ``index`` beside its
fields, unless it has an ``index`` field of its own: then, like a result that is not an
object, it is nested whole under ``result``, so neither index is lost and the output's
``index`` is always the engine's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from . import exact

_DUMP = orjson.OPT_APPEND_NEWLINE | orjson.OPT_NON_STR_KEYS
_LETTER = orjson.OPT_APPEND_NEWLINE


def _text(raw: bytes) -> str:
    return raw.decode("utf-8").strip()


def decoder_for(fmt: str) -> Callable[[bytes], Any]:
    """A text item is the line decoded, then stripped as ``str.strip()`` does (NBSP and
    ideographic spaces too, as the older text tool did); a JSONL item is the line's JSON
    value."""
    return exact.loads if fmt == "jsonl" else _text


class Encoder:
    """Encodes records for one output layout, by the item's index among all items."""

    __slots__ = ("_index_last",)

    def __init__(self, output_kind: str) -> None:
        self._index_last = output_kind == "json"

    def record(self, index: int, value: Any) -> bytes:
        """One output line: index first for JSON lines, last for the JSON array."""
        flat = type(value) is dict and "index" not in value
        if self._index_last:
            body = {**value, "index": index} if flat else {"result": value, "index": index}
        else:
            body = {"index": index, **value} if flat else {"index": index, "result": value}
        return exact.dumps(body, _DUMP)

    @staticmethod
    def dead(index: int, offset: int, item: Any, error: BaseException, attempts: int) -> bytes:
        """One failed-items line, keeping the last attempt's error; never raises.

        The line must be written whatever the item and the error hold, or one bad item
        would stop every run of its input: an item that cannot be written as JSON (nested
        too deep, say) is kept as text, and says so in the error.
        """
        if isinstance(item, bytes):
            item = item.decode("utf-8", "backslashreplace")
        letter = {
            "index": index, "offset": offset, "item": item,
            "error_type": type(error).__name__, "error": _describe(error),
            "attempts": attempts,
        }  # fmt: skip
        try:
            return exact.dumps(letter, _LETTER)
        except Exception as exc:  # the item itself cannot be written
            letter["item"] = _clean(_repr(item))
            letter["error"] += f" (the item is kept as text: it cannot be written as JSON: {exc})"
        try:
            return exact.dumps(letter, _LETTER)
        except Exception:
            letter["item"] = None
            return exact.dumps(letter, _LETTER)


def _clean(text: str) -> str:
    """Text that encodes as UTF-8: lone surrogates become backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception as exc:
        return f"<{type(value).__name__}: repr failed: {type(exc).__name__}>"


def _describe(error: BaseException) -> str:
    """``str(error)``, even for an exception whose ``__str__`` fails."""
    try:
        return _clean(str(error))
    except Exception as exc:
        return f"<str() of the {type(error).__name__} failed: {type(exc).__name__}>"
