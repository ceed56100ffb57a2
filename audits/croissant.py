"""Croissant 1.0 JSON-LD for a dataset's provenance record, with Croissant RAI fields.

The metadata describe the ingested CSV (one ``cr:FileObject`` with its SHA-256
and one ``cr:RecordSet`` with a ``cr:Field`` per column) and carry the
responsible-AI facts the provenance records hold: personal data, intended
use, restrictions, how the data were collected and prepared. The JSON-LD
context is Croissant 1.0's; its IRIs are vocabulary names, never fetched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


def croissant(record: Mapping[str, Any], content_url: str) -> dict[str, Any]:
    """Croissant metadata for ``record`` (a provenance record) whose CSV is at ``content_url``."""
    name = str(record["name"])
    file_id = f"{name}.csv"
    columns = record.get("columns", [])
    pii = [f"{c['name']} ({', '.join(c['pii'])})" for c in columns if c.get("pii")]
    sensitive = [c["name"] for c in columns if c.get("role") == "sensitive"]
    excluded = [c["name"] for c in columns if c.get("role") == "excluded"]
    restrictions = list(record.get("restrictions", []))
    return {
        "@context": CONTEXT,
        "@type": "sc:Dataset",
        "conformsTo": [CONFORMS_TO, RAI_CONFORMS_TO],
        "name": name,
        "description": str(record.get("title") or name),
        "license": str(record["license"]),
        "url": str(record["source"]),
        "citeAs": str(record.get("citation") or record["source"]),
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
        "rai:dataBiases": (
            "Sensitive attributes evaluated per slice: " + (", ".join(sensitive) or "none") + "."
        ),
        "rai:dataReleaseMaintenancePlan": (
            "Content is pinned by SHA-256; a changed file must be re-registered before ingest "
            "accepts it."
        ),
    }


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
