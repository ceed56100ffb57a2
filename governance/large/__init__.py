"""Leakage, duplicate and schema checks on splits larger than memory (DuckDB, Parquet, CSV).

``scan_large(train, test, config, ScanLimits(memory_limit="1GB"))`` returns the
same ``Finding`` records as ``governance.checks.scan`` for the types in
``SUPPORTED``; ``schema_suite_large`` runs a dataset's GX schema suite over a
file chunk by chunk; ``scan_sampled`` runs the ``SAMPLED`` types on a bounded
sample of rows. See ``engine`` for how normalisation differs from the
in-memory scan.
"""

from governance.large.limits import ScanLimits
from governance.large.sample import SAMPLED, scan_sampled
from governance.large.scan import NOT_SUPPORTED, SUPPORTED, scan_large

# Neither out of core nor on a sample: they compare every test row with every
# train row by similarity, which needs the indexes in memory.
SKIPPED = tuple(kind for kind in NOT_SUPPORTED if kind not in SAMPLED)

__all__ = [
    "NOT_SUPPORTED",
    "SAMPLED",
    "SKIPPED",
    "SUPPORTED",
    "ScanLimits",
    "scan_large",
    "scan_sampled",
]
