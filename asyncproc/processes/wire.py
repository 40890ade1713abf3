"""The wire between the parent and its ``--processes`` children: one JSON object per line.

Parent to child: the run's setup first (a :class:`~asyncproc.engine.wire.WorkerSetup`,
the same typed wire a Dask task gets), then answers and requests:
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

from typing import Any

import orjson

from ..engine.unit import Commit
from ..engine.wire import encode_commit

PARENT_ENV = "ASYNCPROC_PARENT_PID"
DONE = b'{"done":true}\n'


def line(message: dict[str, Any]) -> bytes:
    return orjson.dumps(message) + b"\n"


def commit_message(commit: Commit) -> dict[str, Any]:
    return {"commit": encode_commit(commit)}
