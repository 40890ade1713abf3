"""Frozen on-disk records of keyed runs, sealed like every other record (schema, checksum).

::

    <checkpoint>/
        run_20261123_143022/
            keyed.json                  KeyedRunRecord: status, config, shard count, description
            lock                        held by the process working on the run
            loaders/<name>/loader.json  LoaderRecord: total items, status, error
            loaders/<name>/units/0003.a.ckpt         UnitCheckpoint (the engine's record)
            loaders/<name>/segments/0003.<attempt>.keys   acknowledged keys, orjson lines
            loaders/<name>/segments/0003.<attempt>.fail   failures, orjson lines

Each shard reuses the file engine's protocol unchanged (:class:`ShardStore`): key lines
are appended and fsynced, then the two-slot checkpoint recording their committed length
is replaced atomically. ``processed`` / ``failed`` count the committed lines.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Self

import orjson

from .._errors import ConfigError, CorruptCheckpointError
from .._public import public
from ..storage.records import SCHEMA_VERSION, RunStatus, Sealed, field_of, status_of, time_of

KEYED_MANIFEST = "keyed.json"
LOADER_RECORD = "loader.json"
Key = str | int
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


def check_name(name: str) -> str:
    """A loader name becomes a directory name: refuse anything else.

    A leading '.' is refused too: such names are kept for temporary files.
    """
    if not _NAME.match(name) or name.startswith("."):
        raise ConfigError(
            f"loader name {name!r} must be 1-100 letters, digits, '_', '-' or '.', "
            "not starting with '.'; rename it"
        )
    return name


def check_key(key: object) -> Key:
    """Keys are str or int, so they survive the JSON round trip unchanged."""
    if isinstance(key, bool) or not isinstance(key, str | int):
        raise ConfigError(
            f"item key {key!r} is a {type(key).__name__}; make the key function return "
            "a str or an int"
        )
    return key


def shard_of(key: Key, shards: int) -> int:
    """A stable shard for ``key``: the same in every process and every Python version."""
    digest = hashlib.blake2b(orjson.dumps(key), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


@dataclass(frozen=True, slots=True)
class KeyedRunRecord(Sealed):
    """A keyed run: its status, the config it was started with and its shard count."""

    run_id: str
    status: RunStatus
    created_at: float
    updated_at: float
    config: dict[str, Any]
    shards: int
    error: str | None = None
    description: str | None = None  # what the run is for, as given when it started
    schema: int = field(default=SCHEMA_VERSION)

    @classmethod
    def decode(cls, data: dict[str, Any], what: str) -> Self:
        error, description = data.get("error"), data.get("description")
        return cls(
            run_id=field_of(data, "run_id", str, what),
            status=status_of(data, what),
            created_at=time_of(data, "created_at", what),
            updated_at=time_of(data, "updated_at", what),
            config=field_of(data, "config", dict, what),
            shards=field_of(data, "shards", int, what),
            error=error if isinstance(error, str) else None,
            description=description if isinstance(description, str) else None,
        )


@public
class LoaderStatus(StrEnum):
    """Where a loader stands, as its run's code last said."""

    IN_PROGRESS = "in_progress"  # started, not said to be done
    COMPLETED = "completed"  # mark_loader_complete / LoaderCheckpoint.set_status
    FAILED = "failed"  # the loader raised, or was marked failed (error kept)


@dataclass(frozen=True, slots=True)
class LoaderRecord(Sealed):
    """What a loader knows besides its keys: the total it expects, its status and error."""

    name: str
    total_items: int | None
    status: LoaderStatus = LoaderStatus.IN_PROGRESS
    error: str | None = None
    updated_at: float | None = None
    schema: int = field(default=SCHEMA_VERSION)

    @classmethod
    def decode(cls, data: dict[str, Any], what: str) -> Self:
        total = data.get("total_items")
        if total is not None and (not isinstance(total, int) or isinstance(total, bool)):
            raise CorruptCheckpointError(f"{what}: field 'total_items' should be int or null")
        error, at = data.get("error"), data.get("updated_at")
        try:
            status = LoaderStatus(data.get("status", LoaderStatus.IN_PROGRESS))
        except ValueError:
            raise CorruptCheckpointError(f"{what}: unknown loader status") from None
        return cls(
            name=field_of(data, "name", str, what), total_items=total, status=status,
            error=error if isinstance(error, str) else None,
            updated_at=float(at) if isinstance(at, int | float) else None,
        )  # fmt: skip


@public
@dataclass(frozen=True, slots=True)
class KeyFailure:
    """One failed key, with the error of its last attempt."""

    key: Key
    error_type: str
    error: str
    at: float

    def to_line(self) -> bytes:
        return orjson.dumps(asdict(self)) + b"\n"

    @classmethod
    def from_line(cls, line: bytes) -> Self:
        data = orjson.loads(line)
        return cls(data["key"], str(data["error_type"]), str(data["error"]), float(data["at"]))


def config_differences(stored: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """Name each config key whose value differs between a saved run and this call."""
    keys = sorted(set(stored) | set(given))
    return [
        f"{k}: run has {stored.get(k)!r}, now {given.get(k)!r}"
        for k in keys
        if stored.get(k) != given.get(k)
    ]
