"""The license policy over random SPDX expressions: only our errors, and OR/AND mean what they say.

Expressions are built from a small alphabet of ids (allowed, not allowed,
forbidding derivatives, noncommercial, an approved and an unapproved
LicenseRef, an unknown id) so that every branch of the policy is reached.
The reference semantics is evaluated here independently, leaf by leaf.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from governance.errors import InputError, PolicyViolation
from governance.licenses import IntendedUse, Obligation, evaluate_license

SETTINGS = settings(max_examples=100, deadline=None)

ALLOWED = frozenset(
    {"MIT", "Apache-2.0", "CC-BY-4.0", "CC-BY-SA-4.0", "CC-BY-NC-4.0", "CC-BY-ND-4.0"}
)
APPROVED = {"LicenseRef-Approved": "reviewed by legal in ticket 42"}
KNOWN_IDS = [*sorted(ALLOWED), "GPL-3.0-only", "LicenseRef-Approved", "LicenseRef-Unapproved"]


@dataclass(frozen=True)
class Leaf:
    id: str

    def text(self) -> str:
        return self.id


@dataclass(frozen=True)
class Node:
    operator: str  # "AND" | "OR"
    left: Leaf | Node
    right: Leaf | Node

    def text(self) -> str:
        return f"({self.left.text()} {self.operator} {self.right.text()})"


expressions = st.recursive(
    st.sampled_from(KNOWN_IDS).map(Leaf),
    lambda children: st.builds(Node, st.sampled_from(["AND", "OR"]), children, children),
    max_leaves=6,
)


def accepted_leaf(license_id: str, use: IntendedUse, allowed: frozenset[str]) -> bool:
    if license_id.startswith("LicenseRef-"):
        return license_id in APPROVED
    if license_id not in allowed:
        return False
    if license_id == "CC-BY-ND-4.0":
        return False  # the pipeline derives splits and models
    return not (use is IntendedUse.commercial and license_id == "CC-BY-NC-4.0")


def accepted(expression: Leaf | Node, use: IntendedUse, allowed: frozenset[str]) -> bool:
    if isinstance(expression, Leaf):
        return accepted_leaf(expression.id, use, allowed)
    left, right = (accepted(side, use, allowed) for side in (expression.left, expression.right))
    return left and right if expression.operator == "AND" else left or right


def evaluate(text: str, use: IntendedUse, allowed: frozenset[str]) -> frozenset[Obligation] | None:
    try:
        return evaluate_license(
            text, dataset="d", intended_use=use, allowed=allowed, approved_refs=APPROVED
        )
    except PolicyViolation:
        return None


uses = st.sampled_from(list(IntendedUse))
allowed_sets = st.sets(st.sampled_from(sorted(ALLOWED)), min_size=1).map(frozenset)


@SETTINGS
@given(expressions, uses, allowed_sets)
def test_verdict_follows_and_or_semantics(expression, use: IntendedUse, allowed) -> None:
    verdict = evaluate(expression.text(), use, allowed)
    assert (verdict is not None) == accepted(expression, use, allowed)


@SETTINGS
@given(expressions, uses, allowed_sets, st.sampled_from(sorted(ALLOWED)))
def test_allowing_more_never_refuses_more(expression, use, allowed, extra: str) -> None:
    before = evaluate(expression.text(), use, allowed)
    after = evaluate(expression.text(), use, allowed | {extra})
    assert before is None or after is not None


@SETTINGS
@given(expressions, expressions, uses)
def test_and_carries_every_obligation_of_its_parts(left, right, use: IntendedUse) -> None:
    both = evaluate(Node("AND", left, right).text(), use, ALLOWED)
    if both is not None:
        for part in (left, right):
            obligations = evaluate(part.text(), use, ALLOWED)
            assert obligations is not None and obligations <= both


@SETTINGS
@given(
    st.text(max_size=40)
    | st.lists(st.sampled_from([*KNOWN_IDS, "Bogus-9", "AND", "OR", "WITH", "(", ")", "+"])).map(
        " ".join
    ),
    uses,
)
def test_any_text_is_accepted_refused_or_an_input_error(text: str, use: IntendedUse) -> None:
    try:
        evaluate_license(
            text, dataset="d", intended_use=use, allowed=ALLOWED, approved_refs=APPROVED
        )
    except (InputError, PolicyViolation) as err:
        assert "dataset 'd'" in str(err)
