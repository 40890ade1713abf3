"""``limits.json``: what a run's limits are doing now, for ``status`` while it runs.

Advisory, not state: the running coordinator replaces it about once a second (only
when the run has limits), nothing resumes from it, and a missing or unreadable one
just shows nothing. It is removed with the run's other checkpoint files.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..storage.protocol import Storage

LIVE = "limits.json"


def write_live(storage: Storage, data: dict[str, Any]) -> None:
    storage.put(LIVE, orjson.dumps(data), point="live")


def read_live(storage: Storage) -> dict[str, Any] | None:
    try:
        raw = storage.get(LIVE)
        data = orjson.loads(raw) if raw is not None else None
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
