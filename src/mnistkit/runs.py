"""Run folders: where a training run keeps its config, metrics and checkpoint."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any

from . import fileio
from .config import TrainConfig
from .errors import CheckpointError, ConfigError

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.csv"
METRIC_FIELDS = ["epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds"]
BATCH_LOSSES_NAME = "batch_losses.csv"  # the training loss of every batch, for curves.png


def default_run_dir(model: str, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{stamp}-{model}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(root) / f"{stamp}-{model}-{suffix}"
    return path


def create_run_dir(out: str | Path | None, model: str, overwrite: bool = False) -> Path:
    """Create the run folder. An existing non-empty folder is refused unless ``overwrite``."""
    path = Path(out).expanduser() if out is not None else default_run_dir(model)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"--out {path}: exists and is not a folder; choose another --out")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise ConfigError(
            f"--out {path}: folder exists and is not empty; "
            "pass --overwrite to replace that run, or choose another --out"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".mnistkit-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"--out {path}: cannot write there ({exc.strerror or exc}); choose another --out") from None
    return path


def remove_if_empty(path: Path) -> None:
    """Take back a run folder that a failed start left empty (bad data, say), so no empty run litters runs/."""
    try:
        path.rmdir()  # only ever removes an empty folder
    except OSError:
        pass


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    fileio.write_json(run_dir / CONFIG_NAME, cfg.to_dict())


def read_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_NAME
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot read the run's config ({exc})") from None
    return TrainConfig.from_dict(values)


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_FIELDS})
    fileio.write_text(run_dir / METRICS_NAME, buffer.getvalue())


def read_metrics(run_dir: str | Path) -> list[dict[str, float | None]]:
    path = Path(run_dir) / METRICS_NAME
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the run's metrics ({exc.strerror or exc})") from None
    return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in rows]


def write_batch_losses(run_dir: Path, losses: dict[int, list[float]]) -> None:
    """Every batch's training loss, by epoch: one row per batch (epoch, batch, train_loss), both 1-based."""
    lines = ["epoch,batch,train_loss"]
    for epoch in sorted(losses):
        lines += [f"{epoch},{batch},{loss!r}" for batch, loss in enumerate(losses[epoch], start=1)]
    fileio.write_text(run_dir / BATCH_LOSSES_NAME, "\n".join(lines) + "\n")


def read_batch_losses(run_dir: str | Path) -> dict[int, list[float]]:
    """The per-batch losses by epoch; empty for a run without them (written by an older mnistkit)."""
    path = Path(run_dir) / BATCH_LOSSES_NAME
    if not path.is_file():
        return {}
    losses: dict[int, list[float]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                losses.setdefault(int(row["epoch"]), []).append(float(row["train_loss"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: not the per-batch losses mnistkit train writes ({exc})") from None
    return losses
