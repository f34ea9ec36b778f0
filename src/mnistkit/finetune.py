"""Fine-tuning: a run that starts from existing weights (the bundled model or another run) instead of a fresh
model, and mixes MNIST training images into a small data set (the drawing page's corrections), so that the
model learns the new images and keeps what it knew.

``init`` names the weights: ``pretrained`` (the bundled model) or a run folder or checkpoint. The run's model
and options must be the init's (they follow it when not given), and its input is scaled with the init's
normalization, which its weights expect, rather than one fitted to the new data. The config records the init's
path and its weights' SHA-256, so a resumed run refuses an init that changed since.

``mix_mnist`` F is the share of each epoch's training images that are MNIST: beside n training images,
round(n·F / (1 − F)) images of the official MNIST training part, drawn once with the run's seed, join the
training set. When the data has no test part (a corrections database), the MNIST test set becomes the run's
test set, so the run reports whether MNIST accuracy held.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint, data, fileio
from .config import CNN_OPTIONS, TrainConfig, model_title
from .errors import CheckpointError, ConfigError

PRETRAINED = "pretrained"  # the init that names the bundled model
ARCHITECTURE_OPTIONS = ("model", *CNN_OPTIONS)  # what follows the init when not given


@dataclass(frozen=True)
class InitModel:
    """The weights a run starts from: as named in the config, with its checked model.json."""

    name: str  # "pretrained", or the checkpoint's absolute path as the config records it
    meta_path: Path
    meta: dict[str, Any]

    @property
    def sha256(self) -> str:
        return self.meta["sha256"]

    @property
    def normalization(self) -> data.Normalization:
        saved = self.meta.get("normalization")
        return data.Normalization(**saved) if saved is not None else data.Normalization()

    @property
    def classes(self) -> list[str]:
        return self.meta.get("classes") or list(data.DIGITS)

    def title(self) -> str:
        return model_title({"model": self.meta["model"], **self.meta.get("model_options", {})})

    def record(self) -> dict[str, str]:
        """What model.json keeps of the init: its path (or ``pretrained``) and its weights' SHA-256."""
        return {"path": self.name, "sha256": self.sha256}

    def check(self, cfg: TrainConfig) -> None:
        """One line unless ``cfg`` builds the init's network (the same model, tensors of the same shapes) and
        names the init's weights (its ``init_sha256``, when set)."""
        if cfg.init_sha256 is not None and cfg.init_sha256 != self.sha256:
            raise ConfigError(
                f"init: {self.name} holds other weights than the run started from (SHA-256 {self.sha256[:12]}…, "
                f"recorded {cfg.init_sha256[:12]}…); start a new run from it"
            )
        options = self.meta.get("model_options", {})
        ours = _shapes(cfg.model, {"num_classes": options.get("num_classes", 10), **cfg.model_options()})
        if cfg.model != self.meta["model"] or ours != _shapes(self.meta["model"], options):
            raise ConfigError(
                f"init: {self.name} holds model {self.title()}, the options ask for model "
                f"{model_title(cfg.to_dict())}; leave out the model options (they follow the init) or give its own"
            )

    def check_classes(self, classes: list[str]) -> None:
        if classes != self.classes:
            raise ConfigError(
                f"init: {self.name} tells apart {_listed(self.classes)}, the data {_listed(classes)}; "
                "fine-tune on data with the init's classes"
            )

    def load_weights(self, model: nn.Module) -> None:
        """Put the init's verified weights into ``model`` (built by the config that ``check`` passed)."""
        weights = self.meta_path.parent / self.meta.get("weights", checkpoint.WEIGHTS_NAME)
        try:
            state = checkpoint.read_tensors(weights, self.sha256, "weights", self.meta_path.name)
            checkpoint.load_state(model, state, str(weights))
        except CheckpointError as exc:
            raise CheckpointError(f"init: {exc}") from None


def locate(init: str) -> Path:
    """Where the init named ``init`` lies: the bundled model's folder for ``pretrained``, else the path."""
    if init == PRETRAINED:
        from .inference import PRETRAINED_DIR

        return PRETRAINED_DIR
    return fileio.expanded(init)


def read_init(init: str) -> InitModel:
    """The init named ``init`` (``pretrained``, or a run folder or checkpoint), with its checked model.json."""
    try:
        meta, meta_path = checkpoint.read_meta(locate(init))
    except CheckpointError as exc:
        raise ConfigError(f"init: {exc}") from None
    name = init if init == PRETRAINED else str(meta_path.resolve())
    return InitModel(name, meta_path, meta)


def open_init(cfg: TrainConfig) -> InitModel:
    """The config's init, checked against the config (which must name one)."""
    assert cfg.init is not None
    init = read_init(cfg.init)
    init.check(cfg)
    return init


def follow_init(values: dict[str, Any]) -> dict[str, Any]:
    """A config's options with those the init fixes filled in: its model and model options where not given,
    its path as the config records it (absolute, so a resumed run finds it from anywhere), and its weights'
    SHA-256."""
    init = read_init(values["init"])
    saved = {"model": init.meta["model"], **init.meta.get("model_options", {})}
    filled = dict(values, init=init.name, init_sha256=values.get("init_sha256") or init.sha256)
    if filled.setdefault("model", saved["model"]) == saved["model"]:
        for option in ARCHITECTURE_OPTIONS[1:]:
            if option in saved:
                filled.setdefault(option, saved[option])
    return filled


def _shapes(model: str, options: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    from .models import create_model

    with torch.device("meta"):  # shapes only: no memory, no initialisation
        net = create_model(model, **options)
    return {name: tuple(tensor.shape) for name, tensor in net.state_dict().items()}


def _listed(classes: list[str]) -> str:
    shown = ", ".join(classes[:4]) + (", …" if len(classes) > 4 else "")
    return f"{len(classes)} classes ({shown})"


# --------------------------------------------------------------------------------------------------
# MNIST mixed in


def mixed_count(n: int, fraction: float) -> int:
    """How many MNIST images make ``fraction`` of a training set beside ``n`` others."""
    return round(n * fraction / (1 - fraction))


def largest_fraction(n: int, available: int) -> float:
    """The largest ``mix_mnist`` with three decimals that asks for no more than ``available`` MNIST images beside
    ``n`` others (a database of 100,000 corrections: 0.375 of MNIST's 60,000)."""
    return math.floor(available / (n + available) * 1000) / 1000


def mix_mnist(dataset: data.Dataset, splits: data.Splits, fraction: float, seed: int) -> tuple[data.Splits, dict]:
    """``splits`` with MNIST training images added to its training part (``fraction`` of the whole), and the
    MNIST test set as its test part when it has none; with the record model.json keeps of that source."""
    if dataset.classes != data.DIGITS:
        raise ConfigError(
            f"mix_mnist: MNIST's digits cannot join data of other classes ({_listed(dataset.classes)}); "
            "set mix_mnist to 0"
        )
    mnist = data.load_bundled_mnist()
    count = mixed_count(len(splits.train), fraction)
    if count > len(mnist.train):
        most = largest_fraction(len(splits.train), len(mnist.train))
        raise ConfigError(
            f"mix_mnist: {fraction} of the training set beside its {len(splits.train):,} images is {count:,} MNIST "
            f"images, more than MNIST's {len(mnist.train):,}; "
            + (f"lower mix_mnist to {most} or less" if most > 0 else "set mix_mnist to 0")
        )
    drawn = torch.randperm(len(mnist.train), generator=torch.Generator().manual_seed(seed))[:count]
    train = data.Split(
        torch.cat([splits.train.images, mnist.train.images[drawn]]),
        torch.cat([splits.train.labels, mnist.train.labels[drawn]]),
    )
    test = splits.test if splits.test is not None else mnist.test
    record = {
        "fraction": fraction,
        "seed": seed,
        "train": count,
        "test": len(mnist.test) if splits.test is None and mnist.test is not None else 0,
        "name": mnist.name,
        "source": mnist.source,
        "checksums": mnist.checksums,
    }
    return data.Splits(train, splits.val, test), record
