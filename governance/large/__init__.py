"""Leakage, duplicate and schema checks on splits larger than memory (DuckDB, Parquet, CSV).

``scan_large(train, test, config, ScanLimits(memory_limit="1GB"))`` returns the
same ``Finding`` records as ``governance.checks.scan`` for the types in
``SUPPORTED``; ``schema_suite_large`` runs a dataset's GX schema suite over a
file chunk by chunk. See ``engine`` for how normalisation differs from the
in-memory scan.
"""

from governance.large.limits import ScanLimits
from governance.large.scan import NOT_SUPPORTED, SUPPORTED, scan_large

__all__ = ["NOT_SUPPORTED", "SUPPORTED", "ScanLimits", "scan_large"]
