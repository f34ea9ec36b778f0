"""What training shows on the console: a live batch progress bar on a terminal, one plain line per epoch.

The bar (rich) appears only when the stream is an interactive terminal that understands cursor movement and
``quiet`` is off; it is transient, so what stays on screen is exactly what a log file or CI gets: the epoch
lines, with no escape codes and no carriage returns.

The bar moves with every batch: training reports its step count after each one (a Python int, no device
sync), the reporter passes it on at most ``REFRESH_PER_SECOND`` times a second, and rich redraws the bar
that often from its own thread. The loss shown is the running loss of the last sync (every ``SYNC_EVERY``
batches), and "…" before the first.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from .train import EpochStats

REFRESH_PER_SECOND = 8  # redraws of the bar; the step count is passed on as often


def format_epoch(stats: EpochStats, epochs: int) -> str:
    width = len(str(epochs))
    parts = [f"epoch {stats.epoch:>{width}}/{epochs}", f"train loss {stats.train_loss:.4f}"]
    if stats.val_loss is not None:
        parts += [f"val loss {stats.val_loss:.4f}", f"val acc {stats.val_accuracy:.2%}"]
    parts.append(f"{stats.seconds:.1f}s")
    return "  ".join(parts)


def format_rate(batches: int, seconds: float, batch_size: int | None) -> str:
    """Throughput as images per second when the batch size is known, else batches per second."""
    if seconds <= 0:
        return "…"
    if batch_size:
        return f"{batches * batch_size / seconds:,.0f} img/s"
    return f"{batches / seconds:,.1f} batch/s"


def is_live_terminal(stream: TextIO) -> bool:
    """True when a redrawn progress bar will look right: the stream is a terminal that is not TERM=dumb.

    Decided here from ``isatty`` alone, not by rich, which also honours FORCE_COLOR: CI services set that
    and would then get a bar redrawn into their logs.
    """
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM", "").lower() not in ("dumb", "unknown")


class ConsoleReporter:
    """Prints one summary line per epoch; on a live terminal (and unless ``quiet``) also a transient progress
    bar over the epoch's batches with the running loss and the throughput. ``batch_size`` turns the
    throughput into images per second."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, batch_size: int | None = None):
        self.stream = stream or sys.stdout
        self.live = not quiet and is_live_terminal(self.stream)
        self.batch_size = batch_size
        self.epochs = 0
        self.started = 0.0
        self.next_update = 0.0
        self.progress: Progress | None = None
        self.task = TaskID(0)  # the bar's task, while there is a bar
        self.stream_gone = False  # its reader quit: nothing more is written to it

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs = epochs
        self.started = time.perf_counter()
        if self.live:
            self.progress = Progress(
                TextColumn(f"epoch {epoch}/{epochs}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]}"),
                TimeRemainingColumn(),
                console=Console(file=self.stream, force_terminal=True),
                transient=True,
                refresh_per_second=REFRESH_PER_SECOND,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=steps, loss="…", rate="…")
            self.next_update = self.started

    def step_done(self, steps_done: int) -> None:
        """Called after every batch: cheap, and only every 1/REFRESH_PER_SECOND s does it touch the bar."""
        if self.progress is not None:
            now = time.perf_counter()
            if now >= self.next_update:
                self.next_update = now + 1.0 / REFRESH_PER_SECOND
                rate = format_rate(steps_done, now - self.started, self.batch_size)
                self.progress.update(self.task, completed=steps_done, rate=rate)

    def batches_done(self, steps_done: int, running_loss: float) -> None:
        if self.progress is not None:
            rate = format_rate(steps_done, time.perf_counter() - self.started, self.batch_size)
            self.progress.update(self.task, completed=steps_done, loss=f"{running_loss:.4f}", rate=rate)

    def epoch_end(self, stats: EpochStats) -> None:
        self.close()
        if self.stream_gone:
            return
        try:
            print(format_epoch(stats, self.epochs), file=self.stream, flush=True)
        except BrokenPipeError:
            # Whoever read the lines has gone (| head, a tee stopped by the same Ctrl-C): the training goes on, and
            # its numbers are in the run folder's metrics.csv.
            self.stream_gone = True

    def close(self) -> None:
        """Take the bar off the screen and give the cursor back; also when training stops with an error or ^C."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
