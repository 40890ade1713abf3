"""Every record on disk is made into bytes and read back in one place: ``Sealed``."""

from __future__ import annotations

import pytest

from asyncproc._errors import CorruptCheckpointError
from asyncproc.engine.replay.state import RetryPlan
from asyncproc.keyed.records import KeyedRunRecord, LoaderRecord
from asyncproc.storage.records import (
    InputIdentity,
    LineIndex,
    Manifest,
    RunStatus,
    Sealed,
    UnitCheckpoint,
    UnitPlan,
)

RECORDS = [
    LineIndex((0, 10), (0, 3)),
    UnitCheckpoint("r", 0, 1, 10, 3, 3, 0, 1, (), (), 1.5),
    Manifest(
        "r",
        RunStatus.RUNNING,
        1.0,
        2.0,
        InputIdentity("in", 1, 2, "f"),
        "out",
        {},
        (UnitPlan(0, 0, 0),),
        3,
    ),
    KeyedRunRecord("r", RunStatus.RUNNING, 1.0, 2.0, {"a": 1}, 4),
    LoaderRecord("l", 5),
    RetryPlan("r", InputIdentity("failed", 1, 2, "f"), 3, 1.0, 2.0),
]


def test_every_record_is_sealed_and_codes_itself_nowhere_else() -> None:
    kinds = {type(record) for record in RECORDS}
    # by name: a slotted dataclass leaves the class it replaced among the subclasses
    assert {k.__qualname__ for k in Sealed.__subclasses__()} == {k.__qualname__ for k in kinds}
    for kind in kinds:
        assert "to_bytes" not in vars(kind) and "from_bytes" not in vars(kind), kind


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_a_record_round_trips_and_a_flipped_byte_is_refused(record: Sealed) -> None:
    raw = record.to_bytes()
    assert type(record).from_bytes(raw, "the record") == record
    torn = raw.replace(b'"schema"', b'"schemb"')
    with pytest.raises(CorruptCheckpointError, match="the record"):
        type(record).from_bytes(torn, "the record")
