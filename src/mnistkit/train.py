"""Training: a plain loop you can read top to bottom, and the run that wraps it (data, model, test, save).

Speed comes from the data path, not from abstraction: the images stay one uint8 tensor on the device,
batches are taken by index from a fresh permutation each epoch, and the loop does not call ``.item()``
every step (losses are collected on the device and read a few times per epoch).

Names, as in ``inference.py``: ``model`` (or ``net``) is the network itself, as ``models.py`` builds it and a
checkpoint stores it; a wrapper is named for what it adds (``trained``: compiled, in DistributedDataParallel).
"""

from __future__ import annotations

import functools
import math
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ParamSpec, Protocol, TypeVar, cast

import torch
import torch.nn.functional as F
from torch import nn

from . import data, distributed, finetune, resume, runs
from .augment import augment
from .calibrate import calibrate
from .checkpoint import save_checkpoint
from .config import TrainConfig
from .errors import ConfigError, TrainingError, stopped_by
from .evaluate import loss_and_accuracy
from .models import count_parameters, create_model
from .nondigits import OutlierExposure

SYNC_EVERY = 50  # steps between reads of the loss from the device (running loss display and NaN check)


@dataclass
class EpochStats:
    epoch: int  # 1-based
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    lr: float
    seconds: float
    batch_losses: list[float] | None = field(default=None, repr=False)  # this process's batches, in order

    def row(self) -> dict:
        """The epoch's numbers as the history keeps them: all but the per-batch losses."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "batch_losses"}

    def metrics(self) -> dict[str, float]:
        """The epoch's measured numbers for a tracker (those of validation only where there was one)."""
        measured = {
            "train_loss": self.train_loss,
            "val_loss": self.val_loss,
            "val_accuracy": self.val_accuracy,
            "lr": self.lr,
            "seconds_per_epoch": self.seconds,
        }
        return {name: value for name, value in measured.items() if value is not None}


class Reporter(Protocol):
    """What fit tells the outside world: ``step_done`` after every batch (the step count only, which costs no
    device sync), ``batches_done`` every ``SYNC_EVERY`` batches with the running loss, ``epoch_end`` with
    the epoch's numbers."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None: ...
    def step_done(self, steps_done: int) -> None: ...
    def batches_done(self, steps_done: int, running_loss: float) -> None: ...
    def epoch_end(self, stats: EpochStats) -> None: ...


class ForwardingReporter:
    """Passes every event on to ``inner``: the base of reporters that wrap another, which override only the
    events they add to (and call ``super()`` to pass them on)."""

    def __init__(self, inner: Reporter):
        self.inner = inner

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        self.inner.epoch_start(epoch, epochs, steps)

    def step_done(self, steps_done: int) -> None:
        self.inner.step_done(steps_done)

    def batches_done(self, steps_done: int, running_loss: float) -> None:
        self.inner.batches_done(steps_done, running_loss)

    def epoch_end(self, stats: EpochStats) -> None:
        self.inner.epoch_end(stats)


class SilentReporter:
    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        pass

    def step_done(self, steps_done: int) -> None:
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
        raise ConfigError("device cuda: no CUDA GPU is available here; use device auto or cpu", options=("device",))
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ConfigError(
            "device mps: Apple's MPS backend is not available here; use device auto or cpu", options=("device",)
        )
    return torch.device(name)


def use_bf16(amp: str, device: torch.device) -> bool:
    """Whether training runs under bf16 autocast. ``auto`` turns it on where the hardware computes bf16 natively:
    CUDA, and CPUs with AVX512-BF16 or AMX, where oneDNN's bf16 kernels make the cnn and the mlp faster
    (docs/benchmarks.md); on other CPUs bf16 is emulated and would only be slower. Evaluation always runs in
    float32."""
    if amp == "off" or device.type not in ("cpu", "cuda"):
        return False
    if amp == "bf16" or device.type == "cuda":
        return True
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


P = ParamSpec("P")
R = TypeVar("R")


def keeps_torch_switches(function: Callable[P, R]) -> Callable[P, R]:
    """``function``, after which the process-wide switches a run sets for itself (deterministic algorithms,
    cuDNN's benchmark mode) are back as they were: a notebook's own code, and its next run, keep their own."""

    @functools.wraps(function)
    def kept(*args: P.args, **kwargs: P.kwargs) -> R:
        deterministic = torch.are_deterministic_algorithms_enabled()
        warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        benchmark = torch.backends.cudnn.benchmark
        try:
            return function(*args, **kwargs)
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
            torch.backends.cudnn.benchmark = benchmark

    return kept


def seed_everything(seed: int, deterministic: bool = False) -> None:
    torch.manual_seed(seed)
    # cuDNN then times its convolution algorithms per shape and keeps the fastest; which one wins can vary by run.
    torch.backends.cudnn.benchmark = not deterministic
    if deterministic:
        torch.use_deterministic_algorithms(True)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    # Weight decay on weights only: decaying BatchNorm scales and biases hurts small convnets.
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused updates every parameter in one kernel per group, on CPU as on GPU: for the small speed presets the
    # optimizer is a tenth of a step, and fused is about twice as fast as foreach (docs/benchmarks.md).
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0, fused=True
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, fused=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int, total_steps: int | None = None
):
    """A learning-rate schedule stepped once per batch, or None. It ends after ``total_steps`` (by default
    the run's epochs of ``steps_per_epoch``)."""
    total = cfg.epochs * steps_per_epoch if total_steps is None else total_steps
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


SCHEDULE_LENGTHS = ("total_steps", "_schedule_phases", "T_max", "step_size")  # what build_scheduler derives


def fit_schedule(scheduler: Any, cfg: TrainConfig, steps_per_epoch: int, progress: resume.LoopState) -> None:
    """Make a restored schedule end with the run. Resumed with another number of processes, an epoch has
    another number of steps: the schedule's length is derived again from the steps taken so far and the
    steps left, so it neither ends early (OneCycleLR refuses to step past its end) nor late."""
    if scheduler is None:
        return
    left = (cfg.epochs - progress.epoch + 1) * steps_per_epoch - progress.step
    total = scheduler.last_epoch + max(0, left)
    throwaway = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=cfg.lr)
    fresh = build_scheduler(throwaway, cfg, steps_per_epoch, total)
    if fresh is None:
        return
    state, lengths = scheduler.state_dict(), fresh.state_dict()
    if all(state.get(key) == lengths.get(key) for key in SCHEDULE_LENGTHS):
        return
    scheduler.load_state_dict({**state, **{key: lengths[key] for key in SCHEDULE_LENGTHS if key in state}})


def _first_bad_step(losses: torch.Tensor) -> int | None:
    bad = (~torch.isfinite(losses)).nonzero()
    return int(bad[0]) if len(bad) else None


class TrainingInterrupted(TrainingError):
    """Ctrl-C (or SIGTERM) stopped training between two batches; the resume state is saved. The exit code is
    the shell's for the signal: 130 for SIGINT, 143 for SIGTERM."""

    def __init__(self, message: str = "", *, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class Interrupt:
    """Ctrl-C while training: the first SIGINT asks the loop to stop after the current batch and save its
    resume state; a second raises KeyboardInterrupt at once. With ``terminate``, SIGTERM does the same (what a
    job scheduler or ``kill`` sends before it kills), so a stopped job can be resumed from the batch it reached.
    Resume states are written atomically, so quitting mid-write leaves the last good one as it was. A context
    manager: the old handlers come back on exit."""

    FINISHING = "training is over: testing and saving the model"  # what a signal then lets happen

    def __init__(self, announce: bool = True, terminate: bool = False):
        self.requested, self.announce = False, announce
        self.training_over = False  # set by ``finishing``: no batch is left to stop after
        self.signum: int = signal.SIGINT  # the signal that asked to stop
        self.signals = (signal.SIGINT, signal.SIGTERM) if terminate else (signal.SIGINT,)
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        self.previous = {signum: signal.signal(signum, self._handle) for signum in self.signals}
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        already, self.requested, self.signum = self.requested, True, signum  # the last signal is the exit's
        if already:
            raise KeyboardInterrupt
        if self.announce:
            # Ctrl-C's ^C is echoed on the progress line: start a new one
            said = "SIGTERM: " if signum == signal.SIGTERM else "\n"
            again = "another SIGTERM or Ctrl-C quits" if signum == signal.SIGTERM else "press Ctrl-C again to quit"
            doing = self.FINISHING if self.training_over else "stopping after this batch to save a checkpoint"
            print(f"{said}{doing}; {again} at once", file=sys.stderr, flush=True)

    def finishing(self) -> None:
        """Training has ended: a signal from now on lets the run finish (its test and model take seconds), and one
        that came during the last epoch's end is told so."""
        self.training_over = True
        if self.requested and self.announce:
            print(f"{self.FINISHING} (the last epoch had ended)", file=sys.stderr, flush=True)


@dataclass
class ResumeSaver:
    """When and where fit saves its resume state: into ``run_dir`` (None: this process does not write, as
    any rank but 0) at every epoch's end, every ``every`` batches, and when ``interrupt`` asks to stop."""

    run_dir: Path | None = None
    every: int = 0
    interrupt: Interrupt | None = None
    # The options the run started with, read once: each checkpoint carries them (``resume.config_digest``).
    config_sha256: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.run_dir is not None:
            self.config_sha256 = resume.config_digest(self.run_dir)

    def stop_requested(self, ctx: distributed.Context) -> bool:
        # A vote: torchrun passes Ctrl-C to every process, and all must stop after the same batch.
        return self.interrupt is not None and ctx.agree(self.interrupt.requested)

    def due(self, global_step: int) -> bool:
        return self.every > 0 and global_step % self.every == 0

    def save(self, progress: resume.LoopState, model: nn.Module, optimizer, scheduler, generator, ctx) -> None:
        """Called on every rank (each holds the losses of its own shard); rank 0 writes."""
        losses_by_rank = None
        if progress.step:
            losses_by_rank = (
                ctx.gather_rows(progress.losses[: progress.step]),
                ctx.gather_rows(progress.sizes[: progress.step]),
            )
        if self.run_dir is not None:
            state = resume.capture(progress, model, optimizer, scheduler, generator, losses_by_rank)
            resume.save(self.run_dir, *state, config_sha256=self.config_sha256)
            # The run can now be resumed, so it is worth more than the run it replaces (overwrite): that one goes.
            runs.discard_replaced(self.run_dir)


def check_resume_every(every: int) -> None:
    if every < 0:
        raise ConfigError(
            f"resume_every must be 0 (epoch ends only) or a number of batches, got {every}", options=("resume_every",)
        )


def check_validation(cfg: TrainConfig, val: data.Split | None) -> None:
    """ConfigError where the options need a validation split that the data does not give."""
    if cfg.early_stopping and val is None:
        raise ConfigError(
            "early_stopping needs a validation set; use val_size > 0", options=("early_stopping", "val_size")
        )


def fit(
    model: nn.Module,
    train: data.Split,
    val: data.Split | None,
    cfg: TrainConfig,
    norm: data.Normalization,
    reporter: Reporter | None = None,
    *,
    ctx: distributed.Context | None = None,
    resume_from: resume.ResumeState | None = None,
    saver: ResumeSaver | None = None,
    started: Callable[[], None] | None = None,
) -> list[EpochStats]:
    """Train ``model`` on ``train`` (already on the model's device) and validate after every epoch.

    Returns the history, one ``EpochStats`` per epoch. With early stopping the best weights (lowest
    validation loss) are restored at the end. Under torchrun (``ctx``) the model is wrapped in
    DistributedDataParallel and each rank trains on its shard of every epoch's permutation. ``resume_from``
    continues a saved run exactly where it stopped; ``saver`` says where and when to save its resume state.
    ``started`` is called once all is set up, before the first step: whatever the options refuse has been refused.
    """
    check_validation(cfg, val)
    loop = _Loop.start(
        model,
        train,
        val,
        cfg,
        norm,
        reporter or SilentReporter(),
        ctx or distributed.Context(train.images.device),
        saver or ResumeSaver(),
        resume_from,
    )
    if started is not None:
        started()
    while not loop.progress.done and loop.progress.epoch <= cfg.epochs:
        loop.train_epoch()
        stats = loop.end_epoch()
        loop.close_epoch(stats)
    return loop.finish()


@dataclass
class _Loop:
    """One fit in progress: the model, its optimisation and the loop's state, for the steps of ``fit``."""

    model: nn.Module
    trained: nn.Module  # the model as the loop calls it: in DistributedDataParallel, compiled
    train: data.Split
    val: data.Split | None
    cfg: TrainConfig
    norm: data.Normalization
    reporter: Reporter
    ctx: distributed.Context
    saver: ResumeSaver
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator  # draws the permutations and the augmentations
    progress: resume.LoopState
    steps_per_epoch: int
    started: float = 0.0  # when the epoch in progress started, less the time it ran before a resume
    autocast: torch.autocast = field(init=False)
    background: float = field(init=False)
    exposure: OutlierExposure | None = field(init=False)  # synthesized non-digits mixed into each batch

    def __post_init__(self) -> None:
        device = self.train.images.device
        # bf16 has float32's range, so no loss scaler is needed (and none is saved).
        self.autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(self.cfg.amp, device))
        self.background = -self.norm.mean / self.norm.std  # a blank pixel after normalization
        cfg = self.cfg
        self.exposure = (
            OutlierExposure(self.train.images, cfg.outliers, self.norm, cfg.augment, cfg.seed) if cfg.outliers else None
        )

    @classmethod
    def start(cls, model, train, val, cfg, norm, reporter, ctx, saver, resume_from) -> _Loop:
        ctx.check_batch_size(cfg.batch_size)
        steps_per_epoch = ctx.steps_per_epoch(len(train), cfg.batch_size)
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, steps_per_epoch)
        generator = torch.Generator().manual_seed(cfg.seed)
        progress = resume.LoopState()
        if resume_from is not None:
            progress = resume.restore(
                resume_from, model, optimizer, scheduler, generator, steps_per_epoch, ctx.rank, ctx.world_size
            )
            fit_schedule(scheduler, cfg, steps_per_epoch, progress)
        trained = ctx.wrap(model)  # after restoring: DDP starts every rank from rank 0's weights
        trained = cast(nn.Module, torch.compile(trained)) if cfg.compile else trained  # the stub: Module in, Module out
        return cls(
            model, trained, train, val, cfg, norm, reporter, ctx, saver, optimizer, scheduler, generator, progress,
            steps_per_epoch,
        )  # fmt: skip

    def train_epoch(self) -> None:
        """Train the epoch in progress to its end (from where a resumed run stopped)."""
        progress = self.progress
        if progress.step == 0:
            progress.start_epoch(self.steps_per_epoch, self.train.images.device, self.generator)
        self.started = time.perf_counter() - progress.epoch_seconds
        self.reporter.epoch_start(progress.epoch, self.cfg.epochs, self.steps_per_epoch)
        self.trained.train()
        batches = _epoch_batches(self.train, self.cfg, self.norm, self.generator, self.ctx, progress)
        for step, (x, y) in enumerate(batches, start=progress.step):
            progress.losses[step] = self.train_step(x, y)
            progress.sizes[step] = len(y)
            progress.step = step + 1
            self.reporter.step_done(progress.step)
            if progress.step % SYNC_EVERY == 0 or progress.step == self.steps_per_epoch:
                self.report_losses()
            if progress.step < self.steps_per_epoch:  # the epoch's last batch is saved after validation
                self.between_batches()

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step on the batch (x, y); returns its loss, left on the device."""
        cfg, exposure = self.cfg, self.exposure
        x = augment(x, cfg.augment, self.background, self.generator, labels=y)
        if exposure is not None:
            x = exposure.extend(x, self.generator)
        x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast:
            logits = self.trained(x)
            if exposure is not None:
                loss = exposure.loss(logits, y, cfg.label_smoothing)
            else:
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()

    def report_losses(self) -> None:
        """Read the losses so far from the device: stop on a non-finite one, and show their mean."""
        losses, sizes = self.progress.losses[: self.progress.step], self.progress.sizes[: self.progress.step]
        _check_finite(losses, self.progress.epoch, self.ctx)
        self.reporter.batches_done(self.progress.step, _mean_loss(losses, sizes))

    def between_batches(self) -> None:
        """Save the resume state when it is due or Ctrl-C asked for it; then stop if asked."""
        progress = self.progress
        stop = self.saver.stop_requested(self.ctx)
        if stop or self.saver.due((progress.epoch - 1) * self.steps_per_epoch + progress.step):
            progress.epoch_seconds = time.perf_counter() - self.started
            self.save()
        if stop:
            raise self.interrupted()

    def end_epoch(self) -> EpochStats:
        """The epoch's training loss over all ranks, its validation score, reported and added to the history."""
        progress, cfg = self.progress, self.cfg
        totals = self.ctx.all_sum(torch.stack([(progress.losses * progress.sizes).sum(), progress.sizes.sum()]))
        train_loss = (totals[0] / totals[1]).item()
        batch_losses = progress.losses.tolist()  # no extra wait: train_loss has just synced
        self.ctx.broadcast_buffers(self.model)
        val_loss = val_accuracy = None
        if self.val is not None and len(self.val):
            evaluator = self.ctx.evaluation_model(self.model, self.trained)
            val_loss, val_accuracy = loss_and_accuracy(
                evaluator, self.val, self.norm, cfg.eval_batch_size, ctx=self.ctx
            )
            if not math.isfinite(val_loss):
                raise TrainingError(
                    f"validation loss became {val_loss} at epoch {progress.epoch}; "
                    "lower the learning rate (lr) or set grad_clip",
                    options=("lr", "grad_clip"),
                )
        lr = self.optimizer.param_groups[0]["lr"]
        seconds = time.perf_counter() - self.started
        stats = EpochStats(progress.epoch, train_loss, val_loss, val_accuracy, lr, seconds, batch_losses)
        progress.history.append(stats.row())
        self.reporter.epoch_end(stats)
        return stats

    def close_epoch(self, stats: EpochStats) -> None:
        """Keep the best weights, decide whether training is done, save the resume state, stop if asked."""
        progress, cfg = self.progress, self.cfg
        if cfg.early_stopping and stats.val_loss is not None:
            if stats.val_loss < progress.best_loss:
                progress.best_loss, progress.epochs_without_gain = stats.val_loss, 0
                progress.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                progress.epochs_without_gain += 1
        progress.done = stats.epoch == cfg.epochs or 0 < cfg.early_stopping <= progress.epochs_without_gain
        progress.epoch, progress.step = stats.epoch + 1, 0
        self.save()
        if not progress.done and self.saver.stop_requested(self.ctx):
            raise self.interrupted()

    def finish(self) -> list[EpochStats]:
        if self.saver.interrupt is not None:  # also where a resumed run had finished all but its test and model
            self.saver.interrupt.finishing()
        if self.progress.best_state is not None:
            self.model.load_state_dict(self.progress.best_state)
        self.ctx.check_in_sync(self.model)
        return [EpochStats(**h) for h in self.progress.history]

    def save(self) -> None:
        self.saver.save(self.progress, self.model, self.optimizer, self.scheduler, self.generator, self.ctx)

    def interrupted(self) -> TrainingInterrupted:
        progress = self.progress
        where = (
            f"at epoch {progress.epoch}, step {progress.step} of {self.steps_per_epoch}"
            if progress.step
            else f"after epoch {progress.epoch - 1}"
        )
        self.ctx.barrier()  # every rank stopped here; leave together once rank 0 has saved
        signum = self.saver.interrupt.signum if self.saver.interrupt is not None else signal.SIGINT
        return TrainingInterrupted(f"{stopped_by(signum)} {where}", signum=signum)


def _epoch_batches(
    train: data.Split,
    cfg: TrainConfig,
    norm: data.Normalization,
    generator: torch.Generator,
    ctx: distributed.Context,
    progress: resume.LoopState,
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


def _mean_loss(losses: torch.Tensor, sizes: torch.Tensor) -> float:
    return (losses * sizes).sum().item() / sizes.sum().item()


def _check_finite(losses: torch.Tensor, epoch: int, ctx: distributed.Context) -> None:
    bad = _first_bad_step(losses)
    # A vote, so that every rank stops together rather than one waiting forever for the others.
    if ctx.agree(bad is not None):
        where = f"at epoch {epoch}, step {bad + 1}" if bad is not None else f"on another process at epoch {epoch}"
        value = f"{losses[bad].item()} " if bad is not None else "non-finite "
        raise TrainingError(
            f"loss became {value}{where}; lower the learning rate (lr) or set grad_clip", options=("lr", "grad_clip")
        )


@dataclass
class RunResult:
    run_dir: Path | None
    model: nn.Module  # in eval mode; it takes normalized input (meta["normalization"]), where a Classifier takes images
    history: list[EpochStats]
    test_loss: float | None
    test_accuracy: float | None
    meta: dict


@keeps_torch_switches
def train_run(
    cfg: TrainConfig,
    run_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    command: str | None = None,
    *,
    ctx: distributed.Context | None = None,
    resume_from: resume.ResumeState | None = None,
    resume_every: int = 0,
    interrupt: Interrupt | None = None,
    started: Callable[[], None] | None = None,
) -> RunResult:
    """Load and split the data, build the model, fit, test, save: one training run.

    ``run_dir`` (created beforehand by ``runs.create_run_dir``) receives config.json, metrics.csv, the
    resume state in resume/ (at each epoch's end and every ``resume_every`` batches), the final model and
    curves.png; with None nothing is written (as on every rank but 0 under torchrun). ``resume_from``
    (``resume.load(run_dir)``) continues that run. ``command`` is recorded as how the run was started.
    ``started`` is called once the data is loaded and training is set up (see ``fit``).
    """
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"train_run takes a TrainConfig (see make_config), got {type(cfg).__name__}")
    cfg.validate()
    check_resume_every(resume_every)
    run_dir = None if run_dir is None else Path(run_dir)
    if run_dir is not None and resume_from is None:
        runs.check_fresh(run_dir)
    ctx = ctx or distributed.Context(resolve_device(cfg.device))
    seed_everything(cfg.seed, cfg.deterministic)
    init = finetune.open_init(cfg) if cfg.init is not None else None
    loaded = _load_data(cfg, ctx.device, init)
    model = create_model(cfg.model, num_classes=len(loaded.dataset.classes), **cfg.model_options())
    if init is not None and resume_from is None:  # a resumed run's weights come from its resume state
        init.load_weights(model)
    # channels_last makes convolutions about twice as fast on CPU (oneDNN) and uses tensor cores on GPU.
    model = model.to(ctx.device, memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub omits it
    check_validation(cfg, loaded.val)  # before the run folder holds anything: a refused run leaves none
    if run_dir is not None and resume_from is None:
        runs.write_config(run_dir, cfg)
    reporter = _saving(reporter, run_dir, resume_from.history if resume_from is not None else [])
    saver = ResumeSaver(run_dir, resume_every, interrupt)
    history = fit(
        model,
        loaded.train,
        loaded.val,
        cfg,
        loaded.norm,
        reporter,
        ctx=ctx,
        resume_from=resume_from,
        saver=saver,
        started=started,
    )

    test_start = time.perf_counter()
    test_loss = test_accuracy = None
    if loaded.test is not None and len(loaded.test):
        test_loss, test_accuracy = loss_and_accuracy(model, loaded.test, loaded.norm, cfg.eval_batch_size, cfg.tta, ctx)
    test_seconds = time.perf_counter() - test_start
    calibration = None  # a temperature and a not-a-digit threshold, fitted on validation data when there is some
    if loaded.val is not None and len(loaded.val):
        calibration = calibrate(
            model, loaded.val, loaded.norm, loaded.splits.train.images, loaded.dataset.classes, cfg.eval_batch_size
        )
    meta = runs.model_metadata(
        cfg,
        loaded.dataset,
        loaded.splits,
        loaded.norm,
        parameters=count_parameters(model),
        history=history,
        test_loss=test_loss,
        test_accuracy=test_accuracy,
        seconds={"load": loaded.seconds, "test": test_seconds},
        calibration=calibration,
        processes=ctx.to_dict(),
        command=command,
        init=init.record() if init is not None else None,
        mixed=loaded.mixed,
    )
    if run_dir is not None:
        _save_model(run_dir, model, meta)
    # Trained and tested: what is handed over is a model to use, whose BatchNorm a forward pass must not move, in
    # PyTorch's usual layout (safetensors' save_file, for one, refuses channels_last weights).
    model.eval().to(memory_format=torch.contiguous_format)
    return RunResult(run_dir, model, history, test_loss, test_accuracy, meta)


@dataclass
class _Data:
    dataset: data.Dataset
    splits: data.Splits
    norm: data.Normalization
    train: data.Split  # the splits on the device
    val: data.Split | None
    test: data.Split | None
    seconds: float  # to load them
    mixed: dict | None  # the MNIST images mixed in (mix_mnist), as model.json records them


def _load_data(cfg: TrainConfig, device: torch.device, init: finetune.InitModel | None = None) -> _Data:
    """The data split for training; with MNIST mixed in (``mix_mnist``); scaled as the ``init``'s weights expect,
    else standardized by the training images (or pixels / 256 without ``normalize``)."""
    start = time.perf_counter()
    dataset = data.load_dataset(cfg.data, cfg.dataset)
    if init is not None:
        init.check_classes(dataset.classes)
    splits = data.split_dataset(dataset, cfg.val_size)
    mixed = None
    if cfg.mix_mnist:
        splits, mixed = finetune.mix_mnist(dataset, splits, cfg.mix_mnist, cfg.seed)
    if init is not None:
        norm = init.normalization
    else:
        norm = data.standardization(splits.train) if cfg.normalize else data.Normalization(0.0, 1.0, 256.0)
    train = splits.train.to(device)
    val, test = (s.to(device) if s is not None else None for s in (splits.val, splits.test))
    return _Data(dataset, splits, norm, train, val, test, time.perf_counter() - start, mixed)


def _save_model(run_dir: Path, model: nn.Module, meta: dict) -> None:
    """The final model and its metadata, and the curves of the run, into ``run_dir``."""
    device = next(model.parameters()).device
    save_checkpoint(run_dir, model.cpu(), meta)
    model.to(device)
    from .plots import write_curves  # matplotlib loads only for runs that write a folder

    write_curves(run_dir)


class _SavingReporter(ForwardingReporter):
    """Passes events on, and rewrites metrics.csv and batch_losses.csv after every epoch so a killed run keeps
    its history."""

    def __init__(self, inner: Reporter, run_dir: Path, history: list[dict]):
        super().__init__(inner)
        self.run_dir, self.history = run_dir, list(history)
        done = len(self.history)  # a resumed run keeps the batch losses of the epochs it has finished
        self.batch_losses = {e: b for e, b in runs.read_batch_losses(run_dir).items() if e <= done} if done else {}

    def epoch_end(self, stats: EpochStats) -> None:
        self.history.append(stats.row())
        runs.write_metrics(self.run_dir, self.history)
        if stats.batch_losses is not None:
            self.batch_losses[stats.epoch] = stats.batch_losses
            runs.write_batch_losses(self.run_dir, self.batch_losses)
        super().epoch_end(stats)


def _saving(reporter: Reporter | None, run_dir: Path | None, history: list[dict]) -> Reporter:
    reporter = reporter or SilentReporter()
    return _SavingReporter(reporter, run_dir, history) if run_dir is not None else reporter
