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
    columns = {c.name: c for c in infer_columns(frame, {"id": ColumnRole.identifier})}
    assert columns["id"].type is ColumnType.integer and columns["id"].categories is None
    assert columns["y"].categories == [0, 1]
    assert (columns["x"].type, columns["x"].nullable) == (ColumnType.number, True)
    assert (columns["x"].minimum, columns["x"].maximum) == (0.5, 2.5)
    assert columns["s"].categories == ["a", "b"]
    with pytest.raises(InputError, match="unknown column"):
        infer_columns(frame, {"nope": ColumnRole.label})
