"""``custodian data add --encrypt``, ``data keygen``, ``data rekey`` and sealed ingestion,
against a real git + DVC project and real AES-GCM."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from privacy.encryption import MAGIC, DataKey, read_header
from tests.conftest import custodian, dvc, run
from tests.sealed import add_encrypted, clinic_csv, files_containing, new_key, use_key

DVC_FILE = "datasets/clinic.csv.enc.dvc"
SEALED = "datasets/clinic.csv.enc"


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    return tmp_path / "keys"  # outside the project: where keys belong


@pytest.fixture
def plaintext(tmp_path: Path) -> Path:
    path = tmp_path / "export" / "clinic.csv"
    path.parent.mkdir()
    path.write_text(clinic_csv())
    return path


@pytest.fixture
def sealed(project: Path, keys: Path, plaintext: Path, monkeypatch: pytest.MonkeyPatch) -> DataKey:
    """``clinic`` registered encrypted under a fresh key, which the CLI runs are given."""
    key = new_key(keys / "data.key", project)
    use_key(monkeypatch, keys / "data.key")
    result = add_encrypted(project, plaintext)
    assert result.returncode == 0, result.stderr
    # Ingest reads the datasets the pipeline uses: clinic is one as a check reference.
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["check"]["references"] = ["clinic"]
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    return key


def decrypt_independently(blob: bytes, key: DataKey) -> bytes:
    """The documented format read with the bare AES-GCM primitive, not privacy.encryption."""
    header = read_header(blob, where="test")
    return AESGCM(key.secret).decrypt(header.nonce, blob[header.size :], blob[: header.size])


def test_add_encrypt_tracks_only_ciphertext_and_records_the_key_id(
    project: Path, sealed: DataKey, plaintext: Path, keys: Path
) -> None:
    meta = yaml.safe_load((project / DVC_FILE).read_text())["meta"]["custodian"]
    assert meta["encryption"] == {"algorithm": "AES-256-GCM", "format": 1, "key_id": sealed.key_id}
    assert meta["sha256"] == hashlib.sha256(plaintext.read_bytes()).hexdigest()
    assert meta["rows"] == 300
    blob = (project / SEALED).read_bytes()
    assert blob.startswith(MAGIC)
    assert decrypt_independently(blob, sealed) == plaintext.read_bytes()
    assert read_header(blob, where="t").context == "clinic"
    assert plaintext.is_file()  # outside the project, left to its owner
    # git sees the .dvc file, never data; DVC's cache holds the ciphertext only.
    assert "clinic.csv.enc" in (project / "datasets/.gitignore").read_text()
    assert not (project / "datasets/clinic.csv").exists()
    lines = [line.encode() for line in plaintext.read_text().splitlines()]
    assert files_containing([project], lines) == []
    assert files_containing([plaintext.parent], lines) == [plaintext]  # the search can find it
    # The key's bytes are nowhere in the project (records, audit log, cache).
    secret = (keys / "data.key").read_text().strip().encode()
    assert files_containing([project], [secret, sealed.secret, sealed.secret.hex().encode()]) == []

    listed = json.loads(custodian("data", "list", "--json", cwd=project, check=True).stdout)
    by_name = {item["name"]: item for item in listed}
    assert by_name["clinic"]["encryption"]["key_id"] == sealed.key_id
    assert by_name["randhie"]["encryption"] is None


def test_plaintext_inside_the_project_needs_remove_plaintext(
    project: Path, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new_key(keys / "data.key", project)
    use_key(monkeypatch, keys / "data.key")
    inside = project / "datasets" / "clinic.csv"
    inside.write_text(clinic_csv())
    refused = add_encrypted(project, inside)
    assert refused.returncode == 2, refused.stderr
    assert "inside the project" in refused.stderr and "--remove-plaintext" in refused.stderr
    assert not (project / SEALED).exists() and not (project / DVC_FILE).exists()

    # Registered in plaintext already: refused, since removing the file would
    # leave that registration dangling and its content in the DVC cache.
    plain = custodian(
        "data", "add", "datasets/clinic.csv", "--name", "clinic_plain", "--license", "MIT",
        "--source", "x", cwd=project,
    )  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    tracked = add_encrypted(project, inside, "--remove-plaintext")
    assert tracked.returncode == 2 and "already registered in plaintext" in tracked.stderr
    assert inside.is_file() and not (project / SEALED).exists()
    dvc("remove", "datasets/clinic.csv.dvc", cwd=project)

    result = add_encrypted(project, inside, "--remove-plaintext")
    assert result.returncode == 0, result.stderr
    assert not inside.exists() and (project / SEALED).is_file()
    assert "not securely erased" in result.stdout


def test_add_encrypt_without_a_key_writes_nothing(
    project: Path, plaintext: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CUSTODIAN_DATA_KEY", raising=False)
    monkeypatch.delenv("CUSTODIAN_DATA_KEY_FILE", raising=False)
    result = add_encrypted(project, plaintext)
    assert result.returncode == 2
    assert "no data key: set CUSTODIAN_DATA_KEY_FILE" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (project / SEALED).exists() and not (project / DVC_FILE).exists()


def test_remove_plaintext_needs_encrypt(project: Path) -> None:
    (project / "datasets/clinic.csv").write_text(clinic_csv())
    result = custodian(
        "data", "add", "datasets/clinic.csv", "--license", "MIT", "--source", "x",
        "--remove-plaintext", cwd=project,
    )  # fmt: skip
    assert result.returncode == 2 and "only goes with --encrypt" in result.stderr


def test_keygen_writes_mode_0600_outside_the_project_only(project: Path, keys: Path) -> None:
    key = new_key(keys / "a.key", project)
    assert stat.S_IMODE((keys / "a.key").stat().st_mode) == 0o600
    assert len(key.key_id) == 16
    inside = custodian("data", "keygen", "data.key", cwd=project)
    assert inside.returncode == 2 and "never lives inside the project" in inside.stderr
    assert not (project / "data.key").exists()


def test_ingest_decrypts_in_memory_and_writes_ciphertext(
    project: Path, sealed: DataKey, plaintext: Path
) -> None:
    run(["git", "add", "-A"], cwd=project)
    dvc("repro", "ingest", cwd=project)
    out = project / "data/ingested"
    assert not (out / "clinic.csv").exists()
    blob = (out / "clinic.csv.enc").read_bytes()
    assert blob != (project / SEALED).read_bytes()  # re-encrypted with a fresh nonce
    assert decrypt_independently(blob, sealed) == plaintext.read_bytes()
    record = json.loads((out / "clinic.provenance.json").read_text())
    assert record["encryption"]["key_id"] == sealed.key_id
    assert record["sha256"] == hashlib.sha256(plaintext.read_bytes()).hexdigest()
    # The public default dataset is untouched: plaintext, and no encryption field at all.
    assert "encryption" not in json.loads((out / "randhie.provenance.json").read_text())
    assert (out / "randhie.csv").read_bytes().startswith(b"plan,site")

    # Loose sealed files on the command line are decrypted too: the same file on
    # both sides is all exact duplicates.
    adhoc = custodian("check", "--train", SEALED, "--test", SEALED, "--json", cwd=project)
    assert adhoc.returncode == 1, adhoc.stderr
    found = {f["type"]: f["count"] for f in json.loads(adhoc.stdout)["findings"]}
    assert found["exact_duplicate"] == 300


def ingest(project: Path, out: str = "out"):
    return custodian("ingest", "--out", out, cwd=project)


def test_wrong_or_missing_key_and_tampering_are_refused_with_nothing_written(
    project: Path, sealed: DataKey, keys: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = new_key(keys / "other.key", project)
    use_key(monkeypatch, keys / "other.key")
    wrong = ingest(project)
    assert wrong.returncode == 2
    assert f"encrypted under data key {sealed.key_id}" in wrong.stderr
    assert f"the data key given is {other.key_id}" in wrong.stderr

    monkeypatch.delenv("CUSTODIAN_DATA_KEY_FILE")
    missing = ingest(project)
    assert missing.returncode == 2 and "no data key" in missing.stderr

    use_key(monkeypatch, keys / "data.key")
    path = project / SEALED
    original = path.read_bytes()
    # One flipped bit in the ciphertext (every region of the file: tests/privacy).
    damaged = bytearray(original)
    damaged[len(original) // 2] ^= 0x01
    path.write_bytes(bytes(damaged))
    tampered = ingest(project)
    assert tampered.returncode == 1, tampered.stderr
    assert "authentication failed: file tampered or wrong key" in tampered.stderr
    path.write_bytes(clinic_csv().encode())
    swapped = ingest(project)
    assert swapped.returncode == 1 and "plaintext refused" in swapped.stderr
    for result in (wrong, missing, tampered, swapped):
        assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert not (project / "out").exists()

    path.write_bytes(original)
    assert ingest(project).returncode == 0


def test_rekey_moves_the_dataset_to_the_new_key_and_resumes_after_interruption(
    project: Path, sealed: DataKey, keys: Path, plaintext: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    new = new_key(keys / "new.key", project)
    before_dvc = (project / DVC_FILE).read_text()
    before_md5 = yaml.safe_load(before_dvc)["outs"][0]["md5"]

    monkeypatch.setenv("CUSTODIAN_NEW_DATA_KEY_FILE", str(keys / "data.key"))
    same = custodian("data", "rekey", "clinic", cwd=project)
    assert same.returncode == 2 and "the new data key is the current one" in same.stderr

    monkeypatch.setenv("CUSTODIAN_NEW_DATA_KEY_FILE", str(keys / "new.key"))
    result = custodian("data", "rekey", "clinic", cwd=project)
    assert result.returncode == 0, result.stderr
    assert f"from data key {sealed.key_id} to {new.key_id}" in result.stdout
    content = yaml.safe_load((project / DVC_FILE).read_text())
    assert content["meta"]["custodian"]["encryption"]["key_id"] == new.key_id
    assert content["outs"][0]["md5"] != before_md5  # DVC tracks the new ciphertext
    blob = (project / SEALED).read_bytes()
    assert read_header(blob, where="t").key_id == new.key_id
    assert decrypt_independently(blob, new) == plaintext.read_bytes()

    # Interrupted after the file was rewritten, before its record: rekey again finishes it.
    use_key(monkeypatch, keys / "data.key")
    (project / DVC_FILE).write_text(before_dvc)
    assert "finish `custodian data rekey`" in ingest(project).stderr
    resumed = custodian("data", "rekey", "clinic", cwd=project)
    assert resumed.returncode == 0, resumed.stderr
    content = yaml.safe_load((project / DVC_FILE).read_text())
    assert content["meta"]["custodian"]["encryption"]["key_id"] == new.key_id
    assert decrypt_independently((project / SEALED).read_bytes(), new) == plaintext.read_bytes()

    public = custodian("data", "rekey", "randhie", cwd=project)
    assert public.returncode == 2 and "randhie is not encrypted" in public.stderr
