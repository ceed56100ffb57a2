"""The audit log over random histories: intact logs verify, any single edit is detected.

Each example writes a fresh log of random events, signs a checkpoint over it,
and then damages one covered line the way an attacker without the key could:
one flipped byte, one deleted line, or two lines swapped. Verification must
fail every time, and never raise anything but the audit package's errors.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audits.keys import SigningKey
from audits.log import AuditEvent, AuditLog, EventKind

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
KEY = SigningKey.generate()

details = st.dictionaries(
    st.text(max_size=6),
    st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(max_size=10),
    max_size=3,
)
events = st.builds(
    AuditEvent,
    actor=st.text(min_size=1, max_size=8),
    command=st.sampled_from(["custodian ingest", "custodian train", "custodian audit checkpoint"]),
    kind=st.sampled_from(list(EventKind)),
    details=details,
)


def write_log(directory: Path, history: list[AuditEvent], checkpoint_every: int) -> AuditLog:
    log = AuditLog(directory / "log.jsonl", directory / "checkpoint.json")
    for number, event in enumerate(history, start=1):
        log.append(event)
        if number % checkpoint_every == 0:
            log.write_checkpoint(KEY, [KEY.public_key])
    log.write_checkpoint(KEY, [KEY.public_key])
    return log


@SETTINGS
@given(st.lists(events, min_size=1, max_size=8), st.integers(1, 4))
def test_any_history_of_appends_verifies(history: list[AuditEvent], every: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        log = write_log(Path(directory), history, every)
        report = log.verify([KEY.public_key])
        assert report.ok, report.problems
        assert report.entries == len(history) and report.uncovered == 0
        assert [entry.event for entry in log.entries()] == history


@SETTINGS
@given(st.lists(events, min_size=2, max_size=8), st.integers(1, 4), st.data())
def test_a_flipped_byte_is_detected(history: list[AuditEvent], every: int, data) -> None:
    with tempfile.TemporaryDirectory() as directory:
        log = write_log(Path(directory), history, every)
        content = bytearray(log.path.read_bytes())
        position = data.draw(st.integers(0, len(content) - 1), label="position")
        content[position] ^= data.draw(st.integers(1, 255), label="mask")
        log.path.write_bytes(bytes(content))
        assert not log.verify([KEY.public_key]).ok


@SETTINGS
@given(st.lists(events, min_size=2, max_size=8), st.integers(1, 4), st.data())
def test_a_deleted_line_is_detected(history: list[AuditEvent], every: int, data) -> None:
    with tempfile.TemporaryDirectory() as directory:
        log = write_log(Path(directory), history, every)
        lines = log.path.read_bytes().splitlines(keepends=True)
        del lines[data.draw(st.integers(0, len(lines) - 1), label="line")]
        log.path.write_bytes(b"".join(lines))
        assert not log.verify([KEY.public_key]).ok


@SETTINGS
@given(st.lists(events, min_size=2, max_size=8), st.integers(1, 4), st.data())
def test_two_swapped_lines_are_detected(history: list[AuditEvent], every: int, data) -> None:
    with tempfile.TemporaryDirectory() as directory:
        log = write_log(Path(directory), history, every)
        lines = log.path.read_bytes().splitlines(keepends=True)
        first = data.draw(st.integers(0, len(lines) - 2), label="first")
        second = data.draw(st.integers(first + 1, len(lines) - 1), label="second")
        lines[first], lines[second] = lines[second], lines[first]
        log.path.write_bytes(b"".join(lines))
        assert not log.verify([KEY.public_key]).ok


@SETTINGS
@given(st.lists(events, min_size=1, max_size=6), st.binary(min_size=1, max_size=40))
def test_garbage_after_the_last_checkpoint_is_a_torn_tail_the_next_append_sets_aside(
    history: list[AuditEvent], garbage: bytes
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        log = write_log(Path(directory), history, checkpoint_every=100)
        garbage = garbage.replace(b"\n", b" ")  # one unfinished line, as a crash leaves
        with log.path.open("ab") as handle:
            handle.write(garbage)
        torn = log.verify([KEY.public_key])
        assert not torn.ok and torn.torn_tail is not None and not torn.tampered
        log.append(history[0])
        log.write_checkpoint(KEY, [KEY.public_key])
        healed = log.verify([KEY.public_key])
        assert healed.ok, healed.problems
        kinds = [entry.event.kind for entry in log.entries()]
        assert kinds[len(history)] is EventKind.RECOVERY
