"""Frozen records that live on disk, each with a schema version and a checksum.

Every record is written as one orjson object whose ``checksum`` field covers the rest,
so a torn or hand-edited file is told apart from a good one before it is trusted.
Decoding failures of any kind become :class:`CorruptCheckpointError` here, in one place.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Self, TypeVar, cast

import orjson

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

from .._errors import CorruptCheckpointError
from .._public import public

SCHEMA_VERSION = 3  # 3: segments carry a CRC-32 of their committed bytes
READABLE_SCHEMAS = (2, 3)  # 2 has no segment CRC: such a segment is trusted by length

T = TypeVar("T")


@public
class RunStatus(StrEnum):
    """Lifecycle of a run, as stored in its manifest."""

    RUNNING = "running"  # planned or being worked on (or killed while it was)
    INTERRUPTED = "interrupted"  # stopped on purpose, resumable
    FAILED = "failed"  # stopped by an error, resumable once the cause is fixed
    MERGED = "merged"  # output written; only clean-up is left
    COMPLETED = "completed"  # output written and checkpoint state cleared
    DAMAGED = "damaged"  # never stored: what management shows of an unreadable manifest


def _checksum(body: dict[str, Any]) -> str:
    raw = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(raw, digest_size=8).hexdigest()


def seal(body: dict[str, Any]) -> bytes:
    """Encode a record body with its checksum."""
    return orjson.dumps({**body, "checksum": _checksum(body)}, option=orjson.OPT_INDENT_2)


def unseal(raw: bytes, what: str) -> dict[str, Any]:
    """Decode and verify a sealed record; any defect raises CorruptCheckpointError."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptCheckpointError(f"{what} is not valid JSON ({len(raw)} bytes)") from exc
    if not isinstance(data, dict):
        raise CorruptCheckpointError(f"{what} is not a JSON object")
    stored = data.pop("checksum", None)
    if stored != _checksum(data):
        raise CorruptCheckpointError(f"{what} fails its checksum")
    if data.get("schema") not in READABLE_SCHEMAS:
        raise CorruptCheckpointError(
            f"{what} has schema {data.get('schema')!r}, this asyncproc reads "
            f"{' and '.join(map(str, READABLE_SCHEMAS))}"
        )
    return data


class Sealed:
    """A record stored as one sealed object: its bytes are made and read here, once.

    A subclass (a frozen dataclass) says only how to build itself from the verified
    fields (:meth:`decode`); :meth:`body` is what is sealed, the dataclass's fields
    unless the record says otherwise.
    """

    __slots__ = ()

    def body(self) -> dict[str, Any]:
        return asdict(cast("DataclassInstance", self))

    def to_bytes(self) -> bytes:
        return seal(self.body())

    @classmethod
    def from_bytes(cls, raw: bytes, what: str) -> Self:
        return cls.decode(unseal(raw, what), what)

    @classmethod
    def decode(cls, data: dict[str, Any], what: str) -> Self:
        """The record from its verified fields; a defect raises CorruptCheckpointError."""
        raise NotImplementedError


def field_of(data: dict[str, Any], key: str, kind: type[T], what: str) -> T:
    """Return ``data[key]`` if it has the expected type, else raise CorruptCheckpointError."""
    value = data.get(key)
    if kind is int and isinstance(value, bool):
        raise CorruptCheckpointError(f"{what}: field {key!r} should be int")
    if not isinstance(value, kind):
        raise CorruptCheckpointError(f"{what}: field {key!r} should be {kind.__name__}")
    return value


def time_of(data: dict[str, Any], key: str, what: str) -> float:
    """A timestamp field: JSON may hold it as an int or a float."""
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CorruptCheckpointError(f"{what}: field {key!r} should be a number")
    return float(value)


def status_of(data: dict[str, Any], what: str) -> RunStatus:
    try:
        status = RunStatus(field_of(data, "status", str, what))
    except ValueError as exc:
        raise CorruptCheckpointError(f"{what}: unknown status {data['status']!r}") from exc
    if status is RunStatus.DAMAGED:
        raise CorruptCheckpointError(f"{what}: 'damaged' is not a stored status")
    return status


@dataclass(frozen=True, slots=True)
class InputIdentity:
    """What the input looked like when the run was planned."""

    path: str
    size: int
    mtime_ns: int
    fingerprint: str

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str) -> Self:
        return cls(
            path=field_of(data, "path", str, what),
            size=field_of(data, "size", int, what),
            mtime_ns=field_of(data, "mtime_ns", int, what),
            fingerprint=field_of(data, "fingerprint", str, what),
        )


@dataclass(frozen=True, slots=True)
class UnitPlan:
    """A work unit: the input from ``start`` up to the next unit's start (or the end).

    A unit has no stored end: the plan's units partition the input, so a unit ends
    where the next one (by start) begins. Splitting a running unit is then one record
    (the plan with the new unit in it), never an edit to the running unit's own state.
    """

    unit_id: int
    start: int  # byte offset of the unit's first line
    first_index: int  # index of the unit's first item among all items

    @classmethod
    def from_dict(cls, data: dict[str, Any], what: str) -> Self:
        return cls(*(field_of(data, k, int, what) for k in ("unit_id", "start", "first_index")))


@dataclass(frozen=True, slots=True)
class LineIndex(Sealed):
    """A sparse index of the input: item index at line starts, at regular byte intervals.

    Made by the planning pass (which reads the input anyway), so any remaining range
    can be cut at an indexed point without reading the input again. ``offsets[k]`` is
    the byte offset of a line start and ``indexes[k]`` the index of the first item at
    or after it; both ascend, and the first entry is ``(0, 0)``.
    """

    offsets: tuple[int, ...]
    indexes: tuple[int, ...]
    # The fingerprint of the input it indexes (InputIdentity.fingerprint): an index
    # copied in from another input is told apart. Empty in a schema-2 index.
    fingerprint: str = ""
    schema: int = field(default=SCHEMA_VERSION)

    @classmethod
    def decode(cls, data: dict[str, Any], what: str) -> Self:
        offsets = _ints(field_of(data, "offsets", list, what), "offsets", what)
        indexes = _ints(field_of(data, "indexes", list, what), "indexes", what)
        if len(offsets) != len(indexes) or not offsets or offsets[0] != 0:
            raise CorruptCheckpointError(f"{what}: offsets and indexes do not pair up")
        fingerprint = field_of(data, "fingerprint", str, what) if data["schema"] > 2 else ""
        return cls(offsets, indexes, fingerprint)


def _ints(values: list[Any], key: str, what: str) -> tuple[int, ...]:
    if not all(type(v) is int for v in values) or values != sorted(values):
        raise CorruptCheckpointError(f"{what}: {key} should be ascending integers")
    return tuple(values)


@dataclass(frozen=True, slots=True)
class SegmentRef:
    """A segment file, how many of its bytes are committed, and their CRC-32.

    ``crc`` is None only for a segment named by a schema-2 checkpoint (written before
    segments had a CRC): its bytes are then trusted by their length alone.
    """

    name: str
    length: int
    crc: int | None = None


def _segments(data: dict[str, Any], key: str, what: str) -> tuple[SegmentRef, ...]:
    refs = []
    for item in field_of(data, key, list, what):
        if not isinstance(item, dict):
            raise CorruptCheckpointError(f"{what}: {key} holds a non-object")
        name = _segment_name(field_of(item, "name", str, what), what)
        crc = None if item.get("crc") is None else field_of(item, "crc", int, what)
        if crc is not None and not 0 <= crc < 1 << 32:
            raise CorruptCheckpointError(f"{what}: segment {name} has CRC {crc}, not a CRC-32")
        refs.append(SegmentRef(name, field_of(item, "length", int, what), crc))
    return tuple(refs)


_SEGMENT_NAME = re.compile(r"^[0-9]{4,}\.[0-9]{3,}-[0-9a-f]{6}\.[a-z]{3,4}$")


def _segment_name(name: str, what: str) -> str:
    """A segment name is a plain name of the form the engine makes: never a path."""
    if not _SEGMENT_NAME.match(name):
        raise CorruptCheckpointError(f"{what}: {name!r} is not a segment name")
    return name


@dataclass(frozen=True, slots=True)
class UnitCheckpoint(Sealed):
    """Everything a unit has durably committed; replaced atomically after each batch.

    Whether the unit is done is not stored: it is done when ``offset`` has reached the
    unit's end, which the plan decides (the next unit's start).
    """

    run_id: str
    unit_id: int
    generation: int
    offset: int  # input byte offset just past the last committed item
    next_index: int  # index of the next item to process
    processed: int
    failed: int
    attempts: int  # how many attempts (first run, resumes) have touched the unit
    segments: tuple[SegmentRef, ...]
    dead_segments: tuple[SegmentRef, ...]
    updated_at: float
    schema: int = field(default=SCHEMA_VERSION)

    def advanced(
        self, out: SegmentRef, dead: SegmentRef, ok: int, failed: int,
        offset: int | None = None, next_index: int | None = None,
    ) -> Self:  # fmt: skip
        """The next generation: this attempt's two segments at their new committed lengths,
        ``ok`` and ``failed`` more items, and the input position reached, if it moved."""
        return replace(
            self,
            generation=self.generation + 1,
            offset=self.offset if offset is None else offset,
            next_index=self.next_index if next_index is None else next_index,
            processed=self.processed + ok,
            failed=self.failed + failed,
            segments=(*(s for s in self.segments if s.name != out.name), out),
            dead_segments=(*(s for s in self.dead_segments if s.name != dead.name), dead),
            updated_at=time.time(),
        )

    @classmethod
    def decode(cls, data: dict[str, Any], what: str) -> Self:
        ints = {k: field_of(data, k, int, what) for k in _CHECKPOINT_INTS}
        return cls(
            run_id=field_of(data, "run_id", str, what),
            **ints,
            segments=_segments(data, "segments", what),
            dead_segments=_segments(data, "dead_segments", what),
            updated_at=time_of(data, "updated_at", what),
        )


_CHECKPOINT_INTS = (
    "unit_id", "generation", "offset", "next_index", "processed", "failed", "attempts",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Manifest(Sealed):
    """A run: its input, its options, its units and its status.

    The coordinator rewrites it atomically when it splits a unit: the plan with the new
    unit in it is the split's one durable record.
    """

    run_id: str
    status: RunStatus
    created_at: float
    updated_at: float
    input: InputIdentity
    output: str
    options: dict[str, Any]
    units: tuple[UnitPlan, ...]  # ascending by start; unit 0 starts at 0
    total_items: int
    summary: dict[str, Any] | None = None
    # When the latest invocation began, and how many items were done then: status
    # measures throughput and ETA over running time only, never over pauses.
    resumed_at: float | None = None
    done_at_resume: int = 0
    schema: int = field(default=SCHEMA_VERSION)

    @classmethod
    def decode(cls, data: dict[str, Any], what: str) -> Self:
        summary, resumed_at = data.get("summary"), data.get("resumed_at")
        done = data.get("done_at_resume")
        return cls(
            run_id=field_of(data, "run_id", str, what),
            status=status_of(data, what),
            created_at=time_of(data, "created_at", what),
            updated_at=time_of(data, "updated_at", what),
            input=InputIdentity.from_dict(field_of(data, "input", dict, what), what),
            output=field_of(data, "output", str, what),
            options=field_of(data, "options", dict, what),
            units=_units(field_of(data, "units", list, what), what),
            total_items=field_of(data, "total_items", int, what),
            summary=summary if isinstance(summary, dict) else None,
            resumed_at=float(resumed_at) if isinstance(resumed_at, int | float) else None,
            done_at_resume=done if isinstance(done, int) and not isinstance(done, bool) else 0,
        )


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One failed item as written to the failed-items file."""

    index: int
    offset: int
    item: Any
    error_type: str
    error: str
    attempts: int

    def to_line(self) -> bytes:
        return orjson.dumps(asdict(self), default=repr) + b"\n"


def _units(items: list[Any], what: str) -> tuple[UnitPlan, ...]:
    units = tuple(UnitPlan.from_dict(u, what) for u in items if isinstance(u, dict))
    starts = [u.start for u in units]
    if len(units) != len(items) or not units or starts[0] != 0 or starts != sorted(set(starts)):
        raise CorruptCheckpointError(f"{what}: units do not partition the input")
    if len({u.unit_id for u in units}) != len(units):
        raise CorruptCheckpointError(f"{what}: two units share an id")
    return units
