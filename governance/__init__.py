"""Dataset governance: provenance, license policy, ingestion, validation, splitting, checks."""
