"""Atomic writes of files and folders: a crash or an error never leaves a mix, and the rename reaches the disk."""

from __future__ import annotations

import os

import pytest

from mnistkit import fileio
from mnistkit.errors import WriteError


def record_fsyncs(monkeypatch) -> list[str]:
    """The paths fsynced from now on, in order."""
    real_fsync, synced = os.fsync, []

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_a_file_is_synced_then_renamed_then_its_folder_synced(tmp_path, monkeypatch):
    (tmp_path / "a.json").write_text("old")
    synced = record_fsyncs(monkeypatch)
    fileio.write_text(tmp_path / "a.json", "new")
    assert (tmp_path / "a.json").read_text() == "new"
    assert len(synced) == 2 and synced[0].startswith(str(tmp_path / ".a.json.")) and synced[1] == str(tmp_path)
    assert os.listdir(tmp_path) == ["a.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path):
    (tmp_path / "a.json").write_text("old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(tmp_path / "a.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert os.listdir(tmp_path) == ["a.json"] and (tmp_path / "a.json").read_text() == "old"


def test_a_folder_replaces_the_old_one_whole_and_its_parent_is_synced(tmp_path, monkeypatch):
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "old.bin").write_bytes(b"old")
    synced = record_fsyncs(monkeypatch)
    with fileio.atomic_folder(tmp_path / "export") as tmp:
        (tmp / "new.bin").write_bytes(b"new")
    assert os.listdir(tmp_path / "export") == ["new.bin"] and os.listdir(tmp_path) == ["export"]
    assert synced == [str(tmp_path)]


def test_a_folder_that_cannot_be_synced_does_not_fail_the_write(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(22, "Invalid argument")  # as filesystems that cannot sync a folder answer
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fileio.write_text(tmp_path / "a.json", "new")
    assert (tmp_path / "a.json").read_text() == "new"


def test_a_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(WriteError, match="check the folder exists and is writable"):
        fileio.write_text(tmp_path / "gone" / "a.json", "new")
