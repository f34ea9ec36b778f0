"""What training shows on the console: a live batch progress bar on a terminal, one plain line per epoch."""

from __future__ import annotations

import sys

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .train import EpochStats


def format_epoch(stats: EpochStats, epochs: int) -> str:
    width = len(str(epochs))
    parts = [f"epoch {stats.epoch:>{width}}/{epochs}", f"train loss {stats.train_loss:.4f}"]
    if stats.val_loss is not None:
        parts += [f"val loss {stats.val_loss:.4f}", f"val acc {stats.val_accuracy:.2%}"]
    parts.append(f"{stats.seconds:.1f}s")
    return "  ".join(parts)


class ConsoleReporter:
    """Prints the epoch summary lines; adds a transient rich progress bar only when stdout is a terminal,
    so logs and CI get plain lines and nothing else."""

    def __init__(self, quiet: bool = False, stream=None):
        self.stream = stream or sys.stdout
        self.live = not quiet and self.stream.isatty()
        self.epochs = 0
        self.progress: Progress | None = None
        self.task = None

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epochs = epochs
        if self.live:
            self.progress = Progress(
                TextColumn(f"epoch {epoch}/{epochs}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=steps, loss="…")

    def batches_done(self, steps_done: int, running_loss: float) -> None:
        if self.progress is not None:
            self.progress.update(self.task, completed=steps_done, loss=f"{running_loss:.4f}")

    def epoch_end(self, stats: EpochStats) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
        print(format_epoch(stats, self.epochs), file=self.stream, flush=True)
