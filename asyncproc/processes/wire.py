"""The wire between the parent and its ``--processes`` children: one JSON object per line.

Parent to child: the run's setup first (:func:`setup_line`), then answers and requests:
``{"unit": spec, "start": checkpoint, "id": n}`` (``unit`` null: no more work),
``{"cap": unit_id, "candidates": [[offset, index], ...], "id": n}``,
``{"pause": seconds}`` (another child was told to slow down) and ``{"stop": grace}``.
Child to parent: ``{"next": n}`` (a slot wants a unit), ``{"commit": ...}`` after each
durable commit, followed by ``{"limits": [limit, rejections]}``, ``{"pause": seconds}``
(a call was rejected with a Retry-After), ``{"capped": n, "place": [o, i] | null}``,
``{"finished": unit_id, "checkpoint": ...}`` and, last, ``{"done": true}``.

A careful child (rerunning what a dead one had in flight, :mod:`.poison`) gets four more
setup keys, ``"careful": true``, ``"budget": n`` (items it may take), ``"condemned":
[[offset, reason], ...]`` and ``"suspects": [offset, ...]``, and announces each item it
calls: ``{"trying": [unit_id, offset, index]}`` before the call and ``{"tried": [...]}``
after it.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import orjson

from ..engine.unit import Commit
from ..engine.units import Place, UnitSpec
from ..storage.records import UnitCheckpoint

PARENT_ENV = "ASYNCPROC_PARENT_PID"
DONE = b'{"done":true}\n'


def line(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message) + b"\n"


def encode_spec(spec: UnitSpec) -> dict[str, Any]:
    return asdict(spec)


def decode_spec(data: dict[str, Any]) -> UnitSpec:
    return UnitSpec(**data)


def encode_checkpoint(checkpoint: UnitCheckpoint) -> str:
    return checkpoint.to_bytes().decode()


def decode_checkpoint(text: str, what: str) -> UnitCheckpoint:
    return UnitCheckpoint.from_bytes(text.encode(), what)


def encode_place(place: Place | None) -> list[int] | None:
    return None if place is None else [place.offset, place.index]


def decode_place(data: list[int] | None) -> Place | None:
    return None if data is None else Place(int(data[0]), int(data[1]))


def commit_message(commit: Commit) -> dict[str, Any]:
    return {"commit": {
        "unit_id": commit.unit_id, "processed": commit.processed, "failed": commit.failed,
        "checkpoint": encode_checkpoint(commit.checkpoint),
        "claimed": encode_place(commit.claimed), "last_error": commit.last_error,
    }}  # fmt: skip


def decode_commit(data: dict[str, Any]) -> Commit:
    claimed = decode_place(data["claimed"])
    error = data.get("last_error")
    return Commit(
        int(data["unit_id"]), int(data["processed"]), int(data["failed"]),
        decode_checkpoint(data["checkpoint"], "child commit"),
        claimed if claimed is not None else Place(0, 0),
        str(error) if error is not None else None,
    )  # fmt: skip
