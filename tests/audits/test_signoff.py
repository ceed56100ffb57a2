"""Sign-off statements and the release gate's core, without the CLI."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import rfc8785
from pydantic import ValidationError

from audits.dsse import IN_TOTO_PAYLOAD_TYPE, Envelope, Signature, pae, sign_envelope
from audits.keys import SigningKey
from audits.log import SignedCheckpoint, TreeHead
from audits.signoff import (
    ComplianceSummary,
    GateRecord,
    PolicyRecord,
    ReasonCode,
    SignoffError,
    SignoffPredicate,
    SignoffRefused,
    SignoffStatus,
    Statement,
    build_statement,
    envelope_json,
    read_statement,
    review_signoffs,
    sign_statement,
)
from audits.trust import KeyRole, TrustStore

ROLES = (KeyRole.PRIVACY_OFFICER, KeyRole.MODEL_OWNER)
ARTIFACTS = {"models/model.safetensors": "a" * 64, "reports/manifest.json": "b" * 64}


class Reviewers:
    """A trust store with one key per role, and the private keys to sign with."""

    def __init__(self, directory: Path) -> None:
        self.store = TrustStore(directory)
        self.keys: dict[str, SigningKey] = {}
        for name, role in (("olivia", ROLES[0]), ("max", ROLES[1]), ("pipeline", KeyRole.PIPELINE)):
            self.keys[name] = SigningKey.generate()
            self.store.add(name, role, self.keys[name].public_key)

    def witnessed(self) -> SignedCheckpoint:
        """A head of a log of 3 entries, signed by the pipeline key."""
        key = self.keys["pipeline"]
        head = TreeHead(
            key_fingerprint=key.fingerprint,
            tree_size=3,
            root_hash="e" * 64,
            time="2026-11-23T11:59:00.000000Z",
        )
        signature = base64.b64encode(key.sign(head.signed_bytes())).decode("ascii")
        return SignedCheckpoint(tree_head=head, signature=signature)

    def signoff(
        self, name: str, artifacts: dict[str, str] = ARTIFACTS, actor: str | None = None
    ) -> bytes:
        entry = self.store.get(name)
        predicate = SignoffPredicate(
            reviewer=name,
            role=entry.role,
            key_fingerprint=entry.fingerprint,
            actor=actor or name,
            signed_at=datetime(2026, 11, 23, 12, 0, tzinfo=UTC),
            git_commit=None,
            policy=PolicyRecord(required_roles=ROLES, sha256="c" * 64),
            compliance_passed=True,
            gates=(GateRecord(id="privacy_budget", passed=True, waived=False),),
            evidence={"reports/privacy.json": "d" * 64},
            log_checkpoint=self.witnessed(),
        )
        statement = build_statement(artifacts, predicate)
        return envelope_json(sign_statement(statement, self.keys[name])).encode()


@pytest.fixture
def reviewers(tmp_path: Path) -> Reviewers:
    return Reviewers(tmp_path / "trust")


def test_the_statement_is_canonical_in_toto_and_round_trips(reviewers: Reviewers) -> None:
    envelope = Envelope.parse(reviewers.signoff("olivia"), "olivia.dsse.json")
    assert envelope.payload_type == IN_TOTO_PAYLOAD_TYPE
    payload = envelope.payload_bytes()
    document = json.loads(payload)
    assert payload == rfc8785.dumps(document)  # RFC 8785, checked by an independent encoder
    assert list(document) == ["_type", "predicate", "predicateType", "subject"]
    assert document["_type"] == "https://in-toto.io/Statement/v1"
    assert document["subject"] == [
        {"digest": {"sha256": "a" * 64}, "name": "models/model.safetensors"},
        {"digest": {"sha256": "b" * 64}, "name": "reports/manifest.json"},
    ]
    assert document["predicate"]["signed_at"] == "2026-11-23T12:00:00Z"
    assert read_statement(envelope, "x").digests() == ARTIFACTS
    # The signature covers the PAE of exactly these bytes.
    key = reviewers.keys["olivia"].public_key
    signature = base64.b64decode(envelope.signatures[0].sig)
    assert key.verify(signature, pae(IN_TOTO_PAYLOAD_TYPE, payload))


def test_statements_refuse_what_a_signoff_cannot_be(reviewers: Reviewers) -> None:
    statement = read_statement(Envelope.parse(reviewers.signoff("olivia"), "x"), "x")
    document = statement.model_dump(mode="json", by_alias=True)
    twice = {**document, "subject": document["subject"] * 2}
    failing = {**document, "predicate": {**document["predicate"], "compliance_passed": False}}
    other = {**document, "predicateType": "https://example.org/other"}
    for bad in (twice, failing, other):
        with pytest.raises(ValidationError):
            Statement.model_validate(bad)
    with pytest.raises(SignoffError, match="another key"):
        sign_statement(statement, reviewers.keys["max"])


def test_compliance_refusal_names_failing_gates() -> None:
    report = {
        "format": "custodian-compliance/v1",
        "passed": False,
        "gates": [
            {"id": "a", "passed": False, "waived": True, "title": "ignored"},
            {"id": "b", "passed": False},
            {"id": "c", "passed": True},
        ],
    }
    summary = ComplianceSummary.parse(json.dumps(report).encode(), "r.json")
    assert summary.refusal("r.json") == "r.json: gate(s) failing: b; sign-off refused"
    with pytest.raises(SignoffRefused, match="r.json: format"):
        ComplianceSummary.parse(json.dumps({**report, "format": "v0"}).encode(), "r.json")


def test_both_roles_by_different_people_pass(reviewers: Reviewers) -> None:
    files = {"a": reviewers.signoff("olivia"), "b": reviewers.signoff("max")}
    review = review_signoffs(files, ARTIFACTS, ROLES, reviewers.store)
    assert review.passed and review.reasons == ()
    assert [c.status for c in review.signoffs] == [SignoffStatus.COUNTED] * 2


def test_every_reason_is_reported_not_just_the_first(reviewers: Reviewers) -> None:
    outsider = SigningKey.generate()
    forged = sign_envelope(IN_TOTO_PAYLOAD_TYPE, b"{}", outsider)
    by_pipeline = reviewers.signoff("pipeline")
    files = {
        "1-stale": reviewers.signoff("olivia", {**ARTIFACTS, "models/model.safetensors": "e" * 64}),
        "2-forged": envelope_json(forged).encode(),
        "3-pipeline": by_pipeline,
        "4-broken": b"[]",
    }
    review = review_signoffs(
        files,
        {**ARTIFACTS, "reports/compliance.json": "f" * 64, "reports/compliance.html": None},
        ROLES,
        reviewers.store,
    )
    assert [reason.code for reason in review.reasons] == [
        ReasonCode.MISSING_ARTIFACT,
        ReasonCode.UNKNOWN_KEY,
        ReasonCode.WRONG_ROLE,
        ReasonCode.MALFORMED_SIGNOFF,
        ReasonCode.CHANGED_ARTIFACT,
        ReasonCode.MISSING_ROLE,
    ]
    stale = review.reasons[4].message
    assert "privacy-officer" in stale and "models/model.safetensors (signed eeeeeeeeeeee" in stale
    assert "reports/compliance.json (not signed)" in stale
    assert {c.file: c.status for c in review.signoffs} == {
        "1-stale": SignoffStatus.SUPERSEDED,
        "2-forged": SignoffStatus.REJECTED,
        "3-pipeline": SignoffStatus.REJECTED,
        "4-broken": SignoffStatus.REJECTED,
    }


def test_keyid_is_only_a_hint(reviewers: Reviewers) -> None:
    genuine = Envelope.parse(reviewers.signoff("olivia"), "x")
    signature = genuine.signatures[0]
    # No keyid, or one naming another trusted key: the signature still decides.
    for keyid in ("", reviewers.store.get("max").fingerprint):
        relabelled = genuine.model_copy(
            update={"signatures": (Signature(keyid=keyid, sig=signature.sig),)}
        )
        files = {"a": envelope_json(relabelled).encode(), "b": reviewers.signoff("max")}
        assert review_signoffs(files, ARTIFACTS, ROLES, reviewers.store).passed
    doubled = genuine.model_copy(update={"signatures": (signature, signature)})
    review = review_signoffs(
        {"a": envelope_json(doubled).encode()}, ARTIFACTS, ROLES, reviewers.store
    )
    assert review.reasons[0].code is ReasonCode.MALFORMED_SIGNOFF


def test_a_newer_valid_signoff_makes_an_old_revoked_one_irrelevant(reviewers: Reviewers) -> None:
    old = reviewers.signoff("olivia", {**ARTIFACTS, "models/model.safetensors": "e" * 64})
    reviewers.store.revoke("olivia", "left the team in 2026")
    replacement = SigningKey.generate()
    reviewers.store.add("olga", KeyRole.PRIVACY_OFFICER, replacement.public_key)
    reviewers.keys["olga"] = replacement
    files = {"old": old, "new": reviewers.signoff("olga"), "max": reviewers.signoff("max")}
    review = review_signoffs(files, ARTIFACTS, ROLES, reviewers.store)
    assert review.passed, review.reasons
    statuses = {c.file: c.status for c in review.signoffs}
    assert statuses["old"] is SignoffStatus.SUPERSEDED


def test_no_required_role_is_a_programming_error(reviewers: Reviewers) -> None:
    with pytest.raises(ValueError, match="at least one"):
        review_signoffs({}, ARTIFACTS, (), reviewers.store)


def test_a_revoked_keys_old_signoff_is_not_offered_as_the_stale_one(reviewers: Reviewers) -> None:
    old = reviewers.signoff("olivia", {**ARTIFACTS, "models/model.safetensors": "e" * 64})
    reviewers.store.revoke("olivia", "left the team in 2026")
    files = {"old": old, "max": reviewers.signoff("max")}
    review = review_signoffs(files, ARTIFACTS, ROLES, reviewers.store)
    assert [reason.code for reason in review.reasons] == [ReasonCode.MISSING_ROLE]
    assert "privacy-officer" in review.reasons[0].message
