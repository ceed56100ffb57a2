"""The bad-input catalogue: every user mistake is one clear line, an exit code, and nothing else.

Each case sets up one mistake in a fresh copy of a project whose data stages
and a one-epoch training run are already done, runs one ``custodian`` command,
and checks that:

- the exit code is the expected one (2 for bad input or usage, 1 where a check,
  policy, signature or budget said no);
- stderr is exactly one line, naming the file and the field, with no traceback;
- no file of the project was added, changed or removed (no partial output, no
  ``*.tmp`` left behind), and the privacy ledger spent nothing;
- a command that logs (every state-changing one) appended its ``command_started``
  event and a ``command_failed`` / ``refused`` event carrying that same line;
  read-only commands (``audit verify``, ``data list``) and commands refused because the
  log itself cannot be extended append nothing.

The commands run in this process through the console script's entry point
(:func:`custodian.cli.main`): the same exit codes and stderr, without paying
the CLI's seconds of imports per case. One test runs a subprocess with
``--debug`` to show the traceback is there when asked for.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
import rfc8785
import yaml

from audits.keys import SigningKey
from audits.log import EventKind
from custodian.cli.main import main
from custodian.project import Project
from privacy.ledger import LedgerCorrupted, PrivacyLedger
from tests.conftest import custodian, dvc, make_project

pytestmark = pytest.mark.slow

CLINIC = "id,year,age,y\n1,2020,30,0\n1,2021,31,1\n2,2020,40,1\n3,2021,50,0\n"
CLINIC_DVC = "datasets/clinic.csv.dvc"
TRAIN = ("train", "--splits", "data/split", "--model-dir", "models")
TRAIN += ("--report", "reports/privacy.json", "--curve", "reports/train_curve.json")
INGEST = ("ingest", "--out", "data/ingested")
SKIPPED = {".git", ".custodian"}  # history, and the evidence checked separately
SKIPPED_DVC = {"tmp", "cache"}


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def invoke(*args: str, cwd: Path) -> Result:
    """``custodian ARGS`` through the console script's entry point, in this process.

    An exception that escapes ``main`` (a traceback for the user) fails the test here.
    """
    out, err = io.StringIO(), io.StringIO()
    previous = Path.cwd()
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err), pytest.raises(SystemExit) as exit_:
            main(list(args))
    finally:
        os.chdir(previous)
    code = exit_.value.code
    return Result(code if isinstance(code, int) else 1, out.getvalue(), err.getvalue())


# --------------------------------------------------------------------------- the base project


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Data stages and one epoch of training done; a small dataset registered with ``data add``."""
    root = tmp_path_factory.mktemp("bad-input")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CUSTODIAN_HOME", str(root / "home"))
        project = make_project(root / "project")
        set_param(project, "train", "epochs", 1)
        dvc("repro", "train", cwd=project)
        (project / "datasets/clinic.csv").write_text(CLINIC)
        added = invoke(
            "data", "add", "datasets/clinic.csv", "--license", "CC-BY-4.0",
            "--source", "https://example.org/clinic.csv", "--label", "y", cwd=project,
        )  # fmt: skip
        assert added.returncode == 0, added.stderr
    yield root


@pytest.fixture
def copy(base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the base project and of its $CUSTODIAN_HOME; returns the project."""
    # DVC's cache is left behind: no case reads it, and it is most of the bytes.
    shutil.copytree(
        base,
        tmp_path / "copy",
        symlinks=True,
        ignore=lambda directory, names: ["cache"] if directory.endswith("/.dvc") else [],
    )
    monkeypatch.setenv("CUSTODIAN_HOME", str(tmp_path / "copy" / "home"))
    monkeypatch.setenv("CUSTODIAN_ACTOR", "tester")
    monkeypatch.delenv("DVC_STAGE", raising=False)
    return tmp_path / "copy" / "project"


# --------------------------------------------------------------------------- set-up helpers


def set_param(project: Path, section: str, key: str, value: object) -> None:
    path = project / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params[section][key] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def write(name: str, content: bytes | str) -> Callable[[Path], None]:
    data = content.encode() if isinstance(content, str) else content
    return lambda project: (project / name).write_bytes(data)


def param(section: str, key: str, value: object) -> Callable[[Path], None]:
    return lambda project: set_param(project, section, key, value)


def edit_yaml(name: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        content = yaml.safe_load((project / name).read_text())
        change(content)
        (project / name).write_text(yaml.safe_dump(content, sort_keys=False))

    return setup


def edit_meta(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """Edit the Custodian record in clinic.csv.dvc's ``meta`` by hand."""
    return edit_yaml(CLINIC_DVC, lambda content: change(content["meta"]["custodian"]))


def used_by_pipeline(setup: Callable[[Path], None]) -> Callable[[Path], None]:
    """``setup``, with clinic a check reference: ingest checks only the datasets in use."""
    reference = edit_yaml("params.yaml", lambda p: p["check"].update(references=["clinic"]))

    def both(project: Path) -> None:
        setup(project)
        reference(project)

    return both


def edit_split(change: Callable[[pd.DataFrame], None]) -> Callable[[Path], None]:
    """Change data/split/train.csv and re-pin its provenance hash, as a forged or waived split.

    The hash is updated so that the mistake reaches the trainer's own checks
    instead of stopping at the content-hash check.
    """

    def setup(project: Path) -> None:
        csv = project / "data/split/train.csv"
        frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
        change(frame)
        content = frame.to_csv(index=False, lineterminator="\n").encode()
        csv.write_bytes(content)
        record_path = project / "data/split/train.provenance.json"
        record = json.loads(record_path.read_text())
        record["sha256"] = hashlib.sha256(content).hexdigest()
        record_path.write_text(json.dumps(record))

    return setup


def cell(column: str, value: str, row: int = 0) -> Callable[[Path], None]:
    def change(frame: pd.DataFrame) -> None:
        frame.loc[row, column] = value

    return edit_split(change)


def every_row(column: str, value: str) -> Callable[[Path], None]:
    def change(frame: pd.DataFrame) -> None:
        frame[column] = value

    return edit_split(change)


def unfinished_run(damage: Callable[[Path], None]) -> Callable[[Path], None]:
    """Make the base's training run look interrupted (no done.json), then damage its files."""

    def setup(project: Path) -> None:
        (run_dir,) = (project / ".custodian/runs").iterdir()
        (run_dir / "done.json").unlink()
        damage(run_dir)

    return setup


def flip_tensor_byte(run_dir: Path) -> None:
    (tensors,) = run_dir.glob("checkpoint-*.safetensors")
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tensors.write_bytes(bytes(data))


def truncate_pointer(run_dir: Path) -> None:
    pointer = run_dir / "checkpoint.json"
    pointer.write_bytes(pointer.read_bytes()[:40])


def _checkpoint_state(project: Path) -> tuple[Path, dict]:
    path = project / ".custodian/audit/checkpoint.json"
    return path, json.loads(path.read_text())


def sign_with_wrong_key(project: Path) -> None:
    path, state = _checkpoint_state(project)
    head = state["checkpoint"]["tree_head"]  # still names the pipeline key's fingerprint
    signature = SigningKey.generate().sign(rfc8785.dumps(head))
    state["checkpoint"]["signature"] = base64.b64encode(signature).decode()
    path.write_text(json.dumps(state))


def corrupt_signature(project: Path) -> None:
    path, state = _checkpoint_state(project)
    signature = bytearray(base64.b64decode(state["checkpoint"]["signature"]))
    signature[0] ^= 0x01
    state["checkpoint"]["signature"] = base64.b64encode(bytes(signature)).decode()
    path.write_text(json.dumps(state))


def sign_with_unknown_key(project: Path) -> None:
    # The pipeline's key is in the local store (people's keys are in the committed one).
    trusted = Project(project).local_trust_store().trusted_keys()
    Project(project).audit_log().write_checkpoint(SigningKey.generate(), trusted)


def revoke_pipeline_key(project: Path) -> None:
    result = invoke("keys", "revoke", "pipeline", "--reason", "copied to a laptop", cwd=project)
    assert result.returncode == 0, result.stderr


def expose_pipeline_key(project: Path) -> None:
    os.chmod(Path(os.environ["CUSTODIAN_HOME"]) / "keys/pipeline.pem", 0o644)


def garble_log_line(number: int) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        path = Project(project).audit_log_path
        lines = path.read_bytes().splitlines(keepends=True)
        lines[number] = b'{"seq": "garbage"\n'
        path.write_bytes(b"".join(lines))

    return setup


def garble_ledger(project: Path) -> None:
    path = Project(project).privacy_ledger_path
    lines = path.read_bytes().splitlines(keepends=True)
    lines[0] = b"not json at all\n"
    path.write_bytes(b"".join(lines))


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(project: Path) -> None:
        for step in setups:
            step(project)

    return setup


def add(path: str, *extra: str) -> tuple[str, ...]:
    return ("data", "add", path, "--license", "CC-BY-4.0", "--source", "https://x.org/d", *extra)


# --------------------------------------------------------------------------- the catalogue


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path], None] | None
    args: tuple[str, ...]
    code: int
    named: tuple[str, ...]  # substrings of the one stderr line: the file, the field
    logged: bool = True  # the command appends started + failed/refused events
    extra: dict = field(default_factory=dict)


def nothing(project: Path) -> None:
    """No set-up: the mistake is in the command line."""


CASES = [
    # ---- data files, at registration (custodian data add)
    Case("data-missing", nothing, add("datasets/none.csv"), 2, ("datasets/none.csv", "not found")),
    Case("data-empty", write("datasets/e.csv", ""), add("datasets/e.csv"), 2,
         ("datasets/e.csv", "empty")),
    Case("data-header-only", write("datasets/h.csv", "a,b\n"), add("datasets/h.csv"), 2,
         ("datasets/h.csv", "header only")),
    Case("data-ragged-rows", write("datasets/r.csv", "a,b\n1,2\n3\n"), add("datasets/r.csv"), 2,
         ("datasets/r.csv", "line 3", "1 fields")),
    Case("data-wrong-delimiter", write("datasets/s.csv", "a;b\n1;2\n"), add("datasets/s.csv"), 2,
         ("datasets/s.csv", "header", "comma-separated")),
    Case("data-not-utf8", write("datasets/l.csv", b"a,b\n\xe9t\xe9,2\n"), add("datasets/l.csv"),
         2, ("datasets/l.csv", "not UTF-8", "byte 4")),
    Case("data-duplicate-columns", write("datasets/d.csv", "a,a\n1,2\n"), add("datasets/d.csv"),
         2, ("datasets/d.csv", "duplicate column name 'a'")),
    Case("data-role-names-missing-column", write("datasets/k.csv", "a,b\n1,0\n2,1\n"),
         add("datasets/k.csv", "--label", "outcome"), 2, ("datasets/k.csv", "unknown column",
                                                            "outcome")),
    Case("data-infinite-value", write("datasets/i.csv", "a,y\n1,0\ninf,1\n"),
         add("datasets/i.csv"), 2, ("datasets/i.csv", "column 'a'", "infinite", "line 3")),
    Case("data-absurd-float", write("datasets/f.csv", "a,y\n1e400,0\n2,1\n"),
         add("datasets/f.csv"), 2, ("datasets/f.csv", "column 'a'", "float64", "line 2")),
    Case("data-absurd-integer", write("datasets/g.csv", "a,y\n1,0\n99999999999999999999999,1\n"),
         add("datasets/g.csv"), 2, ("datasets/g.csv", "column 'a'", "64-bit", "line 3")),
    Case("data-label-one-class", write("datasets/o.csv", "a,y\n1,1\n2,1\n"),
         add("datasets/o.csv", "--label", "y"), 2, ("datasets/o.csv", "column 'y'",
                                                    "single class")),
    Case("data-label-missing-value", write("datasets/m.csv", "a,y\n1,1\n2,\n"),
         add("datasets/m.csv", "--label", "y"), 2, ("datasets/m.csv", "column 'y'",
                                                    "missing", "line 3")),
    Case("data-license-malformed", write("datasets/b.csv", "a,b\n1,2\n"),
         ("data", "add", "datasets/b.csv", "--license", "(AND 0", "--source", "x"), 2,
         ("data add", "license", "not a valid SPDX expression")),
    Case("data-name-is-a-path", write("datasets/n.csv", "a,b\n1,2\n"),
         add("datasets/n.csv", "--name", "../n"), 2, ("data add", "name", "pattern")),
    # ---- data files, in an ad hoc check
    Case("check-non-numeric-in-numeric-column",
         both(write("tr.csv", "id,x,y\n1,1.5,0\n2,2.5,1\n"), write("te.csv", "id,x,y\n3,4O,1\n")),
         ("check", "--train", "tr.csv", "--test", "te.csv", "--label", "y"), 2,
         ("tr.csv", "te.csv", "column 'x'", "non-numeric", "row 0")),
    Case("check-missing-file", write("tr.csv", "id,x\n1,2\n"),
         ("check", "--train", "tr.csv", "--test", "nope.csv"), 2, ("nope.csv", "not found")),
    # ---- data files, in the pipeline's own splits (as if a failing validation had been waived)
    Case("train-non-numeric-feature", cell("mhi", "high"), TRAIN, 2,
         ("data/split/train.csv", "column 'mhi'", "non-numeric")),
    Case("train-missing-value-in-non-nullable", cell("mhi", ""), TRAIN, 2,
         ("data/split/train.csv", "column 'mhi'", "missing values", "nullable")),
    Case("train-nan-in-non-nullable", cell("mhi", "NaN"), TRAIN, 2,
         ("data/split/train.csv", "column 'mhi'", "missing values")),
    Case("train-infinite-feature", cell("mhi", "-inf", row=3), TRAIN, 2,
         ("data/split/train.csv", "column 'mhi'", "infinite", "line 5")),
    Case("train-label-unseen-class", cell("binexp", "2"), TRAIN, 2,
         ("data/split/train.csv", "label column 'binexp'", "binary")),
    Case("train-label-one-class", every_row("binexp", "1"), TRAIN, 2,
         ("data/split/train.csv", "column 'binexp'", "single class")),
    # ---- metadata
    Case("meta-license-missing", edit_meta(lambda m: m.pop("license")), INGEST, 2,
         (CLINIC_DVC, "meta.custodian.license", "Field required")),
    Case("meta-license-invalid-spdx", edit_meta(lambda m: m.update(license="GPL-9")), INGEST, 2,
         (CLINIC_DVC, "meta.custodian.license", "GPL-9")),
    Case("meta-license-refused-by-policy",
         used_by_pipeline(edit_meta(lambda m: m.update(license="CC-BY-ND-4.0"))), INGEST, 1,
         (CLINIC_DVC, "license 'CC-BY-ND-4.0' refused", "not in policy.allowed_licenses")),
    Case("meta-unknown-column-role",
         edit_meta(lambda m: m["columns"][0].update(role="secret")), INGEST, 2,
         (CLINIC_DVC, "meta.custodian.columns.0.role")),
    Case("meta-hash-edited-by-hand", edit_meta(lambda m: m.update(sha256="0" * 63)), INGEST, 2,
         (CLINIC_DVC, "meta.custodian.sha256")),
    Case("meta-rows-edited-by-hand", used_by_pipeline(edit_meta(lambda m: m.update(rows=5))),
         INGEST, 2,
         (CLINIC_DVC, "rows", "file has 4, the record says 5")),
    Case("meta-edited-read-only-command", edit_meta(lambda m: m.update(name="Clinic!")),
         ("data", "list"), 2, (CLINIC_DVC, "meta.custodian.name"), logged=False),
    Case("declared-column-missing",
         edit_yaml("datasets/randhie.yaml",
                   lambda d: d["columns"].append({"name": "zip", "type": "string"})),
         INGEST, 2, ("datasets/randhie.yaml", "columns", "missing: ['zip']")),
    Case("declaration-unknown-key",
         edit_yaml("datasets/randhie.yaml", lambda d: d.update(licence="MIT")), INGEST, 2,
         ("datasets/randhie.yaml", "licence", "Extra inputs are not permitted")),
    # ---- params
    Case("params-epsilon-zero", param("privacy", "target_epsilon", 0), TRAIN, 2,
         ("params.yaml", "privacy.target_epsilon", "greater than 0")),
    Case("params-epsilon-negative", param("privacy", "lifetime_epsilon", -1), TRAIN, 2,
         ("params.yaml", "privacy.lifetime_epsilon", "greater than 0")),
    Case("params-delta-at-least-1-over-n", param("privacy", "delta", 0.001), TRAIN, 2,
         ("params.yaml", "privacy.delta", "below 1/N")),
    Case("params-batch-larger-than-data", param("train", "batch_size", 10**6), TRAIN, 2,
         ("params.yaml", "train.batch_size", "exceeds", "data/split/train.csv")),
    Case("params-more-canaries-than-parameters", param("train", "hidden", [4]), TRAIN, 2,
         ("params.yaml", "evaluate.audit.canaries", "exceeds the 238 parameters",
          "train.hidden [4]")),
    Case("params-zero-epochs", param("train", "epochs", 0), TRAIN, 2,
         ("params.yaml", "train.epochs", "greater than 0")),
    Case("params-misspelt-key", param("train", "epocs", 3), TRAIN, 2,
         ("params.yaml", "train.epocs", "Extra inputs are not permitted")),
    Case("params-wrong-type", param("train", "batch_size", "big"), TRAIN, 2,
         ("params.yaml", "train.batch_size", "valid integer")),
    Case("params-unknown-precision", param("train", "precision", "fp8"), TRAIN, 2,
         ("params.yaml", "train.precision", "'fp8' is not one of")),
    Case("params-unknown-device", param("train", "device", "tpu"), TRAIN, 2,
         ("params.yaml", "train.device", "'tpu' is not one of auto, cpu, cuda")),
    Case("params-refused-accountant", param("privacy", "accountant", "gdp"), TRAIN, 2,
         ("params.yaml", "privacy.accountant", "refused")),
    Case("params-dataset-is-a-path", param("data", "dataset", "../../etc/passwd"),
         ("split", "--ingested", "data/ingested", "--out", "data/split"), 2,
         ("params.yaml", "data.dataset", "pattern")),
    Case("params-fractions-do-not-sum", param("split", "fractions",
                                              {"train": 0.7, "val": 0.2, "test": 0.2}),
         ("split", "--ingested", "data/ingested", "--out", "data/split"), 2,
         ("params.yaml", "split.fractions", "sum to 1")),
    Case("params-not-yaml", write("params.yaml", "train: [\n"), INGEST, 2,
         ("params.yaml", "not valid YAML")),
    # ---- usage
    Case("usage-misspelt-option", nothing, ("ingest", "--outt", "x"), 2,
         ("custodian ingest", "--outt", "--help")),
    Case("usage-missing-option", nothing, ("data", "add", "datasets/clinic.csv"), 2,
         ("custodian data add", "--license")),
    Case("usage-out-replaces-project", nothing, ("ingest", "--out", "."), 2,
         (".: is the working directory", "refusing to replace")),
    Case("usage-key-name-is-a-path", nothing, ("keys", "generate", "../x", "--role", "reviewer"),
         2, ("key name '../x'",)),
    # ---- crypto (the audit log's signed checkpoints)
    Case("crypto-wrong-key", sign_with_wrong_key, ("audit", "verify"), 1,
         ("checkpoint", "signature does not verify"), logged=False),
    Case("crypto-corrupted-signature", corrupt_signature, ("audit", "verify"), 1,
         ("checkpoint", "signature does not verify"), logged=False),
    Case("crypto-unknown-key", sign_with_unknown_key, ("audit", "verify"), 1,
         ("checkpoint", "which is not trusted"), logged=False),
    Case("crypto-revoked-key", revoke_pipeline_key, ("audit", "verify"), 1,
         ("revoked key 'pipeline'", "copied to a laptop"), logged=False),
    Case("crypto-revoked-key-stops-commands", revoke_pipeline_key, INGEST, 1,
         ("pipeline.pem", "is revoked"), logged=False),
    Case("crypto-key-readable-by-others", expose_pipeline_key, INGEST, 2,
         ("pipeline.pem", "accessible to other users", "chmod 600"), logged=False),
    # ---- files
    Case("file-corrupted-safetensors", unfinished_run(flip_tensor_byte), TRAIN, 2,
         (".safetensors", "SHA-256 differs")),
    Case("file-truncated-checkpoint", unfinished_run(truncate_pointer), TRAIN, 2,
         ("checkpoint.json", "cannot read JSON")),
    Case("file-garbage-in-audit-log-verify", garble_log_line(1), ("audit", "verify"), 1,
         ("entry 1",), logged=False),
    Case("file-garbage-in-audit-log-command", garble_log_line(1), INGEST, 1,
         ("log.jsonl", "refusing to sign"), logged=False),
    Case("file-garbage-in-privacy-ledger", garble_ledger, TRAIN, 1,
         ("privacy-ledger.jsonl", "line 1")),
]  # fmt: skip


def snapshot(project: Path) -> dict[str, str]:
    """SHA-256 of every file a command could have left behind, by relative path."""
    files = {}
    for path in project.rglob("*"):
        parts = path.relative_to(project).parts
        if parts[0] in SKIPPED or (
            parts[0] == ".dvc" and len(parts) > 1 and parts[1] in SKIPPED_DVC
        ):
            continue
        if path.is_file() or path.is_symlink():
            files["/".join(parts)] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir() and not any(path.iterdir()):
            files["/".join(parts) + "/"] = "empty directory"
    return files


def steps_spent(project: Path) -> dict[tuple[str, str], int] | None:
    """Steps the privacy ledger holds per (dataset, run); None if it does not read."""
    try:
        summary = PrivacyLedger(Project(project).privacy_ledger_path).summary()
    except LedgerCorrupted:
        return None
    return {(d.dataset_sha256, r.run_id): r.steps for d in summary for r in d.runs}


def log_entries(project: Path) -> list:
    log = Project(project).audit_log()
    return list(log.entries()) if log.path.exists() else []


def evidence_tmp_files(project: Path) -> list[Path]:
    return [p for p in (project / ".custodian").rglob("*.tmp")]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_and_leaves_nothing(copy: Path, case: Case) -> None:
    if case.setup is not None:
        case.setup(copy)
    before = snapshot(copy)
    spent = steps_spent(copy)
    try:
        entries_before = len(log_entries(copy))
    except Exception:  # noqa: BLE001 - a log garbled on purpose has no countable entries
        entries_before = None

    result = invoke(*case.args, cwd=copy)

    assert result.returncode == case.code, result.stderr
    lines = result.stderr.rstrip("\n").split("\n")
    assert len(lines) == 1, f"stderr is not one line:\n{result.stderr}"
    (line,) = lines
    assert line.startswith("custodian: error: "), line
    assert "Traceback" not in result.stderr
    for part in case.named:
        assert part in line, f"{part!r} not named in: {line}"

    assert snapshot(copy) == before, "the refused command changed the project's files"
    if spent is not None:
        assert steps_spent(copy) == spent, "a refused run spent privacy budget"
    assert not evidence_tmp_files(copy)

    if entries_before is None:
        return
    entries = log_entries(copy)
    if not case.logged:
        assert len(entries) == entries_before, "this command must append nothing"
        return
    assert len(entries) == entries_before + 2
    started, outcome = (entry.event for entry in entries[-2:])
    assert started.kind is EventKind.COMMAND_STARTED
    expected = EventKind.REFUSED if case.code == 1 else EventKind.COMMAND_FAILED
    assert outcome.kind is expected
    # Click's usage errors reach the log without the command path the user sees.
    assert outcome.error and outcome.error in line
    assert outcome.details["invocation"] == started.details["invocation"]
    if spent is not None:  # a garbled ledger fails verification, rightly
        assert invoke("audit", "verify", cwd=copy).returncode == 0, "the refusal is signed evidence"


def test_catalogue_covers_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)


def test_debug_shows_the_traceback(copy: Path) -> None:
    set_param(copy, "train", "epochs", 0)
    quiet = custodian(*TRAIN, cwd=copy)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr
    loud = custodian("--debug", *TRAIN, cwd=copy)
    assert loud.returncode != 0
    assert "Traceback (most recent call last)" in loud.stderr
    assert "InputError: params.yaml: train.epochs" in loud.stderr


def test_a_torn_audit_log_tail_is_reported_then_recorded(copy: Path) -> None:
    """Garbage at the end of the log looks like a crash mid-append: reported, then set aside."""
    path = Project(copy).audit_log_path
    garbage = b'{"event": {"actor": "half a li'
    with path.open("ab") as handle:
        handle.write(garbage)
    torn = invoke("audit", "verify", cwd=copy)
    assert torn.returncode == 1 and "torn last line" in torn.stderr
    assert invoke(*INGEST, cwd=copy).returncode == 0
    recovered = [e.event for e in log_entries(copy) if e.event.kind is EventKind.RECOVERY]
    assert len(recovered) == 1 and recovered[0].details["length"] == len(garbage)
    assert (path.parent / "log.jsonl.torn-1").read_bytes() == garbage
    assert invoke("audit", "verify", cwd=copy).returncode == 0
