"""Croissant 1.0 JSON-LD for a dataset's provenance record, with Croissant RAI fields.

The metadata describe the ingested CSV (one ``cr:FileObject`` with its SHA-256
and one ``cr:RecordSet`` with a ``cr:Field`` per column) and carry the
responsible-AI facts the provenance records hold: personal data, intended
use, restrictions, how the data were collected and prepared. The JSON-LD
context is Croissant 1.0's; its IRIs are vocabulary names, never fetched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from audits.identity import DataProtection

CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
RAI_CONFORMS_TO = "http://mlcommons.org/croissant/RAI/1.0"
CONTEXT: dict[str, Any] = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
DATA_TYPES = {
    "integer": "sc:Integer",
    "number": "sc:Float",
    "boolean": "sc:Boolean",
    "string": "sc:Text",
    "datetime": "sc:Date",
}
RAI_KEYS = (
    "rai:dataCollection",
    "rai:dataUseCases",
    "rai:dataLimitations",
    "rai:personalSensitiveInformation",
    "rai:dataPreprocessingProtocol",
    "rai:dataBiases",
    "rai:dataReleaseMaintenancePlan",
)
# Filled for the dataset the pipeline trained on, from policy and the evaluation.
TRAINED_RAI_KEYS = (
    "rai:dataCollectionTimeframe",
    "rai:dataImputationProtocol",
    "rai:dataSocialImpact",
)


@dataclass(frozen=True)
class CroissantFacts:
    """What the pipeline knows of the dataset it trained on, beyond its provenance record."""

    data_protection: DataProtection
    metrics: Mapping[str, Any] | None  # reports/metrics.json
    spent_epsilon: float | None  # the privacy ledger's, as everywhere in the pack
    lifetime_epsilon: float
    delta: float | None


def croissant(
    record: Mapping[str, Any], content_url: str, facts: CroissantFacts | None = None
) -> dict[str, Any]:
    """Croissant metadata for ``record`` (a provenance record) whose CSV is at ``content_url``.

    ``datePublished`` is when this content was retrieved and pinned, and ``version`` is
    ``1.0.0`` with the content's SHA-256 as build metadata: a registered dataset has one
    version per content hash (a changed file must be re-registered).
    """
    name = str(record["name"])
    file_id = f"{name}.csv"
    columns = record.get("columns", [])
    pii = [f"{c['name']} ({', '.join(c['pii'])})" for c in columns if c.get("pii")]
    sensitive = [c["name"] for c in columns if c.get("role") == "sensitive"]
    excluded = [c["name"] for c in columns if c.get("role") == "excluded"]
    restrictions = list(record.get("restrictions", []))
    metadata = {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": [CONFORMS_TO, RAI_CONFORMS_TO],
        "name": name,
        "description": str(record.get("title") or name),
        "license": str(record["license"]),
        "url": str(record["source"]),
        "citeAs": str(record.get("citation") or record["source"]),
        "datePublished": str(record["retrieved_at"]),
        "version": f"1.0.0+sha256.{str(record['sha256'])[:16]}",
        "distribution": [
            {
                "@type": "cr:FileObject",
                "@id": file_id,
                "name": file_id,
                "contentUrl": content_url,
                "encodingFormat": "text/csv",
                "sha256": str(record["sha256"]),
            }
        ],
        "recordSet": [
            {
                "@type": "cr:RecordSet",
                "@id": name,
                "name": name,
                "field": [_field(name, file_id, column) for column in columns],
            }
        ],
        "rai:dataCollection": (
            f"Retrieved from {record['source']} ({record.get('source_version') or 'no version'}) "
            f"on {record['retrieved_at']}; collection as described by: "
            f"{record.get('citation') or 'no citation recorded'}"
        ),
        "rai:dataUseCases": str(record.get("intended_use") or "not recorded in provenance"),
        "rai:dataLimitations": " ".join(restrictions) or "no restrictions recorded",
        "rai:personalSensitiveInformation": (
            "Personal data categories: "
            + (", ".join(record.get("pii_categories", [])) or "none declared")
            + ". Columns: "
            + ("; ".join(pii) or "none")
            + "."
        ),
        "rai:dataPreprocessingProtocol": (
            f"Ingested unchanged and verified against SHA-256 {record['sha256']}; validated with "
            "Great Expectations suites. "
            + (
                f"Excluded from training (kept for audit): {', '.join(excluded)}."
                if excluded
                else "No column is excluded from training."
            )
        ),
        "rai:dataBiases": _biases(sensitive, facts),
        "rai:dataReleaseMaintenancePlan": (
            "Content is pinned by SHA-256; a changed file must be re-registered before ingest "
            "accepts it."
        ),
    }
    if facts is not None:
        metadata |= _trained_on(facts, sensitive)
    return metadata


def _biases(sensitive: list[str], facts: CroissantFacts | None) -> str:
    """What the data's groups already differ in: base rates of the label on the test split."""
    lines = ["Sensitive attributes: " + (", ".join(sensitive) or "none") + "."]
    slices = ((facts.metrics or {}).get("slices") or {}) if facts is not None else {}
    for attribute, values in sorted(slices.items()):
        rates = [
            f"{label} {entry['base_rate']:.3f} ({entry['rows']} rows)"
            for label, entry in values.items()
            if isinstance(entry, Mapping) and isinstance(entry.get("base_rate"), int | float)
        ]
        if rates:
            lines.append(f"Base rate of the label by {attribute} (test split): {'; '.join(rates)}.")
    return " ".join(lines)


def _trained_on(facts: CroissantFacts, sensitive: list[str]) -> dict[str, Any]:
    protection = facts.data_protection
    values = (facts.metrics or {}).get("sensitive_values") or {}
    imputed = [
        f"{attribute}: {entry['fractional']} of {entry['rows']} test rows hold fractional "
        f"(imputed) values, assigned to buckets at {entry.get('edges')}"
        for attribute, entry in sorted(values.items())
        if isinstance(entry, Mapping) and entry.get("fractional")
    ]
    spent = f"{facts.spent_epsilon:.4f}" if facts.spent_epsilon is not None else "not recorded"
    extra: dict[str, Any] = {
        "rai:dataImputationProtocol": (
            "No values are imputed by Custodian. "
            + (" ".join(imputed) if imputed else "No fractional sensitive values were found.")
        ),
        "rai:dataSocialImpact": (
            f"Population: {protection.population}; period: {protection.period}. Health data "
            f"(a GDPR Art. 9 special category) about the people above; lawful basis: "
            f"{protection.lawful_basis}; DPIA: {protection.dpia_reference}; retention: "
            f"{protection.retention}. Models trained on it with differential privacy have "
            f"spent epsilon {spent} of its lifetime budget {facts.lifetime_epsilon:g}"
            + (f" (delta {facts.delta:g})" if isinstance(facts.delta, int | float) else "")
            + ". Evaluated per slice of: "
            + (", ".join(sensitive) or "none")
            + "."
        ),
    }
    if protection.collected_from is not None and protection.collected_to is not None:
        extra["rai:dataCollectionTimeframe"] = [
            protection.collected_from.isoformat(),
            protection.collected_to.isoformat(),
        ]
    return extra


def _field(record_set: str, file_id: str, column: Mapping[str, Any]) -> dict[str, Any]:
    name = str(column["name"])
    field: dict[str, Any] = {
        "@type": "cr:Field",
        "@id": f"{record_set}/{name}",
        "name": name,
        "dataType": DATA_TYPES[str(column["type"])],
        "source": {"fileObject": {"@id": file_id}, "extract": {"column": name}},
    }
    if column.get("description"):
        field["description"] = str(column["description"])
    return field
