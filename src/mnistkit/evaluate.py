"""Evaluation: loss, accuracy, per-class precision/recall and the confusion matrix of a model, or of an ensemble
of models (their averaged probabilities), on a split."""

from __future__ import annotations

import numbers
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint, fileio
from .augment import TTA_SHIFTS, tta_probabilities
from .config import data_title, model_title
from .data import Normalization, Split, batches, load_bundled_mnist, load_dataset, split_dataset
from .errors import ConfigError, DataError, short

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
    # An ensemble's members: each one's source and the test accuracy its run recorded
    members: list[dict[str, Any]] = field(default_factory=list, compare=False)
    # What the reader should know about the figures: data that changed since the model was trained on it
    notes: list[str] = field(default_factory=list, compare=False)

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
        """The report as a JSON document; the members' sources and the notes name files, which may not be UTF-8:
        they are made valid Unicode (``fileio.valid_unicode``), as JSON needs."""
        members = {"members": fileio.valid_unicode(self.members)} if self.members else {}
        notes = {"notes": fileio.valid_unicode(self.notes)} if self.notes else {}
        return {
            **members,
            **notes,
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
    return _report(predict_logits(model, split, norm, batch_size, tta), split, classes)


def _report(logits: torch.Tensor, split: Split, classes: list[str]) -> Report:
    """The report of ``logits`` (or log-probabilities) for every image of ``split``."""
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
    lines = [f"note: {note}" for note in report.notes]
    if report.members:
        lines.append(f"ensemble of {len(report.members)}, the mean of their probabilities:")
    for member in report.members:
        recorded = member["test_accuracy"]
        lines.append(
            f"  {member['source']}" + (f"  (its run's test accuracy {recorded:.2%})" if recorded is not None else "")
        )
    lines += [
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
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ConfigError(f"batch_size must be a whole number of at least 1, got {short(batch_size)}")
    batch_size = int(batch_size)  # NumPy's integers too
    model, meta = checkpoint.load_checkpoint(fileio.given_path(path, "path"))
    part, data_name, classes, notes = _evaluation_split(meta, split, data, dataset)
    report = evaluate(
        model, part, Normalization(**meta.get("normalization", {})), classes, batch_size, tta=bool(meta.get("tta"))
    )
    report.model_name = model_title({"model": meta.get("model"), **meta.get("model_options", {})})
    report.data_name, report.split_name, report.notes = data_name, split, notes
    return report


def evaluate_ensemble(
    paths: Sequence[str | Path], split: str = "test", data: str | Path | None = None, dataset: str | None = None
) -> Report:
    """Evaluate the ensemble of the saved models at ``paths``: the mean of their probabilities, exactly as
    ``Classifier.load(paths)`` predicts (each member with its normalization, test-time augmentation and
    temperature). The split is chosen for each member as by ``evaluate_checkpoint``; it must be the same images
    for all of them (members trained on the same data, holding out the same validation images)."""
    from .inference import Classifier, Ensemble

    if isinstance(paths, (str, os.PathLike)):  # one path, not a sequence of its characters
        paths = [paths]
    ensemble = Ensemble([Classifier.load(path) for path in paths])
    members = ensemble.members
    part, data_name, classes, notes = _evaluation_split(members[0].meta, split, data, dataset)
    for member in members[1:]:
        other, other_name, _, other_notes = _evaluation_split(member.meta, split, data, dataset)
        notes += [note for note in other_notes if note not in notes]
        if not (torch.equal(other.images, part.images) and torch.equal(other.labels, part.labels)):
            raise DataError(
                f"{member.source}: its {split} split ({other_name}, {len(other):,} images) is not the one of "
                f"{members[0].source} ({data_name}, {len(part):,} images); pass data or dataset to evaluate every "
                "member on the same images",
                options=("data", "dataset"),
            )
    probabilities = torch.from_numpy(ensemble.predict_array(part.images))
    log_probabilities = probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny).log()
    report = _report(log_probabilities, part, classes)
    titles = Counter(model_title({"model": m.meta.get("model"), **m.meta.get("model_options", {})}) for m in members)
    report.model_name = "ensemble of " + " + ".join(f"{n} × {title}" if n > 1 else title for title, n in titles.items())
    report.data_name, report.split_name, report.notes = data_name, split, notes
    report.members = [
        {"source": m.source, "test_accuracy": (m.meta.get("metrics") or {}).get("test_accuracy")} for m in members
    ]
    return report


def _evaluation_split(
    meta: dict[str, Any], split: str, data: str | Path | None, dataset: str | None
) -> tuple[Split, str, list[str], list[str]]:
    """The split a model with ``meta`` is evaluated on, the data's name, the model's classes, and notes on it
    (its own data changed since it trained on them)."""
    cfg = meta.get("config", {})
    own_data = data is None and dataset is None
    if own_data:
        data, dataset = cfg.get("data"), cfg.get("dataset", "mnist")
        if data and not fileio.recorded_path(data).exists():
            raise DataError(
                f"{data}: the images this run trained on are not there; give their path (or other images) with data",
                options=("data",),
            )
    ds = load_dataset(data, dataset or "mnist")
    data_name = data_title(data, dataset)
    # A run that mixed MNIST in (fine-tuning) was tested on MNIST's test set, where its own data has none.
    tested_on_mnist = own_data and bool((meta.get("dataset") or {}).get("mnist_mix", {}).get("test"))
    if split == "test":
        part = ds.test
        if part is None and tested_on_mnist:
            part, data_name = load_bundled_mnist().test, data_title(None)  # as the run was tested (mix_mnist)
        if part is None:
            # The validation split is another way out only for a run that held one out of these images.
            other = "split val or " if own_data and int(cfg.get("val_size", 10_000)) else ""
            raise DataError(
                f"{ds.source or ds.name}: has no test set; use {other}data with test files",
                options=("split", "data"),
            )
    elif split == "val":
        val_size = int(cfg.get("val_size", 10_000))
        if val_size == 0:
            testable = ds.test is not None or tested_on_mnist
            raise DataError(
                "this run trained on all training images (val_size 0): it has no validation split; use split test"
                + ("" if testable else f" with data that has test files ({ds.source or ds.name} has none)"),
                options=("val_size", "split", "data"),
            )
        part = split_dataset(ds, val_size).val
    else:
        raise DataError(f"unknown split '{split}'; choose test or val")
    classes = list(meta.get("classes", ds.classes))
    if len(classes) != len(ds.classes):
        raise DataError(f"the model predicts {len(classes)} classes but the data has {len(ds.classes)}")
    assert part is not None  # a missing test set was refused above; val_size > 0 holds validation images out
    notes = []
    # File names may be recorded in another form (a name that is not UTF-8): the contents' digests are compared.
    recorded = sorted(((meta.get("dataset") or {}).get("checksums") or {}).values())
    if own_data and recorded and ds.checksums and recorded != sorted(ds.checksums.values()):
        notes.append(
            f"{ds.source or data_name}: its files changed since this model trained on them (their checksums "
            "differ from the run's record), so these figures are not the run's"
        )
    return part, data_name, classes, notes
