"""Model card (Mitchell et al. 2019) and datasheets (Gebru et al. 2021), written from evidence.

Every statement comes from a file the pipeline wrote: provenance records, the
split summary, the model's configuration, the privacy report, the metrics and
the leakage findings. Where the evidence holds nothing for a question, the
card says so and names what would answer it, instead of inventing text.
Text from dataset metadata is user input: it is escaped so that a Markdown
viewer that renders HTML shows it as text.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from audits.guarantee import guarantee_sentence, not_covered
from audits.identity import AiActClassification, DataProtection, ModelIdentity

MODEL_CARD_SECTIONS = (
    "Model details",
    "Intended use",
    "Factors",
    "Metrics",
    "Evaluation data",
    "Training data",
    "Quantitative analyses",
    "Ethical considerations",
    "Caveats and recommendations",
)
DATASHEET_SECTIONS = (
    "Motivation",
    "Composition",
    "Collection process",
    "Preprocessing, cleaning and labeling",
    "Uses",
    "Distribution",
    "Maintenance",
)
_UTILITY = ("accuracy", "balanced_accuracy", "roc_auc", "f1", "log_loss")
_NOT_MEASURED = "not measured: reports/metrics.json is missing (the evaluate stage has not run)"


@dataclass(frozen=True)
class ModelFacts:
    """What the model card is written from (the JSON each stage wrote, as plain dicts)."""

    dataset: Mapping[str, Any]  # data/ingested/<name>.provenance.json
    train: Mapping[str, Any]  # data/split/train.provenance.json
    test: Mapping[str, Any]  # data/split/test.provenance.json
    split: Mapping[str, Any]  # data/split/split.json
    model: Mapping[str, Any]  # models/model.json
    model_sha256: str
    privacy: Mapping[str, Any]  # reports/privacy.json
    metrics: Mapping[str, Any] | None  # reports/metrics.json
    checks: Mapping[str, Any]  # reports/checks.json
    intended_use: str  # policy.intended_use
    git_commit: str | None
    identity: ModelIdentity  # policy.model
    data_protection: DataProtection  # policy.data_protection
    classification: AiActClassification  # policy.ai_act_classification
    spent_epsilon: float | None  # the privacy ledger's: one figure across the pack
    lifetime_epsilon: float


def text(value: object) -> str:
    """User-supplied text, safe in Markdown that may be rendered as HTML, on one line."""
    return html.escape(" ".join(str(value).split()), quote=False).replace("|", "\\|")


def model_card(facts: ModelFacts) -> str:
    dataset, privacy, metrics = facts.dataset, facts.privacy, facts.metrics
    config = facts.model.get("config", {})
    features = list(facts.model.get("feature_names", []))
    sensitive = _columns(dataset, "sensitive")
    label = next(iter(_columns(dataset, "label")), "the label")
    used_sensitive = [
        c for c in sensitive if any(f == c or f.startswith(f"{c}=") for f in features)
    ]
    identity = facts.identity
    protection = facts.data_protection
    sections = {
        "Model details": _bullets(
            f"Predicts {text(identity.predicts)}.",
            f"Version {text(identity.version)}; owner {text(identity.owner)}; contact "
            f"{text(identity.contact)}; licence of the model `{text(identity.license)}`.",
            f"A binary classifier of `{text(label)}` on dataset `{text(dataset['name'])}`: a "
            f"multilayer perceptron, hidden layers {config.get('hidden')}, activation "
            f"{text(config.get('activation'))}, {len(features)} input features.",
            f"Trained by Custodian's `train` stage with DP-SGD (Opacus, Poisson sampling): "
            f"{privacy['steps']} steps, noise multiplier {privacy['noise_multiplier']:.4f}, "
            f"clipping norm {privacy['max_grad_norm']:g}, {privacy['precision']} precision, "
            f"{privacy['accountant']} accountant; unit of privacy: "
            f"{text(privacy.get('unit', 'record (not recorded)'))}.",
            f"Weights: `models/model.safetensors`, SHA-256 `{facts.model_sha256}`.",
            f"Code: git commit `{facts.git_commit or 'not recorded'}`.",
        ),
        "Intended use": _bullets(
            f"Intended use: {text(identity.intended_use)}.",
            f"Intended users: {text(identity.intended_users)}.",
            *(f"Out of scope: {text(use)}." for use in identity.out_of_scope),
            f"Dataset's stated use: {text(dataset.get('intended_use') or 'not recorded')}",
            f"Policy intended use: {text(facts.intended_use)}.",
            *(f"Restriction: {text(r)}" for r in dataset.get("restrictions", [])),
            "Out of scope also: any use the restrictions above forbid, and any use beyond the "
            "population the data describe (see Training data).",
            f"EU AI Act: {text(facts.classification.category.value.replace('_', ' '))} "
            f"({text(facts.classification.basis)}): {text(facts.classification.reason)}.",
        ),
        "Factors": _bullets(
            "Sensitive attributes declared in provenance: "
            + (", ".join(f"`{text(c)}`" for c in sensitive) or "none")
            + ".",
            "Used as model inputs: "
            + (", ".join(f"`{text(c)}`" for c in used_sensitive) or "none (evaluated only)")
            + ".",
            "Metrics are reported per value or bucket of each sensitive attribute.",
        ),
        "Metrics": _bullets(
            "Utility on the held-out test split: " + ", ".join(_UTILITY) + " (threshold 0.5).",
            "Calibration: expected calibration error (ECE) over equal-width bins.",
            "Fairness: accuracy per slice and the largest gap between slices.",
            f"Privacy: (epsilon, delta)-differential privacy from the {privacy['accountant']} "
            "accountant, and an empirical lower bound on epsilon from a canary audit.",
        ),
        "Evaluation data": _split_lines(facts.test, facts.split, "test"),
        "Training data": _split_lines(facts.train, facts.split, "train")
        + "\n"
        + _bullets(
            f"Population: {text(protection.population)}.",
            f"Period: {text(protection.period)}.",
            f"Lawful basis: {text(protection.lawful_basis)}.",
            f"DPIA: {text(protection.dpia_reference)}.",
            f"Retention: {text(protection.retention)}.",
        ),
        "Quantitative analyses": _analyses(privacy, metrics),
        "Ethical considerations": _bullets(
            "Personal data categories in the data: "
            + (", ".join(text(c) for c in dataset.get("pii_categories", [])) or "none declared")
            + ".",
            f"Unit of privacy and what the guarantee covers: {text(guarantee_sentence(privacy))}",
            *(f"Not covered by the guarantee: {text(item)}." for item in not_covered(privacy)),
            f"Differential privacy: epsilon {privacy['epsilon']:.3f} at delta "
            f"{privacy['delta']:g} for this run; the "
            f"{_budget_owner(privacy)} lifetime budget is {facts.lifetime_epsilon:g} with "
            f"{_spent(facts.spent_epsilon)} spent (the privacy ledger, every run on "
            f"{_budget_scope(privacy)} included).",
            _worst_slice_line(metrics),
        ),
        "Caveats and recommendations": _bullets(*_caveats(facts)),
    }
    return _document(f"Model card: {text(dataset['name'])} classifier", sections)


def datasheet(
    record: Mapping[str, Any],
    *,
    validation: Mapping[str, Any],
    split: Mapping[str, Any] | None,
    croissant_path: str,
    protection: DataProtection | None = None,
) -> str:
    """The datasheet of ``record``; ``protection`` (policy.data_protection) for the dataset
    the pipeline trains on, whose population, period, basis and retention policy states."""
    name = record["name"]
    recorded = "not recorded (policy.data_protection covers the dataset trained on only)"
    columns = record.get("columns", [])
    suites = [s for s in validation.get("suites", []) if s.get("dataset") == name]
    sections = {
        "Motivation": _bullets(
            f"Title: {text(record.get('title') or name)}.",
            f"Stated use: {text(record.get('intended_use') or 'not recorded in provenance')}",
            f"Citation: {text(record.get('citation') or 'not recorded in provenance')}",
            "Funding and creators beyond the citation are not recorded in provenance.",
        ),
        "Composition": _bullets(
            f"{record['rows']} rows, {len(columns)} columns.",
            f"Population: {text(protection.population) if protection else recorded}.",
            f"Period: {text(protection.period) if protection else recorded}.",
            _health_line(record),
            "Personal data categories: "
            + (", ".join(text(c) for c in record.get("pii_categories", [])) or "none declared")
            + ".",
            *(
                f"{role.capitalize()} column(s): "
                + ", ".join(f"`{text(c)}`" for c in _columns(record, role))
                for role in ("identifier", "label", "time", "sensitive", "excluded")
                if _columns(record, role)
            ),
        )
        + "\n\n"
        + _table(
            ("column", "type", "role", "personal data", "description"),
            [
                (
                    f"`{text(c['name'])}`",
                    text(c["type"]),
                    text(c.get("role", "feature")),
                    text(", ".join(c.get("pii", [])) or "-"),
                    text(c.get("description") or "-"),
                )
                for c in columns
            ],
        ),
        "Collection process": _bullets(
            f"Source: `{text(record['source'])}` "
            f"({text(record.get('source_version') or 'no version')}).",
            f"Retrieved and pinned: {text(record['retrieved_at'])}; content SHA-256 "
            f"`{record['sha256']}`, verified at every ingest.",
            "How the original data were collected is described by the citation; consent and "
            "ethics review are not recorded in provenance.",
            f"Lawful basis: {text(protection.lawful_basis) if protection else recorded}.",
            f"DPIA: {text(protection.dpia_reference) if protection else recorded}.",
        ),
        "Preprocessing, cleaning and labeling": _bullets(
            *(
                f"Great Expectations suite `{text(s['suite'])}`: {s['successful']} of "
                f"{s['evaluated']} expectations met."
                for s in suites
            ),
            *_split_summary(record, split),
            "Columns with role `excluded` are kept for audit and never trained on."
            if _columns(record, "excluded")
            else "No column is excluded from training.",
        ),
        "Uses": _bullets(
            f"Stated use: {text(record.get('intended_use') or 'not recorded in provenance')}",
            *(f"Restriction: {text(r)}" for r in record.get("restrictions", [])),
        ),
        "Distribution": _bullets(
            f"License: `{text(record['license'])}`; obligations: "
            + (", ".join(text(o) for o in record.get("obligations", [])) or "none")
            + ".",
            f"Machine-readable metadata (Croissant 1.0 with RAI fields): `{croissant_path}`.",
        ),
        "Maintenance": _bullets(
            f"Registered in `datasets/`; a changed file must be re-registered, or ingest refuses "
            f"it (SHA-256 `{record['sha256'][:12]}...`).",
            "A maintainer and an update schedule are not recorded in provenance.",
            f"Retention: {text(protection.retention) if protection else recorded}.",
        ),
    }
    return _document(f"Datasheet: {text(name)}", sections)


# --------------------------------------------------------------------------- helpers


def _document(title: str, sections: Mapping[str, str]) -> str:
    parts = [f"# {title}", "Generated by `custodian report` from the pipeline's evidence."]
    for number, (heading, body) in enumerate(sections.items(), start=1):
        parts += [f"## {number}. {heading}", body]
    return "\n\n".join(parts) + "\n"


def _bullets(*lines: str) -> str:
    return "\n".join(f"- {line}" for line in lines if line)


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _columns(record: Mapping[str, Any], role: str) -> list[str]:
    return [c["name"] for c in record.get("columns", []) if c.get("role", "feature") == role]


def _health_line(record: Mapping[str, Any]) -> str:
    """Which columns are tagged as health data (a special category), or that none is."""
    tagged = [c["name"] for c in record.get("columns", []) if "health" in c.get("pii", [])]
    if tagged:
        return "Health data (special category) in: " + ", ".join(f"`{text(c)}`" for c in tagged)
    if "health" in record.get("pii_categories", []):
        return (
            "Health data (special category) is declared for the dataset, but no column is "
            "tagged with it: tag the health columns in the registration (pii: [health])."
        )
    return "No column is tagged as health data."


def _split_lines(record: Mapping[str, Any], split: Mapping[str, Any], name: str) -> str:
    parents = ", ".join(f"`{text(p['name'])}`" for p in record.get("parents", [])) or "none"
    return _bullets(
        f"The `{name}` split: {record['rows']} rows, SHA-256 `{record['sha256']}`, derived from "
        f"{parents} by the `{text(record.get('produced_by') or 'unknown')}` stage.",
        f"Split strategy `{text(split.get('strategy'))}` (seed {split.get('seed')}), grouped by "
        f"`{text(split.get('group_column') or 'none')}` so no person is in two splits."
        if split.get("group_column")
        else f"Split strategy `{text(split.get('strategy'))}` (seed {split.get('seed')}).",
        f"License `{text(record['license'])}`.",
    )


def _split_summary(record: Mapping[str, Any], split: Mapping[str, Any] | None) -> list[str]:
    if not split or split.get("dataset") != record["name"]:
        return ["Not split by this pipeline (a reference or unused dataset)."]
    rows = split.get("rows", {})
    return [
        f"Split `{text(split.get('strategy'))}` with seed {split.get('seed')}: "
        + ", ".join(f"{k} {v} rows" for k, v in rows.items())
        + f"; {split.get('dropped_rows', 0)} rows dropped."
    ]


def _spent(spent: float | None) -> str:
    return f"epsilon {spent:.4f}" if spent is not None else "an unknown amount (ledger unreadable)"


def _budget_owner(privacy: Mapping[str, Any]) -> str:
    population = privacy.get("population")
    return f"population `{text(population)}`'s" if population else "dataset's"


def _budget_scope(privacy: Mapping[str, Any]) -> str:
    return "any dataset of that population" if privacy.get("population") else "the dataset"


def _analyses(privacy: Mapping[str, Any], metrics: Mapping[str, Any] | None) -> str:
    privacy_rows = [("epsilon", f"{privacy['epsilon']:.4f}"), ("delta", f"{privacy['delta']:g}")]
    if metrics is None:
        return (
            _bullets(f"Utility, calibration and fairness: {_NOT_MEASURED}.")
            + "\n\n"
            + _table(("privacy", "value"), privacy_rows)
        )
    baseline = metrics.get("baseline") or {}
    utility = [
        (k, f"{metrics[k]:.4f}", _four(baseline.get(k)))
        for k in _UTILITY
        if isinstance(metrics.get(k), int | float)
    ]
    ece = (metrics.get("calibration") or {}).get("ece")
    if isinstance(ece, int | float):
        utility.append(("ece", f"{ece:.4f}", "-"))
    audit = metrics.get("privacy_audit") or {}
    privacy_rows += [
        (f"audit {k}", f"{audit[k]:.4g}" if isinstance(audit[k], float) else text(audit[k]))
        for k in ("epsilon_lower_bound", "confidence", "canaries", "mia_auc", "mia_tpr_at_1pct_fpr")
        if k in audit
    ]
    slices = [
        (
            f"`{text(attribute)}`",
            text(label) + (" (small)" if entry.get("small") else ""),
            str(entry.get("rows")),
            _four(entry.get("base_rate")),
            _four(entry.get("accuracy")) + _interval(entry.get("accuracy_ci")),
            _four(entry.get("baseline_accuracy"))
            + (" **model below baseline**" if entry.get("below_baseline") else ""),
            _four(entry.get("tpr")),
            _four(entry.get("fpr")),
        )
        for attribute, values in sorted((metrics.get("slices") or {}).items())
        for label, entry in values.items()
    ]
    return "\n\n".join(
        [
            _table(("metric (test split)", "value", "majority-class baseline"), utility),
            _table(("privacy", "value"), privacy_rows),
            _table(
                (
                    "attribute",
                    "slice",
                    "rows",
                    "base rate",
                    "accuracy (95% CI)",
                    "baseline",
                    "TPR",
                    "FPR",
                ),
                slices,
            ),
        ]
    )


def _four(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _interval(value: object) -> str:
    if isinstance(value, list | tuple) and len(value) == 2:
        return f" [{_four(value[0])}, {_four(value[1])}]"
    return ""


def _worst_slice_line(metrics: Mapping[str, Any] | None) -> str:
    worst = (metrics or {}).get("worst_slice")
    if not isinstance(worst, Mapping):
        return f"Fairness: {_NOT_MEASURED}."
    return (
        f"Fairness: the lowest slice accuracy is {worst.get('accuracy', 0):.3f} on "
        f"`{text(worst.get('attribute'))}` = {text(worst.get('slice'))}; the largest gap "
        f"between slices of one attribute is {worst.get('gap', 0):.3f}."
    )


def _caveats(facts: ModelFacts) -> list[str]:
    findings = [
        f
        for key, value in facts.checks.items()
        if key.endswith("findings") and isinstance(value, list)
        for f in value
    ]
    lines = [
        f"Check finding ({text(f.get('severity'))}, {text(f.get('type'))}): {text(f.get('detail'))}"
        for f in findings
        if f.get("severity") in ("critical", "warning")
    ]
    cost = (facts.metrics or {}).get("privacy_cost") or {}
    if isinstance(cost.get("accuracy"), int | float):
        lines.append(
            f"Differential privacy costs {cost['accuracy']:.3f} accuracy against a non-private "
            "reference model trained on the same split (not released)."
        )
    lift = (facts.metrics or {}).get("lift_over_baseline")
    if isinstance(lift, int | float):
        lines.append(
            f"The model's accuracy is {lift:+.4f} over always predicting the majority class; "
            "read every metric next to that baseline."
        )
    if facts.metrics is None:
        lines.append(f"Utility and fairness are {_NOT_MEASURED}: do not release.")
    lines.append(
        "The test split comes from the same study as the training data; performance on other "
        "populations, periods or sites is not measured."
    )
    return lines
