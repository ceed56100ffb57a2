"""Leakage and contamination checks across train, test and reference sets (SPEC's vocabulary).

``scan(train, test, references, config=CheckConfig(...))`` returns ``Finding``
records, worst first; each detector is a small function registered per
``FindingType`` (see ``registry``).
"""

from governance.checks.config import CheckConfig, CheckThresholds
from governance.checks.findings import Finding, FindingType, Severity
from governance.checks.scan import scan

__all__ = ["CheckConfig", "CheckThresholds", "Finding", "FindingType", "Severity", "scan"]
