"""The audit log: chaining, signed checkpoints, each kind of tampering, torn tails, concurrency.

Tampering is done the way an attacker without the key would do it: with
``json``, ``rfc8785`` and ``hashlib`` directly, never through the library.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import rfc8785
from pydantic import ValidationError

from audits.canonical import NotCanonicalizable, canonical_bytes, canonical_sha256
from audits.keys import PublicKey, SigningKey
from audits.log import (
    AuditEvent,
    AuditLog,
    EventKind,
    LogFormatError,
    NoCheckpoint,
    NoTrustedKeys,
    ProblemKind,
    TamperDetected,
    UntrustedCheckpoint,
    format_timeline,
    load_checkpoint,
)
from tests.audits.events import command_event

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def key() -> SigningKey:
    return SigningKey.generate()


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit" / "audit.log", tmp_path / "audit" / "checkpoint.json")


def _fill(log: AuditLog, key: SigningKey, count: int, *, checkpoint_every: int) -> None:
    for number in range(count):
        log.append(command_event(number))
        if (number + 1) % checkpoint_every == 0:
            log.write_checkpoint(key)


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines()


def _save(log: AuditLog, lines: list[bytes]) -> None:
    log.path.write_bytes(b"".join(line + b"\n" for line in lines))


def _rechain(lines: list[bytes], start: int) -> list[bytes]:
    """Renumber and re-link every entry from ``start`` on, as a forger without the key would."""
    result = lines[:start]
    prev = hashlib.sha256(result[-1]).hexdigest() if result else "0" * 64
    for seq, line in enumerate(lines[start:], start=start):
        record = json.loads(line)
        record["seq"], record["prev"] = seq, prev
        result.append(rfc8785.dumps(record))
        prev = hashlib.sha256(result[-1]).hexdigest()
    return result


def _edit(line: bytes, **details: int) -> bytes:
    record = json.loads(line)
    record["event"]["details"].update(details)
    return rfc8785.dumps(record)


def _kinds(report) -> set[ProblemKind]:  # noqa: ANN001 - VerifyReport, kept short
    return {problem.kind for problem in report.problems}


# --------------------------------------------------------------------------- the intact log


def test_intact_log_verifies_and_every_entry_is_covered(log: AuditLog, key: SigningKey) -> None:
    _fill(log, key, 10, checkpoint_every=3)
    log.write_checkpoint(key)
    report = log.verify([key.public_key])
    assert report.ok, report.summary()
    assert (report.entries, report.covered, report.uncovered) == (10, 10, 0)
    assert report.checkpoint is not None and report.checkpoint.tree_size == 10
    assert report.summary().startswith("intact: 10 entries")


def test_entries_are_canonical_json_lines_chained_by_sha256(log: AuditLog, key: SigningKey) -> None:
    _fill(log, key, 3, checkpoint_every=3)
    lines = _lines(log)
    for seq, line in enumerate(lines):
        record = json.loads(line)
        assert rfc8785.dumps(record) == line
        assert record["seq"] == seq
        expected = hashlib.sha256(lines[seq - 1]).hexdigest() if seq else "0" * 64
        assert record["prev"] == expected
        assert record["time"].endswith("Z")
    assert [entry.event for entry in log.entries()] == [command_event(n) for n in range(3)]


def test_uncovered_entries_are_a_warning_not_tampering(log: AuditLog, key: SigningKey) -> None:
    _fill(log, key, 4, checkpoint_every=2)
    log.append(command_event(4))
    report = log.verify([key.public_key])
    assert report.ok and report.uncovered == 1
    assert any("not yet covered" in warning for warning in report.warnings)


def test_entries_without_any_checkpoint_fail_closed(log: AuditLog, key: SigningKey) -> None:
    log.append(command_event(0))
    report = log.verify([key.public_key])
    assert not report.ok
    assert _kinds(report) == {ProblemKind.MISSING_CHECKPOINT}


def test_an_empty_log_with_no_checkpoint_is_intact(log: AuditLog, key: SigningKey) -> None:
    assert log.verify([key.public_key]).ok


# --------------------------------------------------------------------------- tampering


def test_entry_edited_and_rechained_without_the_key_is_named(
    log: AuditLog, key: SigningKey
) -> None:
    # A checkpoint after every append, as the CLI writes one after every command.
    _fill(log, key, 12, checkpoint_every=1)
    lines = _lines(log)
    lines[7] = _edit(lines[7], number=700)
    _save(log, _rechain(lines, 7))

    report = log.verify([key.public_key])
    assert not report.ok and report.tampered
    # The chain itself is intact again: only the signed roots give it away.
    assert _kinds(report) == {ProblemKind.ROOT_MISMATCH}
    assert report.first_problem is not None and report.first_problem.entry == 7
    assert report.summary().startswith("entry 7: differs from what the checkpoint")


def test_rechained_edit_is_localised_to_the_range_between_checkpoints(
    log: AuditLog, key: SigningKey
) -> None:
    _fill(log, key, 12, checkpoint_every=4)
    lines = _lines(log)
    lines[5] = _edit(lines[5], number=500)
    _save(log, _rechain(lines, 5))
    report = log.verify([key.public_key])
    assert not report.ok
    assert report.first_problem is not None
    assert report.first_problem.message.startswith("entries 4..7: one or more differ")


def test_edited_byte_without_rechaining_breaks_the_chain_at_the_next_entry(
    log: AuditLog, key: SigningKey
) -> None:
    _fill(log, key, 6, checkpoint_every=1)
    lines = _lines(log)
    lines[2] = lines[2].replace(b"alice", b"mallory")
    _save(log, lines)
    report = log.verify([key.public_key])
    assert _kinds(report) == {ProblemKind.CHAIN, ProblemKind.ROOT_MISMATCH}
    chain = next(p for p in report.problems if p.kind is ProblemKind.CHAIN)
    assert chain.message.startswith("entry 3 (byte ")
    assert "prev hash mismatch" in chain.message
    assert report.first_problem is not None and report.first_problem.entry == 2


@pytest.mark.parametrize(
    ("tamper", "first_bad"),
    [
        pytest.param(lambda lines: lines[:3] + lines[4:], 3, id="deleted"),
        pytest.param(lambda lines: [*lines[:3], lines[4], lines[3], *lines[5:]], 3, id="reordered"),
        pytest.param(lambda lines: [*lines[:4], lines[3], *lines[4:]], 4, id="duplicated"),
        # The forged copy chains onto entry 2 perfectly; the original after it no longer does.
        pytest.param(
            lambda lines: [*lines[:3], _edit(lines[3], number=9), *lines[3:]], 4, id="inserted"
        ),
        pytest.param(lambda lines: lines[1:], 0, id="removed-first"),
    ],
)
def test_structural_tampering_is_named_at_the_first_bad_entry(
    log: AuditLog,
    key: SigningKey,
    tamper,
    first_bad: int,  # noqa: ANN001
) -> None:
    _fill(log, key, 8, checkpoint_every=8)
    _save(log, tamper(_lines(log)))
    report = log.verify([key.public_key])
    assert not report.ok and report.tampered
    assert report.first_problem is not None
    assert report.first_problem.entry == first_bad, report.problems
    assert report.first_problem.message.startswith(f"entry {first_bad}")


@pytest.mark.parametrize("where", [0, 3, 7])
def test_forged_entry_inserted_and_rechained_is_detected(
    log: AuditLog, key: SigningKey, where: int
) -> None:
    _fill(log, key, 8, checkpoint_every=1)
    lines = _lines(log)
    forged = [*lines[:where], _edit(lines[where], number=-1), *lines[where:]]
    _save(log, _rechain(forged, where))
    report = log.verify([key.public_key])
    assert _kinds(report) == {ProblemKind.ROOT_MISMATCH}
    assert report.first_problem is not None and report.first_problem.entry == where


def test_truncated_tail_is_detected_against_the_checkpoint(log: AuditLog, key: SigningKey) -> None:
    _fill(log, key, 6, checkpoint_every=6)
    _save(log, _lines(log)[:4])
    report = log.verify([key.public_key])
    assert _kinds(report) == {ProblemKind.TRUNCATED}
    assert report.first_problem is not None
    assert "entries 4..5 are missing" in report.first_problem.message
    with pytest.raises(TamperDetected, match="truncated"):
        log.write_checkpoint(key)


def test_checkpoint_signed_by_an_unknown_key_fails(log: AuditLog, key: SigningKey) -> None:
    _fill(log, key, 3, checkpoint_every=3)
    report = log.verify([SigningKey.generate().public_key])
    assert not report.ok
    assert _kinds(report) == {ProblemKind.UNKNOWN_KEY}
    assert report.covered == 0


def test_checkpoint_with_a_forged_root_fails_its_signature(log: AuditLog, key: SigningKey) -> None:
    _fill(log, key, 3, checkpoint_every=3)
    state = json.loads(log.checkpoint_path.read_text())
    state["checkpoint"]["tree_head"]["root_hash"] = "00" * 32
    log.checkpoint_path.write_text(json.dumps(state))
    log.history_path.unlink()
    report = log.verify([key.public_key])
    # The only head there is fails, so nothing covers the entries either.
    assert _kinds(report) == {ProblemKind.BAD_SIGNATURE}
    assert report.covered == 0


def test_verification_with_no_trusted_key_is_refused(log: AuditLog) -> None:
    with pytest.raises(NoTrustedKeys):
        log.verify([])


# --------------------------------------------------------------------------- the writer


def test_writer_refuses_to_extend_a_checkpoint_it_cannot_trust(
    log: AuditLog, key: SigningKey
) -> None:
    _fill(log, key, 2, checkpoint_every=2)
    log.append(command_event(2))
    rotated = SigningKey.generate()
    with pytest.raises(UntrustedCheckpoint):
        log.write_checkpoint(rotated)
    log.write_checkpoint(rotated, trusted_keys=[key.public_key])
    assert log.verify([key.public_key, rotated.public_key]).ok


def test_writer_never_launders_an_edit_into_a_new_checkpoint(
    log: AuditLog, key: SigningKey
) -> None:
    _fill(log, key, 6, checkpoint_every=6)
    lines = _lines(log)
    # Same length, so the byte offsets the checkpoint remembers still line up.
    lines[2] = _edit(lines[2], number=8)
    _save(log, _rechain(lines, 2))
    log.append(command_event(6))
    log.write_checkpoint(key)
    report = log.verify([key.public_key])
    assert not report.ok
    assert report.first_problem is not None and "entries 0..5" in report.first_problem.message


def test_writer_refuses_a_broken_chain_after_the_checkpoint(log: AuditLog, key: SigningKey) -> None:
    _fill(log, key, 3, checkpoint_every=3)
    log.append(command_event(3))
    log.append(command_event(4))
    lines = _lines(log)
    _save(log, [*lines[:3], lines[4]])
    with pytest.raises(TamperDetected, match="entry 3"):
        log.write_checkpoint(key)


def test_deleted_checkpoint_file_is_not_restarted_from_scratch(
    log: AuditLog, key: SigningKey
) -> None:
    _fill(log, key, 4, checkpoint_every=2)
    log.checkpoint_path.unlink()
    # The history still covers the entries...
    assert log.verify([key.public_key]).ok
    # ...and the writer will not sign a fresh tree over whatever the log holds now.
    with pytest.raises(TamperDetected, match="is missing"):
        log.write_checkpoint(key)


def test_torn_history_record_is_set_aside_by_the_next_checkpoint(
    log: AuditLog, key: SigningKey
) -> None:
    _fill(log, key, 2, checkpoint_every=2)
    with log.history_path.open("ab") as handle:
        handle.write(b'{"signature":"AAA')
    assert any("torn last record" in w for w in log.verify([key.public_key]).warnings)
    _fill(log, key, 2, checkpoint_every=2)
    report = log.verify([key.public_key])
    assert report.ok and not report.warnings
    aside = log.history_path.with_name(log.history_path.name + ".torn-1")
    assert aside.read_bytes() == b'{"signature":"AAA'


# --------------------------------------------------------------------------- anchoring


def test_log_proves_it_extends_an_exported_checkpoint(
    log: AuditLog, key: SigningKey, tmp_path: Path
) -> None:
    _fill(log, key, 5, checkpoint_every=5)
    exported = log.export_checkpoint(tmp_path / "anchor.json")
    anchor = load_checkpoint(tmp_path / "anchor.json")
    assert anchor == exported
    _fill(log, key, 7, checkpoint_every=7)
    assert log.verify([key.public_key], against=anchor).ok


def test_rewriting_log_and_checkpoints_is_caught_by_the_anchor(
    log: AuditLog, key: SigningKey, tmp_path: Path
) -> None:
    _fill(log, key, 5, checkpoint_every=5)
    log.export_checkpoint(tmp_path / "anchor.json")
    # Roll everything back to an empty project and replay a different history.
    for path in (log.path, log.checkpoint_path, log.history_path):
        path.unlink()
    for number in range(6):
        log.append(command_event(100 + number))
    log.write_checkpoint(key)
    assert log.verify([key.public_key]).ok, "locally the rewrite is indistinguishable"
    report = log.verify([key.public_key], against=load_checkpoint(tmp_path / "anchor.json"))
    assert _kinds(report) == {ProblemKind.INCONSISTENT_WITH_ANCHOR}
    assert "consistency proof fails" in report.summary()


def test_rollback_below_the_anchor_is_caught(
    log: AuditLog, key: SigningKey, tmp_path: Path
) -> None:
    _fill(log, key, 5, checkpoint_every=5)
    log.export_checkpoint(tmp_path / "anchor.json")
    _save(log, _lines(log)[:3])
    report = log.verify([key.public_key], against=load_checkpoint(tmp_path / "anchor.json"))
    assert ProblemKind.INCONSISTENT_WITH_ANCHOR in _kinds(report)


def test_export_without_a_checkpoint_is_an_error(log: AuditLog, tmp_path: Path) -> None:
    with pytest.raises(NoCheckpoint):
        log.export_checkpoint(tmp_path / "anchor.json")


# --------------------------------------------------------------------------- crashes


def test_torn_last_line_is_reported_precisely_and_recovered(log: AuditLog, key: SigningKey) -> None:
    _fill(log, key, 5, checkpoint_every=5)
    size = log.path.stat().st_size
    torn = b'{"event":{"actor":"alice","comm'
    with log.path.open("ab") as handle:
        handle.write(torn)

    report = log.verify([key.public_key])
    assert not report.ok and not report.tampered
    assert _kinds(report) == {ProblemKind.TORN_TAIL}
    assert report.torn_tail is not None
    assert (report.torn_tail.entry, report.torn_tail.offset) == (5, size)
    assert report.torn_tail.length == len(torn)
    assert report.summary().startswith(f"entry 5 (byte {size}): torn last line")

    entry = log.append(command_event(5))
    assert entry.seq == 6
    recovery = list(log.entries())[5]
    assert recovery.event.kind is EventKind.RECOVERY
    assert recovery.event.details == {
        "reason": "no trailing newline",
        "entry": 5,
        "offset": size,
        "length": len(torn),
        "sha256": hashlib.sha256(torn).hexdigest(),
        "moved_to": "audit.log.torn-1",
    }
    assert (log.path.parent / "audit.log.torn-1").read_bytes() == torn
    log.write_checkpoint(key)
    assert log.verify([key.public_key]).ok


def test_last_line_of_garbage_with_a_newline_is_torn_too(log: AuditLog, key: SigningKey) -> None:
    _fill(log, key, 2, checkpoint_every=2)
    with log.path.open("ab") as handle:
        handle.write(b"\x00" * 40 + b"\n")
    report = log.verify([key.public_key])
    assert _kinds(report) == {ProblemKind.TORN_TAIL}
    assert report.torn_tail is not None and report.torn_tail.reason == "not a valid entry"
    log.append(command_event(2))
    log.write_checkpoint(key)
    assert log.verify([key.public_key]).ok


def test_damage_inside_the_signed_range_is_not_repaired(log: AuditLog, key: SigningKey) -> None:
    _fill(log, key, 4, checkpoint_every=4)
    data = log.path.read_bytes()
    log.path.write_bytes(data[:-30])
    report = log.verify([key.public_key])
    assert {ProblemKind.TORN_TAIL, ProblemKind.TRUNCATED} <= _kinds(report)
    with pytest.raises(TamperDetected, match="refusing to repair"):
        log.append(command_event(4))
    assert log.path.read_bytes() == data[:-30], "evidence must be left as found"


def test_two_damaged_lines_are_not_taken_for_a_crash(log: AuditLog, key: SigningKey) -> None:
    _fill(log, key, 3, checkpoint_every=3)
    with log.path.open("ab") as handle:
        handle.write(b"garbage\npartial")
    with pytest.raises(TamperDetected, match="last two lines"):
        log.append(command_event(3))
    report = log.verify([key.public_key])
    assert ProblemKind.MALFORMED_ENTRY in _kinds(report)


def test_entries_refuses_a_line_that_is_not_an_entry(log: AuditLog, key: SigningKey) -> None:
    _fill(log, key, 3, checkpoint_every=3)
    lines = _lines(log)
    lines[1] = b'{"seq": 1}'
    _save(log, lines)
    with pytest.raises(LogFormatError, match=r"entry 1 \(byte \d+\)"):
        list(log.entries())


# --------------------------------------------------------------------------- concurrency


WRITER = textwrap.dedent(
    """
    import sys
    from audits.log import AuditEvent, AuditLog, EventKind

    log = AuditLog(sys.argv[1], sys.argv[2])
    for number in range(int(sys.argv[4])):
        log.append(AuditEvent(
            actor=sys.argv[3], command="custodian train", kind=EventKind.DECISION,
            details={"number": number},
        ))
    """
)


def test_concurrent_writers_lose_and_interleave_nothing(log: AuditLog, key: SigningKey) -> None:
    processes, appends = 4, 50
    writers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRITER,
                str(log.path),
                str(log.checkpoint_path),
                f"w{n}",
                str(appends),
            ],
            cwd=REPO,
        )
        for n in range(processes)
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0] * processes
    log.write_checkpoint(key)
    report = log.verify([key.public_key])
    assert report.ok, report.summary()
    assert report.entries == processes * appends
    entries = list(log.entries())
    for n in range(processes):
        mine = [e.event.details["number"] for e in entries if e.event.actor == f"w{n}"]
        assert mine == list(range(appends)), "each writer's entries, complete and in order"


KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from audits.log import AuditEvent, AuditLog, EventKind

    log = AuditLog(sys.argv[1], sys.argv[2])
    event = AuditEvent(actor="ci", command="custodian train", kind=EventKind.DECISION,
                       details={"padding": "x" * 4000})
    while True:
        print(log.append(event).seq, flush=True)
    """
)


def test_sigkill_during_appends_loses_no_acknowledged_entry(log: AuditLog, key: SigningKey) -> None:
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(log.path), str(log.checkpoint_path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert writer.stdout is not None
    acknowledged = [int(writer.stdout.readline()) for _ in range(30)]
    writer.kill()
    acknowledged += [int(line) for line in writer.stdout.read().split()]
    writer.wait(timeout=30)

    log.append(command_event(0))  # recovers a torn tail if the kill left one
    log.write_checkpoint(key)
    report = log.verify([key.public_key])
    assert report.ok, report.summary()
    assert report.entries > max(acknowledged)
    seqs = [entry.seq for entry in log.entries() if entry.event.actor == "ci"]
    assert seqs[: len(acknowledged)] == acknowledged


# --------------------------------------------------------------------------- events and review


def test_events_are_strict_and_frozen() -> None:
    with pytest.raises(ValidationError):
        AuditEvent(actor="a", command="c", kind="refused", unexpected=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="canonical"):
        AuditEvent(actor="a", command="c", kind="decision", details={"x": float("nan")})
    with pytest.raises(ValidationError):
        AuditEvent(actor="a", command="c", kind="decision", inputs={"f": "not-a-hash"})
    with pytest.raises(ValidationError):
        AuditEvent(actor="a", command="c", kind="no-such-kind")
    event = command_event(0)
    with pytest.raises(ValidationError):
        event.actor = "mallory"  # type: ignore[misc]


def test_canonical_helpers_follow_rfc8785() -> None:
    value = {"b": 1, "a": [1.0, "\u20ac", None], "c": {"z": True, "y": 1e21}}
    assert (
        canonical_bytes(value) == '{"a":[1,"\u20ac",null],"b":1,"c":{"y":1e+21,"z":true}}'.encode()
    )
    assert canonical_sha256(value) == hashlib.sha256(canonical_bytes(value)).hexdigest()
    with pytest.raises(NotCanonicalizable):
        canonical_bytes({"n": 2**60})


def test_read_filters_by_stage_actor_and_time(log: AuditLog) -> None:
    log.append(command_event(0, stage="ingest"))
    log.append(command_event(1, stage="train", actor="bob"))
    log.append(command_event(2, stage="train"))
    assert [e.seq for e in log.read(stage="train")] == [1, 2]
    assert [e.seq for e in log.read(actor="bob")] == [1]
    assert log.read(since=datetime.now(UTC) + timedelta(hours=1)) == []
    assert len(log.read(since=datetime.now(UTC) - timedelta(hours=1))) == 3
    with pytest.raises(ValueError, match="timezone-aware"):
        log.read(since=datetime.now())  # noqa: DTZ005 - the point of the test


def test_timeline_is_a_readable_table(log: AuditLog) -> None:
    log.append(command_event(0, stage="ingest"))
    failed = AuditEvent(
        actor="bob", command="custodian train", kind="command_failed", error="budget exceeded"
    )
    log.append(failed)
    table = format_timeline(log.read()).splitlines()
    assert table[0].split() == ["#", "time", "(UTC)", "kind", "stage", "command", "actor", "note"]
    assert "command_succeeded" in table[1] and "1 in, 0 out, number=0" in table[1]
    assert table[2].endswith("error: budget exceeded")


def test_a_log_written_before_the_shared_store_still_verifies_and_extends(tmp_path: Path) -> None:
    """Files written by the audit log before it moved onto ``stores.local`` (with a torn
    tail set aside and recorded), byte for byte: they verify, and a new entry extends them."""
    legacy = REPO / "tests" / "stores" / "legacy"
    for name in ("log.jsonl", "checkpoint.json", "checkpoint.history.jsonl"):
        (tmp_path / name).write_bytes((legacy / f"audit-{name}").read_bytes())
    signer = PublicKey.from_pem((legacy / "audit-signer.pem").read_bytes())
    log = AuditLog(tmp_path / "log.jsonl", tmp_path / "checkpoint.json")

    report = log.verify([signer])
    assert report.ok and (report.entries, report.covered) == (5, 5), report.summary()
    assert [e.event.kind for e in log.entries()].count(EventKind.RECOVERY) == 1

    before = log.path.read_bytes()
    log.append(command_event(5))
    assert log.path.read_bytes().startswith(before)
    key = SigningKey.generate()
    log.write_checkpoint(key, [signer])
    assert log.verify([signer, key.public_key]).covered == 6
