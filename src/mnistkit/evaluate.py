"""Evaluation: loss, accuracy, per-class precision/recall and the confusion matrix of a model on a split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint
from .augment import TTA_SHIFTS, tta_probabilities
from .config import data_title, model_title
from .data import Normalization, Split, batches, load_bundled_mnist, load_dataset, split_dataset
from .errors import DataError

if TYPE_CHECKING:
    from .distributed import Context


@torch.no_grad()
def predict_logits(
    model: nn.Module, split: Split, norm: Normalization, batch_size: int = 1000, tta: bool = False
) -> torch.Tensor:
    """Logits for every image of ``split``, in order, computed in large batches in eval mode.

    With ``tta`` the result is the log of the mean softmax over the image and its four 1-pixel shifts
    (a batch then holds ``batch_size`` images with their shifts together).
    """
    was_training = model.training
    model.eval()
    background = -norm.mean / norm.std
    try:
        out = []
        for x, _ in batches(split, max(1, batch_size // len(TTA_SHIFTS)) if tta else batch_size, norm):
            x = x.contiguous(memory_format=torch.channels_last)
            out.append(tta_probabilities(model, x, background).log() if tta else model(x).float())
        return torch.cat(out)
    finally:
        model.train(was_training)


def loss_and_accuracy(
    model: nn.Module,
    split: Split,
    norm: Normalization,
    batch_size: int = 1000,
    tta: bool = False,
    ctx: Context | None = None,
) -> tuple[float, float]:
    """Mean loss and accuracy over ``split``. Under torchrun (``ctx``) each rank scores its shard of the
    split and the sums are added up over the ranks, so every rank returns the figures of the whole split."""
    shard = ctx.shard(split) if ctx is not None else split
    logits = predict_logits(model, shard, norm, batch_size, tta)
    labels = shard.labels.to(logits.device)
    # Sums in float64 and a count: float32's mean puts 9,970 of 10,000 just below 0.997 and misses a target.
    totals = torch.stack(
        [F.cross_entropy(logits.double(), labels, reduction="sum"), (logits.argmax(1) == labels).sum().double()]
    )
    if ctx is not None:
        ctx.all_sum(totals)
    loss_sum, correct = totals.tolist()
    return loss_sum / max(1, len(split)), correct / max(1, len(split))


@dataclass
class Report:
    loss: float
    accuracy: float
    confusion: torch.Tensor  # [true class, predicted class] counts
    classes: list[str]
    # What was evaluated, for per-image views such as the top-loss plot; not part of to_dict().
    logits: torch.Tensor | None = field(default=None, repr=False, compare=False)
    split: Split | None = field(default=None, repr=False, compare=False)
    # ... and in words, for the figures' titles: "cnn", "MNIST", "test"
    model_name: str | None = field(default=None, compare=False)
    data_name: str | None = field(default=None, compare=False)
    split_name: str | None = field(default=None, compare=False)

    @property
    def about(self) -> str:
        """What was evaluated, in words: "cnn on the MNIST test split (10,000 images)"."""
        model = self.model_name or "the model"
        where = " ".join(word for word in (self.data_name, self.split_name) if word)
        return f"{model} on the {where or 'given'} split ({self.count:,} images)"

    @property
    def count(self) -> int:
        return int(self.confusion.sum())

    @property
    def precision(self) -> torch.Tensor:
        predicted = self.confusion.sum(0).clamp(min=1)
        return self.confusion.diag() / predicted

    @property
    def recall(self) -> torch.Tensor:
        actual = self.confusion.sum(1).clamp(min=1)
        return self.confusion.diag() / actual

    def to_dict(self) -> dict:
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "count": self.count,
            "classes": self.classes,
            "precision": [round(v, 6) for v in self.precision.tolist()],
            "recall": [round(v, 6) for v in self.recall.tolist()],
            "confusion": self.confusion.tolist(),
        }


def evaluate(
    model: nn.Module, split: Split, norm: Normalization, classes: list[str], batch_size: int = 1000, tta: bool = False
) -> Report:
    logits = predict_logits(model, split, norm, batch_size, tta)
    labels = split.labels.to(logits.device)
    loss = F.cross_entropy(logits, labels).item()
    predicted = logits.argmax(1)
    k = len(classes)
    confusion = torch.bincount(labels * k + predicted, minlength=k * k).reshape(k, k).cpu()
    accuracy = confusion.diag().sum().item() / max(1, len(labels))
    return Report(loss, accuracy, confusion, classes, logits=logits.cpu(), split=split)


def format_report(report: Report) -> str:
    """Plain-text report: totals, per-class precision/recall, and the confusion matrix."""
    k = len(report.classes)
    names = [c[:8] for c in report.classes]
    width = max(6, *(len(n) for n in names))
    lines = [
        f"images: {report.count}   loss: {report.loss:.4f}   accuracy: {report.accuracy:.2%}",
        "",
        f"{'class':>{width}}  precision  recall  support",
    ]
    support = report.confusion.sum(1).tolist()
    for i in range(k):
        lines.append(
            f"{names[i]:>{width}}  {report.precision[i].item():9.2%}  {report.recall[i].item():6.2%}  {support[i]:7d}"
        )
    lines += ["", "confusion matrix (rows: true class, columns: predicted)"]
    cell = max(5, len(str(int(report.confusion.max()))) + 1, *(len(n) + 1 for n in names))
    lines.append(" " * width + "".join(f"{n:>{cell}}" for n in names))
    for i in range(k):
        lines.append(f"{names[i]:>{width}}" + "".join(f"{int(v):>{cell}}" for v in report.confusion[i].tolist()))
    return "\n".join(lines)


def evaluate_checkpoint(
    path: str | Path,
    split: str = "test",
    data: str | Path | None = None,
    dataset: str | None = None,
    batch_size: int = 1000,
) -> Report:
    """Evaluate a saved model on the test or validation split of its own dataset (or of ``data``).

    The validation split is the one the run held out, taken from the run's recorded ``val_size``. A run on data
    without a test part that mixed in MNIST (``mix_mnist``) was tested on MNIST's test set, and is again.
    """
    model, meta = checkpoint.load_checkpoint(path)
    cfg = meta.get("config", {})
    own_data = data is None and dataset is None
    if own_data:
        data, dataset = cfg.get("data"), cfg.get("dataset", "mnist")
    ds = load_dataset(data, dataset or "mnist")
    data_name = data_title(data, dataset)
    if split == "test":
        part = ds.test
        if part is None and own_data and (meta.get("dataset") or {}).get("mnist_mix", {}).get("test"):
            part, data_name = load_bundled_mnist().test, data_title(None)  # as the run was tested (mix_mnist)
        if part is None:
            raise DataError(
                f"{ds.source or ds.name}: has no test set; use split val or data with test files",
                options=("split", "data"),
            )
    elif split == "val":
        val_size = int(cfg.get("val_size", 10_000))
        if val_size == 0:
            raise DataError(
                "this run trained on all training images (val_size 0): it has no validation split; use split test",
                options=("val_size", "split"),
            )
        part = split_dataset(ds, val_size).val
    else:
        raise DataError(f"unknown split '{split}'; choose test or val")
    classes = list(meta.get("classes", ds.classes))
    if len(classes) != len(ds.classes):
        raise DataError(f"the model predicts {len(classes)} classes but the data has {len(ds.classes)}")
    assert part is not None  # a missing test set was refused above; val_size > 0 holds validation images out
    report = evaluate(
        model, part, Normalization(**meta.get("normalization", {})), classes, batch_size, tta=bool(meta.get("tta"))
    )
    report.model_name = model_title({"model": meta.get("model"), **meta.get("model_options", {})})
    report.data_name, report.split_name = data_name, split
    return report
