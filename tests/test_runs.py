"""Run folders: creating one, and replacing an old run's folder with --overwrite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import unwritable

from mnistkit import runs
from mnistkit.errors import ConfigError


def _old_run(folder):
    """A finished run's files, as a run and its evaluation leave them, and a file of the user's own."""
    (folder / "resume").mkdir(parents=True)
    (folder / "resume" / "state.json").write_text("{}")
    for name in ["metrics.csv", "model.json", "model.safetensors", "curves.png", "confusion.png", "model.onnx"]:
        (folder / name).write_text("old")
    (folder / "config.json").write_text('{"model": "mlp", "epochs": 3}')
    (folder / "model-hf").mkdir()
    (folder / "model-hf" / "model.safetensors").write_text("old")
    (folder / "notes.txt").write_text("mine")
    (folder / "tensorboard").mkdir()
    (folder / "tensorboard" / "events.out.tfevents.1.host").write_text("old")
    (folder / "resume" / "state-0002-000000-0123456789ab.safetensors").write_text("old")


def test_an_existing_run_is_kept_without_overwrite(tmp_path):
    _old_run(tmp_path / "run")
    with pytest.raises(ConfigError, match="pass overwrite"):
        runs.create_run_dir(tmp_path / "run", "mlp")
    assert (tmp_path / "run" / "model.json").read_text() == "old"


def test_overwrite_removes_the_old_runs_files_and_only_those(tmp_path):
    # Left in place, the old run's model and resume state would pass for the new run's: killed before its first
    # checkpoint, the new run would "resume" the old one, or be called finished.
    _old_run(tmp_path / "run")
    run_dir = runs.create_run_dir(tmp_path / "run", "mlp", overwrite=True)
    assert sorted(p.name for p in run_dir.iterdir()) == ["notes.txt"]
    assert (run_dir / "notes.txt").read_text() == "mine"


def test_overwrite_keeps_what_mnistkit_did_not_write_even_in_folders_of_a_run_s_names(tmp_path):
    _old_run(tmp_path / "run")
    (tmp_path / "run" / "resume" / "cv.pdf").write_text("mine")  # --out . in a folder that has a resume/ of its own
    run_dir = runs.create_run_dir(tmp_path / "run", "mlp", overwrite=True)
    assert sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")) == ["notes.txt", "resume", "resume/cv.pdf"]


@pytest.mark.parametrize("theirs", ["config.json", "model.pt", "metrics.csv"])
def test_overwrite_refuses_a_folder_that_holds_a_run_s_file_names_but_no_run(tmp_path, theirs):
    # --out myproject --overwrite: the project's own config.json (or model.pt) is not an old run's to replace.
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / theirs).write_text('{"my": "app settings"}')
    with pytest.raises(ConfigError, match=f"holds {theirs} but no mnistkit run, and overwrite replaces only a run"):
        runs.create_run_dir(tmp_path / "project", "mlp", overwrite=True)
    assert (tmp_path / "project" / theirs).read_text() == '{"my": "app settings"}'


def test_overwrite_takes_a_run_stopped_before_its_first_checkpoint(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"model": "cnn", "epochs": 3}')
    assert list(runs.create_run_dir(tmp_path / "run", "mlp", overwrite=True).iterdir()) == []


def test_an_empty_out_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Path("") is the current folder: an empty out would write the run there
    with pytest.raises(ConfigError, match="out is empty"):
        runs.create_run_dir("", "mlp")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_folder_another_run_is_writing_is_refused(tmp_path, overwrite):
    # Two runs started together both find the folder missing or empty: the one that comes second must not
    # write into it as well, with or without overwrite.
    with runs.writing(tmp_path / "run", "mlp") as run_dir:
        with pytest.raises(ConfigError, match="another mnistkit command is writing this run folder now"):
            runs.create_run_dir(run_dir, "mlp", overwrite=overwrite)
        with pytest.raises(ConfigError, match="another mnistkit command is writing"):
            with runs.hold(run_dir):  # a resume of it
                pass
    assert runs.create_run_dir(run_dir, "mlp") == run_dir  # free again once the first run is done


def test_runs_started_in_the_same_second_get_folders_of_their_own(tmp_path, monkeypatch):
    # The other run creates the name default_run_dir chose between its look and our mkdir.
    monkeypatch.chdir(tmp_path)
    names = iter(["runs/20250101-120000-mlp", "runs/20250101-120000-mlp-2"])
    monkeypatch.setattr(runs, "default_run_dir", lambda model: Path(next(names)))
    with runs.writing(None, "mlp") as other:
        assert other == Path("runs/20250101-120000-mlp")
        names = iter(["runs/20250101-120000-mlp", "runs/20250101-120000-mlp-2"])
        with runs.writing(None, "mlp") as ours:
            assert ours == Path("runs/20250101-120000-mlp-2")


def test_a_refused_run_leaves_no_folder_it_made(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="cannot write there"):
        runs.create_run_dir(tmp_path / "runs" / ("x" * 300), "mlp")  # a name too long for the file system
    assert os.listdir(tmp_path) == []

    def unwritable(path, folders, option):
        raise ConfigError(f"out {path}: cannot write there (permission denied)")

    monkeypatch.setattr(runs, "check_writable", unwritable)  # refused once its folder is made
    (tmp_path / "kept").mkdir()
    for out in (tmp_path / "a" / "b", tmp_path / "kept", tmp_path / "kept" / "new"):
        with pytest.raises(ConfigError, match="permission denied"):
            runs.create_run_dir(out, "mlp")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="permission denied"):
        runs.create_run_dir(None, "mlp")  # runs/<time>-mlp
    assert os.listdir(tmp_path) == ["kept"] and os.listdir(tmp_path / "kept") == []


def test_holding_a_folder_removes_the_temporary_files_of_a_killed_run(tmp_path):
    # A run killed while it wrote its model leaves the model-sized temporary file of fileio.atomic_path behind.
    run_dir = runs.create_run_dir(tmp_path / "run", "mlp")
    stale = [run_dir / ".model.safetensors.k2j4_x0z.tmp", run_dir / ".metrics.csv.x9abcdef.tmp"]
    for path in [*stale, run_dir / ".notes.txt.tmp", run_dir / "model.safetensors"]:
        path.write_text("x")
    with runs.hold(run_dir):
        assert sorted(p.name for p in run_dir.iterdir()) == [".notes.txt.tmp", "model.safetensors"]
        stale[0].write_text("x")  # the holder's own write in progress
        with pytest.raises(ConfigError):
            with runs.hold(run_dir):  # a second run, refused: it must not touch the holder's files
                pass
        assert stale[0].exists()


def _files(folder):
    return {str(p.relative_to(folder)): p.read_text() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_new_run_refused_before_it_starts_leaves_the_old_run_as_it_was(tmp_path):
    _old_run(tmp_path / "run")
    before = _files(tmp_path / "run")
    with pytest.raises(ConfigError, match="bad data"):
        with runs.writing(tmp_path / "run", "mlp", overwrite=True) as run_dir:
            assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == [
                "model-hf",
                "notes.txt",
                "resume",
                "tensorboard",
            ]
            (run_dir / "config.json").write_text("new")  # written before the data is loaded
            (run_dir / "tensorboard" / "events.out.tfevents.2.host").write_text("new")
            raise ConfigError("bad data")
    assert _files(tmp_path / "run") == before


def test_the_old_run_is_deleted_once_the_new_run_starts(tmp_path):
    _old_run(tmp_path / "run")
    with runs.writing(tmp_path / "run", "mlp", overwrite=True) as run_dir:
        (run_dir / "config.json").write_text("new")
        runs.discard_replaced(run_dir)
        assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "notes.txt"]


def test_an_unwritable_folder_of_the_old_run_is_found_before_anything_is_moved(tmp_path, monkeypatch):
    # root writes anywhere: os.access is what says no, as it does for anyone else
    _old_run(tmp_path / "run")
    before = _files(tmp_path / "run")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path).name != "resume" and real_access(path, mode))
    with pytest.raises(ConfigError, match=r"cannot write .*run/resume \(permission denied\); make it writable or"):
        runs.create_run_dir(tmp_path / "run", "mlp", overwrite=True)
    assert _files(tmp_path / "run") == before


@pytest.mark.parametrize(
    "option, advice",
    [("out", "choose another out"), ("resume", "copy the run folder somewhere writable and give resume")],
)
def test_a_read_only_file_system_is_named_with_what_to_do(tmp_path, monkeypatch, option, advice):
    _old_run(tmp_path / "run")
    unwritable(monkeypatch)
    with pytest.raises(ConfigError) as raised:
        runs.check_writable(tmp_path / "run", [tmp_path / "run"], option)
    assert str(
        raised.value
    ) == f"{option} {tmp_path / 'run'}: cannot write there (a read-only file system); {advice}" + (
        " the copy" if option == "resume" else ""
    )


@pytest.mark.parametrize("fault", [PermissionError(13, "Permission denied"), KeyboardInterrupt()])
def test_a_move_cut_short_puts_back_what_it_moved(tmp_path, monkeypatch, fault):
    _old_run(tmp_path / "run")
    before = _files(tmp_path / "run")
    real_rename, renames = os.rename, []

    def rename(source, target):
        renames.append(source)
        if len(renames) == 4:
            raise fault
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises((ConfigError, KeyboardInterrupt)):
        runs.create_run_dir(tmp_path / "run", "mlp", overwrite=True)
    monkeypatch.setattr(os, "rename", real_rename)
    assert _files(tmp_path / "run") == before and len(renames) == 4
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []


_KILLED = """
import os, sys
from mnistkit import runs
if sys.argv[2] == "setting aside":
    real_rename = os.rename
    renames = []
    def rename(source, target):
        renames.append(source)
        if len(renames) == 3:
            os._exit(9)
        real_rename(source, target)
    os.rename = rename
with runs.writing(sys.argv[1], "mlp", overwrite=True) as run_dir:
    (run_dir / "config.json").write_text("new")
    (run_dir / runs.CLAIM_NAME).write_text("job")
    os._exit(9)
"""


@pytest.mark.parametrize("when", ["setting aside", "before the run started"])
def test_the_next_hold_puts_back_what_a_killed_overwrite_set_aside(tmp_path, when):
    import subprocess
    import sys

    _old_run(tmp_path / "run")
    before = _files(tmp_path / "run")
    killed = subprocess.run([sys.executable, "-c", _KILLED, str(tmp_path / "run"), when], check=False)
    assert killed.returncode == 9
    assert _files(tmp_path / "run") != before
    with runs.hold(tmp_path / "run"):
        assert _files(tmp_path / "run") == before
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []


_KILLED_PUTTING_BACK = """
import os, sys
from pathlib import Path
from mnistkit import runs
real_replace = os.replace
moves = []
def replace(source, target):
    moves.append(source)
    if len(moves) > int(sys.argv[2]):
        os._exit(9)
    real_replace(source, target)
os.replace = replace
with runs.hold(Path(sys.argv[1])):
    pass
"""


@pytest.mark.parametrize("moved", [0, 1, 3])
def test_a_put_back_killed_half_way_is_finished_later_and_loses_nothing(tmp_path, moved):
    import subprocess
    import sys

    _old_run(tmp_path / "run")
    before = _files(tmp_path / "run")
    overwrite = subprocess.run([sys.executable, "-c", _KILLED, str(tmp_path / "run"), "started"], check=False)
    putting_back = subprocess.run(
        [sys.executable, "-c", _KILLED_PUTTING_BACK, str(tmp_path / "run"), str(moved)], check=False
    )
    assert (overwrite.returncode, putting_back.returncode) == (9, 9)
    runs.recover(tmp_path / "run")  # as --resume does before it reads the run's config.json
    assert _files(tmp_path / "run") == before
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []


def test_the_next_hold_deletes_what_a_run_killed_while_deleting_the_old_run_left(tmp_path):
    run_dir = runs.create_run_dir(tmp_path / "run", "mlp")
    (run_dir / runs.DISCARDED / "resume").mkdir(parents=True)
    (run_dir / runs.DISCARDED / "resume" / "state.json").write_text("{}")
    (run_dir / "config.json").write_text("new")
    with runs.hold(run_dir):
        assert [p.name for p in run_dir.iterdir()] == ["config.json"]


def test_a_run_folder_named_by_a_broken_or_looping_link_is_refused_so(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    for link in ("dangling", "loop"):
        with pytest.raises(ConfigError, match="a symbolic link to .*missing or leads back to itself"):
            runs.create_run_dir(tmp_path / link, "mlp")
    assert not (tmp_path / "nowhere").exists()
