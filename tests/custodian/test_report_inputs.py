"""A malformed calibration plot is an input error naming the file and the bin, not a traceback.

(The stage outputs with a model, metrics.json among them, are tested in test_outputs.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from custodian.stages.report import Inputs, _check_calibration
from governance.errors import InputError
from tests.audits.evidence import calibration

INPUTS = Inputs(**{name: Path(f"reports/{name}.json") for name in Inputs.__dataclass_fields__})


def test_the_contract_shapes_pass() -> None:
    _check_calibration(INPUTS, calibration())
    _check_calibration(INPUTS, [])


@pytest.mark.parametrize(
    ("bins", "message"),
    [
        ({"bins": 10}, "reports/calibration.json: not a list of bins"),
        ([{"confidence": "0.5", "accuracy": 0.4, "count": 3}], r"calibration.json: \[0\]"),
    ],
)
def test_malformed_files_name_the_field(bins, message) -> None:
    with pytest.raises(InputError, match=message):
        _check_calibration(INPUTS, bins)
