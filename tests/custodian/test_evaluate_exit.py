"""A lower bound above the accountant's epsilon is a failed check (exit 1), not bad input."""

from __future__ import annotations

from custodian.cli.main import EXIT_CHECK_FAILED, exit_code_for
from privacy.empirical import AuditBoundExceeded


def test_audit_bound_exceeded_exits_1() -> None:
    assert exit_code_for(AuditBoundExceeded("audit run x: bound 5 > 3")) == EXIT_CHECK_FAILED
