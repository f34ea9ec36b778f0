"""Figures as PNG files: sample grids, training curves, the confusion matrix, top-loss mistakes, run comparisons.

Figures are built with matplotlib's object API and rendered by its Agg canvas: no pyplot, no window, no global
state, so they come out the same in a terminal, a notebook or CI. Every figure has a fixed size in inches at
``DPI`` dots per inch, so its pixel size is known in advance; files are written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from . import data, fileio, runs
from .errors import ConfigError, DataError

DPI = 100
MAX_GRID = 400  # images in one grid: 20 x 20 cells, 2000 x 2440 pixels
CURVES_NAME = "curves.png"
CONFUSION_NAME = "confusion.png"
MISTAKES_NAME = "mistakes.png"
SPLITS = ("train", "val", "test")

Rows = list[dict[str, float | None]]


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG file, atomically."""
    path = Path(path).expanduser()
    if path.suffix.lower() != ".png":
        raise ConfigError(f"{path}: figures are written as PNG; give a file name ending in .png")
    fileio.write_bytes(path, png_bytes(fig))
    return path


# --------------------------------------------------------------------------------------------------
# Images


def image_grid(
    images: np.ndarray | torch.Tensor,
    titles: Sequence[str],
    cell: tuple[float, float] = (1.0, 1.2),
    colors: Sequence[str] | None = None,
    title: str | None = None,
    cols: int | None = None,
) -> Figure:
    """A grid of uint8 28x28 images, each under its title. ``cell`` is one cell's (width, height) in inches;
    the figure is ``cols * width`` by ``rows * height`` inches, plus 0.4 inch for ``title``."""
    images = np.asarray(images)
    n = len(images)
    cols = cols or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(cols * cell[0], rows * cell[1] + (0.4 if title else 0.0)), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < n:
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(titles[i], fontsize=8 if cell[0] < 1.5 else 9, color=colors[i] if colors else "black")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def image_figure(image: np.ndarray | torch.Tensor, title: str) -> Figure:
    """One 28x28 image large (500 x 540 pixels), with pixel coordinates on the axes and a pixel-value scale."""
    fig = Figure(figsize=(5.0, 5.4), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(np.asarray(image), cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ax.set_xticks(range(0, 28, 7))
    ax.set_yticks(range(0, 28, 7))
    fig.colorbar(shown, ax=ax, shrink=0.8, label="pixel value")
    ax.set_title(title)
    return fig


def load_split(
    split: str = "train", data_path: str | Path | None = None, dataset: str = "mnist", val_size: int = 10_000
) -> tuple[data.Split, list[str]]:
    """The train, val or test part of a dataset as ``mnistkit train`` splits it, and the class names."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
    ds = data.load_dataset(data_path, dataset)
    if split != "test" and not 0 <= val_size < len(ds.train):
        raise ConfigError(
            f"--val-size {val_size}: {ds.source or ds.name} has {len(ds.train)} training images; "
            "pass a smaller --val-size (0 = no validation split)"
        )
    # The test images do not depend on the validation split.
    part = ds.test if split == "test" else getattr(data.split_dataset(ds, val_size), split)
    if part is None:
        hint = "use --val-size > 0" if split == "val" else "use --split train or data with test files"
        raise DataError(f"{ds.source or ds.name}: has no {split} split; {hint}")
    return part, list(ds.classes)


def show(
    split: str = "train",
    n: int = 64,
    digit: int | None = None,
    index: int | None = None,
    data_path: str | Path | None = None,
    dataset: str = "mnist",
    val_size: int = 10_000,
) -> Figure:
    """What ``mnistkit show`` draws: the first ``n`` images of a split (of class ``digit`` only, if given) in a
    labelled grid, or with ``index`` the image at that position (among that class's images) large."""
    part, classes = load_split(split, data_path, dataset, val_size)
    images, labels = part.images, part.labels
    where = split
    if digit is not None:
        if not 0 <= digit < len(classes):
            raise ConfigError(f"--digit {digit}: classes are numbered 0..{len(classes) - 1}")
        keep = labels == digit
        images, labels = images[keep], labels[keep]
        where = f"{split}, class {classes[digit]}"
        if not len(labels):
            raise DataError(f"the {split} split has no images of class {classes[digit]}")
    if index is not None:
        if not 0 <= index < len(labels):
            raise ConfigError(f"--index {index}: the {where} images are numbered 0..{len(labels) - 1}")
        return image_figure(images[index], f"{where} image {index}, label {classes[labels[index]]}")
    if not 1 <= n <= MAX_GRID:
        raise ConfigError(f"--n must be between 1 and {MAX_GRID} (a 20 x 20 grid), got {n}")
    available = len(labels)
    images, labels = images[:n], labels[:n]
    return image_grid(
        images, [classes[k] for k in labels.tolist()], title=f"{where}: first {len(labels)} of {available} images"
    )


# --------------------------------------------------------------------------------------------------
# Training curves


def _column(rows: Rows, key: str) -> tuple[list[float], list[float]]:
    """Epochs and values of one metric, leaving out epochs where it is missing (no validation set)."""
    pairs = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _loss_and_accuracy_axes(fig: Figure):
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    loss_ax.set_ylabel("cross-entropy loss")
    acc_ax.set_ylabel("validation accuracy (%)")
    return loss_ax, acc_ax


def _cap_at_100(acc_ax) -> None:
    # matplotlib pads a flat line at 100 % up to 105 %; accuracy above 100 % reads as a bug.
    bottom, top = acc_ax.get_ylim()
    if top > 100:
        acc_ax.set_ylim(min(bottom, 99.0), 100.5)


def _two_three_five(value: float, _position=None) -> str:
    leading = round(value / 10 ** math.floor(math.log10(value)))
    return f"{value:g}" if leading in (2, 3, 5) else ""


def _log_scale_if_positive(ax, values: list[float]) -> None:
    # Losses fall by orders of magnitude; a log axis keeps the late epochs readable.
    if values and min(values) > 0:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.3, not 3×10⁻¹
        # Major ticks are a decade apart, often only one is in view: label the minor ticks at 2, 3 and 5 too.
        ax.yaxis.set_minor_formatter(FuncFormatter(_two_three_five))


def curves_figure(rows: Rows, title: str | None = None) -> Figure:
    """Train and validation loss, and validation accuracy, per epoch (1000 x 400 pixels)."""
    fig = Figure(figsize=(10.0, 4.0), dpi=DPI, layout="constrained")
    loss_ax, acc_ax = _loss_and_accuracy_axes(fig)
    epochs, train_loss = _column(rows, "train_loss")
    val_epochs, val_loss = _column(rows, "val_loss")
    acc_epochs, accuracy = _column(rows, "val_accuracy")
    loss_ax.plot(epochs, train_loss, "o-", label="train")
    if val_loss:
        loss_ax.plot(val_epochs, val_loss, "o-", label="validation")
    _log_scale_if_positive(loss_ax, train_loss + val_loss)
    loss_ax.legend()
    if accuracy:
        acc_ax.plot(acc_epochs, [100 * a for a in accuracy], "o-", color="tab:green")
        best = int(np.argmax(accuracy))
        acc_ax.plot([acc_epochs[best]], [100 * accuracy[best]], "*", color="tab:green", markersize=14)
        acc_ax.set_title(f"best {accuracy[best]:.2%} at epoch {acc_epochs[best]:.0f}", fontsize=10)
        _cap_at_100(acc_ax)
    else:
        acc_ax.text(0.5, 0.5, "no validation set", ha="center", va="center", transform=acc_ax.transAxes)
    if title:
        fig.suptitle(title)
    return fig


def write_curves(run_dir: str | Path) -> Path:
    """Draw ``curves.png`` in a run folder from its ``metrics.csv``."""
    run_dir = Path(run_dir)
    return save(curves_figure(runs.read_metrics(run_dir), title=run_dir.name), run_dir / CURVES_NAME)


def compare_figure(runs_rows: dict[str, Rows], title: str | None = None) -> Figure:
    """Several runs' curves on one figure (1000 x 400 pixels): train loss dashed and validation loss solid in
    the run's colour, validation accuracy on the right. Runs may have different numbers of epochs, and runs
    without a validation set (the speed presets) show their train loss only."""
    fig = Figure(figsize=(10.0, 4.0), dpi=DPI, layout="constrained")
    loss_ax, acc_ax = _loss_and_accuracy_axes(fig)
    losses: list[float] = []
    any_accuracy = False
    for i, (name, rows) in enumerate(runs_rows.items()):
        color = f"C{i % 10}"
        epochs, train_loss = _column(rows, "train_loss")
        val_epochs, val_loss = _column(rows, "val_loss")
        acc_epochs, accuracy = _column(rows, "val_accuracy")
        # Every run has a train loss, so that line carries the run's name in the legend.
        loss_ax.plot(epochs, train_loss, "--", marker=".", color=color, alpha=0.8, label=name)
        loss_ax.plot(val_epochs, val_loss, "o-", color=color)
        acc_ax.plot(acc_epochs, [100 * a for a in accuracy], "o-", color=color)
        losses += train_loss + val_loss
        any_accuracy = any_accuracy or bool(accuracy)
    _log_scale_if_positive(loss_ax, losses)
    loss_ax.set_title("loss (dashed: train, solid: validation)", fontsize=10)
    loss_ax.legend(fontsize=8)
    if any_accuracy:
        _cap_at_100(acc_ax)
    else:
        acc_ax.text(0.5, 0.5, "no run has a validation set", ha="center", va="center", transform=acc_ax.transAxes)
    if title:
        fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------------
# Evaluation


def confusion_figure(confusion: np.ndarray | torch.Tensor, classes: Sequence[str], title: str | None = None) -> Figure:
    """The confusion matrix (800 x 700 pixels): each cell shows its count, coloured by the fraction of its true
    class (row) that it holds, so classes of different sizes compare fairly."""
    counts = np.asarray(confusion, dtype=np.int64)
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(8.0, 7.0), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1)
    k = len(classes)
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if fractions[i, j] > 0.5 else "black",
                )
    long_names = max(map(len, classes)) > 2  # Fashion-MNIST's names need slanting to fit
    ax.set_xticks(range(k), list(classes), rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(k), list(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    fig.colorbar(shown, ax=ax, label="fraction of the true class")
    correct, total = int(np.trace(counts)), int(counts.sum())
    heading = f"accuracy {correct / max(total, 1):.2%} ({correct} of {total})"
    ax.set_title(f"{title}\n{heading}" if title else heading)
    return fig


def top_losses(
    logits: torch.Tensor, labels: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``k`` examples with the highest loss: (indices, losses, predicted classes, predicted probabilities)."""
    logits, labels = logits.float().cpu(), labels.cpu()
    losses = F.cross_entropy(logits, labels, reduction="none")
    top = losses.topk(min(k, len(losses))).indices
    probabilities, predicted = logits[top].softmax(1).max(1)
    return top, losses[top], predicted, probabilities


def mistakes_figure(
    images: torch.Tensor,
    labels: torch.Tensor,
    logits: torch.Tensor,
    classes: Sequence[str],
    k: int = 16,
    title: str | None = None,
) -> Figure:
    """The ``k`` images with the highest loss, each titled true → predicted (probability), wrong ones in red,
    like fastai's ``plot_top_losses``. Four per row, 2 x 2.2 inches each (k=16: 800 x 920 pixels)."""
    top, losses, predicted, probabilities = top_losses(logits, labels, k)
    truth = labels.cpu()[top].tolist()
    titles = [
        f"{classes[t]} → {classes[p]} ({q:.2f})\nloss {loss:.2f}"
        for t, p, q, loss in zip(truth, predicted.tolist(), probabilities.tolist(), losses.tolist())
    ]
    colors = ["tab:red" if t != p else "black" for t, p in zip(truth, predicted.tolist())]
    heading = "highest-loss images: true → predicted (probability)"
    return image_grid(
        images.cpu()[top],
        titles,
        cell=(2.0, 2.2),
        colors=colors,
        cols=4,
        title=f"{title}: {heading}" if title else heading,
    )


def write_evaluation_plots(report, folder: str | Path, title: str | None = None, k: int = 16) -> list[Path]:
    """Write ``confusion.png`` and ``mistakes.png`` for an ``evaluate.Report`` into ``folder``."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{folder}: cannot create the plots folder ({exc.strerror or exc}); pass --plots DIR"
        ) from None
    paths = [save(confusion_figure(report.confusion, report.classes, title), folder / CONFUSION_NAME)]
    if report.logits is not None and report.split is not None:
        figure = mistakes_figure(report.split.images, report.split.labels, report.logits, report.classes, k, title)
        paths.append(save(figure, folder / MISTAKES_NAME))
    return paths
