"""mnistkit: train, evaluate and use handwritten-digit classifiers (MNIST and its family) with PyTorch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Classifier", "__version__", "create_model", "list_models", "load_data"]

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np
    from torch import nn

    from .inference import Classifier


def __getattr__(name: str) -> Any:
    # Loaded on first use: `import mnistkit` (and the CLI's start-up) stays free of the inference stack.
    if name == "Classifier":
        from .inference import Classifier

        return Classifier
    raise AttributeError(f"module 'mnistkit' has no attribute {name!r}")


def list_models() -> list[str]:
    """The model names ``create_model`` and ``mnistkit train --model`` accept."""
    from .models import list_models

    return list_models()


def create_model(name: str, pretrained: bool = False, **options: Any) -> nn.Module:
    """A fresh model by registry name (``options`` as its constructor takes them, e.g. ``width=24``), or with
    ``pretrained=True`` the bundled pretrained network (a plain ``nn.Module`` taking normalized input; use
    ``Classifier.load()`` for images). ``name`` must then be the pretrained model's own, with no options."""
    from .config import check_flag  # light: neither NumPy nor torch

    if not check_flag("pretrained", pretrained):  # "no" would be taken by its truth
        from .models import create_model as build

        return build(name, **options)
    from .checkpoint import load_checkpoint
    from .errors import ConfigError
    from .inference import PRETRAINED_DIR

    net, meta = load_checkpoint(PRETRAINED_DIR)
    if name != meta["model"] or options:
        raise ConfigError(
            f"the pretrained model is a '{meta['model']}' with options {meta.get('model_options', {})}; "
            "ask for it by that name and without options"
        )
    return net


def load_data(
    dataset: str = "mnist", data: str | Path | None = None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Keras-style ``(x_train, y_train), (x_test, y_test)``: uint8 NumPy arrays (N, 28, 28) and (N,)."""
    from .data import load_data

    return load_data(dataset, data)
