"""--tensorboard: event files beside metrics.csv when the extra is installed, one clear line when it is not."""

from __future__ import annotations

import sys

import pytest
from helpers import train_argv

from mnistkit import cli, runs
from mnistkit.tensorboard_log import LOG_DIR_NAME, MISSING, TensorBoardReporter, require_tensorboard
from mnistkit.train import EpochStats


class RecordingWriter:
    """Stands in for SummaryWriter: keeps what is logged."""

    def __init__(self):
        self.scalars: list[tuple[str, float, int]] = []
        self.texts: list[tuple[str, str]] = []
        self.flushes = 0
        self.closed = False

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_text(self, tag, text):
        self.texts.append((tag, text))

    def flush(self):
        self.flushes += 1

    def close(self):
        self.closed = True


class RecordingReporter:
    def __init__(self):
        self.calls = []

    def epoch_start(self, epoch, epochs, steps):
        self.calls.append(("start", epoch, epochs, steps))

    def step_done(self, steps_done):
        self.calls.append(("step", steps_done))

    def batches_done(self, steps_done, running_loss):
        self.calls.append(("batches", steps_done, running_loss))

    def epoch_end(self, stats):
        self.calls.append(("end", stats.epoch))


@pytest.fixture
def without_tensorboard(monkeypatch):
    """Make the tensorboard package look uninstalled, whether or not it is (importlib then finds no spec)."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)


def test_missing_tensorboard_is_one_clear_line_before_anything_is_written(
    without_tensorboard, tiny_idx, tmp_path, capsys
):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(train_argv(tiny_idx, out, "--tensorboard"))
    stdout, stderr = capsys.readouterr()
    assert exit_info.value.code == 2 and stdout == ""
    assert stderr == f"mnistkit: error: --{MISSING}\n"  # the library names the option, the CLI its flag
    assert "pip install 'mnistkit[tensorboard]'" in stderr
    assert not out.exists()  # checked before the run folder is made


def test_require_tensorboard(without_tensorboard):
    with pytest.raises(Exception, match="^tensorboard needs the TensorBoard package, which is not installed"):
        require_tensorboard()


def test_reporter_logs_every_number_and_passes_events_on(tmp_path):
    writer, inner = RecordingWriter(), RecordingReporter()
    reporter = TensorBoardReporter(tmp_path, inner, config={"model": "cnn", "lr": 0.01}, writer=writer)
    history = [EpochStats(1, 0.9, 0.5, 0.8, 0.01, 1.5), EpochStats(2, 0.4, None, None, 0.001, 1.0)]
    for stats in history:
        reporter.epoch_start(stats.epoch, 2, 100)
        reporter.step_done(50)
        reporter.batches_done(50, 1.0 / stats.epoch)
        reporter.batches_done(100, 0.5 / stats.epoch)
        reporter.epoch_end(stats)
    reporter.close()

    assert writer.texts[0][0] == "config" and '"lr": 0.01' in writer.texts[0][1]
    running = [(value, step) for tag, value, step in writer.scalars if tag == "train/running_loss"]
    assert running == [(1.0, 50), (0.5, 100), (0.5, 150), (0.25, 200)]  # global steps across epochs
    per_epoch = {(tag, step): value for tag, value, step in writer.scalars if tag != "train/running_loss"}
    assert per_epoch == {
        ("loss/train", 1): 0.9,
        ("loss/val", 1): 0.5,
        ("accuracy/val", 1): 0.8,
        ("lr", 1): 0.01,
        ("seconds_per_epoch", 1): 1.5,
        ("loss/train", 2): 0.4,
        ("lr", 2): 0.001,
        ("seconds_per_epoch", 2): 1.0,  # no validation in epoch 2: nothing made up
    }
    assert writer.flushes == 2 and writer.closed
    assert [call[0] for call in inner.calls] == ["start", "step", "batches", "batches", "end"] * 2


def test_event_files_match_metrics_csv(tiny_idx, tmp_path, capsys):
    """Only where the tensorboard extra is installed (it is not part of the dev extras)."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli.main(train_argv(tiny_idx, out, "--tensorboard"))
    assert exit_info.value.code == 0, capsys.readouterr().err
    events = EventAccumulator(str(out / LOG_DIR_NAME))
    events.Reload()
    metrics = runs.read_metrics(out)
    for tag, column in (("loss/train", "train_loss"), ("loss/val", "val_loss"), ("accuracy/val", "val_accuracy")):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [1, 2]
        assert [e.value for e in logged] == pytest.approx([row[column] for row in metrics], rel=1e-6)
    assert events.Scalars("train/running_loss")
