"""SPDX license expressions and the license policy that gates ingestion.

An expression is validated against the SPDX license list (via
``license-expression``); ``LicenseRef-*`` identifiers are syntactically valid
SPDX but unknown to everyone but their author, so policy only accepts them with
an explicit approval entry that gives a reason.
"""

from __future__ import annotations

import re
from enum import StrEnum
from functools import cache

from license_expression import (
    AND,
    OR,
    ExpressionError,
    LicenseSymbol,
    Licensing,
    get_spdx_licensing,
)

from governance.errors import InputError, PolicyViolation

_LICENSE_REF = re.compile(r"^LicenseRef-[A-Za-z0-9.\-]+$")

# license-expression reports most syntax errors as ExpressionError, but some
# malformed input ("()", "(AND 0") escapes its parser as these (found by
# tests/properties/test_license_properties.py).
_PARSER_ERRORS = (ExpressionError, IndexError, AssertionError)


class IntendedUse(StrEnum):
    research = "research"
    commercial = "commercial"


class Obligation(StrEnum):
    """Duties a license attaches to the data and everything derived from it."""

    attribution = "attribution"
    share_alike = "share_alike"
    noncommercial = "noncommercial"
    no_derivatives = "no_derivatives"
    approved_by_policy = "approved_by_policy"


# Obligations of common data and code licenses, by SPDX id prefix. A license not
# matched here carries none beyond what the policy records.
_OBLIGATIONS_BY_PREFIX: tuple[tuple[str, frozenset[Obligation]], ...] = (
    (
        "CC-BY-NC-SA-",
        frozenset({Obligation.attribution, Obligation.noncommercial, Obligation.share_alike}),
    ),
    (
        "CC-BY-NC-ND-",
        frozenset({Obligation.attribution, Obligation.noncommercial, Obligation.no_derivatives}),
    ),
    ("CC-BY-NC-", frozenset({Obligation.attribution, Obligation.noncommercial})),
    ("CC-BY-ND-", frozenset({Obligation.attribution, Obligation.no_derivatives})),
    ("CC-BY-SA-", frozenset({Obligation.attribution, Obligation.share_alike})),
    ("CC-BY-", frozenset({Obligation.attribution})),
    ("ODbL-", frozenset({Obligation.attribution, Obligation.share_alike})),
    ("ODC-By-", frozenset({Obligation.attribution})),
    ("CDLA-Sharing-", frozenset({Obligation.share_alike})),
    ("CDLA-Permissive-", frozenset({Obligation.attribution})),
    ("GPL-", frozenset({Obligation.attribution, Obligation.share_alike})),
    ("AGPL-", frozenset({Obligation.attribution, Obligation.share_alike})),
    ("LGPL-", frozenset({Obligation.attribution, Obligation.share_alike})),
    ("MIT", frozenset({Obligation.attribution})),
    ("BSD-", frozenset({Obligation.attribution})),
    ("Apache-", frozenset({Obligation.attribution})),
)


@cache
def _spdx() -> Licensing:
    # The SPDX list as shipped maps some LicenseRef-* ids onto ScanCode's own
    # (LicenseRef-PublicDomain -> LicenseRef-scancode-public-domain). A
    # LicenseRef is the author's private name and must stay exactly as written.
    symbols = {
        LicenseSymbol(
            sym.key,
            aliases=tuple(a for a in sym.aliases if not a.startswith("LicenseRef-")),
            is_exception=sym.is_exception,
        )
        for sym in get_spdx_licensing().known_symbols.values()
        if not str(sym.key).startswith("LicenseRef-")
    }
    return Licensing(symbols)


def normalize_expression(expression: str) -> str:
    """Return the canonical rendering of an SPDX expression, or raise ``ValueError``.

    Raising ``ValueError`` (not a package error) lets pydantic report it as a
    field error of whatever model holds the expression.
    """
    if not expression or not expression.strip():
        raise ValueError("license expression is empty")
    try:
        parsed = _spdx().parse(expression, validate=False, strict=True)
    except _PARSER_ERRORS as err:
        reason = str(err) if isinstance(err, ExpressionError) else "misplaced operator or bracket"
        raise ValueError(f"not a valid SPDX expression {expression!r}: {reason}") from None
    if parsed is None:
        raise ValueError("license expression is empty")
    unknown = [key for key in _spdx().unknown_license_keys(parsed) if not _LICENSE_REF.match(key)]
    if unknown:
        raise ValueError(
            f"unknown SPDX license id(s) {', '.join(unknown)} in {expression!r} "
            "(see https://spdx.org/licenses/, or use LicenseRef-<name> with a policy approval)"
        )
    return str(parsed.render("{symbol.key}"))


def license_ids(expression: str) -> list[str]:
    parsed = _spdx().parse(normalize_expression(expression), validate=False, strict=True)
    return sorted({str(sym.key) for sym in _spdx().license_symbols(parsed)})


def obligations_of(license_id: str) -> frozenset[Obligation]:
    for prefix, obligations in _OBLIGATIONS_BY_PREFIX:
        if license_id.startswith(prefix):
            return obligations
    if _LICENSE_REF.match(license_id):
        return frozenset({Obligation.approved_by_policy})
    return frozenset()


def _parse_checked(expression: str, *, where: str):
    try:
        return _spdx().parse(normalize_expression(expression), validate=False, strict=True)
    except ValueError as err:
        raise InputError(f"{where}: license: {err}") from None


def evaluate_license(
    expression: str,
    *,
    dataset: str,
    intended_use: IntendedUse,
    allowed: frozenset[str],
    approved_refs: dict[str, str],
) -> frozenset[Obligation]:
    """Decide whether ``expression`` may be used; return the obligations it carries.

    ``A OR B`` is acceptable when either branch is (the licensee chooses; we
    choose the acceptable branch with the fewest obligations); ``A AND B`` only
    when both are. Raises ``PolicyViolation`` naming the dataset and license.
    """
    parsed = _parse_checked(expression, where=f"dataset {dataset!r}")
    reasons: list[str] = []

    def accept(node) -> frozenset[Obligation] | None:
        if isinstance(node, LicenseSymbol):
            return accept_id(str(node.key))
        if isinstance(node, AND):
            parts = [accept(arg) for arg in node.args]
            if any(part is None for part in parts):
                return None
            return frozenset().union(*parts)
        if isinstance(node, OR):
            options = [part for part in (accept(arg) for arg in node.args) if part is not None]
            return min(options, key=len) if options else None
        reasons.append(f"unsupported expression element {node!r}")
        return None

    def accept_id(license_id: str) -> frozenset[Obligation] | None:
        if _LICENSE_REF.match(license_id) and license_id not in approved_refs:
            reasons.append(
                f"{license_id} is a LicenseRef without an approval entry "
                "in policy.approved_license_refs"
            )
            return None
        if license_id not in allowed and license_id not in approved_refs:
            reasons.append(f"{license_id} is not in policy.allowed_licenses")
            return None
        obligations = obligations_of(license_id)
        if intended_use is IntendedUse.commercial and Obligation.noncommercial in obligations:
            reasons.append(f"{license_id} forbids commercial use (policy.intended_use=commercial)")
            return None
        if Obligation.no_derivatives in obligations:
            reasons.append(
                f"{license_id} forbids derivatives, and the pipeline derives splits and models"
            )
            return None
        return obligations

    result = accept(parsed)
    if result is None:
        raise PolicyViolation(
            f"dataset {dataset!r}: license {expression!r} refused: {'; '.join(reasons)}"
        )
    return result
