"""session.train: an overwrite or a resume that is refused, or fails before its first checkpoint, leaves the run
folder as it found it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mnistkit import resume, runs
from mnistkit.config import make_config
from mnistkit.errors import ConfigError, MnistkitError, TrainingError
from mnistkit.session import TrainRequest, train
from mnistkit.train import ResumeSaver, TrainingInterrupted


def _train(data: Path, out: Path, overwrite: bool = False, **options):
    cfg = make_config(**{"model": "logreg", "epochs": 2, "val_size": 100, "data": str(data), **options})
    return train(TrainRequest(config=cfg, out=out, overwrite=overwrite, quiet=True))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupted_run(data: Path, out: Path, monkeypatch) -> Path:
    """A run stopped after its first epoch's checkpoint, as a second Ctrl-C leaves it."""
    real_write_metrics = runs.write_metrics

    def write_metrics(run_dir, rows):
        if len(rows) == 2:
            raise KeyboardInterrupt
        real_write_metrics(run_dir, rows)

    monkeypatch.setattr(runs, "write_metrics", write_metrics)
    with pytest.raises(TrainingInterrupted):
        _train(data, out, epochs=3)
    monkeypatch.setattr(runs, "write_metrics", real_write_metrics)
    return out


def _without_root_powers() -> list[str]:
    """The command prefix under which permission bits hold, also for root (who otherwise writes anywhere)."""
    if os.geteuid() != 0:
        return []
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"]
    if shutil.which("setpriv") is None or subprocess.run([*drop, "true"], check=False).returncode != 0:
        pytest.skip("root writes anywhere, and setpriv cannot drop that here")
    return drop


def _mnistkit(*argv) -> subprocess.CompletedProcess:
    command = [*_without_root_powers(), sys.executable, "-m", "mnistkit", *(str(a) for a in argv)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def test_an_overwrite_refused_by_its_options_or_its_data_keeps_the_old_run(tiny_idx, tmp_path):
    old = tmp_path / "run"
    _train(tiny_idx, old)
    before = _files(old)
    with pytest.raises(MnistkitError, match="val_size must be"):
        _train(tiny_idx, old, overwrite=True, val_size=5000)
    assert _files(old) == before
    broken = Path(shutil.copytree(tiny_idx, tmp_path / "broken"))
    labels = broken / "train-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:40])
    with pytest.raises(MnistkitError):
        _train(broken, old, overwrite=True)
    assert _files(old) == before


def test_an_overwrite_that_starts_deletes_the_old_run(tiny_idx, tmp_path):
    old = tmp_path / "run"
    _train(tiny_idx, old)
    (old / "notes.txt").write_text("mine")
    announced: list[str] = []
    cfg = make_config(model="mlp", epochs=1, val_size=100, data=str(tiny_idx))
    train(TrainRequest(config=cfg, out=old, overwrite=True, quiet=True), announced.append)
    assert len(announced) == 1 and not list(old.glob(".mnistkit-*"))
    assert (old / "notes.txt").read_text() == "mine" and runs.read_config(old).model == "mlp"


def test_an_overwrite_stopped_by_a_read_only_folder_of_the_old_run_keeps_all_of_it(tiny_idx, tmp_path):
    old = tmp_path / "run"
    _train(tiny_idx, old)
    before = _files(old)
    (old / "resume").chmod(0o555)
    try:
        done = _mnistkit("train", "--data", tiny_idx, "--model", "logreg", "--epochs", "1", "--out", old, "--overwrite")
    finally:
        (old / "resume").chmod(0o755)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"cannot write {old}/resume (permission denied)" in done.stderr
    assert _files(old) == before


@pytest.mark.parametrize("read_only", ["run folder", "resume"])
def test_a_resume_into_a_folder_it_cannot_write_is_refused_before_it_trains(tiny_idx, tmp_path, monkeypatch, read_only):
    run_dir = _interrupted_run(tiny_idx, tmp_path / "run", monkeypatch)
    before = _files(run_dir)
    denied = run_dir if read_only == "run folder" else run_dir / "resume"
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != denied and real_access(path, mode))
    announced: list[str] = []
    with pytest.raises(ConfigError, match="cannot write .*make it writable, then run the same command again"):
        train(TrainRequest(resume=run_dir, quiet=True), announced.append)
    assert announced == [] and _files(run_dir) == before


def test_a_resume_into_a_read_only_folder_is_one_line_before_it_trains(tiny_idx, tmp_path, monkeypatch):
    run_dir = _interrupted_run(tiny_idx, tmp_path / "run", monkeypatch)
    folders = [run_dir, run_dir / "resume"]
    for folder in folders:
        folder.chmod(0o555)
    try:
        done = _mnistkit("train", "--resume", run_dir)
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert done.returncode == 2 and done.stdout == "", done.stdout
    assert done.stderr == f"mnistkit: error: --resume {run_dir}: cannot write there (permission denied); " + (
        "make it writable, then run the same command again\n"
    )


def test_output_to_a_full_disk_mid_run_says_how_to_resume(tiny_idx, tmp_path, monkeypatch):
    import errno

    from mnistkit.errors import WriteError
    from mnistkit.progress import ConsoleReporter

    real_epoch_start = ConsoleReporter.epoch_start

    def epoch_start(self, epoch, *args):
        if epoch == 2:  # the progress line to a redirected output whose disk is full (no file named)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_epoch_start(self, epoch, *args)

    monkeypatch.setattr(ConsoleReporter, "epoch_start", epoch_start)
    with pytest.raises(
        WriteError, match=f"No space left on device; the run's last checkpoint is intact.*--resume {tmp_path / 'run'}"
    ):
        _train(tiny_idx, tmp_path / "run", epochs=3)


def test_an_overwrite_that_fails_before_its_first_checkpoint_keeps_the_old_run(tiny_idx, tmp_path):
    old = tmp_path / "run"
    _train(tiny_idx, old)
    (old / "notes.txt").write_text("mine")
    before = _files(old)
    with pytest.raises(TrainingError, match="loss became"):
        _train(tiny_idx, old, overwrite=True, model="mlp", lr=1e20, optimizer="sgd")
    assert _files(old) == before and not list(old.glob(".mnistkit-*"))


def test_an_overwrite_deletes_the_old_run_once_its_first_checkpoint_is_saved(tiny_idx, tmp_path, monkeypatch):
    old = tmp_path / "run"
    _train(tiny_idx, old)
    real_save = ResumeSaver.save
    seen: list[list[str]] = []

    def save(self, *args):
        real_save(self, *args)
        seen.append(sorted(p.name for p in old.iterdir()))
        raise TrainingError("stopped after the first checkpoint")

    monkeypatch.setattr(ResumeSaver, "save", save)
    with pytest.raises(TrainingError, match="stopped after the first checkpoint"):
        _train(tiny_idx, old, overwrite=True, model="mlp", epochs=2)
    assert not any(name.startswith(".mnistkit-") for name in seen[0])
    assert runs.read_config(old).model == "mlp" and resume.has_state(old)
