"""JSON values that pass through exactly, or fail their item with a clear error.

orjson is fast but lossy at two edges, both silent: it reads an integer beyond 64 bits
as a float (``123456789012345678901`` becomes ``1.2345678901234568e+20``), and it
writes NaN and the infinities as ``null``. Neither may reach an output:

* :func:`loads` reads with orjson, and again with the standard library's exact parser
  when the line holds a run of 19 or more digits (the only way such an integer can
  appear), so big integers stay integers. NaN, ``Infinity`` and numbers that overflow a
  double are refused, as orjson refuses them.
* :func:`dumps` writes with orjson; a value holding an integer beyond 64 bits is written
  by substituting each such integer's digits for a one-time placeholder, so every other
  byte is exactly what orjson writes. A NaN or an infinity raises
  :class:`NotExactError`: the item fails rather than be written as ``null``.

The checks cost a byte translation and a search per JSON line read (about 0.3 µs) and a
``b"null"`` search per record written (about 0.15 µs); the slow paths run only for the
values that need them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
from typing import Any

import orjson

# Bytes 0-9 -> "0", everything else -> " ": a run of 19 zeros means 19 digits in a row.
_DIGITS = bytes(0x30 if 0x30 <= c <= 0x39 else 0x20 for c in range(256))
_LONG_RUN = b"0" * 19  # 19 digits may already overflow: -9999999999999999999 < -2**63
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what orjson writes as an integer
_BIG_INT = "Integer exceeds 64-bit range"  # orjson's message for an integer it cannot write


class NotExactError(ValueError):
    """A value that JSON (or this encoder) cannot hold exactly; its item fails."""


def _refuse_constant(name: str) -> Any:
    raise NotExactError(f"{name} is not valid JSON")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise NotExactError(f"number {text[:40]} is too large for a double")
    return value


def loads(raw: bytes | str) -> Any:
    """Parse one JSON value; integers of any size come back exact."""
    value = orjson.loads(raw)
    data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")
    if data.translate(_DIGITS).find(_LONG_RUN) < 0:  # find: about twice as fast as `in`
        return value
    return json.loads(data, parse_constant=_refuse_constant, parse_float=_finite)


def dumps(value: Any, option: int = 0) -> bytes:
    """Encode like ``orjson.dumps``, but exactly: big integers kept, NaN refused."""
    try:
        data = orjson.dumps(value, option=option)
    except orjson.JSONEncodeError as exc:
        if str(exc) != _BIG_INT:
            raise
        data = _dumps_big(value, option)
    if data.find(b"null") >= 0:
        _refuse_non_finite(value)
    return data


def _dumps_big(value: Any, option: int) -> bytes:
    """orjson's bytes, with each integer beyond 64 bits written out in full."""
    token = secrets.token_hex(16)
    bigs: list[int] = []
    data = orjson.dumps(_swap_big(value, token, bigs), option=option)
    if data.count(token.encode()) != len(bigs):  # the token can only come from here
        raise NotExactError("a value holds text that collides with the big-integer encoder")
    for k, number in enumerate(bigs):
        data = data.replace(f'"{token}{k}"'.encode(), str(number).encode(), 1)
    return data


def _swap_big(value: Any, token: str, bigs: list[int]) -> Any:
    """A copy of ``value`` with each big integer replaced by a numbered placeholder."""
    if isinstance(value, int) and not isinstance(value, bool):
        if _INT_MIN <= value <= _INT_MAX:
            return value
        bigs.append(int(value))
        return f"{token}{len(bigs) - 1}"
    if isinstance(value, dict):
        return {_key(k): _swap_big(v, token, bigs) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_swap_big(v, token, bigs) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return {f.name: _swap_big(getattr(value, f.name), token, bigs) for f in fields}
    return value


def _key(key: Any) -> Any:
    """A big integer key is written as its digits, as orjson writes any integer key."""
    if isinstance(key, int) and not isinstance(key, bool) and not _INT_MIN <= key <= _INT_MAX:
        return str(key)
    return key


def _refuse_non_finite(value: Any, where: str = "") -> None:
    """Raise NotExactError naming the first NaN or infinity in ``value``."""
    if isinstance(value, float):
        if not math.isfinite(value):
            name = "NaN" if math.isnan(value) else ("-" if value < 0 else "") + "Infinity"
            place = f" at {where}" if where else ""
            raise NotExactError(
                f"the result holds {name}{place}, which JSON cannot represent (it would be "
                "written as null); return None or a string there instead"
            )
        return
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_non_finite(item, f"{where}[{key!r}]")
    elif isinstance(value, list | tuple):
        for k, item in enumerate(value):
            _refuse_non_finite(item, f"{where}[{k}]")
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            _refuse_non_finite(getattr(value, f.name), f"{where}.{f.name}")
