"""Models and their registry (name -> constructor). Every model takes a batch of shape (N, 1, 28, 28)."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import check_flag
from .errors import ConfigError, unknown_choice
from .schema import short


class LogReg(nn.Module):
    """The tutorial's first model, ``xb @ weights + bias`` (784 -> 10), as a module: logistic regression."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        # The tutorial's standard-normal weights scaled by 1/sqrt(784), zero bias. Unscaled, the logits start in
        # the tens (a loss near 12), and a few epochs at the default options end several points lower.
        self.weights = nn.Parameter(torch.randn(784, num_classes) / math.sqrt(784))
        self.bias = nn.Parameter(torch.zeros(num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weights + self.bias


class MLP(nn.Module):
    """Exactly the tutorial's ``Mnist_NN``: 784 -> 128 -> 256 -> 10 with ReLU (136,074 parameters)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.hidden1 = nn.Linear(784, 128)
        self.hidden2 = nn.Linear(128, 256)
        self.out = nn.Linear(256, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # the tutorial feeds flat 784-vectors; a 1x28x28 batch flattens to the same
        x = F.relu(self.hidden1(x))
        x = F.relu(self.hidden2(x))
        return self.out(x)


def conv_block(c_in: int, c_out: int, pool: bool) -> nn.Sequential:
    """3x3 convolution, optional 2x2 max-pool, BatchNorm, ReLU.

    Pooling before BatchNorm (as in Keller Jordan's airbench) makes BN and ReLU run on a quarter of the
    pixels: the network is much faster on CPU than conv-BN-ReLU-pool, at the same accuracy.
    """
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)]
    if check_flag("pool", pool):  # pool="no" would pool
        layers.append(nn.MaxPool2d(2))
    layers += [nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


def strided_stem(c_out: int) -> nn.Sequential:
    """5x5 convolution with stride 2, BatchNorm, ReLU: the first block at half the resolution from the start.

    Each output sees the 4x4 pixels that a 3x3 convolution and a 2x2 max-pool would, and a border more
    (a 3x3 or 4x4 kernel with stride 2 lost about 0.1% test accuracy in the cnn preset's one epoch).
    """
    return nn.Sequential(
        nn.Conv2d(1, c_out, kernel_size=5, stride=2, padding=2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


def strided_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 convolution with stride 2, BatchNorm, ReLU: ``conv_block`` with the pool folded into the
    convolution, which then computes a quarter of the outputs."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class CNN(nn.Module):
    """A small, fast convnet: three conv blocks (s, 2w, 4w channels; the first two halve the resolution
    28 -> 14 -> 7), global max-pooling and a linear classifier. ``width`` (w) scales it; ``stem_width``
    (s) is the first block's, w unless given.

    The first block is the only one at full resolution, and on CPU it is bound by memory traffic, not
    arithmetic: a narrower stem makes a width-24 network train faster, because the stem's pooling, its
    backward and the zeroing of its gradient shrink with it (docs/benchmarks.md). ``stem_stride`` 2 goes
    further (``strided_stem``): the first convolution steps two pixels at a time and needs no pooling, so no
    activation at full resolution is ever stored, pooled or zeroed. ``block2_stride`` 2 does the same for the
    second block (``strided_block``).

    ``crop`` cuts that many pixels from each edge of the image before the first layer. MNIST's digits fit a
    20x20 box in the middle of the 28x28 image (to_mnist makes other images the same), so its border is
    almost always paper: 2 leaves 24x24, and every later layer does about three quarters of the work."""

    def __init__(
        self,
        num_classes: int = 10,
        width: int = 16,
        stem_width: int | None = None,
        stem_stride: int = 1,
        block2_stride: int = 1,
        crop: int = 0,
    ):
        super().__init__()
        self.width = width
        self.crop = crop
        stem_width = width if stem_width is None else stem_width
        self.features = nn.Sequential(
            conv_block(1, stem_width, pool=True) if stem_stride == 1 else strided_stem(stem_width),
            conv_block(stem_width, 2 * width, pool=True)
            if block2_stride == 1
            else strided_block(stem_width, 2 * width),
            conv_block(2 * width, 4 * width, pool=False),
            nn.AdaptiveMaxPool2d(1),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop:
            x = x[..., self.crop : x.shape[-2] - self.crop, self.crop : x.shape[-1] - self.crop]
        return self.head(self.features(x).flatten(1))


MAX_WIDTH = 1024  # a cnn this wide has 75 million parameters (300 MB); wider is a typo, not a model
MAX_CLASSES = 1000
# The range of each integer option a model may take.
OPTION_RANGES = {
    "num_classes": (1, MAX_CLASSES),
    "width": (1, MAX_WIDTH),
    "stem_width": (1, MAX_WIDTH),
    "stem_stride": (1, 2),
    "block2_stride": (1, 2),
    "crop": (0, 8),  # 8 leaves 12x12 of a 28x28 image
}

MODELS: dict[str, Callable[..., nn.Module]] = {
    "logreg": LogReg,
    "mlp": MLP,
    "cnn": CNN,
}


def list_models() -> list[str]:
    """The registered model names, as ``create_model`` and ``--model`` accept them."""
    return sorted(MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model by name; ``kwargs`` are its constructor's options (e.g. ``width``)."""
    if not isinstance(name, str):
        raise ConfigError(f"a model is named by a string, one of {', '.join(MODELS)}; got {short(name)}")
    if name not in MODELS:
        raise ConfigError(unknown_choice("model", name, MODELS))
    constructor = MODELS[name]
    check_accepted(name, kwargs)
    kwargs = check_options(kwargs)
    try:
        return constructor(**kwargs)
    except TypeError as exc:  # a value of the wrong type
        raise ConfigError(f"invalid options for model '{name}': {exc}") from None


def accepted_options(name: str) -> tuple[str, ...]:
    """The options that registered model ``name`` takes: its constructor's parameters."""
    return tuple(inspect.signature(MODELS[name]).parameters)


def check_accepted(name: str, options: dict[str, object]) -> None:
    """ConfigError naming the first of ``options`` that model ``name`` (a registered one) does not take."""
    accepted = accepted_options(name)
    unknown = [key for key in options if key not in accepted]
    if unknown:
        key = unknown[0]
        named = isinstance(key, str) and key.isidentifier()  # an option's name, bare, so the CLI shows its flag
        raise ConfigError(
            f"invalid options for model '{name}': it takes no option {key if named else short(key)} "
            f"(its options: {', '.join(accepted)})",
            options=(key,) if named else (),
        )


def check_options(options: dict[str, object]) -> dict[str, object]:
    """``options``, each whole-number one (``OPTION_RANGES``) as an int, NumPy's integers too; ConfigError naming the
    first that is not a whole number in its range."""
    checked = dict(options)
    for key, value in options.items():
        if key in OPTION_RANGES and value is not None:
            low, high = OPTION_RANGES[key]
            number = int(value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else None
            if number is None or not low <= number <= high:
                raise ConfigError(
                    f"{key} must be a whole number from {low} to {high}, got {short(value)}", options=(key,)
                )
            checked[key] = number
    return checked


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
