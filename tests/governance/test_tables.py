import json

import pytest

from governance.errors import InputError
from governance.provenance import ColumnRole, ColumnType
from governance.tables import infer_columns, read_csv_bytes


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "file is empty"),
        (b"a,b\n", "header only"),
        (b"a,b\n1,2\n3\n", "line 3: 1 fields, header has 2"),
        (b"a;b\n1;2\n", "expected a comma-separated file"),
        (b"a,b\n\xff\xfe,1\n", "not UTF-8"),
        (b"a,a\n1,2\n", "duplicate column name 'a'"),
        (b"a,,c\n1,2,3\n", "column 2 has no name"),
    ],
)
def test_bad_files_are_refused_naming_the_file(content: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message) as info:
        read_csv_bytes(content, where="in.csv")
    assert str(info.value).startswith("in.csv: ")


def test_infers_types_ranges_and_categories() -> None:
    frame = read_csv_bytes(b"id,y,x,s\n1,0,0.5,a\n2,1,,b\n3,1,2.5,a\n", where="t")
    columns = {c.name: c for c in infer_columns(frame, {"id": ColumnRole.identifier}).columns}
    assert columns["id"].type is ColumnType.integer and columns["id"].categories is None
    # An identifier keeps a count and a format, never a value (not even min and max).
    assert (columns["id"].minimum, columns["id"].maximum) == (None, None)
    assert (columns["id"].distinct, columns["id"].format) == (3, "9")
    assert columns["y"].categories == [0, 1]
    assert (columns["x"].type, columns["x"].nullable) == (ColumnType.number, True)
    assert (columns["x"].minimum, columns["x"].maximum) == (0.5, 2.5)
    assert columns["s"].categories == ["a", "b"]
    with pytest.raises(InputError, match="unknown column"):
        infer_columns(frame, {"nope": ColumnRole.label})


EMAIL = "jane.doe@example.com"


def _patients(rows: int = 300) -> bytes:
    lines = ["patient_id,visit,age,notes,free,y"]
    short = ["ok", "follow up", "no change", "call back"]
    for i in range(rows):
        note = f"pt asked to send results to {EMAIL}" if i == 7 else short[i % 4]
        free = f"patient {i} reports mild symptoms number {i * 7} on day {i % 30}"
        lines.append(f"P{10000 + i},2024-03-{i % 28 + 1:02d},{20 + i % 60},{note},{free},{i % 2}")
    return ("\n".join(lines) + "\n").encode()


def test_free_text_identifiers_dates_and_pii_are_recognised_and_never_recorded() -> None:
    frame = read_csv_bytes(_patients(), where="t")
    inferred = infer_columns(frame, {"y": ColumnRole.label})
    columns = {c.name: c for c in inferred.columns}
    assert columns["visit"].type is ColumnType.datetime  # ISO dates, not text
    assert columns["free"].type is ColumnType.text and columns["free"].role is ColumnRole.excluded
    # Undeclared, but one shape and all distinct: an identifier, excluded, not recorded.
    ids = columns["patient_id"]
    assert (ids.role, ids.format, ids.distinct) == (ColumnRole.excluded, "A99999", 300)
    # Few distinct values, one holding an email: kept a feature (the checks stop it),
    # but none of its values recorded.
    assert columns["notes"].type is ColumnType.string and columns["notes"].categories is None
    assert any("notes" in note and "personal data" in note for note in inferred.notes)
    recorded = json.dumps([c.model_dump(mode="json") for c in inferred.columns])
    assert EMAIL not in recorded and "P10000" not in recorded and "reports mild" not in recorded


def test_declared_text_and_pii_columns_are_not_features_and_not_recorded() -> None:
    frame = read_csv_bytes(_patients(), where="t")
    inferred = infer_columns(
        frame,
        {"y": ColumnRole.label, "patient_id": ColumnRole.identifier},
        text=["notes"],
        pii=["free"],
    )
    columns = {c.name: c for c in inferred.columns}
    assert (columns["notes"].type, columns["notes"].role) == (ColumnType.text, ColumnRole.excluded)
    assert columns["free"].values_private and columns["free"].role is ColumnRole.excluded
    assert columns["patient_id"].role is ColumnRole.identifier
    assert EMAIL not in json.dumps([c.model_dump(mode="json") for c in inferred.columns])
    with pytest.raises(InputError, match="needs its values"):
        infer_columns(frame, {"y": ColumnRole.label}, text=["y"])


def test_data_docs_count_unexpected_values_but_never_show_them(tmp_path) -> None:
    """A duplicated patient id fails the suite; the Data Docs say how often, not which."""
    from datetime import UTC, datetime
    from pathlib import Path

    from governance.expectations import run_suites
    from governance.provenance import Provenance

    content = _patients(60)
    frame = read_csv_bytes(content, where="t")
    frame.loc[1, "patient_id"] = frame.loc[0, "patient_id"]  # P10000 twice
    inferred = infer_columns(
        frame, {"y": ColumnRole.label, "patient_id": ColumnRole.identifier}, text=["notes"]
    )
    record = Provenance(
        name="clinic",
        source="file:clinic.csv",
        license="CC0-1.0",
        retrieved_at=datetime(2026, 1, 1, tzinfo=UTC),
        sha256="0" * 64,
        rows=len(frame),
        columns=inferred.columns,
    )
    root = Path(__file__).resolve().parents[2]
    (outcome,) = run_suites(root / "gx", tmp_path / "work", tmp_path / "docs", [(record, frame)])
    failed = {f.expectation: f.unexpected_count for f in outcome.failed}
    assert failed == {"expect_column_values_to_be_unique": 2}
    pages = [p.read_bytes() for p in (tmp_path / "docs").rglob("*") if p.is_file()]
    assert pages and not any(b"P10000" in page or EMAIL.encode() in page for page in pages)
