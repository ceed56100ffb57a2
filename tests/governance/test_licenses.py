import pytest

from governance.errors import InputError, PolicyViolation
from governance.licenses import (
    IntendedUse,
    Obligation,
    evaluate_license,
    license_ids,
    normalize_expression,
)

ALLOWED = frozenset({"MIT", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0", "CC-BY-ND-4.0"})


def decide(expression: str, use: IntendedUse = IntendedUse.research, refs=None):
    return evaluate_license(
        expression, dataset="demo", intended_use=use, allowed=ALLOWED, approved_refs=refs or {}
    )


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("cc-by-4.0", "CC-BY-4.0"),
        ("MIT OR Apache-2.0", "MIT OR Apache-2.0"),
        ("LicenseRef-PublicDomain", "LicenseRef-PublicDomain"),  # never aliased to ScanCode's
    ],
)
def test_normalizes_valid_expressions(raw: str, canonical: str) -> None:
    assert normalize_expression(raw) == canonical


@pytest.mark.parametrize("bad", ["", "   ", "Foo-1.0", "MIT AND", "MIT OR OR BSD-3-Clause"])
def test_rejects_invalid_expressions(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_expression(bad)


def test_license_ids_lists_every_symbol() -> None:
    assert license_ids("MIT AND (CC-BY-4.0 OR LicenseRef-X)") == [
        "CC-BY-4.0",
        "LicenseRef-X",
        "MIT",
    ]


def test_noncommercial_refused_for_commercial_use_naming_dataset_and_license() -> None:
    assert decide("CC-BY-NC-4.0") == {Obligation.attribution, Obligation.noncommercial}
    with pytest.raises(PolicyViolation, match=r"dataset 'demo': license 'CC-BY-NC-4.0' refused"):
        decide("CC-BY-NC-4.0", IntendedUse.commercial)


def test_or_picks_acceptable_branch_and_and_needs_all() -> None:
    assert decide("CC-BY-NC-4.0 OR MIT", IntendedUse.commercial) == {Obligation.attribution}
    with pytest.raises(PolicyViolation):
        decide("CC-BY-NC-4.0 AND MIT", IntendedUse.commercial)
    assert decide("CC-BY-SA-4.0 AND MIT") == {Obligation.attribution, Obligation.share_alike}


def test_license_ref_needs_an_approval_entry() -> None:
    with pytest.raises(PolicyViolation, match="LicenseRef-Internal is a LicenseRef without"):
        decide("LicenseRef-Internal")
    assert decide("LicenseRef-Internal", refs={"LicenseRef-Internal": "legal ok 2026-01"}) == {
        Obligation.approved_by_policy
    }


def test_unlisted_and_no_derivative_licenses_refused() -> None:
    with pytest.raises(PolicyViolation, match="GPL-3.0-only is not in policy.allowed_licenses"):
        decide("GPL-3.0-only")
    with pytest.raises(PolicyViolation, match="forbids derivatives"):
        decide("CC-BY-ND-4.0")


def test_invalid_expression_is_an_input_error() -> None:
    with pytest.raises(InputError, match="dataset 'demo': license"):
        decide("Not-A-License")
