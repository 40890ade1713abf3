"""The wire format between the parent and its ``--processes`` children: JSON lines.

Parent to child, one line: ``processor``, ``processor_args``, ``loop`` and ``shards``,
each a :class:`ShardSpec` as plain data and the checkpoint to resume from. Child to
parent, one line per durable commit (:func:`commit_line`), then ``{"done": true}``.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..engine.worker import Commit, ShardSpec
from ..storage.records import ShardCheckpoint, ShardPlan

PARENT_ENV = "ASYNCPROC_PARENT_PID"
DONE = b'{"done": true}\n'
STOP = b"stop"  # parent to child, after the job: "stop GRACE\n" asks for a graceful stop


def encode_spec(spec: ShardSpec) -> dict[str, Any]:
    """A ShardSpec as plain JSON data."""
    fields = {name: getattr(spec, name) for name in ShardSpec.__dataclass_fields__}
    plan = spec.shard
    fields["shard"] = {k: getattr(plan, k) for k in ShardPlan.__dataclass_fields__}
    return fields


def decode_spec(data: dict[str, Any]) -> ShardSpec:
    plan = ShardPlan.from_dict(data["shard"], "shard spec")
    return ShardSpec(**{**data, "shard": plan})


def commit_line(commit: Commit) -> bytes:
    """One stdout line for one durable commit."""
    checkpoint = commit.checkpoint.to_bytes().decode()
    body = {"shard_id": commit.shard_id, "processed": commit.processed,
            "failed": commit.failed, "checkpoint": checkpoint,
            "last_error": commit.last_error}  # fmt: skip
    return orjson.dumps(body) + b"\n"


def decode_commit(data: dict[str, Any]) -> Commit:
    checkpoint = ShardCheckpoint.from_bytes(data["checkpoint"].encode(), "child commit")
    error = data.get("last_error")
    return Commit(
        int(data["shard_id"]), int(data["processed"]), int(data["failed"]), checkpoint,
        str(error) if error is not None else None,
    )  # fmt: skip
