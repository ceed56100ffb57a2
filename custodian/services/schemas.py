"""The JSON Schema of every file a stage writes and another reads, committed under ``schemas/``.

``tests/custodian/test_outputs.py`` checks that the committed files are current;
``python -m custodian.services.schemas`` rewrites them after a model changes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from audits.compliance import ComplianceReport
from audits.manifest import Manifest
from custodian.outputs import (
    ChecksReport,
    MetricsReport,
    PrivacyReport,
    SplitSummary,
    ValidationReport,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"

# schemas/<name>.schema.json -> the model of the file.
SCHEMAS: dict[str, type[BaseModel]] = {
    "split": SplitSummary,
    "validation": ValidationReport,
    "checks": ChecksReport,
    "privacy": PrivacyReport,
    "metrics": MetricsReport,
    "manifest": Manifest,
    "compliance": ComplianceReport,
}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The schema of what a reader of the file accepts."""
    return model.model_json_schema(mode="validation")


def schema_text(model: type[BaseModel]) -> str:
    return json.dumps(json_schema(model), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> None:
    for name, model in SCHEMAS.items():
        (directory / f"{name}.schema.json").write_text(schema_text(model), encoding="utf-8")


if __name__ == "__main__":
    write_schemas()
