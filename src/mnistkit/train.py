"""Training: a plain loop you can read top to bottom, and the run that wraps it (data, model, test, save).

Speed comes from the data path, not from abstraction: the images stay one uint8 tensor on the device,
batches are taken by index from a fresh permutation each epoch, and the loop does not call ``.item()``
every step (losses are collected on the device and read a few times per epoch).
"""

from __future__ import annotations

import math
import platform
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from . import __version__, data, distributed, resume, runs
from .augment import augment
from .calibrate import calibrate
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .errors import ConfigError, TrainingError
from .evaluate import loss_and_accuracy
from .models import count_parameters, create_model
from .nondigits import OutlierExposure

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


def use_bf16(amp: str, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast. ``auto`` turns it on where the hardware computes bf16 natively:
    CUDA, and CPUs with AVX512-BF16 or AMX, where oneDNN's bf16 kernels make the cnn and the mlp about 1.5x
    faster; on other CPUs bf16 is emulated and would only be slower. Evaluation always runs in float32."""
    if amp == "off" or device.type not in ("cpu", "cuda"):
        return False
    if amp == "bf16" or device.type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


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
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, foreach=True
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, foreach=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, foreach=True)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A learning-rate schedule stepped once per batch, or None."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        if total < 4:  # too few steps to warm up and anneal (PyTorch's OneCycleLR divides by zero): constant lr
            return None
        # The warm-up covers a quarter of the steps, and at least two, as OneCycleLR needs.
        pct_start = max(0.25, 2.0 / total)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total, pct_start=pct_start)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size * steps_per_epoch, gamma=cfg.gamma)
    return None


def _first_bad_step(losses: torch.Tensor) -> int | None:
    bad = (~torch.isfinite(losses)).nonzero()
    return int(bad[0]) if len(bad) else None


class TrainingInterrupted(TrainingError):
    """Ctrl-C stopped training between two batches; the checkpoint is saved."""

    exit_code = 130


class Interrupt:
    """Ctrl-C while training: the first SIGINT asks the loop to stop after the current batch and save a
    checkpoint; a second raises KeyboardInterrupt at once. Checkpoints are written atomically, so quitting
    mid-write leaves the last good one as it was. A context manager: the old handler comes back on exit."""

    def __init__(self, announce: bool = True):
        self.requested, self.announce, self.previous = False, announce, None

    def __enter__(self) -> Interrupt:
        self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        signal.signal(signal.SIGINT, self.previous)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.announce:
            print(
                "\nstopping after this batch to save a checkpoint; press Ctrl-C again to quit at once",
                file=sys.stderr,
                flush=True,
            )


@dataclass
class Checkpoints:
    """Resumable checkpoints during fit: into ``run_dir`` (None: this process does not write, as any rank
    but 0) at every epoch's end, every ``every`` batches, and when ``interrupt`` asks to stop."""

    run_dir: Path | None = None
    every: int = 0
    interrupt: Interrupt | None = None

    def stop_requested(self, ctx: distributed.Context) -> bool:
        # A vote: torchrun passes Ctrl-C to every process, and all must stop after the same batch.
        return self.interrupt is not None and distributed.agree(ctx, self.interrupt.requested)

    def due(self, global_step: int) -> bool:
        return self.every > 0 and global_step % self.every == 0

    def save(
        self,
        progress: resume.Progress,
        model: nn.Module,
        optimizer,
        scheduler,
        generator: torch.Generator,
        ctx: distributed.Context,
    ) -> None:
        """Called on every rank (each holds the losses of its own shard); rank 0 writes."""
        losses_by_rank = None
        if progress.step:
            losses_by_rank = (
                distributed.gather_rows(ctx, progress.losses[: progress.step]),
                distributed.gather_rows(ctx, progress.sizes[: progress.step]),
            )
        if self.run_dir is not None:
            resume.save(self.run_dir, *resume.capture(progress, model, optimizer, scheduler, generator, losses_by_rank))

    def interrupted(
        self, progress: resume.Progress, steps_per_epoch: int, ctx: distributed.Context
    ) -> TrainingInterrupted:
        where = (
            f"at epoch {progress.epoch}, step {progress.step} of {steps_per_epoch}"
            if progress.step
            else f"after epoch {progress.epoch - 1}"
        )
        distributed.barrier(ctx)  # every rank stopped here; leave together once rank 0 has saved
        if self.run_dir is None:
            return TrainingInterrupted(f"interrupted {where}")
        command = f"mnistkit train --resume {self.run_dir}"
        if ctx.distributed:
            command += (
                f" --nproc {ctx.world_size}"
                if ctx.world_size == ctx.local_world_size
                else " (under the same torchrun command)"
            )
        return TrainingInterrupted(f"interrupted {where}; checkpoint saved. Resume with: {command}")


def check_checkpoint_every(every: int) -> None:
    if every < 0:
        raise ConfigError(f"--checkpoint-every must be 0 (epoch ends only) or a number of batches, got {every}")


def fit(
    model: nn.Module,
    train: data.Split,
    val: data.Split | None,
    cfg: TrainConfig,
    norm: data.Normalization,
    reporter: Reporter | None = None,
    *,
    ctx: distributed.Context | None = None,
    resume_from: resume.TrainingState | None = None,
    checkpoints: Checkpoints | None = None,
) -> list[EpochStats]:
    """Train ``model`` on ``train`` (already on the model's device) and validate after every epoch.

    Returns the history, one ``EpochStats`` per epoch. With early stopping the best weights (lowest
    validation loss) are restored at the end. Under torchrun (``ctx``) the model is wrapped in
    DistributedDataParallel and each rank trains on its shard of every epoch's permutation. ``resume_from``
    continues a saved run exactly where it stopped; ``checkpoints`` says where and when to save one.
    """
    reporter = reporter or SilentReporter()
    ctx = ctx or distributed.Context(train.images.device)
    checkpoints = checkpoints or Checkpoints()
    if cfg.early_stopping and val is None:
        raise ConfigError("--early-stopping needs a validation set; use --val-size > 0")
    distributed.check_batch_size(cfg.batch_size, ctx)
    device = train.images.device
    # bf16 has float32's range, so no loss scaler is needed (and none is saved).
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(cfg.amp, device))
    background = -norm.mean / norm.std  # a blank pixel after normalization
    steps_per_epoch = distributed.steps_per_epoch(len(train), cfg.batch_size, ctx)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
    generator = torch.Generator().manual_seed(cfg.seed)  # draws the permutations and the augmentations
    if resume_from is not None:
        progress = resume.restore(
            resume_from, model, optimizer, scheduler, generator, steps_per_epoch, ctx.rank, ctx.world_size
        )
    else:
        progress = resume.Progress()
    net = distributed.wrap(model, ctx)  # after restoring: DDP starts every rank from rank 0's weights
    net = torch.compile(net) if cfg.compile else net
    evaluator = model if ctx.distributed else net  # each rank evaluates its own shard, outside DDP
    exposure = OutlierExposure(train.images, cfg.outliers, norm, cfg.augment, cfg.seed) if cfg.outliers else None

    while not progress.done and progress.epoch <= cfg.epochs:
        epoch = progress.epoch
        if progress.step == 0:
            progress.start_epoch(steps_per_epoch, device, generator)
        start = time.perf_counter() - progress.epoch_seconds
        reporter.epoch_start(epoch, cfg.epochs, steps_per_epoch)
        net.train()
        for step, (x, y) in enumerate(_epoch_batches(train, cfg, norm, generator, ctx, progress), start=progress.step):
            x = augment(x, cfg.augment, background, generator, labels=y)
            if exposure is not None:
                x = exposure.extend(x, generator)
            x = x.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits = net(x)
                if exposure is not None:
                    loss = exposure.loss(logits, y, cfg.label_smoothing)
                else:
                    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            progress.losses[step] = loss.detach()
            progress.sizes[step] = len(y)
            progress.step = step + 1
            if progress.step % SYNC_EVERY == 0 or progress.step == steps_per_epoch:
                _check_finite(progress.losses[: progress.step], epoch, ctx)
                reporter.batches_done(
                    progress.step, _mean_loss(progress.losses[: progress.step], progress.sizes[: progress.step])
                )
            if progress.step < steps_per_epoch:  # the epoch's last batch is saved after validation
                stop = checkpoints.stop_requested(ctx)
                if stop or checkpoints.due((epoch - 1) * steps_per_epoch + progress.step):
                    progress.epoch_seconds = time.perf_counter() - start
                    checkpoints.save(progress, model, optimizer, scheduler, generator, ctx)
                if stop:
                    raise checkpoints.interrupted(progress, steps_per_epoch, ctx)
        losses = distributed.all_sum(ctx, torch.stack([(progress.losses * progress.sizes).sum(), progress.sizes.sum()]))
        train_loss = (losses[0] / losses[1]).item()
        distributed.broadcast_buffers(model, ctx)

        val_loss = val_accuracy = None
        if val is not None and len(val):
            val_loss, val_accuracy = _score(evaluator, val, norm, ctx, cfg.eval_batch_size)
            if not math.isfinite(val_loss):
                raise TrainingError(
                    f"validation loss became {val_loss} at epoch {epoch}; lower the learning rate (--lr) or set --grad-clip"
                )
        stats = EpochStats(
            epoch, train_loss, val_loss, val_accuracy, optimizer.param_groups[0]["lr"], time.perf_counter() - start
        )
        progress.history.append(asdict(stats))
        reporter.epoch_end(stats)

        if cfg.early_stopping and val_loss is not None:
            if val_loss < progress.best_loss:
                progress.best_loss, progress.epochs_without_gain = val_loss, 0
                progress.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                progress.epochs_without_gain += 1
        progress.done = epoch == cfg.epochs or 0 < cfg.early_stopping <= progress.epochs_without_gain
        progress.epoch, progress.step = epoch + 1, 0
        checkpoints.save(progress, model, optimizer, scheduler, generator, ctx)
        if not progress.done and checkpoints.stop_requested(ctx):
            raise checkpoints.interrupted(progress, steps_per_epoch, ctx)
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    distributed.check_in_sync(model, ctx)
    return [EpochStats(**h) for h in progress.history]


def _epoch_batches(
    train: data.Split,
    cfg: TrainConfig,
    norm: data.Normalization,
    generator: torch.Generator,
    ctx: distributed.Context,
    progress: resume.Progress,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """This rank's batches of the epoch, from a fresh permutation.

    Resumed in the middle of an epoch, the permutation is redrawn from the generator state the epoch
    began with, the batches already trained are skipped, and the generator is put back where it was at
    the interruption (the augmentations draw from it too): the run goes on exactly as if never stopped.
    """
    now = generator.get_state()
    if progress.step:
        generator.set_state(progress.epoch_rng)
    batches = data.batches(
        train, cfg.batch_size, norm, shuffle=True, generator=generator, rank=ctx.rank, world_size=ctx.world_size
    )
    if progress.step:
        for _ in range(progress.step):
            next(batches)
        generator.set_state(now)
    return batches


def _score(
    model: nn.Module,
    split: data.Split,
    norm: data.Normalization,
    ctx: distributed.Context,
    batch_size: int,
    tta: bool = False,
) -> tuple[float, float]:
    if ctx.distributed:
        return distributed.sharded_loss_and_accuracy(model, split, norm, ctx, batch_size, tta)
    return loss_and_accuracy(model, split, norm, batch_size, tta)


def _mean_loss(losses: torch.Tensor, sizes: torch.Tensor) -> float:
    return (losses * sizes).sum().item() / sizes.sum().item()


def _check_finite(losses: torch.Tensor, epoch: int, ctx: distributed.Context) -> None:
    bad = _first_bad_step(losses)
    # A vote, so that every rank stops together rather than one waiting forever for the others.
    if distributed.agree(ctx, bad is not None):
        where = f"at epoch {epoch}, step {bad + 1}" if bad is not None else f"on another process at epoch {epoch}"
        value = f"{losses[bad].item()} " if bad is not None else "non-finite "
        raise TrainingError(f"loss became {value}{where}; lower the learning rate (--lr) or set --grad-clip")


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
    *,
    ctx: distributed.Context | None = None,
    resume_from: resume.TrainingState | None = None,
    checkpoint_every: int = 0,
    interrupt: Interrupt | None = None,
) -> RunResult:
    """Everything ``mnistkit train`` does: load and split the data, build the model, fit, test, save.

    ``run_dir`` (created beforehand by ``runs.create_run_dir``) receives config.json, metrics.csv,
    resumable checkpoints in resume/, the final checkpoint and curves.png; with None nothing is written
    (as on every rank but 0 under torchrun). ``resume_from`` (``resume.load(run_dir)``) continues that run.
    """
    cfg.validate()
    check_checkpoint_every(checkpoint_every)
    ctx = ctx or distributed.Context(resolve_device(cfg.device))
    device = ctx.device
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
    if run_dir is not None and resume_from is None:
        runs.write_config(run_dir, cfg)

    history = fit(
        model,
        train,
        val,
        cfg,
        norm,
        reporter=_saving(reporter, run_dir, resume_from.history if resume_from is not None else []),
        ctx=ctx,
        resume_from=resume_from,
        checkpoints=Checkpoints(run_dir, checkpoint_every, interrupt),
    )

    test_start = time.perf_counter()
    test_loss = test_accuracy = None
    if test is not None and len(test):
        test_loss, test_accuracy = _score(model, test, norm, ctx, cfg.eval_batch_size, tta=cfg.tta)
    test_seconds = time.perf_counter() - test_start
    calibration = None
    if val is not None and len(val):
        calibration = calibrate(model, val, norm, splits.train.images, cfg.eval_batch_size)
    meta = {
        "model": cfg.model,
        "model_options": {"num_classes": len(dataset.classes), **cfg.model_options()},
        "parameters": count_parameters(model),
        "normalization": norm.to_dict(),
        "classes": dataset.classes,
        "input": {"channels": 1, "height": 28, "width": 28, "polarity": "white ink on black, as MNIST"},
        "tta": cfg.tta,
        "calibration": calibration,
        "dataset": {
            "name": dataset.name,
            "source": dataset.source,
            "checksums": dataset.checksums,
            "train": len(splits.train),
            "val": len(splits.val) if splits.val else 0,
            "test": len(splits.test) if splits.test else 0,
        },
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
        "processes": ctx.describe(),
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

    def __init__(self, inner: Reporter, run_dir: Path, history: list[dict]):
        self.inner, self.run_dir, self.history = inner, run_dir, list(history)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.inner.epoch_start(epoch, epochs, steps)

    def batches_done(self, steps_done: int, running_loss: float) -> None:
        self.inner.batches_done(steps_done, running_loss)

    def epoch_end(self, stats: EpochStats) -> None:
        self.history.append(asdict(stats))
        runs.write_metrics(self.run_dir, self.history)
        self.inner.epoch_end(stats)


def _saving(reporter: Reporter | None, run_dir: Path | None, history: list[dict]) -> Reporter:
    reporter = reporter or SilentReporter()
    return _SavingReporter(reporter, run_dir, history) if run_dir is not None else reporter


def command_line() -> str:
    return " ".join(["mnistkit", *sys.argv[1:]])
