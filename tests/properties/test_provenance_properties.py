"""Provenance records over random input: valid ones round-trip, anything else is an InputError.

Records arrive from hand-edited ``.dvc`` files and ``datasets/*.yaml``, so the
parser must turn every malformed value into the one error type the CLI maps to
exit 2, naming the file and field, and never let another exception escape.
"""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from governance.errors import InputError
from governance.provenance import (
    UNRECORDED_PII,
    ColumnRole,
    ColumnSpec,
    ColumnType,
    PiiCategory,
    Provenance,
)
from governance.registry import load_dvc_entry, parse_model

SETTINGS = settings(max_examples=60, deadline=None)

names = st.from_regex(r"[a-z0-9][a-z0-9_.-]{0,20}", fullmatch=True)
licenses = st.sampled_from(["MIT", "CC-BY-4.0", "Apache-2.0 OR MIT", "LicenseRef-Internal"])
bounds = st.floats(-1e9, 1e9, allow_nan=False)


@st.composite
def columns(draw) -> list[ColumnSpec]:
    column_names = draw(
        st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5, unique=True)
    )
    single = [ColumnRole.identifier, ColumnRole.label, ColumnRole.time]
    roles = draw(st.permutations(single + [ColumnRole.feature] * len(column_names)))
    specs = []
    for name, role in zip(column_names, roles, strict=False):
        low, high = sorted(draw(st.tuples(bounds, bounds)))
        kind = draw(st.sampled_from(list(ColumnType)))
        pii = draw(st.lists(st.sampled_from(list(PiiCategory)), max_size=2, unique=True))
        # Free text and direct personal data record no values, so no range either.
        private = kind is ColumnType.text or bool(UNRECORDED_PII & set(pii))
        specs.append(
            ColumnSpec(
                name=name,
                type=kind,
                role=role,
                nullable=draw(st.booleans()),
                minimum=None if private else low,
                maximum=None if private else high,
                pii=pii,
            )
        )
    return specs


records = st.builds(
    Provenance,
    name=names,
    source=st.sampled_from(["https://example.org/d.csv", "package://pkg/d.csv", "data/d.csv"]),
    citation=st.none() | st.text(max_size=20),
    license=licenses,
    retrieved_at=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    sha256=st.from_regex(r"[0-9a-f]{64}", fullmatch=True),
    rows=st.integers(0, 10**9),
    columns=columns(),
    restrictions=st.lists(st.text(max_size=10), max_size=2),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)


@SETTINGS
@given(records)
def test_valid_records_round_trip_through_json_and_yaml(record: Provenance) -> None:
    as_json = json.loads(json.dumps(record.to_json()))
    assert parse_model(Provenance, as_json, where="x.json") == record
    as_yaml = yaml.safe_load(yaml.safe_dump(record.to_json()))
    assert parse_model(Provenance, as_yaml, where="x.yaml") == record


@SETTINGS
@given(records, st.data())
def test_a_damaged_field_is_an_input_error_naming_file_and_field(record: Provenance, data) -> None:
    content = record.to_json()
    key = data.draw(st.sampled_from(sorted(content)), label="field")
    damage = data.draw(st.sampled_from(["remove", "replace"]), label="damage")
    if damage == "remove":
        del content[key]
    else:
        content[key] = data.draw(json_values, label="value")
    try:
        parsed = parse_model(Provenance, content, where="datasets/x.csv.dvc", prefix="meta")
    except InputError as err:
        assert str(err).startswith("datasets/x.csv.dvc: meta")
    else:
        assert isinstance(parsed, Provenance)  # a harmless change (e.g. a default removed)


@SETTINGS
@given(
    st.text(max_size=200)
    | json_values.map(lambda v: yaml.safe_dump({"meta": v}))
    | json_values.map(
        lambda v: yaml.safe_dump({"outs": [{"path": "x.csv"}], "meta": {"custodian": v}})
    )
)
def test_any_dvc_file_content_is_a_record_nothing_or_an_input_error(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "x.csv.dvc"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        try:
            entry = load_dvc_entry(path)
        except InputError as err:
            assert str(err).startswith(str(path))
        else:
            assert entry is None or isinstance(entry.record, Provenance)
