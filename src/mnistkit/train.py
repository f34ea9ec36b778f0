"""Training: a plain loop you can read top to bottom, and the run that wraps it (data, model, test, save).

Speed comes from the data path, not from abstraction: the images stay one uint8 tensor on the device,
batches are taken by index from a fresh permutation each epoch, and the loop does not call ``.item()``
every step (losses are collected on the device and read a few times per epoch).
"""

from __future__ import annotations

import copy
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__, data, runs
from .augment import augment
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .errors import ConfigError, TrainingError
from .evaluate import loss_and_accuracy
from .models import count_parameters, create_model

SYNC_EVERY = 50  # steps between reads of the loss from the device (progress display and NaN check)


@dataclass
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float


class Reporter(Protocol):
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def batches_done(self, steps_done: int, running_loss: float) -> None: ...
    def epoch_end(self, stats: EpochStats) -> None: ...


class SilentReporter:
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def batches_done(self, steps_done: int, running_loss: float) -> None:
        pass

    def epoch_end(self, stats: EpochStats) -> None:
        pass


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA GPU is available here; use --device auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ConfigError("--device mps: Apple's MPS backend is not available here; use --device auto or cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Weight decay on weights only: decaying BatchNorm scales and biases hurts small convnets.
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # foreach fuses the per-parameter updates into a few multi-tensor kernels, on CPU as on GPU.
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, foreach=True)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, foreach=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A learning-rate schedule stepped once per batch, or None."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=0.25)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size * steps_per_epoch, gamma=cfg.gamma)
    return None


def _first_bad_step(losses: torch.Tensor) -> int | None:
    bad = (~torch.isfinite(losses)).nonzero()
    return int(bad[0]) if len(bad) else None


def fit(
    model: nn.Module,
    train: data.Split,
    val: data.Split | None,
    cfg: TrainConfig,
    norm: data.Normalization,
    reporter: Reporter | None = None,
) -> list[EpochStats]:
    """Train ``model`` on ``train`` (already on the model's device) and validate after every epoch.

    Returns the history, one ``EpochStats`` per epoch. With early stopping the best weights (lowest
    validation loss) are restored at the end.
    """
    reporter = reporter or SilentReporter()
    if cfg.early_stopping and val is None:
        raise ConfigError("--early-stopping needs a validation set; use --val-size > 0")
    device = train.images.device
    # bf16 autocast where the hardware does it fast (CUDA); CPUs without AMX would only get slower.
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    background = -norm.mean / norm.std  # a blank pixel after normalization
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    generator = torch.Generator().manual_seed(cfg.seed)
    history: list[EpochStats] = []
    best_loss, best_state, epochs_without_gain = math.inf, None, 0

    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        reporter.epoch_start(epoch, cfg.epochs, steps_per_epoch)
        model.train()
        losses = torch.zeros(steps_per_epoch, device=device)
        sizes = torch.zeros(steps_per_epoch, device=device)
        for step, (x, y) in enumerate(data.batches(train, cfg.batch_size, norm, shuffle=True, generator=generator)):
            x = augment(x, cfg.augment, background, generator).contiguous(memory_format=torch.channels_last)
            with autocast:
                loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses[step] = loss.detach()
            sizes[step] = len(y)
            if (step + 1) % SYNC_EVERY == 0 or step + 1 == steps_per_epoch:
                _check_finite(losses[: step + 1], epoch)
                reporter.batches_done(step + 1, (losses[: step + 1] * sizes[: step + 1]).sum().item() / sizes[: step + 1].sum().item())
        train_loss = ((losses * sizes).sum() / sizes.sum()).item()

        val_loss = val_accuracy = None
        if val is not None and len(val):
            val_loss, val_accuracy = loss_and_accuracy(model, val, norm, cfg.eval_batch_size)
            if not math.isfinite(val_loss):
                raise TrainingError(f"validation loss became {val_loss} at epoch {epoch}; lower the learning rate (--lr) or set --grad-clip")
        stats = EpochStats(epoch, train_loss, val_loss, val_accuracy, optimizer.param_groups[0]["lr"], time.perf_counter() - start)
        history.append(stats)
        reporter.epoch_end(stats)

        if cfg.early_stopping and val_loss is not None:
            if val_loss < best_loss:
                best_loss, best_state, epochs_without_gain = val_loss, copy.deepcopy(model.state_dict()), 0
            else:
                epochs_without_gain += 1
                if epochs_without_gain >= cfg.early_stopping:
                    break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history


def _check_finite(losses: torch.Tensor, epoch: int) -> None:
    bad = _first_bad_step(losses)
    if bad is not None:
        raise TrainingError(
            f"loss became {losses[bad].item()} at epoch {epoch}, step {bad + 1}; "
            "lower the learning rate (--lr) or set --grad-clip"
        )


@dataclass
class RunResult:
    run_dir: Path | None
    model: nn.Module
    history: list[EpochStats]
    test_loss: float | None
    test_accuracy: float | None
    meta: dict


def train_run(
    cfg: TrainConfig,
    run_dir: Path | None = None,
    reporter: Reporter | None = None,
    command: str | None = None,
) -> RunResult:
    """Everything ``mnistkit train`` does: load and split the data, build the model, fit, test, save.

    ``run_dir`` (created beforehand by ``runs.create_run_dir``) receives config.json, metrics.csv,
    the checkpoint and curves.png; with None nothing is written.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed, cfg.deterministic)
    load_start = time.perf_counter()
    dataset = data.load_dataset(cfg.data, cfg.dataset)
    splits = data.split_dataset(dataset, cfg.val_size)
    norm = data.standardization(splits.train) if cfg.normalize else data.Normalization(0.0, 1.0, 256.0)
    train, val, test = (s.to(device) if s is not None else None for s in (splits.train, splits.val, splits.test))
    load_seconds = time.perf_counter() - load_start
    # channels_last makes convolutions about twice as fast on CPU (oneDNN) and uses tensor cores on GPU.
    model = create_model(cfg.model, num_classes=len(dataset.classes), **cfg.model_options())
    model = model.to(device, memory_format=torch.channels_last)
    trained = torch.compile(model) if cfg.compile else model
    if run_dir is not None:
        runs.write_config(run_dir, cfg)

    history = fit(trained, train, val, cfg, norm, reporter=_saving(reporter, run_dir))

    test_start = time.perf_counter()
    test_loss = test_accuracy = None
    if test is not None and len(test):
        test_loss, test_accuracy = loss_and_accuracy(model, test, norm, cfg.eval_batch_size, tta=cfg.tta)
    test_seconds = time.perf_counter() - test_start
    meta = {
        "model": cfg.model,
        "model_options": {"num_classes": len(dataset.classes), **cfg.model_options()},
        "parameters": count_parameters(model),
        "normalization": norm.to_dict(),
        "classes": dataset.classes,
        "input": {"channels": 1, "height": 28, "width": 28, "polarity": "white ink on black, as MNIST"},
        "tta": cfg.tta,
        "dataset": {"name": dataset.name, "source": dataset.source, "checksums": dataset.checksums,
                    "train": len(splits.train), "val": len(splits.val) if splits.val else 0,
                    "test": len(splits.test) if splits.test else 0},
        "metrics": {
            "epochs": len(history),
            "train_loss": history[-1].train_loss,
            "val_loss": history[-1].val_loss,
            "val_accuracy": history[-1].val_accuracy,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "train_seconds": sum(h.seconds for h in history),
            "load_seconds": load_seconds,
            "test_seconds": test_seconds,
        },
        "config": cfg.to_dict(),
        "command": command,
        "mnistkit_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if run_dir is not None:
        save_checkpoint(run_dir, model.cpu(), meta)
        model.to(device)
        from .plots import write_curves  # matplotlib loads only for runs that write a folder

        write_curves(run_dir)
    return RunResult(run_dir, model, history, test_loss, test_accuracy, meta)


class _SavingReporter:
    """Passes events on, and rewrites metrics.csv after every epoch so a killed run keeps its history."""

    def __init__(self, inner: Reporter, run_dir: Path):
        self.inner, self.run_dir, self.history = inner, run_dir, []

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.inner.epoch_start(epoch, epochs, steps)

    def batches_done(self, steps_done: int, running_loss: float) -> None:
        self.inner.batches_done(steps_done, running_loss)

    def epoch_end(self, stats: EpochStats) -> None:
        self.history.append(stats)
        runs.write_metrics(self.run_dir, [asdict(h) for h in self.history])
        self.inner.epoch_end(stats)


def _saving(reporter: Reporter | None, run_dir: Path | None) -> Reporter:
    reporter = reporter or SilentReporter()
    return _SavingReporter(reporter, run_dir) if run_dir is not None else reporter


def command_line() -> str:
    return " ".join(["mnistkit", *sys.argv[1:]])
