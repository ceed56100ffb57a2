import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from governance.provenance import ColumnRole, Provenance, provenance_json_schema

ROOT = Path(__file__).resolve().parents[2]


def record(**changes):
    base = {
        "name": "demo",
        "source": "file://data.csv",
        "license": "MIT",
        "retrieved_at": "2026-01-01T00:00:00Z",
        "sha256": "a" * 64,
        "rows": 3,
        "columns": [
            {"name": "id", "type": "integer", "role": "identifier"},
            {"name": "y", "type": "integer", "role": "label", "categories": [0, 1]},
        ],
    }
    return Provenance.model_validate({**base, **changes})


def test_valid_record_round_trips_through_json() -> None:
    original = record()
    assert Provenance.model_validate(json.loads(json.dumps(original.to_json()))) == original
    assert original.column(ColumnRole.identifier) == "id"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"sha256": "xyz"}, "sha256"),
        ({"license": "Nope-1.0"}, "license"),
        ({"retrieved_at": "2026-01-01T00:00:00"}, "retrieved_at"),  # naive time refused
        ({"rows": -1}, "rows"),
        ({"name": "Has Spaces"}, "name"),
        ({"colour": "blue"}, "colour"),
        ({"columns": [{"name": "a", "type": "integer", "role": "boss"}]}, "role"),
    ],
)
def test_invalid_fields_are_named(changes: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        record(**changes)
    assert field in str(info.value)


def test_structural_invariants() -> None:
    with pytest.raises(ValidationError, match="duplicate column"):
        record(columns=[{"name": "a", "type": "integer"}, {"name": "a", "type": "number"}])
    with pytest.raises(ValidationError, match="at most one label"):
        record(
            columns=[
                {"name": "a", "type": "integer", "role": "label"},
                {"name": "b", "type": "integer", "role": "label"},
            ]
        )
    with pytest.raises(ValidationError, match="must name produced_by"):
        record(parents=[{"name": "p", "sha256": "b" * 64, "license": "MIT"}])
    with pytest.raises(ValidationError, match="minimum 2.0 > maximum 1.0"):
        record(columns=[{"name": "a", "type": "number", "minimum": 2, "maximum": 1}])


def test_records_are_immutable() -> None:
    with pytest.raises(ValidationError):
        record().rows = 5  # type: ignore[misc]


def test_committed_json_schema_is_current() -> None:
    committed = json.loads((ROOT / "schemas/provenance.schema.json").read_text())
    assert committed == provenance_json_schema()
