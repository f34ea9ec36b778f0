"""The tutorial's API: its model, loss_batch, get_model, get_data, fit and data, and its script run unchanged."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from mnistkit import tutorial
from mnistkit.tutorial import Mnist_NN, fit, get_data, get_model, load_mnist, loss_batch

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "tutorial.py"
LINE = re.compile(r"^当前step:(\d+) 验证集损失:(\d+\.\d+)$")


@pytest.fixture(scope="module")
def tensors():
    """The tutorial's four tensors, loaded once."""
    return load_mnist()


def small(tensors, n_train=2000, n_valid=500):
    x_train, y_train, x_valid, y_valid = tensors
    return x_train[:n_train], y_train[:n_train], x_valid[:n_valid], y_valid[:n_valid]


def test_load_mnist_gives_the_tutorials_tensors(tensors):
    x_train, y_train, x_valid, y_valid = tensors
    assert x_train.shape == (50_000, 784) and x_valid.shape == (10_000, 784)
    assert x_train.dtype == torch.float32 and y_train.dtype == torch.int64
    assert (y_train.min().item(), y_train.max().item()) == (0, 9)
    # pixels are uint8 / 256, as in the tutorial's pickle
    assert x_train.max().item() == pytest.approx(255 / 256) and torch.equal(x_train * 256, (x_train * 256).round())


def test_three_line_workflow_prints_the_tutorials_lines(tensors, capsys):
    x_train, y_train, x_valid, y_valid = small(tensors)
    torch.manual_seed(0)
    train_dl, valid_dl = get_data(TensorDataset(x_train, y_train), TensorDataset(x_valid, y_valid), 64)
    model, opt = get_model()
    losses = fit(3, model, F.cross_entropy, opt, train_dl, valid_dl)
    lines = capsys.readouterr().out.splitlines()
    assert [int(LINE.match(line).group(1)) for line in lines] == [0, 1, 2]
    assert [float(LINE.match(line).group(2)) for line in lines] == pytest.approx(losses)
    assert losses[2] < losses[0] < 2.4


def test_loss_batch_steps_only_with_an_optimizer(tensors):
    x_train, y_train, *_ = small(tensors, 64, 1)
    model, opt = get_model()
    before = [p.clone() for p in model.parameters()]
    loss, n = loss_batch(model, F.cross_entropy, x_train, y_train)
    assert n == 64 and isinstance(loss, float)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    loss_batch(model, F.cross_entropy, x_train, y_train, opt)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())  # zero_grad after the step


def test_get_model_and_get_data_match_the_tutorial(tensors):
    model, opt = get_model()
    assert isinstance(model, Mnist_NN) and isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 0.001
    train_dl, valid_dl = get_data(TensorDataset(*small(tensors)[:2]), TensorDataset(*small(tensors)[2:]), 64)
    assert train_dl.batch_size == 64 and valid_dl.batch_size == 128


def test_pickle_layout_is_the_tutorials():
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = tutorial.load_pickle_layout()
    assert [len(a) for a in (x_train, x_valid, x_test)] == [50_000, 10_000, 10_000]
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64


def test_the_tutorials_script_runs_unchanged(monkeypatch, tensors, capsys):
    """examples/tutorial.py is the tutorial's own code; it runs here on a slice to stay fast."""
    matplotlib.use("Agg")
    monkeypatch.setattr(tutorial, "load_mnist", lambda path=None: small(tensors))
    torch.manual_seed(0)
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "hidden1.weight Parameter containing" in out and "torch.Size([10, 256])" in out
    assert "Mnist_NN(" in out
    steps = [LINE.match(line) for line in out.splitlines() if line.startswith("当前step")]
    assert len(steps) == 25 and float(steps[-1].group(2)) < float(steps[0].group(2))
