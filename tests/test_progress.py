"""Training output: a live bar only on a real terminal; plain epoch lines in logs, pipes, CI and with --quiet."""

from __future__ import annotations

import io
import os
import pty
import re
import select
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import train_argv

from mnistkit import cli
from mnistkit.progress import ConsoleReporter, format_epoch, format_rate, is_live_terminal
from mnistkit.train import SYNC_EVERY, EpochStats

STATS = [EpochStats(1, 0.9, 0.5, 0.875, 0.01, 1.25), EpochStats(2, 0.4, 0.3, 0.9125, 0.001, 1.0)]


class FakeTerminal(io.StringIO):
    """An in-memory stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def drive(reporter: ConsoleReporter) -> None:
    """What fit() calls for two epochs of 10 batches."""
    for stats in STATS:
        reporter.epoch_start(stats.epoch, len(STATS), 10)
        for step in range(1, 11):
            reporter.step_done(step)
            if step % 5 == 0:
                reporter.batches_done(step, 0.5 if step == 5 else 0.4321)
        reporter.epoch_end(stats)


def plain_lines() -> str:
    return "".join(format_epoch(s, len(STATS)) + "\n" for s in STATS)


def test_epoch_line():
    assert format_epoch(STATS[0], 12) == "epoch  1/12  train loss 0.9000  val loss 0.5000  val acc 87.50%  1.2s"
    assert format_epoch(EpochStats(3, 0.25, None, None, 0.1, 61.0), 3) == "epoch 3/3  train loss 0.2500  61.0s"


def test_rate():
    assert format_rate(50, 2.0, 128) == "3,200 img/s"
    assert format_rate(50, 2.0, None) == "25.0 batch/s"
    assert format_rate(5, 0.0, 128) == "…"


@pytest.mark.parametrize(
    "stream, quiet, term",
    [
        (io.StringIO(), False, "xterm-256color"),  # a log file or a pipe
        (FakeTerminal(), True, "xterm-256color"),  # --quiet on a terminal
        (FakeTerminal(), False, "dumb"),  # a terminal that cannot move the cursor (Emacs shell, some CI)
    ],
)
def test_plain_lines_only(monkeypatch, stream, quiet, term):
    monkeypatch.setenv("TERM", term)
    monkeypatch.setenv("FORCE_COLOR", "1")  # CI services set it; it must not bring the bar back
    drive(ConsoleReporter(quiet=quiet, stream=stream, batch_size=64))
    assert stream.getvalue() == plain_lines()  # nothing else: no escape codes, no carriage returns


class ClosedPipe(io.StringIO):
    """A pipe whose reader has quit (| head): every write fails."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_reader_that_quits_does_not_stop_the_training():
    reporter = ConsoleReporter(stream=ClosedPipe())
    drive(reporter)  # both epochs end: training goes on, its numbers are in the run folder
    assert reporter.stream_gone


def test_live_bar_on_a_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.setenv("COLUMNS", "120")
    stream = FakeTerminal()
    reporter = ConsoleReporter(stream=stream, batch_size=64)
    assert reporter.live
    reporter.epoch_start(1, 2, 10)
    reporter.batches_done(10, 0.4321)
    assert reporter.progress is not None
    reporter.epoch_end(STATS[0])
    output = stream.getvalue()
    assert "\x1b[" in output  # the bar was drawn and then erased (transient)
    assert "epoch 1/2" in output and "10/10" in output and "loss 0.4321" in output and "img/s" in output
    assert output.endswith(format_epoch(STATS[0], 2) + "\n")  # what stays: the plain epoch line
    assert "\x1b[?25h" in output  # the cursor is shown again


def test_step_count_moves_the_bar_between_loss_syncs(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    reporter = ConsoleReporter(stream=FakeTerminal())
    reporter.epoch_start(1, 1, 100)
    reporter.step_done(7)  # the first step after the start updates the bar at once
    task = reporter.progress.tasks[0]
    assert task.completed == 7 and task.fields["loss"] == "…"
    reporter.step_done(8)  # within 1/REFRESH_PER_SECOND of the last update: left for the next one
    assert task.completed == 7
    reporter.next_update = 0.0  # as if that time had passed
    reporter.step_done(9)
    assert task.completed == 9
    reporter.close()


def test_bar_is_cleared_when_training_stops_mid_epoch(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    stream = FakeTerminal()
    reporter = ConsoleReporter(stream=stream)
    reporter.epoch_start(1, 2, 10)
    reporter.batches_done(5, 0.5)
    reporter.close()  # what cmd_train's ExitStack does when an error or ^C ends training
    output = stream.getvalue()
    assert reporter.progress is None
    assert "\x1b[?25h" in output and output.endswith("\x1b[2K")  # cursor shown again, bar line erased
    reporter.close()  # harmless twice


def test_is_live_terminal(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    assert is_live_terminal(FakeTerminal()) and not is_live_terminal(io.StringIO())
    monkeypatch.setenv("TERM", "dumb")
    assert not is_live_terminal(FakeTerminal())


def test_cli_train_on_a_terminal(tiny_idx, tmp_path, monkeypatch, capsys):
    """The command end to end on a (fake) terminal: a bar without --quiet, none with it."""
    monkeypatch.setenv("TERM", "xterm-256color")
    for quiet in (False, True):
        stream = FakeTerminal()
        monkeypatch.setattr(sys, "stdout", stream)
        with pytest.raises(SystemExit) as exit_info:
            cli.main(train_argv(tiny_idx, tmp_path / f"run-{quiet}") + (["--quiet"] if quiet else []))
        assert exit_info.value.code == 0
        output = stream.getvalue()
        assert ("\x1b" in output) is not quiet and ("\r" in output) is not quiet
        # the epoch summaries are there either way (after the bar's erase codes on a live terminal)
        assert re.findall(r"epoch (\d/2)  train loss", output) == ["1/2", "2/2"]
    capsys.readouterr()


def test_cli_train_into_a_log_file(tiny_idx, tmp_path):
    """A real process with its output going to a file, as in CI: only printable lines."""
    log = tmp_path / "train.log"
    env = {**os.environ, "TERM": "xterm-256color", "FORCE_COLOR": "1"}
    with open(log, "w") as f:
        subprocess.run(
            [sys.executable, "-m", "mnistkit", *train_argv(tiny_idx, tmp_path / "run")],
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            check=True,
            timeout=120,
        )
    text = log.read_text()
    assert "\x1b" not in text and "\r" not in text
    assert all(line.isprintable() for line in text.splitlines())
    lines = text.splitlines()
    assert lines[0].startswith("training logreg on ") and lines[1].startswith("epoch 1/2  train loss ")
    assert lines[2].startswith("epoch 2/2") and lines[3].startswith("test accuracy ") and lines[4].startswith("saved ")


# --------------------------------------------------------------------------------------------------
# A real terminal: the training command in a pseudo-terminal, its screen read at two moments of an epoch

# Each batch sleeps a little longer, so that an epoch lasts a few seconds whatever the machine; the epoch has
# fewer batches than SYNC_EVERY, so before the bar followed the step count it sat at 0 until the epoch ended.
SLOW_TRAINING = """
import sys, time
from mnistkit import cli, train

augment = train.augment
def slow_augment(*args, **kwargs):
    time.sleep(0.08)
    return augment(*args, **kwargs)

train.augment = slow_augment
cli.main(sys.argv[1:])
"""

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class PseudoTerminal:
    """A child process on a pty; ``screen_line`` is what the terminal shows on the cursor's line now."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        master, slave = pty.openpty()
        self.process = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
        os.close(slave)
        self.master, self.output = master, b""

    def read(self, seconds: float) -> None:
        """Take in what the child writes for up to ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([self.master], [], [], left)[0]:
                return
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the child has exited and the pty is closed
                return
            if not chunk:
                return
            self.output += chunk

    def screen_line(self) -> str:
        """The last line as drawn: escape codes removed, each carriage return starting it over."""
        text = ANSI.sub("", self.output.decode("utf-8", "replace"))
        return text.split("\n")[-1].split("\r")[-1].strip()

    def close(self) -> str:
        self.read(120)
        self.process.wait(timeout=60)
        os.close(self.master)
        return self.output.decode("utf-8", "replace")


def bar_count(line: str) -> tuple[int, int] | None:
    match = re.search(r"epoch 1/1 .*?(\d+)/(\d+)", line)
    return (int(match[1]), int(match[2])) if match else None


def test_bar_advances_within_an_epoch_on_a_real_terminal(tiny_idx, tmp_path):
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("FORCE_COLOR", None)
    argv = [sys.executable, "-c", textwrap.dedent(SLOW_TRAINING), "train", "--data", str(tiny_idx)]
    # 500 training images in batches of 16: 32 batches, fewer than SYNC_EVERY
    argv += ["--model", "logreg", "--epochs", "1", "--val-size", "100", "--batch-size", "16"]
    argv += ["--out", str(tmp_path / "run")]
    assert 500 // 16 + 1 < SYNC_EVERY
    terminal = PseudoTerminal(argv, env)
    try:
        screens = []
        for _ in range(600):  # until two screens show the bar part-way, or the epoch ends
            terminal.read(0.2)
            count = bar_count(terminal.screen_line())
            if count and 0 < count[0] < count[1] and (not screens or count[0] > screens[-1][0]):
                screens.append(count)
            if len(screens) == 2 or terminal.process.poll() is not None:
                break
    finally:
        output = terminal.close()
    assert terminal.process.returncode == 0, output
    assert len(screens) == 2, f"the bar did not move within the epoch; the terminal showed:\n{output!r}"
    (first, total), (second, _) = screens
    assert total == 32 and 0 < first < second < total
    assert "epoch 1/1  train loss" in ANSI.sub("", output)  # and the epoch line stayed once the bar went
