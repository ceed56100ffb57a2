"""A sensitive dataset through the pipeline, ``dvc push`` to a local (shared-filesystem)
remote and ``dvc pull`` into a fresh clone: the cache and the remote hold only ciphertext."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from privacy.encryption import MAGIC, decrypt_bytes
from tests.conftest import custodian, dvc, run
from tests.sealed import (
    add_encrypted,
    clinic_csv,
    files_containing,
    new_key,
    plaintext_needles,
    use_key,
)

pytestmark = pytest.mark.slow

SEALED_OUTS = (
    "datasets/clinic.csv.enc",
    "data/ingested/clinic.csv.enc",
    "data/split/train.csv.enc",
    "data/split/val.csv.enc",
    "data/split/test.csv.enc",
)


def sealed_objects(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and p.read_bytes().startswith(MAGIC)]


def test_sensitive_dataset_round_trips_through_a_local_remote_as_ciphertext_only(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = new_key(tmp_path / "keys/data.key", project)
    use_key(monkeypatch, tmp_path / "keys/data.key")
    text = clinic_csv()
    plaintext = tmp_path / "export/clinic.csv"
    plaintext.parent.mkdir()
    plaintext.write_text(text)
    assert add_encrypted(project, plaintext).returncode == 0
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["dataset"] = "clinic"
    # The clinic file's 105 training patients: the pre-flight refuses a sample rate above 0.1,
    # a delta above policy.max_delta, slices of columns the dataset does not have, and a
    # model with fewer parameters than the white-box audit's canaries.
    params["train"]["batch_size"] = 10
    params["train"]["hidden"] = [64, 64]
    params["privacy"]["delta"] = 1e-5
    params["evaluate"]["slices"] = {"age": [50], "income_k": [100]}
    params["evaluate"]["min_slice_rows"] = 5
    params["policy"]["min_slice_rows"] = 5
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(["git", "add", "-A"], cwd=project)

    dvc("repro", "train", cwd=project)
    for name in SEALED_OUTS:
        assert (project / name).read_bytes().startswith(MAGIC), name
    assert not (project / "data/split/train.csv").exists()
    privacy = json.loads((project / "reports/privacy.json").read_text())
    assert privacy["dataset_sha256"] == hashlib.sha256(text.encode()).hexdigest()

    # A public file tracked beside the sealed ones: the search must find its plaintext.
    public_row = b"public,row,0123456789"
    (project / "public.csv").write_bytes(b"a,b,c\n" + public_row + b"\n")
    dvc("add", "public.csv", cwd=project)
    remote = tmp_path / "shared/dvc-remote"
    dvc("remote", "add", "-d", "shared", str(remote), cwd=project)
    run(["git", "add", "-A"], cwd=project)
    run(["git", "commit", "-qm", "sensitive clinic data, trained"], cwd=project)
    dvc("push", cwd=project)

    needles = plaintext_needles(text)
    cache, stores = project / ".dvc/cache", [project / ".dvc/cache", remote]
    assert files_containing(stores, needles) == []
    # The search does look inside them: the public file is there in plaintext.
    assert files_containing([cache], [public_row]) and files_containing([remote], [public_row])
    # Exactly the five sealed files, each stored once, went to the remote.
    assert len(sealed_objects(remote)) == len(SEALED_OUTS)

    # A colleague on the shared filesystem: a fresh clone, its own cache, the same remote.
    clone = tmp_path / "colleague"
    run(["git", "clone", "-q", str(project), str(clone)], cwd=tmp_path)
    # Up to train: the committed dvc.lock also names an audit manifest this test never built.
    dvc("pull", "--with-deps", "train", cwd=clone)
    assert files_containing([clone / ".dvc/cache"], needles) == []
    assert "up to date" in dvc("status", "train", cwd=clone).stdout
    for name in SEALED_OUTS:
        assert (clone / name).read_bytes() == (project / name).read_bytes(), name

    # Rerun on the pulled data: the stages decrypt it with the shared key and
    # reproduce the same plaintext under fresh nonces.
    dvc("repro", "--force", "check", cwd=clone)
    for name in SEALED_OUTS[1:]:
        pulled, rerun = (project / name).read_bytes(), (clone / name).read_bytes()
        assert pulled != rerun, name
        context = json.loads((clone / name.replace(".csv.enc", ".provenance.json")).read_text())[
            "name"
        ]
        assert decrypt_bytes(pulled, key, context=context, where=name) == decrypt_bytes(
            rerun, key, context=context, where=name
        )
    assert files_containing([clone / ".dvc/cache"], needles) == []

    # Without the key, or with another one, the pulled data stays shut.
    monkeypatch.setenv("CUSTODIAN_DATA_KEY", "00" * 32)
    monkeypatch.delenv("CUSTODIAN_DATA_KEY_FILE")
    wrong = custodian("split", "--ingested", "data/ingested", "--out", "elsewhere", cwd=clone)
    assert wrong.returncode == 2
    assert f"encrypted under data key {key.key_id}, but the data key given is" in wrong.stderr
    monkeypatch.delenv("CUSTODIAN_DATA_KEY")
    missing = custodian("split", "--ingested", "data/ingested", "--out", "elsewhere", cwd=clone)
    assert missing.returncode == 2 and "no data key" in missing.stderr
    assert not (clone / "elsewhere").exists()
