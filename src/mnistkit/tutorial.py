"""The tutorial's API, kept alive: its model, ``loss_batch``, ``get_model``, ``get_data`` and ``fit``, with
the tutorial's signatures and output, plus loaders that replace its download-and-unpickle step.

The tutorial's code runs unchanged once its data loading and class definitions are replaced by::

    from mnistkit.tutorial import Mnist_NN, fit, get_data, get_model, load_mnist, loss_batch
    x_train, y_train, x_valid, y_valid = load_mnist()
    ...
    train_dl, valid_dl = get_data(train_ds, valid_ds, bs)
    model, opt = get_model()
    fit(25, model, loss_func, opt, train_dl, valid_dl)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import optim
from torch.utils.data import DataLoader, Dataset

from . import data
from .models import MLP


class Mnist_NN(MLP):
    """The tutorial's network: hidden1 784->128, hidden2 128->256, out 256->10, ReLU."""


def load_pickle_layout(path: str | Path | None = None) -> tuple:
    """NumPy arrays in the layout of the tutorial's ``mnist.pkl.gz``:
    ``((x_train, y_train), (x_valid, y_valid), (x_test, y_test))``, 50,000 / 10,000 / 10,000, float32
    pixels = uint8 / 256, int64 labels. From the bundled MNIST by default, or from ``path`` (any format
    ``mnistkit`` reads); the bundled data gives exactly the tutorial's pickle.
    """
    ds = data.load_dataset(path) if path is not None else data.load_bundled_mnist()
    splits = data.split_dataset(ds, 10_000)

    def arrays(split: data.Split | None) -> tuple[np.ndarray, np.ndarray]:
        if split is None:
            return np.zeros((0, 784), np.float32), np.zeros(0, np.int64)
        return (split.images.reshape(len(split), 784).numpy().astype(np.float32) / 256.0, split.labels.numpy().copy())

    return arrays(splits.train), arrays(splits.val), arrays(splits.test)


def load_mnist(path: str | Path | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tutorial's ``x_train, y_train, x_valid, y_valid`` as tensors (after its ``map(torch.tensor, …)``)."""
    (x_train, y_train), (x_valid, y_valid), _ = load_pickle_layout(path)
    return torch.from_numpy(x_train), torch.from_numpy(y_train), torch.from_numpy(x_valid), torch.from_numpy(y_valid)


def loss_batch(model, loss_func, xb, yb, opt=None):
    loss = loss_func(model(xb), yb)
    if opt is not None:
        loss.backward()
        opt.step()
        opt.zero_grad()
    return loss.item(), len(xb)


def get_model():
    model = Mnist_NN()
    return model, optim.SGD(model.parameters(), lr=0.001)


def get_data(train_ds: Dataset, valid_ds: Dataset, bs: int):
    return (
        DataLoader(train_ds, batch_size=bs, shuffle=True),
        DataLoader(valid_ds, batch_size=bs * 2),
    )


def fit(steps, model, loss_func, opt, train_dl, valid_dl):
    """The tutorial's loop and output; also returns the validation losses, one per step (epoch)."""
    val_losses = []
    for step in range(steps):
        model.train()
        for xb, yb in train_dl:
            loss_batch(model, loss_func, xb, yb, opt)
        model.eval()
        with torch.no_grad():
            losses, nums = zip(*[loss_batch(model, loss_func, xb, yb) for xb, yb in valid_dl])
        val_loss = np.sum(np.multiply(losses, nums)) / np.sum(nums)
        print("当前step:" + str(step), "验证集损失:" + str(val_loss))
        val_losses.append(float(val_loss))
    return val_losses
