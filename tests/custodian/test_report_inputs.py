"""Malformed evaluation files are input errors naming the file and field, not tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest

from custodian.commands.report import Inputs, _check_shapes
from governance.errors import InputError
from tests.audits.evidence import calibration, metrics

INPUTS = Inputs(**{name: Path(f"reports/{name}.json") for name in Inputs.__dataclass_fields__})


def test_the_contract_shapes_pass() -> None:
    _check_shapes(INPUTS, metrics(3.0, 1e-6), calibration())
    _check_shapes(INPUTS, None, [])


@pytest.mark.parametrize(
    ("metrics_json", "bins", "message"),
    [
        ([1, 2], [], "reports/metrics.json: not a JSON object"),
        ({"slices": {"black": [0.8, 0.6]}}, [], "reports/metrics.json: slices.black: not an"),
        ({"privacy_audit": 0.2}, [], "reports/metrics.json: privacy_audit: not an object"),
        ({"baseline": 0.76}, [], "reports/metrics.json: baseline: not an object"),
        ({"intersections": {"a & b": [1]}}, [], r"metrics.json: intersections.a & b: not an"),
        (None, {"bins": 10}, "reports/calibration.json: not a list of bins"),
        (None, [{"confidence": "0.5", "accuracy": 0.4, "count": 3}], r"calibration.json: \[0\]"),
    ],
)
def test_malformed_files_name_the_field(metrics_json, bins, message) -> None:
    with pytest.raises(InputError, match=message):
        _check_shapes(INPUTS, metrics_json, bins)
