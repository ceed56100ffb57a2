"""A realistic ``reports/metrics.json`` (metrics contract of the evaluate stage) for tests.

The numbers are of the order the default pipeline measures on the RAND HIE test
split at epsilon about 3: accuracy just above the majority class (0.7625), ROC AUC
about 0.73, the largest slice gap about 0.16 on ``black``, whose groups' base rates
(0.816 and 0.538) already differ by 0.28. The evaluate stage writes
the real file; until then the report stage's tests use this one.
"""

from __future__ import annotations

from typing import Any

# attribute -> slice -> (rows, accuracy, balanced accuracy, base rate, TPR, FPR)
_GROUPS = {
    "black": {
        "0": (2428, 0.8044, 0.612, 0.816, 0.97, 0.75),
        "1": (564, 0.6418, 0.588, 0.538, 0.82, 0.56),
        "mixed": (6, 0.1667, 0.5, 0.5, 0.33, 1.0),
    },
    "female": {
        "0": (1486, 0.7524, 0.603, 0.70, 0.95, 0.74),
        "1": (1542, 0.7951, 0.615, 0.82, 0.97, 0.74),
    },
    "xage": {
        "q1": (757, 0.7477, 0.59, 0.74, 0.96, 0.78),
        "q2": (757, 0.7147, 0.60, 0.70, 0.93, 0.73),
        "q3": (757, 0.8032, 0.62, 0.79, 0.97, 0.72),
        "q4": (757, 0.8309, 0.63, 0.82, 0.98, 0.70),
    },
}


def _slice(rows: int, accuracy: float, balanced: float, base: float, tpr: float, fpr: float):
    baseline = max(base, 1 - base)
    width = 1.96 * (accuracy * (1 - accuracy) / rows) ** 0.5
    return {
        "rows": rows,
        "positive_rate": base,
        "accuracy": accuracy,
        "balanced_accuracy": balanced,
        "base_rate": base,
        "predicted_positive_rate": base * tpr + (1 - base) * fpr,
        "tpr": tpr,
        "fpr": fpr,
        "baseline_accuracy": baseline,
        "lift_over_baseline": accuracy - baseline,
        "below_baseline": accuracy < baseline,
        "accuracy_ci": [max(0.0, accuracy - width), min(1.0, accuracy + width)],
        "tpr_ci": [max(0.0, tpr - 0.05), min(1.0, tpr + 0.05)],
        "fpr_ci": [max(0.0, fpr - 0.08), min(1.0, fpr + 0.08)],
        "ci_confidence": 0.95,
        "small": rows < 30,
    }


def _gaps(by_slice: dict[str, dict[str, Any]]) -> dict[str, Any]:
    counted = {k: v for k, v in by_slice.items() if not v["small"]}

    def spread(key: str) -> float:
        values = [v[key] for v in counted.values()]
        return max(values) - min(values)

    accuracy, data = spread("accuracy"), spread("baseline_accuracy")
    tpr, fpr = spread("tpr"), spread("fpr")
    return {
        "slices": sorted(counted),
        "accuracy_gap": accuracy,
        "data_gap": data,
        "gap_over_data": accuracy - data,
        "base_rate_gap": spread("base_rate"),
        "tpr_gap": tpr,
        "fpr_gap": fpr,
        "equalized_odds_gap": max(tpr, fpr),
    }


def metrics(epsilon: float, delta: float) -> dict[str, Any]:
    """A metrics.json for a model whose accountant reported ``epsilon`` at ``delta``."""
    slices = {
        attribute: {name: _slice(*values) for name, values in by_slice.items()}
        for attribute, by_slice in _GROUPS.items()
    }
    pair = {
        "0 & 0": _slice(1180, 0.78, 0.6, 0.75, 0.96, 0.76),
        "1 & 1": _slice(290, 0.66, 0.59, 0.58, 0.85, 0.55),
        "mixed & 1": _slice(4, 0.25, 0.5, 0.5, 0.5, 1.0),
    }
    return {
        "split": "test",
        "rows": 3028,
        "accuracy": 0.7741,
        "balanced_accuracy": 0.6101,
        "roc_auc": 0.735,
        "f1": 0.8617,
        "log_loss": 0.484,
        "baseline": {
            "rows": 3028,
            "positive_rate": 0.7625,
            "accuracy": 0.7625,
            "balanced_accuracy": 0.5,
            "roc_auc": 0.5,
            "f1": 0.8652,
            "log_loss": 0.5491,
            "predicts": 1,
        },
        "lift_over_baseline": 0.7741 - 0.7625,
        "calibration": {"ece": 0.0398, "bins": 10},
        "slices": slices,
        "slice_min_rows": 30,
        "slice_confidence": 0.95,
        "worst_slice": {"attribute": "black", "slice": "mixed", "accuracy": 0.1667, "gap": 0.6377},
        "fairness": {attribute: _gaps(by_slice) for attribute, by_slice in slices.items()},
        "intersections": {"black & female": pair},
        "intersection_fairness": {"black & female": _gaps(pair)},
        "sensitive_values": {
            "black": {
                "rows": 2998,
                "missing": 0,
                "bucketed": True,
                "edges": [0.5],
                "indicator": True,
                "fractional": 6,
                "fractional_to": {"<0.5": 2, ">=0.5": 4},
            },
            "female": {"rows": 3028, "missing": 0, "bucketed": False},
        },
        "robustness": {"gaussian_noise_0.1": {"accuracy": 0.761}},
        "reference": {
            "trained": False,
            "released": False,
            "note": "not trained: policy.allow_nonprivate_reference is false",
        },
        "privacy_cost": {
            "against": "baseline",
            "lift_over_baseline": {"accuracy": 0.0116, "roc_auc": 0.235},
        },
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


# params.yaml policy's documentation records, as a reviewer would fill them in.
POLICY_DOCS: dict[str, Any] = {
    "model": {
        "predicts": "whether a survey respondent reports any spending",
        "version": "1.2.0",
        "owner": "Data team",
        "contact": "data-team@example.invalid",
        "license": "CC-BY-4.0",
        "intended_use": "research on survey spending",
        "intended_users": "analysts of the survey team",
        "out_of_scope": ["decisions about individuals"],
    },
    "data_protection": {
        "population": "adults answering the 2020 survey",
        "period": "2019-2020",
        "lawful_basis": "GDPR Art. 6(1)(e), Art. 9(2)(j)",
        "dpia_reference": "DPIA-2020-07",
        "retention": "five years after the study ends",
    },
    "ai_act_classification": {
        "category": "high_risk",
        "basis": "Annex III 5(c)",
        "reason": "prices health insurance for natural persons",
    },
}
