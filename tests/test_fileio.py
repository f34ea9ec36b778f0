"""Atomic writes of files and folders: a crash or an error never leaves a mix, and the rename reaches the disk; the
temporary files of killed writes are removed by the next write of their name, never a live write's."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

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
    with fileio.atomic_folder(tmp_path / "export", replaces=("old.bin", "new.bin")) as tmp:
        (tmp / "new.bin").write_bytes(b"new")
    assert os.listdir(tmp_path / "export") == ["new.bin"] and os.listdir(tmp_path) == ["export"]
    assert synced == [str(tmp_path)]


def tree(folder) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def test_a_folder_holding_anything_else_is_never_replaced(tmp_path):
    folder = tmp_path / "proj"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "data.csv").write_text("mine")
    (folder / "notes.txt").write_text("mine too")
    (folder / "old.bin").write_bytes(b"old")
    before = tree(tmp_path)
    with pytest.raises(WriteError, match=r"proj: holds notes.txt, sub/, which replacing it would delete"):
        with fileio.atomic_folder(folder, replaces=("old.bin",)) as tmp:
            (tmp / "old.bin").write_bytes(b"new")
    assert tree(tmp_path) == before  # nothing lost, no temporary folder left
    (tmp_path / "file").write_text("a file")
    with pytest.raises(WriteError, match="file: is a file, not a folder"):
        with fileio.atomic_folder(tmp_path / "file"):
            pass
    assert (tmp_path / "file").read_text() == "a file"


def test_files_added_while_the_folder_is_written_stop_the_swap(tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    with pytest.raises(WriteError, match="holds late.txt"):
        with fileio.atomic_folder(folder, replaces=("model.bin",)) as tmp:
            (tmp / "model.bin").write_bytes(b"new")
            (folder / "late.txt").write_text("saved by someone meanwhile")
    assert os.listdir(folder) == ["late.txt"] and os.listdir(tmp_path) == ["export"]


def test_a_link_is_replaced_and_what_it_points_to_kept(tmp_path):
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "model.bin").write_bytes(b"old")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    with fileio.atomic_folder(tmp_path / "link", replaces=("model.bin",)) as tmp:
        (tmp / "model.bin").write_bytes(b"new")
    assert not (tmp_path / "link").is_symlink() and (tmp_path / "link" / "model.bin").read_bytes() == b"new"
    assert (tmp_path / "target" / "model.bin").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["link", "target"]


def test_a_folder_that_cannot_be_synced_does_not_fail_the_write(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(22, "Invalid argument")  # as filesystems that cannot sync a folder answer
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fileio.write_text(tmp_path / "a.json", "new")
    assert (tmp_path / "a.json").read_text() == "new"


def leftover(folder: Path, name: str) -> Path:
    """A temporary file (or, for a name ending in /, folder) as a killed write leaves it."""
    path = folder / name.rstrip("/")
    if name.endswith("/"):
        path.mkdir()
    else:
        path.write_bytes(b"half written")
    return path


def locked(path: Path) -> int:
    """An fd that holds the lock on ``path``, as a live write holds its temporary file's: a lock of its own, as flock
    locks belong to an open file description and not to the process."""
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_write_removes_the_unlocked_temporary_files_of_its_name_only(tmp_path):
    stale = [
        leftover(tmp_path, name) for name in (".a.json.k1ll3d_0.tmp", ".a.json.abcdefgh.tmp", ".a.json.emptydir.tmp/")
    ]
    kept = [
        leftover(tmp_path, name)
        for name in (
            ".a.json.tmp",
            ".a.json.abcdefg.tmp",  # 7 characters: not mkstemp's
            ".a.json.ABCDEFGH.tmp",
            ".a.json.x.abcdefgh.tmp",
            ".b.json.abcdefgh.tmp",
            "a.json.abcdefgh.tmp",
            ".a.json.abcdefgh.tmp.old",
        )
    ]
    live = leftover(tmp_path, ".a.json.live1234.tmp")
    fd = locked(live)
    try:
        fileio.write_text(tmp_path / "a.json", "new")
    finally:
        os.close(fd)
    assert not any(os.path.lexists(path) for path in stale)
    assert sorted(os.listdir(tmp_path)) == sorted(["a.json", live.name, *(path.name for path in kept)])


def test_links_of_a_temporary_name_are_left_and_not_followed(tmp_path):
    (tmp_path / "mine").mkdir()
    target = leftover(tmp_path / "mine", "keep.bin")
    (tmp_path / "mine" / "sub").mkdir()
    for name, to in ((".a.json.filelink.tmp", target), (".a.json.dir_link.tmp", tmp_path / "mine")):
        (tmp_path / name).symlink_to(to)
    before = tree(tmp_path)
    fileio.write_text(tmp_path / "a.json", "new")
    after = tree(tmp_path)
    assert after.pop("a.json") == b"new" and after == before
    assert sorted(os.listdir(tmp_path)) == [".a.json.dir_link.tmp", ".a.json.filelink.tmp", "a.json", "mine"]


def test_a_write_holds_its_temporary_file_until_it_is_renamed(tmp_path):
    with fileio.atomic_path(tmp_path / "a.json") as tmp:
        tmp.write_text("new")
        fileio.remove_stale_temporaries(tmp_path / "a.json")  # another write of the same name, cleaning
        assert tmp.read_text() == "new"
        fd = os.open(tmp, os.O_RDONLY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    with fileio.atomic_folder(tmp_path / "export", replaces=("model.bin",)) as folder:
        (folder / "model.bin").write_bytes(b"new")
        fileio.remove_stale_temporaries(tmp_path / "export", replaces=("model.bin",))
        assert (folder / "model.bin").read_bytes() == b"new"
    assert sorted(os.listdir(tmp_path)) == ["a.json", "export"]


WRITE_AND_WAIT = """
import sys, time
from mnistkit import fileio
with fileio.atomic_path(sys.argv[1]) as tmp:
    tmp.write_text("half written")
    print(tmp, flush=True)
    time.sleep(60)
"""


def test_the_temporary_file_of_a_killed_write_goes_with_the_next_write(tmp_path):
    target = tmp_path / "a.json"
    with subprocess.Popen(
        [sys.executable, "-c", WRITE_AND_WAIT, str(target)], stdout=subprocess.PIPE, text=True
    ) as writer:
        try:
            assert writer.stdout is not None
            tmp = Path(writer.stdout.readline().strip())
            fileio.remove_stale_temporaries(target)
            assert tmp.read_text() == "half written"  # the writer lives: its file stays
        finally:
            writer.kill()  # SIGKILL: it cleans up nothing
    assert tmp.exists()
    fileio.write_text(target, "new")
    assert os.listdir(tmp_path) == ["a.json"]


def test_many_writes_into_one_folder_list_it_once(tmp_path, monkeypatch):
    # Listed at every write, a folder of N files written one by one would cost N² (predict --show-input).
    real_listdir, listed = os.listdir, []
    monkeypatch.setattr(os, "listdir", lambda path: listed.append(path) or real_listdir(path))
    for i in range(50):
        fileio.write_text(tmp_path / f"{i}.json", "new")
    assert listed == [str(tmp_path)]
    stale = leftover(tmp_path, ".7.json.abcdefgh.tmp")  # the folder changed by someone else: listed again
    os.utime(tmp_path, ns=(1, 1))  # its mtime then differs even where the clock's tick is coarser than the test
    fileio.write_text(tmp_path / "7.json", "newer")
    assert len(listed) == 2 and not stale.exists()


def test_a_temporary_file_removed_before_it_was_locked_is_made_again(tmp_path, monkeypatch):
    # Another write's cleaning can find a new temporary file in the moment between its making and its lock.
    real_mkstemp, made = tempfile.mkstemp, []

    def mkstemp_then_cleaned(*args, **kwargs):
        fd, name = real_mkstemp(*args, **kwargs)
        made.append(name)
        if len(made) == 1:
            os.unlink(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp_then_cleaned)
    with fileio.atomic_path(tmp_path / "a.json") as tmp:
        assert str(tmp) == made[1]
        tmp.write_text("new")
    assert os.listdir(tmp_path) == ["a.json"] and (tmp_path / "a.json").read_text() == "new"


def test_without_flock_no_temporary_file_is_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "fcntl", None)  # as on Windows: a live write's file cannot be told from a dead one's
    stale = leftover(tmp_path, ".a.json.abcdefgh.tmp")
    fileio.write_text(tmp_path / "a.json", "new")
    assert sorted(os.listdir(tmp_path)) == [stale.name, "a.json"]


def test_a_folder_write_removes_temporary_folders_holding_only_what_it_writes(tmp_path):
    stale = leftover(tmp_path, ".export.abcdefgh.tmp/")
    leftover(stale, "config.json")
    leftover(stale, ".README.md.12345678.tmp")  # a file write in it, killed too
    foreign = leftover(tmp_path, ".export.12345678.tmp/")
    leftover(foreign, "config.json")
    leftover(foreign, "notes.txt")
    nested = leftover(tmp_path, ".export.nested__.tmp/")
    leftover(nested, "config.json/")
    crashed = leftover(tmp_path, ".export.zyxwvuts.tmp/")  # a whole new folder, the old one set aside beside it
    leftover(crashed, "config.json")
    leftover(tmp_path, ".export.zyxwvuts.old/")
    before = tree(tmp_path)
    with fileio.atomic_folder(tmp_path / "export", replaces=("README.md", "config.json")) as tmp:
        (tmp / "config.json").write_text("new")
    after = tree(tmp_path)
    assert after.pop("export") is None and after.pop("export/config.json") == b"new"
    assert after == {name: data for name, data in before.items() if not name.startswith(stale.name)}


def test_a_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(WriteError, match="check the folder exists and is writable"):
        fileio.write_text(tmp_path / "gone" / "a.json", "new")


def test_a_missing_folder_is_found_before_the_write(tmp_path):
    assert fileio.check_folder_exists(tmp_path / "a.png") == tmp_path / "a.png"
    with pytest.raises(WriteError, match="No such file or directory; check the folder exists and is writable"):
        fileio.check_folder_exists(tmp_path / "gone" / "a.png")
    (tmp_path / "afile").write_text("")
    with pytest.raises(WriteError, match="Not a directory; check the folder exists and is writable"):
        fileio.check_folder_exists(tmp_path / "afile" / "a.png")


def test_a_failed_fill_takes_back_only_a_folder_it_made(tmp_path):
    with pytest.raises(WriteError), fileio.folder_to_fill(tmp_path / "new") as written:
        fileio.write_text(tmp_path / "new" / "a.txt", "a")
        written.append(tmp_path / "new" / "a.txt")
        raise WriteError("cannot write b.txt: No space left on device")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(WriteError), fileio.folder_to_fill(tmp_path / "kept"):
        raise WriteError("cannot write b.txt: No space left on device")
    assert (tmp_path / "kept").is_dir()
    with pytest.raises(WriteError, match="No such file or directory"), fileio.folder_to_fill(tmp_path / "x" / "y"):
        pass


def test_names_that_are_not_utf8_are_written_as_valid_unicode(tmp_path):
    name = os.fsdecode(b"caf\xe9.npz")  # Python keeps the byte that is not UTF-8 as a lone surrogate
    fileio.write_json(tmp_path / "a.json", {"source": name, "checksums": {name: "0"}, "parts": (name, 1, None)})
    text = (tmp_path / "a.json").read_bytes().decode("utf-8")
    assert "\\ud" not in text  # no escaped surrogate, which strict JSON parsers refuse
    shown = "caf\\xe9.npz"
    assert json.loads(text) == {"source": shown, "checksums": {shown: "0"}, "parts": [shown, 1, None]}


def test_valid_utf8_shows_the_bytes_that_are_not_utf8_and_keeps_the_rest():
    assert fileio.valid_utf8(os.fsdecode(b"caf\xe9/\xff")) == "caf\\xe9/\\xff"
    assert fileio.valid_utf8("café ✓ \\x") == "café ✓ \\x"
    assert fileio.valid_utf8("a\ud800") == "a\\ud800"  # a surrogate that no byte of a name became


def test_one_line_escapes_control_characters_as_bytes_are_shown():
    assert fileio.one_line("a\nb\r\tc\x1b[0m\x7f") == "a\\x0ab\\x0d\\x09c\\x1b[0m\\x7f"
    assert fileio.one_line("café ✓ \\x0a") == "café ✓ \\x0a"


def test_a_recorded_name_finds_the_file_whose_bytes_it_shows(tmp_path):
    real = tmp_path / os.fsdecode(b"d\xe9.npz")
    real.write_bytes(b"")
    recorded = fileio.valid_utf8(str(real))
    assert recorded.endswith("d\\xe9.npz") and fileio.recorded_path(recorded) == real
    literal = tmp_path / "e\\x41.npz"  # a name that holds the four characters \x41 is taken as written
    literal.write_bytes(b"")
    assert fileio.recorded_path(str(literal)) == literal
    assert fileio.recorded_path(str(tmp_path / "gone\\xe9")) == tmp_path / "gone\\xe9"


def test_a_path_argument_that_is_no_path_is_named(tmp_path):
    from mnistkit import runs
    from mnistkit.errors import ConfigError
    from mnistkit.inference import Classifier

    assert fileio.given_path(tmp_path, "out") == tmp_path and fileio.given_path("~", "out") == tmp_path.home()
    for value, said in ((None, "must be a path"), (b"run", "must be a path"), (5, "must be a path"), ("", "empty")):
        with pytest.raises(ConfigError, match=said):
            fileio.given_path(value, "folder")
    with pytest.raises(ConfigError, match="folder must be a path"):
        Classifier.load().save_pretrained(None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="dir_or_repo_id must be a path"):
        Classifier.from_pretrained(b"hub")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="out must be a path"):
        runs.create_run_dir(5, "mlp")  # type: ignore[arg-type]


UNDER_A_MEMORY_LIMIT = """
import resource, sys
from mnistkit import fileio
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # the interpreter and torch's libraries fit; 4 GiB not
print(len(fileio.read_regular(sys.argv[1], 4 << 30)), len(fileio.read_pipe(sys.argv[2], 4 << 30)))
"""


def test_a_small_file_is_read_without_a_buffer_of_the_whole_limit(tmp_path):
    (tmp_path / "small.bin").write_bytes(b"x" * 1000)
    os.mkfifo(tmp_path / "pipe")
    with subprocess.Popen(
        [sys.executable, "-c", UNDER_A_MEMORY_LIMIT, tmp_path / "small.bin", tmp_path / "pipe"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as reader:
        with open(tmp_path / "pipe", "wb") as pipe:
            pipe.write(b"y" * 3000)
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0 and out.split() == ["1000", "3000"], err


def test_a_file_growing_while_read_is_read_to_its_limit(tmp_path, monkeypatch):
    path = tmp_path / "growing.bin"
    path.write_bytes(b"x" * 10)
    real_fstat = os.fstat
    monkeypatch.setattr(os, "fstat", lambda fd: os.stat_result((*real_fstat(fd)[:6], 4, *real_fstat(fd)[7:])))
    assert fileio.read_regular(path, 10) == b"x" * 10  # 4 bytes when looked at, 10 when read
    with pytest.raises(OSError, match="grew past the 9 bytes allowed"):
        fileio.read_regular(path, 9)
