"""Optional TensorBoard event files for a run (``mnistkit train --tensorboard``).

``metrics.csv`` stays the run's source of truth; the event files are a view of the same numbers for people who
watch runs in TensorBoard. They are appended to as training goes (the one kind of file mnistkit does not
write atomically: TensorBoard's writer owns them). Needs the ``tensorboard`` extra.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from .errors import ConfigError
from .train import EpochStats, ForwardingReporter, Reporter

LOG_DIR_NAME = "tensorboard"
# EpochStats.metrics() names -> TensorBoard tags; TensorBoard puts tags with one prefix (loss/) in one section.
TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "val_accuracy": "accuracy/val",
    "lr": "lr",
    "seconds_per_epoch": "seconds_per_epoch",
}
MISSING = (
    "tensorboard needs the TensorBoard package, which is not installed; install it: pip install 'mnistkit[tensorboard]'"
)


def require_tensorboard() -> None:
    """Raise a one-line ConfigError when TensorBoard is not installed (check before training starts)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ConfigError(MISSING, options=("tensorboard",))


def open_writer(run_dir: str | Path):
    require_tensorboard()
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:  # an installed but unusable tensorboard
        raise ConfigError(
            f"tensorboard needs TensorBoard, which cannot load ({exc}); "
            "reinstall it: pip install -U 'mnistkit[tensorboard]'",
            options=("tensorboard",),
        ) from None
    return SummaryWriter(log_dir=str(Path(run_dir) / LOG_DIR_NAME))


class TensorBoardReporter(ForwardingReporter):
    """Passes training events on to ``inner`` and logs them as TensorBoard scalars: the running training loss
    per step, and per epoch the train and validation loss, validation accuracy, learning rate and time.
    ``writer`` is anything with SummaryWriter's ``add_scalar``/``add_text``/``flush``/``close``."""

    def __init__(self, run_dir: str | Path, inner: Reporter, config: dict | None = None, writer=None):
        super().__init__(inner)
        self.writer = writer if writer is not None else open_writer(run_dir)
        self.epoch = self.steps_per_epoch = 0
        if config is not None:
            self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```")

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch, self.steps_per_epoch = epoch, steps
        super().epoch_start(epoch, epochs, steps)

    def batches_done(self, steps_done: int, running_loss: float) -> None:
        step = (self.epoch - 1) * self.steps_per_epoch + steps_done
        self.writer.add_scalar("train/running_loss", running_loss, step)
        super().batches_done(steps_done, running_loss)

    def epoch_end(self, stats: EpochStats) -> None:
        for name, value in stats.metrics().items():
            self.writer.add_scalar(TAGS[name], value, stats.epoch)
        self.writer.flush()
        super().epoch_end(stats)

    def close(self) -> None:
        self.writer.close()
