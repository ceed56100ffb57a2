"""Store files: never opened through a link, only regular files the user owns; secrets 0600."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from stores.errors import InsecureSecretFile, UnsafeStoreFile
from stores.files import (
    create_private_file,
    make_private_directory,
    open_store_file,
    read_secret_file,
    read_store_file,
)

SECRET = b"a victim's secret"


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    path = tmp_path / "victim"
    path.write_bytes(SECRET)
    return path


def test_a_link_is_refused_for_reading_and_writing(tmp_path: Path, victim: Path) -> None:
    link = tmp_path / "store.jsonl"
    link.symlink_to(victim)
    for flags in (os.O_RDONLY, os.O_RDWR | os.O_APPEND | os.O_CREAT):
        with pytest.raises(UnsafeStoreFile, match=f"{link}: is a symbolic link"):
            open_store_file(link, flags)
    with pytest.raises(UnsafeStoreFile):
        read_store_file(link)
    assert victim.read_bytes() == SECRET


def test_a_dangling_link_is_not_created_through(tmp_path: Path) -> None:
    target = tmp_path / "would-be-created"
    link = tmp_path / "store.jsonl"
    link.symlink_to(target)
    with pytest.raises(UnsafeStoreFile, match="symbolic link"):
        open_store_file(link, os.O_RDWR | os.O_CREAT)
    assert not target.exists()


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "store.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(UnsafeStoreFile, match="is a FIFO, not a regular file"):
        read_store_file(fifo)
    with pytest.raises(UnsafeStoreFile, match="is a FIFO"):
        open_store_file(fifo, os.O_RDWR | os.O_APPEND)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "store.jsonl"
    directory.mkdir()
    for flags in (os.O_RDONLY, os.O_RDWR | os.O_APPEND | os.O_CREAT):
        with pytest.raises(UnsafeStoreFile, match="is a directory"):
            open_store_file(directory, flags)


def test_a_linked_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "store.jsonl").write_bytes(b"{}\n")
    (tmp_path / "linked").symlink_to(real)
    with pytest.raises(UnsafeStoreFile, match="linked: is a symbolic link"):
        read_store_file(tmp_path / "linked" / "store.jsonl")


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file away needs root")
def test_a_file_owned_by_someone_else_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.jsonl"
    path.write_bytes(b"{}\n")
    os.chown(path, 4242, -1)
    with pytest.raises(UnsafeStoreFile, match="is owned by uid 4242"):
        read_store_file(path)


def test_a_missing_store_file_reads_as_none(tmp_path: Path) -> None:
    assert read_store_file(tmp_path / "absent.json") is None
    with pytest.raises(FileNotFoundError):
        read_secret_file(tmp_path / "absent.pem")


def test_a_secret_open_to_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(SECRET)
    path.chmod(0o640)
    with pytest.raises(InsecureSecretFile, match=r"\(mode 0640\); run: chmod 600"):
        read_secret_file(path)
    path.chmod(0o600)
    assert read_secret_file(path) == SECRET


def test_private_files_are_0600_whatever_the_umask_and_never_replace(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        make_private_directory(tmp_path / "keys" / "deeper")
        path = tmp_path / "keys" / "deeper" / "a.pem"
        create_private_file(path, SECRET)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    with pytest.raises(FileExistsError):
        create_private_file(path, b"other")
    assert path.read_bytes() == SECRET
    assert [p.name for p in path.parent.iterdir()] == ["a.pem"]  # no temporary left behind


def test_a_private_file_is_not_published_through_a_link(tmp_path: Path, victim: Path) -> None:
    link = tmp_path / "a.pem"
    link.symlink_to(victim)
    with pytest.raises(FileExistsError):
        create_private_file(link, b"overwrite")
    assert victim.read_bytes() == SECRET
