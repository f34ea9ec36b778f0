"""The training configuration: one typed object, saved with every run so any result can be reproduced."""

from __future__ import annotations

import math
import numbers
import operator
import os
import re
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

from . import schema
from .errors import ConfigError, short, unknown_choice

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("none", "step", "cosine", "onecycle")
DEVICES = ("auto", "cpu", "cuda", "mps")
AMP_MODES = ("auto", "bf16", "off")
SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.manual_seed accepts (a negative seed stands for 2**64 + seed)
MAX_BATCH_SIZE = 1 << 24
# Far above any useful value, where the optimizer's float32 arithmetic still holds (Adam's first step is 10 lr,
# AdamW multiplies by lr × weight_decay): larger ones crash inside PyTorch rather than giving a NaN loss.
MAX_LR = 1e30
MAX_WEIGHT_DECAY = 1000.0
SHA256 = re.compile(r"[0-9a-f]{64}")
AUGMENTATIONS = ("none", "shift", "affine", "handwriting")  # implemented in augment.py
DEFAULT_DATASET = "mnist"


PATH_OPTIONS = ("data", "init")  # options naming a file or folder, given as a str or any os.PathLike

# The options of the cnn's architecture, each a field of TrainConfig and an argument of models.CNN.
CNN_OPTIONS = ("width", "stem_width", "stem_stride", "block2_stride", "crop")


@dataclass
class TrainConfig:
    # what to train on
    dataset: str = DEFAULT_DATASET
    data: str | None = None  # a path (IDX folder, .pkl.gz, .npz) instead of a named dataset
    val_size: int = 10_000  # the last N official training images; 0 = train on all, validate on nothing
    normalize: bool = True  # standardize by the training set's mean/std; False = pixels / 256 as the tutorial's pickle
    mix_mnist: float = 0.0  # the share of each epoch's training images drawn from MNIST's training part (finetune.py)
    # the model
    model: str = "cnn"
    width: int | None = None  # channel width of the cnn (None = the model's default)
    stem_width: int | None = None  # channels of the cnn's first, full-resolution block (None = width)
    stem_stride: int | None = None  # 2: the cnn's first convolution strides instead of max-pooling (None = 1)
    block2_stride: int | None = None  # 2: the cnn's second convolution strides instead of max-pooling (None = 1)
    crop: int | None = None  # pixels the cnn cuts from each edge of the image before its first layer (None = 0)
    init: str | None = None  # start from these weights: "pretrained" (the bundled model) or a run folder / checkpoint
    init_sha256: str | None = None  # the init's weights, as recorded when the run was configured
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
        return {key: getattr(self, key) for key in CNN_OPTIONS if getattr(self, key) is not None}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from options by name, as ``to_dict`` returns them; types are checked here, ranges by
        ``validate``. Paths, NumPy integers and NumPy bools are taken as ``make_config`` takes them."""
        values = _options_by_name(values)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown configuration keys: {', '.join(map(schema.printable, unknown))} (options of another "
                "mnistkit version? use the version that wrote them)"
            )
        return cls(**schema.typed_fields(cls, {key: _plain(key, value) for key, value in values.items()}))

    def validate(self) -> TrainConfig:
        """Raise ConfigError with one line, naming the option, for the first invalid value; return self when all
        are valid. Types are checked by ``from_dict``; these are the ranges."""
        from .models import MODELS, check_accepted, check_options  # late import: importable without the models

        schema.typed_fields(type(self), self.to_dict())  # a TrainConfig built directly skips from_dict
        epochs = schema.MAX_EPOCHS
        checks = [
            (1 <= self.epochs <= epochs, "epochs", f"epochs must be from 1 to {epochs:,}, got {self.epochs}"),
            (
                1 <= self.batch_size <= MAX_BATCH_SIZE,
                "batch_size",
                f"batch_size must be from 1 to {MAX_BATCH_SIZE:,}, got {self.batch_size}",
            ),
            (
                math.isfinite(self.outliers) and 0 <= self.outliers <= 1,
                "outliers",
                f"outliers must be in [0, 1] (non-digits per training image), got {self.outliers}",
            ),
            (
                1 <= self.eval_batch_size <= MAX_BATCH_SIZE,
                "eval_batch_size",
                f"eval_batch_size must be from 1 to {MAX_BATCH_SIZE:,}, got {self.eval_batch_size}",
            ),
            (0 < self.lr <= MAX_LR, "lr", f"lr must be a positive number up to {MAX_LR:g}, got {self.lr}"),
            (self.val_size >= 0, "val_size", f"val_size must be 0 or more, got {self.val_size}"),
            (
                math.isfinite(self.mix_mnist) and 0 <= self.mix_mnist < 1,
                "mix_mnist",
                f"mix_mnist must be in [0, 1) (the share of each epoch's images that are MNIST), got {self.mix_mnist}",
            ),
            (self.init != "", "init", "init must be 'pretrained' or a run folder or checkpoint, got ''"),
            (self.data != "", "data", "data is empty: give a path, or leave data out for the dataset"),
            (
                self.init_sha256 is None or (self.init is not None and SHA256.fullmatch(self.init_sha256) is not None),
                "init_sha256",
                f"init_sha256 must be the 64 hex digits of the init's weights' SHA-256, with an init; "
                f"got {schema.short(self.init_sha256)}",
            ),
            (
                0 <= self.weight_decay <= MAX_WEIGHT_DECAY,
                "weight_decay",
                f"weight_decay must be from 0 to {MAX_WEIGHT_DECAY:g}, got {self.weight_decay}",
            ),
            (0 <= self.momentum < 1, "momentum", f"momentum must be in [0, 1), got {self.momentum}"),
            (
                0 <= self.label_smoothing < 1,
                "label_smoothing",
                f"label_smoothing must be in [0, 1), got {self.label_smoothing}",
            ),
            (
                self.grad_clip is None or 0 < self.grad_clip < math.inf,
                "grad_clip",
                f"grad_clip must be a positive number, got {self.grad_clip}",
            ),
            (
                0 <= self.early_stopping <= epochs,
                "early_stopping",
                f"early_stopping must be 0 (off) or a patience in epochs up to {epochs:,}, got {self.early_stopping}",
            ),
            (
                1 <= self.step_size <= epochs,
                "step_size",
                f"step_size must be from 1 to {epochs:,}, got {self.step_size}",
            ),
            (0 < self.gamma <= 1, "gamma", f"gamma must be in (0, 1], got {self.gamma}"),
            (
                SEED_RANGE[0] <= self.seed <= SEED_RANGE[1],
                "seed",
                f"seed must be from -2**63 to 2**64 - 1, got {schema.short(self.seed)}",
            ),
            (
                self.optimizer in OPTIMIZERS,
                None,
                unknown_choice("optimizer", self.optimizer, OPTIMIZERS),
            ),
            (self.schedule in SCHEDULES, None, unknown_choice("schedule", self.schedule, SCHEDULES)),
            (self.augment in AUGMENTATIONS, None, unknown_choice("augmentation", self.augment, AUGMENTATIONS)),
            (self.device in DEVICES, None, unknown_choice("device", self.device, DEVICES)),
            (self.amp in AMP_MODES, None, unknown_choice("amp mode", self.amp, AMP_MODES)),
            (self.model in MODELS, None, unknown_choice("model", self.model, MODELS)),
        ]
        for ok, option, message in checks:
            if not ok:
                # An unknown name reads as prose ("unknown model 'x'"); a range names the option, shown as its flag.
                raise ConfigError(message, options=(option,) if option else ())
        if self.data is not None and self.dataset != DEFAULT_DATASET:
            # A path replaces the named dataset: the run would record one dataset while training on another.
            raise ConfigError(
                f"dataset {schema.short(self.dataset)} and data {schema.short(self.data)} are two sources: give "
                "either a named dataset or data (a path), not both",
                options=("dataset", "data"),
            )
        self._check_preset_model()
        check_accepted(self.model, self.model_options())
        check_options(self.model_options())
        return self

    def _check_preset_model(self) -> None:
        """ConfigError where the preset sets model options that the model given in its place does not take:
        ``--preset cnn --model mlp`` would otherwise be refused for a width nobody gave."""
        from .models import MODELS, accepted_options  # late import: importable without the models

        preset = PRESETS.get(self.preset) if isinstance(self.preset, str) else None
        if preset is None or self.model == preset.get("model") or self.model not in MODELS:
            return
        taken = accepted_options(self.model)
        for key, value in self.model_options().items():
            if key not in taken and preset.get(key) == value:
                raise ConfigError(
                    f"preset '{self.preset}' is made for model '{preset['model']}' (it sets {key}), not "
                    f"'{self.model}': leave the preset out to train '{self.model}'",
                    options=(key,),
                )


# The options that are flags: True or False, never a value Python merely counts as true ("no", 1).
FLAG_OPTIONS = tuple(name for name, hint in get_type_hints(TrainConfig).items() if hint is bool)


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
    # Tested with shifts: about 0.15% more on the validation split (every seed of 10 at 98.1% or more, against
    # 97.9% without), at no cost in training time (docs/benchmarks.md).
    "fast": dict(
        model="mlp", epochs=4, batch_size=512, lr=0.015, label_smoothing=0.1, tta=True, val_size=0
    ),  # >= 98.0%
    # Strided first and second blocks pool nothing, and the 2-px crop drops the blank border: the epoch does
    # half the arithmetic. Batch 112 gives the one epoch enough steps, and the shifts at test time the margin,
    # that every seed of 10 reached 99.0% (docs/benchmarks.md).
    "cnn": dict(
        model="cnn",
        width=16,
        stem_stride=2,
        block2_stride=2,
        crop=2,
        epochs=1,
        batch_size=112,
        lr=0.045,
        label_smoothing=0.1,
        tta=True,
        val_size=0,
    ),  # >= 99.0%
    # Six epochs of affine-warped batches through the strided stem, tested with shifts; the 2-px crop makes it
    # about 1.25x faster, with every seed of 10 at 99.52% or more and no loss on the validation split
    # (docs/benchmarks.md).
    "accurate": dict(
        model="cnn",
        width=24,
        stem_width=16,
        stem_stride=2,
        crop=2,
        epochs=6,
        batch_size=256,
        lr=0.03,
        label_smoothing=0.1,
        augment="affine",
        tta=True,
        val_size=0,
    ),  # >= 99.5%
    # The 2-px crop makes it about 1.3x faster at the same accuracy, on the validation split too (docs/benchmarks.md).
    "best": dict(
        model="cnn",
        width=48,
        stem_width=16,
        crop=2,
        epochs=36,
        batch_size=128,
        lr=0.02,
        label_smoothing=0.1,
        augment="affine",
        tta=True,
        val_size=0,
    ),  # >= 99.75%, bench's target: not yet reached (docs/benchmarks.md)
    # Teach the bundled model one person's handwriting from the page's corrections (docs/training.md): a tenth
    # of the usual learning rate, small batches for enough steps, and 95% MNIST images in each epoch, so that
    # MNIST test accuracy holds (benchmarks/finetune.py).
    "finetune": dict(
        init="pretrained", mix_mnist=0.95, epochs=2, batch_size=64, lr=0.001, label_smoothing=0.1, val_size=0
    ),
}

# What each preset is for, in a line: ``mnistkit presets`` and ``train --help`` show it beside the options.
PRESET_PURPOSES: dict[str, str] = {
    "tutorial": "the tutorial's recipe exactly: its MLP, plain SGD, 25 epochs, pixels / 256",
    "fast": "an MLP to 98% test accuracy in the least time, on all 60,000 images, tested with shifts",
    "cnn": "the convnet to 99.0% in one epoch on all 60,000 images, tested with shifts",
    "accurate": "a wider convnet to 99.5% with warped images and test-time shifts, 6 epochs",
    "best": "a wide convnet toward 99.75% with affine augmentation and test-time augmentation, 36 epochs",
    "finetune": "the bundled model fine-tuned on a few images (your corrections), keeping its MNIST accuracy",
}


# Options that matter only for one value of another option; elsewhere they are not shown (``applicable``).
APPLIES_ONLY_WITH: dict[str, tuple[str, Any]] = {
    **{key: ("model", "cnn") for key in CNN_OPTIONS},
    "momentum": ("optimizer", "sgd"),
    "nesterov": ("optimizer", "sgd"),
    "step_size": ("schedule", "step"),
    "gamma": ("schedule", "step"),
}

DATASET_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "kmnist": "KMNIST"}


def applicable(values: dict[str, Any]) -> dict[str, Any]:
    """A config's values without the options that its other choices make irrelevant (momentum for adamw)."""
    return {
        key: value
        for key, value in values.items()
        if key not in APPLIES_ONLY_WITH or values.get(APPLIES_ONLY_WITH[key][0]) == APPLIES_ONLY_WITH[key][1]
    }


def model_title(values: dict[str, Any]) -> str:
    """A config's model in words for titles: ``cnn``, ``cnn (width 24, stem width 16)``."""
    options = [f"{key.replace('_', ' ')} {values[key]}" for key in CNN_OPTIONS if values.get(key)]
    return f"{values.get('model', 'model')} ({', '.join(options)})" if options else str(values.get("model", "model"))


def data_title(data: str | Path | None, dataset: str | None = "mnist") -> str:
    """The data in words for titles: a named dataset's proper name, or the file or folder name of a path."""
    if data:
        return Path(data).name or str(data)
    return DATASET_TITLES.get((dataset or "mnist").lower(), dataset or "mnist")


def make_config(preset: str | None = None, **overrides: Any) -> TrainConfig:
    """Defaults, then the preset, then explicit overrides (``None`` values are ignored), validated. With an
    ``init``, the model and its options follow the init's where not given, and must be its own. ``data`` and
    ``init`` may be any os.PathLike, integer options NumPy integers and flags NumPy bools: the config holds them as
    str, int and bool."""
    values: dict[str, Any] = {}
    if preset is not None:
        if not isinstance(preset, str) or preset not in PRESETS:
            raise ConfigError(unknown_choice("preset", preset, PRESETS))
        values.update(PRESETS[preset])
        values["preset"] = preset
    # Plain before follow_init reads the init (from_dict makes them plain too, for options given to it alone).
    given = {k: _plain(k, v) for k, v in overrides.items() if v is not None}
    values.update(given)
    if not values.get("init"):  # no init (an empty name is refused by validate)
        cfg = TrainConfig.from_dict(values).validate()
        _check_given_apply(given, cfg)
        return cfg
    from . import finetune  # late import: it reads the init's model.json and needs torch

    TrainConfig.from_dict(values)  # the options' types (an init that is not a str) before the init is read
    cfg = TrainConfig.from_dict(finetune.follow_init(values)).validate()
    _check_given_apply(given, cfg)
    finetune.open_init(cfg)  # the model and its options are the init's: refused here, before any run starts
    return cfg


def _check_given_apply(given: dict[str, Any], cfg: TrainConfig) -> None:
    """ConfigError for an option given where this run's other choices would ignore it (momentum for adamw,
    nesterov without momentum): the run would not be the one asked for."""
    for option, value in given.items():
        if option in APPLIES_ONLY_WITH and value is not False:
            other, needed = APPLIES_ONLY_WITH[option]
            if getattr(cfg, other) != needed:
                raise ConfigError(
                    f"{option} applies only with {other} {needed}, and this run's {other} is {getattr(cfg, other)}: "
                    f"drop {option} or give {other} {needed}",
                    options=(option, other),
                )
    if cfg.nesterov and cfg.momentum == 0 and ("nesterov" in given or "momentum" in given):
        raise ConfigError("nesterov needs momentum above 0 (SGD's)", options=("nesterov", "momentum"))


def _options_by_name(values: object) -> dict[str, Any]:
    """``values`` if it is a dict keyed by option names; ConfigError saying so if not (a list or None would fail
    later as an AttributeError or TypeError that names neither from_dict nor what it takes)."""
    if not isinstance(values, dict):
        raise ConfigError(
            f"TrainConfig.from_dict takes a dict of options by name, as to_dict returns; got {described(values)}"
        )
    for key in values:
        if not isinstance(key, str):
            raise ConfigError(f"TrainConfig.from_dict takes options by name (str keys); got the key {described(key)}")
    return values


def _plain(option: str, value: Any) -> Any:
    """``value`` as the option's type is checked, strictly: a path as its str, an integer of another type (NumPy's
    int64) as an int, a flag as a bool (``check_flag``); a bool stays a bool, which no integer option takes."""
    if option in FLAG_OPTIONS:
        return check_flag(option, value)
    if option in PATH_OPTIONS and isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return operator.index(value)
    return value


def check_flag(option: str, value: object) -> bool:
    """``value`` as a bool if it is one (NumPy's bool too); ConfigError naming ``option`` if not: a flag given as
    "no" or 1 would otherwise be taken by its truth, "no" as True."""
    if isinstance(value, bool):
        return value
    if _is_numpy_bool(value):
        return bool(value)
    raise ConfigError(f"{option} must be True or False, got {described(value)}", options=(option,))


def _is_numpy_bool(value: object) -> bool:
    numpy = sys.modules.get("numpy")  # not imported yet: no value is its bool, and config need not import it
    return numpy is not None and isinstance(value, numpy.bool_)


def described(value: object) -> str:
    """A value of the wrong type as a message names it: its type, and the value itself where it is short to show
    (``str 'no'``, ``int 1``, ``None``, ``list``)."""
    if value is None:
        return "None"
    if isinstance(value, (str, bytes, numbers.Number)):
        return f"{type(value).__name__} {short(value)}"
    return type(value).__name__
