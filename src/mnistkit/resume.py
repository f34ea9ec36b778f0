"""Resumable training state: everything needed to continue a run exactly where it stopped.

A run folder's ``resume/`` holds ``state.json`` and one ``state-<epoch>-<step>-<hash>.safetensors``. The
tensors (weights, optimizer moments, RNG states, the partial epoch's losses) are in the safetensors file;
everything else (epoch, step, history, scheduler counters, optimizer hyper-parameters) is JSON, which also
records the tensors file's SHA-256. Nothing is pickled, so loading a checkpoint can never run code.

Saving is a two-file commit: the new tensors file is written under a new name first, then ``state.json``
is replaced in one rename, then the old tensors file is removed. A crash, a SIGKILL or a full disk at any
moment leaves ``state.json`` naming a complete tensors file: the previous checkpoint or the new one.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import save as save_safetensors
from torch import nn

from . import fileio, runs, schema
from .checkpoint import META_NAME, WEIGHTS_NAME, check_state, read_tensors
from .checkpoint import load_state as load_model_state
from .errors import CheckpointError, MnistkitError, short

if TYPE_CHECKING:
    from .config import TrainConfig

FOLDER = "resume"
STATE_NAME = "state.json"
FORMAT = schema.RESUME_FORMAT
# What a run writes once trained (train._save_model); curves.png is plots.CURVES_NAME, which loads matplotlib.
FINAL_FILES = (WEIGHTS_NAME, META_NAME, "curves.png")


@dataclass
class LoopState:
    """Where a run is: the loop's own bookkeeping, saved and restored with the weights.

    ``epoch`` is the 1-based epoch in progress (or the next one), ``step`` the batches of it already
    trained (0 = at an epoch boundary). ``epoch_rng`` is the data generator's state when the epoch began:
    on resume it redraws the same permutation. ``losses``/``sizes`` hold the epoch's per-batch losses so far.
    """

    epoch: int = 1
    step: int = 0
    done: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    sizes: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    epoch_seconds: float = 0.0  # training time already spent in the epoch in progress
    epoch_rng: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.uint8))
    best_loss: float = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    epochs_without_gain: int = 0

    def start_epoch(self, steps: int, device: torch.device, generator: torch.Generator) -> None:
        self.step, self.epoch_seconds = 0, 0.0
        self.losses = torch.zeros(steps, device=device)
        self.sizes = torch.zeros(steps, device=device)
        self.epoch_rng = generator.get_state()


@dataclass
class ResumeState:
    """A loaded resume state, not yet applied to a model: the tensors by name and the JSON part."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]
    where: str

    @property
    def epoch(self) -> int:
        return int(self.meta["progress"]["epoch"])

    @property
    def step(self) -> int:
        return int(self.meta["progress"]["step"])

    @property
    def done(self) -> bool:
        return bool(self.meta["progress"]["done"])

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.meta["progress"]["history"])

    @property
    def position(self) -> str:
        """Where training goes on from, in words."""
        if self.done:  # stopped while testing or saving the model (a full disk, a kill)
            epochs = len(self.history)
            return f"the end of its {epochs} epoch{'s' if epochs != 1 else ''}, to test and save the model"
        return f"epoch {self.epoch}, step {self.step}" if self.step else f"the start of epoch {self.epoch}"


# --------------------------------------------------------------------------------------------------
# Nested state dicts <-> JSON + named tensors


def _flatten(value: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON for ``value``, with each tensor replaced by {"$tensor": name} and stored in ``tensors``.

    Tuples and dicts with non-string keys (optimizer state is keyed by parameter index) are tagged so
    that they come back as they were: the optimizer and scheduler must see exactly what they saved.
    """
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().clone(memory_format=torch.contiguous_format)  # safetensors: dense only
        return {"$tensor": path}
    if isinstance(value, tuple):
        return {"$tuple": [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_flatten(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: _flatten(v, f"{path}.{k}", tensors) for k, v in value.items()}
        return {"$items": [[k, _flatten(v, f"{path}.{k}", tensors)] for k, v in value.items()]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} at {path} in a checkpoint")


def _unflatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, list):
        return [_unflatten(v, tensors) for v in value]
    if isinstance(value, dict):
        if set(value) == {"$tensor"}:
            return tensors[value["$tensor"]]
        if set(value) == {"$tuple"}:
            return tuple(_unflatten(v, tensors) for v in value["$tuple"])
        if set(value) == {"$items"}:
            return {k: _unflatten(v, tensors) for k, v in value["$items"]}
        return {k: _unflatten(v, tensors) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------------
# Capture and save


def capture(
    progress: LoopState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    losses_by_rank: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Everything to continue training, as (JSON, tensors). Call it between two batches.

    ``losses_by_rank``: under torchrun, every rank's (losses, sizes) of the epoch so far, one row per rank
    (each trained on its own shard); by default this process's own.
    """
    rng: dict[str, Any] = {"data": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    partial = progress.step > 0
    if losses_by_rank is None:
        losses_by_rank = (progress.losses[None, : progress.step], progress.sizes[None, : progress.step])
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": rng,
        "epoch_rng": progress.epoch_rng if partial else None,
        "losses": losses_by_rank[0] if partial else None,
        "sizes": losses_by_rank[1] if partial else None,
        "best_state": progress.best_state,
    }
    tensors: dict[str, torch.Tensor] = {}
    body = _flatten(state, "state", tensors)
    info = {
        "progress": {
            "epoch": progress.epoch,
            "step": progress.step,
            "done": progress.done,
            "history": progress.history,
            "epoch_seconds": progress.epoch_seconds,
            "best_loss": progress.best_loss,
            "epochs_without_gain": progress.epochs_without_gain,
        },
        "state": body,
    }
    return info, tensors


def state_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / FOLDER


def has_state(run_dir: str | Path) -> bool:
    return (state_dir(run_dir) / STATE_NAME).is_file()


def save(
    run_dir: str | Path, info: dict[str, Any], tensors: dict[str, torch.Tensor], config_sha256: str | None = None
) -> Path:
    """Write the checkpoint into ``<run_dir>/resume`` as a two-file commit (see the module docstring), with the
    ``config_digest`` of the options the run started with, which ``load`` checks."""
    folder = state_dir(run_dir)
    progress = info["progress"]
    blob = save_safetensors(tensors)
    digest = hashlib.sha256(blob).hexdigest()
    name = f"state-{progress['epoch']:04d}-{progress['step']:06d}-{digest[:12]}.safetensors"
    previous = (folder / STATE_NAME).is_file()
    try:
        folder.mkdir(exist_ok=True)  # not parents: a run folder that vanished is an error, not recreated
        fileio.write_bytes(folder / name, blob)
        record = {"format": FORMAT, "tensors": name, "sha256": digest, "config_sha256": config_sha256}
        fileio.write_json(folder / STATE_NAME, {**record, **info})
    except (OSError, MnistkitError) as exc:
        if not Path(run_dir).is_dir():  # its checkpoints went with it, if it was moved
            raise CheckpointError(
                f"could not save the checkpoint in {folder}: the run folder {run_dir} no longer exists (moved or "
                "deleted while training); if it was moved, resume it from its new place, else run the same command "
                "again"
            ) from None
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        then = (
            "the previous checkpoint there is intact. Free some space or restore the folder, then resume"
            if previous
            # a new run that fails before its first checkpoint takes its folder back (runs.take_back)
            else "there is no earlier checkpoint to resume from. Free some space, then run the same command again"
        )
        raise CheckpointError(f"could not save the checkpoint in {folder} ({reason}); {then}") from None
    for old in folder.glob("state-*.safetensors"):
        if old.name != name:
            old.unlink(missing_ok=True)
    # The temporary files of a save that was killed (SIGKILL, a power cut) before its rename: nobody else writes
    # here while this run holds its folder, and each can be as large as a checkpoint.
    for stale in folder.glob(".state*.tmp"):
        stale.unlink(missing_ok=True)
    return folder / STATE_NAME


# --------------------------------------------------------------------------------------------------
# Load and apply


def load(run_dir: str | Path) -> ResumeState:
    """Read and verify ``<run_dir>/resume``: one clear CheckpointError for anything missing or damaged."""
    run_dir = fileio.recorded_path(run_dir)
    path = state_dir(run_dir) / STATE_NAME
    if not path.is_file():
        raise CheckpointError(
            f"{run_dir}: no resumable checkpoint ({FOLDER}/{STATE_NAME} is missing): the run stopped before its "
            "first one (train it again, with overwrite to reuse the folder), or this is not a run folder",
            options=("overwrite",),
        )
    meta = schema.read_resume_state(path)
    saved_options = meta.get("config_sha256")
    if saved_options is not None and saved_options != config_digest(run_dir):
        raise CheckpointError(
            f"{run_dir}: its {runs.CONFIG_NAME} changed since the last checkpoint, and a resumed run continues with "
            f"the options it started with; restore {runs.CONFIG_NAME}, or start a new run",
        )
    tensors = read_tensors(path.parent / meta["tensors"], meta["sha256"], "checkpoint's tensors", STATE_NAME)
    return ResumeState(tensors, meta, str(path))


def config_digest(run_dir: str | Path) -> str | None:
    """SHA-256 of the run's options as config.json holds them (its values, not its spacing); None if unreadable.
    Kept with each checkpoint: options edited by hand would go on from weights and a schedule made for others (an
    epoch count below the checkpoint's ends the run at once, with half-trained weights as its model)."""
    try:
        record = schema.read_config_record(Path(run_dir) / runs.CONFIG_NAME)
    except MnistkitError:
        return None
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()


def restore(
    state: ResumeState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    steps_per_epoch: int,
    rank: int = 0,
    world_size: int = 1,
) -> LoopState:
    """Put the saved weights, optimizer, scheduler and RNG states back; return the loop's bookkeeping."""
    device = next(model.parameters()).device
    try:
        saved = _unflatten(state.meta["state"], state.tensors)
        load_model_state(model, saved["model"], state.where)
        if saved["best_state"] is not None:  # early stopping's best weights, loaded into the model at the end
            check_state(model.state_dict(), saved["best_state"], state.where)
        _load_optimizer(optimizer, saved["optimizer"])
        if scheduler is not None:
            if saved["scheduler"] is None:
                raise ValueError("the checkpoint has no learning-rate schedule but the run's config has one")
            _check_like(saved["scheduler"], scheduler.state_dict(), "learning-rate schedule")
            scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["rng"]["data"])
        torch.set_rng_state(saved["rng"]["torch"])
        if "cuda" in saved["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
        info = state.meta["progress"]
        progress = LoopState(
            epoch=info["epoch"],
            step=info["step"],
            done=bool(info["done"]),
            history=list(info["history"]),
            epoch_seconds=float(info["epoch_seconds"]),
            best_loss=float(info["best_loss"]),
            epochs_without_gain=int(info["epochs_without_gain"]),
            best_state=saved["best_state"],
        )
        if progress.step > 0:
            if not 0 < progress.step < steps_per_epoch or saved["losses"].shape[1] != progress.step:
                raise ValueError(f"step {progress.step} does not fit an epoch of {steps_per_epoch} batches")
            progress.epoch_rng = saved["epoch_rng"]
            progress.losses = torch.zeros(steps_per_epoch, device=device)
            progress.sizes = torch.zeros(steps_per_epoch, device=device)
            losses, sizes = _losses_of_rank(saved["losses"], saved["sizes"], rank, world_size)
            progress.losses[: progress.step] = losses.to(device)
            progress.sizes[: progress.step] = sizes.to(device)
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as exc:
        raise CheckpointError(
            f"{state.where}: the checkpoint does not fit this run ({type(exc).__name__}: {exc})"
        ) from None
    return progress


def _losses_of_rank(
    losses: torch.Tensor, sizes: torch.Tensor, rank: int, world_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's row of the saved per-rank losses. Resumed with another number of processes, rank 0
    carries the epoch's loss so far (sizes summed, losses size-weighted) and the others start empty."""
    if len(losses) == world_size:
        return losses[rank], sizes[rank]
    if rank != 0:
        return torch.zeros_like(losses[0]), torch.zeros_like(sizes[0])
    total = sizes.sum(0)
    return (losses * sizes).sum(0) / total.clamp(min=1), total


def _load_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    fresh = optimizer.state_dict()["param_groups"]
    if len(saved["param_groups"]) != len(fresh) or any(
        len(a["params"]) != len(b["params"]) for a, b in zip(saved["param_groups"], fresh)
    ):
        raise ValueError("the optimizer's parameter groups differ from the checkpoint's")
    for saved_group, fresh_group in zip(saved["param_groups"], fresh):
        _check_hyperparameters(saved_group, fresh_group, type(optimizer).__name__)
    _check_optimizer_state(optimizer, saved)
    optimizer.load_state_dict(saved)
    # The groups now hold the checkpoint's hyper-parameters: another optimizer's (config.json says sgd, the
    # checkpoint is adamw's) lack some of this one's, and its first step would fail on them.
    missing = {key for group in fresh for key in group} - {key for group in optimizer.param_groups for key in group}
    if missing:
        raise ValueError(
            f"the checkpoint's optimizer has no {', '.join(sorted(missing))}: it is not the {type(optimizer).__name__} "
            "the run's config names"
        )
    # The checkpoint holds dense tensors; a channels_last weight's moments must get its layout back, because a
    # fused optimizer steps through the raw memory of the weight, its gradient and its moments alike.
    for param, state in optimizer.state.items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                state[key] = torch.empty_strided(
                    param.shape, param.stride(), dtype=value.dtype, device=value.device
                ).copy_(value)


def _check_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """ValueError unless each weight's saved optimizer state fits the weight: its step a finite scalar of at least 0,
    its other tensors (moments, momentum) finite and of the weight's shape, squared moments not negative. A fused
    optimizer steps through the raw memory of the weight and its moments alike: a moment of another size read and
    wrote past its end (a crash), a negative one turned the loss NaN."""
    ids = [index for group in saved["param_groups"] for index in group["params"]]
    weights = dict(zip(ids, (p for group in optimizer.param_groups for p in group["params"])))
    for index, state in saved["state"].items():
        weight = weights.get(index)
        if weight is None:
            raise ValueError(f"the optimizer's state names weight {short(index)}, which it has no parameter for")
        if not isinstance(state, dict):
            raise ValueError(f"the optimizer's state of weight {index} is {short(state)}, not an object of tensors")
        for key, value in state.items():
            if value is None:
                continue
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise ValueError(f"the optimizer's {key} of weight {index} is {short(value)}, not a float tensor")
            shape = () if key == "step" else tuple(weight.shape)
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"the optimizer's {key} of weight {index} is shaped {tuple(value.shape)}, where it takes {shape}"
                )
            low = 0 if key == "step" or key.endswith("_sq") else -math.inf
            if not bool(torch.isfinite(value).all()) or bool((value < low).any()):
                raise ValueError(f"the optimizer's {key} of weight {index} holds values that are not finite or too low")


def _check_like(saved: Any, fresh: Any, what: str) -> None:
    """ValueError unless ``saved`` is built as ``fresh`` is: no keys ``fresh`` lacks (a scheduler's state is loaded
    key by key, whatever the keys are; one of an older torch may lack some), the same lengths and text, numbers
    finite (not negative where ``fresh``'s are not). The schedule's length may differ: ``train.fit_schedule`` fits
    it to the run after."""
    if isinstance(fresh, dict):
        if not isinstance(saved, dict):
            raise ValueError(f"the checkpoint's {what} is {short(saved)}, not the state this run's config makes")
        unknown = sorted(map(str, set(saved) - set(fresh)))
        if unknown:
            raise ValueError(f"the checkpoint's {what} holds {', '.join(map(short, unknown[:3]))}, a key it has not")
        for key in saved:
            _check_like(saved[key], fresh[key], f"{what}'s {key}")
    elif isinstance(fresh, (list, tuple)):
        if not isinstance(saved, (list, tuple)) or len(saved) != len(fresh):
            raise ValueError(f"the checkpoint's {what} is {short(saved)}, where it takes {len(fresh)} values")
        for value, like in zip(saved, fresh):
            _check_like(value, like, what)
    elif isinstance(fresh, (bool, str)):
        if type(saved) is not type(fresh) or (isinstance(fresh, str) and saved != fresh):
            raise ValueError(f"the checkpoint's {what} is {short(saved)}, where this run's config makes {fresh!r}")
    elif isinstance(fresh, (int, float)):
        if isinstance(saved, bool) or not isinstance(saved, (int, float)) or not math.isfinite(saved):
            raise ValueError(f"the checkpoint's {what} is {short(saved)}, not a finite number")
        if saved < 0 <= fresh:
            raise ValueError(f"the checkpoint's {what} is {saved!r}, where it cannot be negative")


def _check_hyperparameters(saved: dict[str, Any], fresh: dict[str, Any], optimizer: str) -> None:
    """ValueError unless each hyper-parameter the checkpoint gives is of the kind the optimizer built from the run's
    config has (a flag, a finite number of at least 0, a tuple of them); their values may differ, as a learning rate
    does once a schedule has moved it. Else the error would come from the first step, after training had resumed."""

    def fits(value: Any, like: Any) -> bool:
        if isinstance(like, bool) or like is None:  # None: the optimizer picks, as foreach does
            return isinstance(value, bool) or value is None
        if isinstance(like, (int, float)):
            return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < math.inf
        if isinstance(like, (tuple, list)):
            return isinstance(value, (tuple, list)) and len(value) == len(like) and all(map(fits, value, like))
        return type(value) is type(like)

    def kind(like: Any) -> str:
        if isinstance(like, bool) or like is None:
            return "true or false"
        if isinstance(like, (int, float)):
            return "a finite number of at least 0"
        if isinstance(like, (tuple, list)):
            return f"{len(like)} finite numbers of at least 0"
        return f"a {type(like).__name__}"

    for key, like in fresh.items():
        if key != "params" and key in saved and not fits(saved[key], like):
            raise ValueError(f"the checkpoint gives {optimizer} {key}={saved[key]!r}, where it takes {kind(like)}")
    # Moments decay by their betas: at 1 or more they never forget, and the loss turns NaN at the first step.
    if "betas" in fresh and "betas" in saved and not all(beta < 1 for beta in saved["betas"]):
        raise ValueError(f"the checkpoint gives {optimizer} betas={saved['betas']!r}, where each must be below 1")


# --------------------------------------------------------------------------------------------------
# mnistkit train --resume RUN


def open_config(run_dir: str | Path, device: str | None = None) -> TrainConfig:
    """The saved config of the run to resume in ``run_dir`` (``device`` overrides where it runs); ``run_dir`` as
    given, or as mnistkit printed a name that is not UTF-8 (``fileio.recorded_path``)."""
    run_dir = fileio.recorded_path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"resume {run_dir}: no such run folder", options=("resume",))
    runs.recover(run_dir)
    try:
        cfg = runs.read_config(run_dir)
        if device is not None:
            cfg.device = device
        cfg.validate()
    except MnistkitError as exc:
        raise CheckpointError(f"resume {run_dir}: {exc}", options=("resume",)) from None
    return cfg


def open_state(run_dir: str | Path) -> ResumeState:
    """The verified resume state of ``run_dir``, unless the run has finished. Read it while the folder is held
    (``runs.hold``): a run still writing it could otherwise finish between this read and the hold."""
    run_dir = fileio.recorded_path(run_dir)
    state = load(run_dir)
    # A finished run whose last files were not all written (a full disk) or were lost is finished again: tested and
    # saved from its final state.
    if state.done and all((run_dir / name).is_file() for name in FINAL_FILES):
        epochs = len(state.history)
        raise CheckpointError(
            f"{run_dir}: this run already finished ({epochs} epoch{'s' if epochs != 1 else ''}); nothing to resume"
        )
    return state


def command(run_dir: str | Path, nproc: int = 1) -> str:
    """The command that continues ``run_dir`` where it stopped, in ``nproc`` processes on this machine."""
    return f"mnistkit train --resume {run_dir}" + (f" --nproc {nproc}" if nproc > 1 else "")
