"""The training configuration: one typed object, saved with every run so any result can be reproduced."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .augment import AUGMENTATIONS
from .errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("auto", "bf16", "off")


@dataclass
class TrainConfig:
    # what to train on
    dataset: str = "mnist"
    data: str | None = None  # a path (IDX folder, .pkl.gz, .npz) instead of a named dataset
    val_size: int = 10_000  # the last N official training images; 0 = train on all, validate on nothing
    normalize: bool = True  # standardize by the training set's mean/std; False = pixels / 256 as the tutorial's pickle
    # the model
    model: str = "cnn"
    width: int | None = None  # channel width of the cnn (None = the model's default)
    stem_width: int | None = None  # channels of the cnn's first, full-resolution block (None = width)
    # the optimisation
    epochs: int = 3
    batch_size: int = 128
    lr: float = 0.01
    optimizer: str = "adamw"
    momentum: float = 0.9  # SGD only
    nesterov: bool = False  # SGD only
    weight_decay: float = 5e-4
    schedule: str = "onecycle"
    step_size: int = 10  # epochs between decays, for the step schedule
    gamma: float = 0.1  # decay factor, for the step schedule
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max gradient norm
    early_stopping: int = 0  # patience in epochs on validation loss; 0 = off
    augment: str = "none"  # none | shift (±2 px) | affine (rotate, scale, shear, shift) | handwriting, on whole batches
    outliers: float = 0.0  # synthesized non-digits per training image, trained towards "no class" (outlier exposure)
    tta: bool = False  # test-time augmentation: average predictions over the image and its 1-px shifts
    compile: bool = False  # torch.compile the model (worth it on GPU for long runs)
    eval_batch_size: int = 1000
    # reproducibility and hardware
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    amp: str = "auto"  # bf16 autocast for training: auto = on CUDA, and on CPUs with native bf16 (AVX512-BF16, AMX)
    # bookkeeping
    preset: str | None = None

    def model_options(self) -> dict[str, Any]:
        options = {"width": self.width, "stem_width": self.stem_width}
        return {k: v for k, v in options.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown configuration keys: {', '.join(unknown)}")
        return cls(**values)

    def validate(self) -> TrainConfig:
        """Raise ConfigError with one line for the first invalid value; return self when all are valid."""
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (self.eval_batch_size >= 1, f"eval batch size must be at least 1, got {self.eval_batch_size}"),
            (math.isfinite(self.lr) and self.lr > 0, f"--lr must be a positive number, got {self.lr}"),
            (self.val_size >= 0, f"--val-size must be 0 or more, got {self.val_size}"),
            (self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.grad_clip is None or self.grad_clip > 0, f"--grad-clip must be positive, got {self.grad_clip}"),
            (
                self.early_stopping >= 0,
                f"--early-stopping must be 0 (off) or a patience in epochs, got {self.early_stopping}",
            ),
            (
                math.isfinite(self.outliers) and 0 <= self.outliers <= 1,
                f"--outliers must be in [0, 1] (non-digits per training image), got {self.outliers}",
            ),
            (self.step_size >= 1, f"--step-size must be at least 1, got {self.step_size}"),
            (0 < self.gamma <= 1, f"--gamma must be in (0, 1], got {self.gamma}"),
            (self.width is None or self.width >= 1, f"--width must be at least 1, got {self.width}"),
            (
                self.stem_width is None or self.stem_width >= 1,
                f"--stem-width must be at least 1, got {self.stem_width}",
            ),
            (
                self.optimizer in OPTIMIZERS,
                f"unknown optimizer '{self.optimizer}'; choose one of: {', '.join(OPTIMIZERS)}",
            ),
            (self.schedule in SCHEDULES, f"unknown schedule '{self.schedule}'; choose one of: {', '.join(SCHEDULES)}"),
            (
                self.augment in AUGMENTATIONS,
                f"unknown augmentation '{self.augment}'; choose one of: {', '.join(AUGMENTATIONS)}",
            ),
            (self.device in DEVICES, f"unknown device '{self.device}'; choose one of: {', '.join(DEVICES)}"),
            (self.amp in AMP_MODES, f"unknown --amp '{self.amp}'; choose one of: {', '.join(AMP_MODES)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        from .models import MODELS  # late import: config stays importable without torch models

        if self.model not in MODELS:
            raise ConfigError(f"unknown model '{self.model}'; choose one of: {', '.join(MODELS)}")
        return self


# Each preset is a set of overrides on the defaults; options given on the command line override the preset.
PRESETS: dict[str, dict[str, Any]] = {
    # The tutorial exactly: its MLP, plain SGD at lr 0.001, batch 64, 25 epochs, pixels / 256, no schedule.
    "tutorial": dict(
        model="mlp",
        optimizer="sgd",
        lr=0.001,
        momentum=0.0,
        weight_decay=0.0,
        batch_size=64,
        epochs=25,
        schedule="none",
        normalize=False,
        amp="off",
    ),
    # Speed records (``mnistkit bench``): train on all 60,000 images (no validation pass to pay for) and
    # reach the target test accuracy in the least training time on a 2-core CPU.
    "fast": dict(model="mlp", epochs=4, batch_size=512, lr=0.015, label_smoothing=0.1, val_size=0),  # >= 98.0%
    "cnn": dict(model="cnn", width=16, epochs=1, batch_size=192, lr=0.04, label_smoothing=0.1, val_size=0),  # >= 99.0%
    "accurate": dict(
        model="cnn",
        width=24,
        stem_width=16,
        epochs=7,
        batch_size=256,
        lr=0.03,
        label_smoothing=0.1,
        augment="shift",
        val_size=0,
    ),  # >= 99.5%
    "best": dict(
        model="cnn",
        width=48,
        stem_width=16,
        epochs=36,
        batch_size=128,
        lr=0.02,
        label_smoothing=0.1,
        augment="affine",
        tta=True,
        val_size=0,
    ),  # >= 99.7%
}


def make_config(preset: str | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the preset, then explicit overrides (``None`` values are ignored), validated."""
    values: dict[str, Any] = {}
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
        values["preset"] = preset
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig.from_dict(values).validate()
