"""A realistic ``reports/metrics.json`` (metrics contract of the evaluate stage) for tests.

The numbers are of the order the default pipeline measures on the RAND HIE test
split at epsilon about 3: accuracy just above the majority class, ROC AUC about
0.73, the largest slice gap about 0.16 on ``black``. The evaluate stage writes
the real file; until then the report stage's tests use this one.
"""

from __future__ import annotations

import copy
from typing import Any

_SLICES = {
    "black": {
        "0": {"rows": 2428, "accuracy": 0.8044, "balanced_accuracy": 0.612},
        "1": {"rows": 564, "accuracy": 0.6418, "balanced_accuracy": 0.588},
        "mixed": {"rows": 6, "accuracy": 0.1667, "balanced_accuracy": 0.5},
    },
    "female": {
        "0": {"rows": 1486, "accuracy": 0.7524, "balanced_accuracy": 0.603},
        "1": {"rows": 1542, "accuracy": 0.7951, "balanced_accuracy": 0.615},
    },
    "xage": {
        "q1": {"rows": 757, "accuracy": 0.7477, "balanced_accuracy": 0.59},
        "q2": {"rows": 757, "accuracy": 0.7147, "balanced_accuracy": 0.6},
        "q3": {"rows": 757, "accuracy": 0.8032, "balanced_accuracy": 0.62},
        "q4": {"rows": 757, "accuracy": 0.8309, "balanced_accuracy": 0.63},
    },
}


def metrics(epsilon: float, delta: float) -> dict[str, Any]:
    """A metrics.json for a model whose accountant reported ``epsilon`` at ``delta``."""
    return {
        "split": "test",
        "rows": 3028,
        "accuracy": 0.7741,
        "balanced_accuracy": 0.6101,
        "roc_auc": 0.735,
        "f1": 0.8617,
        "log_loss": 0.484,
        "calibration": {"ece": 0.0398, "bins": 10},
        "slices": copy.deepcopy(_SLICES),
        "worst_slice": {"attribute": "black", "slice": "mixed", "accuracy": 0.1667, "gap": 0.6377},
        "robustness": {"gaussian_noise_0.1": {"accuracy": 0.761}},
        "reference": {
            "accuracy": 0.81,
            "balanced_accuracy": 0.69,
            "roc_auc": 0.8,
            "released": False,
        },
        "privacy_cost": {"accuracy": 0.0359, "balanced_accuracy": 0.0799, "roc_auc": 0.065},
        "privacy_audit": {
            "epsilon_lower_bound": 0.21,
            "confidence": 0.95,
            "canaries": 500,
            "mia_auc": 0.512,
            "mia_tpr_at_1pct_fpr": 0.011,
            "accountant_epsilon": epsilon,
            "production_epsilon": epsilon,
            "delta": delta,
            "mode": "canary_gradient",
        },
    }


def calibration() -> list[dict[str, Any]]:
    """reports/calibration.json: mean predicted probability against observed rate per bin."""
    bins = [
        (1, 0.16, 0.375, 16),
        (2, 0.26, 0.3625, 80),
        (3, 0.35, 0.4222, 90),
        (4, 0.456, 0.5196, 204),
        (5, 0.548, 0.6609, 289),
        (6, 0.654, 0.722, 410),
        (7, 0.756, 0.7409, 521),
        (8, 0.85, 0.8297, 693),
        (9, 0.954, 0.9446, 722),
    ]
    return [
        {"bin": b, "confidence": conf, "accuracy": acc, "count": count}
        for b, conf, acc, count in bins
    ]


EVIL = '<script>alert("x")</script><img src="http://evil.invalid/x.png">'


def provenance(name: str = "survey", **changes: Any) -> dict[str, Any]:
    """A provenance record (as ``Provenance.to_json`` writes it) whose free text is hostile."""
    record = {
        "schema_version": 1,
        "name": name,
        "title": f"Survey {EVIL}",
        "source": "package://example/data/survey.csv",
        "source_version": "example 1.0",
        "citation": f"Doe, J. (2020) | {EVIL}",
        "license": "CC-BY-4.0",
        "retrieved_at": "2026-01-02T03:04:05Z",
        "sha256": "ab" * 32,
        "rows": 3,
        "columns": [
            {
                "name": "pid",
                "type": "integer",
                "role": "identifier",
                "pii": ["pseudonymous_identifier"],
            },
            {
                "name": "age",
                "type": "number",
                "role": "sensitive",
                "pii": ["age"],
                "description": f"age {EVIL}",
            },
            {"name": "score", "type": "number", "role": "feature"},
            {"name": "spent", "type": "number", "role": "excluded"},
            {"name": "label", "type": "integer", "role": "label", "categories": [0, 1]},
        ],
        "pii_categories": ["age", "pseudonymous_identifier"],
        "intended_use": f"Research only {EVIL}",
        "restrictions": [f"No re-identification {EVIL}"],
        "obligations": ["attribution"],
        "parents": [],
        "produced_by": None,
    }
    return record | changes
