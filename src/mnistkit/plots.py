"""Figures as PNG files: sample grids, training curves, the confusion matrix, top-loss mistakes, run comparisons.

Figures are built with matplotlib's object API and rendered by its Agg canvas: no pyplot, no window, no global
state, so they come out the same in a terminal, a notebook or CI. Every figure has a fixed size in inches at
``DPI`` dots per inch, so its pixel size is known in advance; files are written atomically.
"""

# matplotlib is imported below the code that chooses its folders, which must run first:
# ruff: noqa: E402

from __future__ import annotations

import io
import json
import math
import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def matplotlib_folders() -> list[Path] | None:
    """The folders matplotlib keeps its settings and font cache in when ``MPLCONFIGDIR`` is not set, on Linux (XDG's)
    and other POSIX systems, as its ``_get_config_or_cache_dir`` picks them; None when there is no home folder."""
    try:
        if sys.platform.startswith(("linux", "freebsd")):
            config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
            cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
            return [Path(config, "matplotlib"), Path(cache, "matplotlib")]
        return [Path.home() / ".matplotlib"]
    except RuntimeError:  # Path.home(): no HOME, and no entry in the password database
        return None


def can_make_folder(folder: Path) -> bool:
    """Whether ``folder`` is a folder we may write in, or could be made as one (``mkdir -p``): matplotlib's test,
    made without creating anything."""
    try:
        folder = folder.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        return False
    for existing in (folder, *folder.parents):
        if os.path.exists(existing):  # False too where we may not look (a stat refused): look further up
            return existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
    return False


def private_folder(folder: Path) -> bool:
    """Make ``folder`` if it is missing, readable by its owner only; whether it is a folder (not a link) that we own
    and no one else may write in. A folder of that name made by another user is not used: its files (a matplotlibrc,
    a font cache) would be theirs."""
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def use_private_matplotlib_folder() -> None:
    """Where matplotlib cannot write its folders (a read-only or missing HOME, as in containers and CI), it warns on
    stderr each time it loads, and caches its fonts in a new temporary folder. Point it instead at a folder of this
    user's in the temporary folder, kept from one command to the next, unless ``MPLCONFIGDIR`` names one already.
    Must run before matplotlib is first imported: it reads its folders then."""
    if os.environ.get("MPLCONFIGDIR") or sys.platform == "win32":  # Windows: %LOCALAPPDATA%, which every user has
        return
    folders = matplotlib_folders()
    if folders is not None and all(map(can_make_folder, folders)):
        return
    folder = Path(tempfile.gettempdir()) / f"mnistkit-matplotlib-{os.getuid()}"
    if private_folder(folder):
        os.environ["MPLCONFIGDIR"] = str(folder)


use_private_matplotlib_folder()

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import ListedColormap, LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, MaxNLocator

from . import fileio, runs
from .checkpoint import META_NAME
from .config import data_title, model_title
from .data import Split, load_dataset, split_dataset
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
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": fileio.FIGURE_SOFTWARE})
    return buffer.getvalue()


def save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG file, atomically."""
    path = check_png_name(path)
    fileio.write_bytes(path, png_bytes(fig))
    return path


def check_png_name(path: str | Path) -> Path:
    """``path`` expanded; ConfigError unless it names a PNG file, WriteError unless its folder exists (checked
    before the figure's work is done)."""
    path = fileio.expanded(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"{path}: figures are written as PNG; give a file name ending in .png")
    return fileio.check_folder_exists(path)


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
    cols = cols or grid_columns(n)
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(cols * cell[0], rows * cell[1] + (0.4 if title else 0.0)), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i < n:
            ax.imshow(images[i], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(titles[i], fontsize=8 if cell[0] < 1.5 else 9, color=colors[i] if colors else "black")
    if title:
        fig.suptitle(fileio.valid_utf8(title), fontsize=11)
    return fig


def grid_columns(n: int) -> int:
    """Columns for a grid of ``n`` images: about square, and with full rows where a divisor of ``n`` allows it
    (32 images: 8 x 4, not 6 rows of 6 with a ragged last one)."""
    square = max(1, math.ceil(math.sqrt(n)))
    return next((cols for cols in range(square, 2 * square) if n % cols == 0), square)


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
    split: str = "train", data: str | Path | None = None, dataset: str = "mnist", val_size: int = 10_000
) -> tuple[Split, list[str]]:
    """The train, val or test part of a dataset as ``mnistkit train`` splits it, and the class names."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split '{split}'; choose one of: {', '.join(SPLITS)}")
    ds = load_dataset(data, dataset)
    if split != "test" and not 0 <= val_size < len(ds.train):
        raise ConfigError(
            f"val_size {val_size}: {ds.source or ds.name} has {len(ds.train)} training images; "
            "pass a smaller val_size (0 = no validation split)",
            options=("val_size",),
        )
    # The test images do not depend on the validation split.
    part = ds.test if split == "test" else getattr(split_dataset(ds, val_size), split)
    if part is None:
        options: tuple[str, ...]
        if split == "val":
            hint, options = "use val_size > 0", ("val_size",)
        else:
            hint, options = "use split train or data with test files", ("split", "data")
        raise DataError(f"{ds.source or ds.name}: has no {split} split; {hint}", options=options)
    return part, list(ds.classes)


def show(
    split: str = "train",
    n: int = 64,
    digit: int | None = None,
    index: int | None = None,
    data: str | Path | None = None,
    dataset: str = "mnist",
    val_size: int = 10_000,
) -> Figure:
    """What ``mnistkit show`` draws: the first ``n`` images of a split in a grid titled by their labels, or of
    class ``digit`` only, titled by their indices in the split; or with ``index`` the image at that index in the
    split large (``digit`` then only checks its class). An index is the same everywhere: here, in
    ``mistakes.png`` and in ``show --index``."""
    part, classes = load_split(split, data, dataset, val_size)
    labels = part.labels
    if digit is not None and not 0 <= digit < len(classes):
        raise ConfigError(f"digit {digit}: classes are numbered 0..{len(classes) - 1}", options=("digit",))
    if index is not None:
        if not 0 <= index < len(labels):
            raise ConfigError(
                f"index {index}: the {split} images are numbered 0..{len(labels) - 1}", options=("index",)
            )
        label = classes[labels[index]]
        if digit is not None and labels[index] != digit:
            raise ConfigError(
                f"index {index}: that {split} image is a {label}, not a {classes[digit]}; drop digit",
                options=("index", "digit"),
            )
        return image_figure(part.images[index], f"{split} image #{index}, label {label}")
    if not 1 <= n <= MAX_GRID:
        raise ConfigError(f"n must be between 1 and {MAX_GRID} (a 20 x 20 grid), got {n}", options=("n",))
    if digit is None:
        shown = torch.arange(min(n, len(labels)))
        titles = [classes[k] for k in labels[shown].tolist()]
        heading = f"{split} split: images #0 to #{len(shown) - 1} of {len(labels):,}, titled by their label"
    else:
        of_class = (labels == digit).nonzero().flatten()
        if not len(of_class):
            raise DataError(f"the {split} split has no images of class {classes[digit]}")
        shown = of_class[:n]
        titles = [f"#{i}" for i in shown.tolist()]
        heading = (
            f"{split} split, class {classes[digit]}: first {len(shown)} of {len(of_class):,}, "
            "titled by their index (show --index I draws one large)"
        )
    return image_grid(part.images[shown], titles, title=heading)


# --------------------------------------------------------------------------------------------------
# Training curves


def _column(rows: Rows, key: str) -> tuple[list[float], list[float]]:
    """Epochs and values of one metric, leaving out epochs where it is missing (no validation set)."""
    pairs = [
        (epoch, value) for r in rows if (epoch := r.get("epoch")) is not None and (value := r.get(key)) is not None
    ]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _loss_and_accuracy_axes(fig: Figure, epochs: int, from_zero: bool = False):
    """The two panels, with an epoch axis of whole epochs only: 1 to ``epochs`` (0 to ``epochs`` when the
    curve starts before the first epoch's end, as per-batch losses do)."""
    loss_ax, acc_ax = fig.subplots(1, 2)
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.set_xlim(0 if from_zero else 0.5, max(epochs, 1) + (0.25 if from_zero else 0.5))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.grid(alpha=0.3)
    loss_ax.set_ylabel("cross-entropy loss")
    acc_ax.set_ylabel("validation accuracy (%)")
    return loss_ax, acc_ax


def _epochs(*runs_rows: Rows) -> int:
    return int(max((epoch for rows in runs_rows for row in rows if (epoch := row.get("epoch")) is not None), default=1))


def _cap_at_100(acc_ax) -> None:
    # matplotlib pads a flat line at 100 % up to 105 %; accuracy above 100 % reads as a bug.
    bottom, top = acc_ax.get_ylim()
    if top > 100:
        acc_ax.set_ylim(min(bottom, 99.0), 100.5)


def _two_three_five(value: float, _position=None) -> str:
    leading = round(value / 10 ** math.floor(math.log10(value)))
    return f"{value:g}" if leading in (2, 3, 5) else ""


def _percent(value: float, minor: bool = False) -> str:
    """A share as a percentage label on a log scale: every decade, and 2, 3 and 5 between with ``minor``."""
    text = _two_three_five(100 * value) if minor else f"{100 * value:g}"
    return f"{text}%" if text else ""


def _log_scale_if_positive(ax, values: list[float]) -> None:
    # Losses fall by orders of magnitude; a log axis keeps the late epochs readable.
    if values and min(values) > 0:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))  # 0.3, not 3×10⁻¹
        # Major ticks are a decade apart, often only one is in view: label the minor ticks at 2, 3 and 5 too.
        ax.yaxis.set_minor_formatter(FuncFormatter(_two_three_five))


def curves_figure(rows: Rows, title: str | None = None, batch_losses: dict[int, list[float]] | None = None) -> Figure:
    """Train and validation loss, and validation accuracy, per epoch (1000 x 400 pixels); with ``batch_losses``
    (epoch -> its batches' losses) also every batch's training loss, drawn across its epoch. Epochs are
    points at whole numbers (joined by lines when there are several)."""
    batch_losses = batch_losses or {}
    fig = Figure(figsize=(10.0, 4.0), dpi=DPI, layout="constrained")
    loss_ax, acc_ax = _loss_and_accuracy_axes(fig, _epochs(rows), from_zero=bool(batch_losses))
    epochs, train_loss = _column(rows, "train_loss")
    val_epochs, val_loss = _column(rows, "val_loss")
    acc_epochs, accuracy = _column(rows, "val_accuracy")
    steps, step_losses = _per_batch(batch_losses)
    if steps:
        loss_ax.plot(steps, step_losses, "-", color="C0", alpha=0.35, linewidth=0.8, label="train, each batch")
    loss_ax.plot(epochs, train_loss, "o-", color="C0", label="train, epoch mean" if steps else "train")
    if val_loss:
        loss_ax.plot(val_epochs, val_loss, "o-", color="C1", label="validation")
    _log_scale_if_positive(loss_ax, train_loss + val_loss + step_losses)
    loss_ax.set_title("training and validation loss", fontsize=10)
    loss_ax.legend(fontsize=9)
    if accuracy:
        acc_ax.plot(acc_epochs, [100 * a for a in accuracy], "o-", color="tab:green")
        best = int(np.argmax(accuracy))
        acc_ax.plot([acc_epochs[best]], [100 * accuracy[best]], "*", color="tab:green", markersize=14)
        acc_ax.set_title(f"validation accuracy: best {accuracy[best]:.2%} at epoch {acc_epochs[best]:.0f}", fontsize=10)
        _cap_at_100(acc_ax)
    else:
        acc_ax.set_title("validation accuracy", fontsize=10)
        acc_ax.text(
            0.5,
            0.5,
            "no validation set:\ntrained on every training image",
            ha="center",
            va="center",
            transform=acc_ax.transAxes,
        )
    if title:
        fig.suptitle(fileio.valid_utf8(title))
    return fig


def _per_batch(batch_losses: dict[int, list[float]]) -> tuple[list[float], list[float]]:
    """Batch losses at fractional epochs: batch b of n in epoch e at e - 1 + b / n."""
    steps: list[float] = []
    losses: list[float] = []
    for epoch in sorted(batch_losses):
        n = len(batch_losses[epoch])
        steps += [epoch - 1 + (b + 1) / n for b in range(n)]
        losses += batch_losses[epoch]
    return steps, losses


def run_title(config: dict, meta: dict | None, name: str) -> str:
    """A run in words: its folder, model, data and length, and its test accuracy once it has one."""
    epochs = (meta or {}).get("metrics", {}).get("epochs", config.get("epochs"))
    line = f"{name}: {model_title(config)} trained on {data_title(config.get('data'), config.get('dataset'))}"
    line += f", {epochs} epoch{'s' if epochs != 1 else ''}"
    accuracy = (meta or {}).get("metrics", {}).get("test_accuracy")
    if accuracy is None:
        return f"{line} (not tested: training stopped before the end)" if meta is None else line
    images = (meta or {}).get("dataset", {}).get("test")
    return f"{line}\ntest accuracy {accuracy:.2%}" + (f" on {images:,} test images" if images else "")


def write_curves(run_dir: str | Path) -> Path:
    """Draw ``curves.png`` in a run folder from its ``metrics.csv`` and ``batch_losses.csv``, titled from its
    ``config.json`` and ``model.json`` (a run stopped early has no model.json: no test accuracy)."""
    run_dir = Path(run_dir)
    config = _read_json(run_dir / runs.CONFIG_NAME) or {}
    meta = _read_json(run_dir / META_NAME)
    title = run_title(config, meta, run_dir.name)
    figure = curves_figure(runs.read_metrics(run_dir), title, runs.read_batch_losses(run_dir))
    return save(figure, run_dir / CURVES_NAME)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def compare_figure(runs_rows: dict[str, Rows], title: str | None = None) -> Figure:
    """Several runs' curves on one figure (1000 x 400 pixels), one colour per run, named by the keys of
    ``runs_rows`` in the legend on the accuracy panel: train loss dashed and validation loss solid on the left,
    validation accuracy solid on the right. Runs may have different numbers of epochs, and runs without a
    validation set (the speed presets) show their train loss only."""
    fig = Figure(figsize=(10.0, 4.0), dpi=DPI, layout="constrained")
    loss_ax, acc_ax = _loss_and_accuracy_axes(fig, _epochs(*runs_rows.values()))
    losses: list[float] = []
    any_accuracy = False
    for i, (name, rows) in enumerate(runs_rows.items()):
        color = f"C{i % 10}"
        epochs, train_loss = _column(rows, "train_loss")
        val_epochs, val_loss = _column(rows, "val_loss")
        acc_epochs, accuracy = _column(rows, "val_accuracy")
        loss_ax.plot(epochs, train_loss, "--", marker=".", color=color, alpha=0.8)
        loss_ax.plot(val_epochs, val_loss, "o-", color=color)
        label = fileio.valid_utf8(name if accuracy else f"{name} (no validation set)")
        acc_ax.plot(acc_epochs, [100 * a for a in accuracy], "o-", color=color, label=label)
        losses += train_loss + val_loss
        any_accuracy = any_accuracy or bool(accuracy)
    _log_scale_if_positive(loss_ax, losses)
    loss_ax.set_title("loss of each run", fontsize=10)
    style = [Line2D([], [], color="grey", linestyle="--", marker="."), Line2D([], [], color="grey", marker="o")]
    loss_ax.legend(style, ["train", "validation"], fontsize=8)
    acc_ax.set_title("validation accuracy of each run", fontsize=10)
    acc_ax.legend(fontsize=8)
    if any_accuracy:
        _cap_at_100(acc_ax)
    else:
        acc_ax.text(0.5, 0.5, "no run has a validation set", ha="center", va="center", transform=acc_ax.transAxes)
    if title:
        fig.suptitle(fileio.valid_utf8(title))
    return fig


# --------------------------------------------------------------------------------------------------
# Evaluation


# Mistakes in reds from a visible pink up: a single error must not look like an empty cell.
MISTAKE_COLOURS = ListedColormap(matplotlib.colormaps["Reds"](np.linspace(0.2, 1.0, 256)), name="mistakes")


def confusion_figure(confusion: np.ndarray | torch.Tensor, classes: Sequence[str], title: str | None = None) -> Figure:
    """The confusion matrix (900 x 700 pixels): each cell shows its count. Cells are coloured by the share of
    their true class (row) that they hold, so classes of different sizes compare fairly: right answers (the
    diagonal) in blues from 0 to 100%, mistakes in reds on their own logarithmic scale, from the smallest share
    to the largest, so that every mistake stands out; empty cells stay white."""
    counts = np.asarray(confusion, dtype=np.int64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    k = len(classes)
    diagonal = np.eye(k, dtype=bool)
    fig = Figure(figsize=(9.0, 7.0), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    right = ax.imshow(np.ma.masked_where(~diagonal, shares), cmap="Blues", vmin=0, vmax=1)
    wrong = shares[~diagonal & (counts > 0)]
    norm = LogNorm(vmin=min(wrong.min(), wrong.max() / 10), vmax=wrong.max()) if len(wrong) else None
    if norm is not None:
        mistakes = ax.imshow(np.ma.masked_where(diagonal | (counts == 0), shares), cmap=MISTAKE_COLOURS, norm=norm)
        bar = fig.colorbar(mistakes, ax=ax, label="mistakes: share of the true class (log scale)", pad=0.01)
        bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _percent(value)))
        bar.ax.yaxis.set_minor_formatter(FuncFormatter(lambda value, _: _percent(value, minor=True)))
    right_bar = fig.colorbar(right, ax=ax, label="right answers: share of the true class", pad=0.01)
    right_bar.ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.0%}"))
    for i in range(k):
        for j in range(k):
            if counts[i, j]:
                dark = shares[i, j] > 0.5 if i == j else norm is not None and norm(shares[i, j]) > 0.6
                ax.text(
                    j, i, str(counts[i, j]), ha="center", va="center", fontsize=8, color="white" if dark else "black"
                )
    long_names = max(map(len, classes)) > 2  # Fashion-MNIST's names need slanting to fit
    ax.set_xticks(range(k), list(classes), rotation=45 if long_names else 0, ha="right" if long_names else "center")
    ax.set_yticks(range(k), list(classes))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    correct, total = int(np.trace(counts)), int(counts.sum())
    heading = (
        f"accuracy {correct / max(total, 1):.2%}: {correct:,} of {total:,} images right, {total - correct:,} wrong"
    )
    ax.set_title(fileio.valid_utf8(f"{title}\n{heading}" if title else heading))
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
    """The ``k`` images with the highest loss, each titled with its index in the split (as ``show --index``
    takes it), true → predicted class (probability) and its loss, wrong ones in red, like fastai's
    ``plot_top_losses``. Four per row, 2 x 2.2 inches each (k=16: 800 x 920 pixels)."""
    top, losses, predicted, probabilities = top_losses(logits, labels, k)
    truth = labels.cpu()[top].tolist()
    titles = [
        f"#{i}: {classes[t]} → {classes[p]} ({q:.2f})\nloss {loss:.2f}"
        for i, t, p, q, loss in zip(top.tolist(), truth, predicted.tolist(), probabilities.tolist(), losses.tolist())
    ]
    colors = ["tab:red" if t != p else "black" for t, p in zip(truth, predicted.tolist())]
    heading = f"the {len(top)} highest-loss images: #index in the split, true → predicted (probability)"
    return image_grid(
        images.cpu()[top],
        titles,
        cell=(2.0, 2.2),
        colors=colors,
        cols=4,
        title=f"{title}\n{heading}" if title else heading,
    )


def check_plots_folder(folder: str | Path) -> Path:
    """``folder`` expanded; ConfigError if it or its parent is a file or may not be written (a read-only mount),
    WriteError if its parent is missing: the plots folder is made, not the folders above it, as a figure's -o makes
    none (checked before an evaluation, so that its report is not printed for a command that then fails)."""
    folder = fileio.expanded(folder)
    taken = next((path for path in (folder, folder.parent) if path.exists() and not path.is_dir()), None)
    if taken is not None:
        raise ConfigError(
            f"{folder}: cannot create the plots folder ({taken} is a file); pass plots DIR", options=("plots",)
        )
    fileio.check_folder_exists(folder)
    why = fileio.why_unwritable(folder if folder.is_dir() else folder.parent)
    if why is not None:
        raise ConfigError(
            f"{folder}: cannot write the figures there ({why}); pass plots DIR for another folder, or no_plots",
            options=("plots", "no_plots"),
        )
    return folder


def write_evaluation_plots(report, folder: str | Path, title: str | None = None, k: int = 16) -> list[Path]:
    """Write ``confusion.png`` and ``mistakes.png`` for an ``evaluate.Report`` into ``folder``, titled with
    ``title`` (a run's name, say) and what the report is about: "cnn on the MNIST test split (10,000 images)"."""
    title = f"{title}: {report.about}" if title else report.about
    folder = check_plots_folder(folder)
    with fileio.folder_to_fill(folder) as paths:
        paths.append(save(confusion_figure(report.confusion, report.classes, title), folder / CONFUSION_NAME))
        if report.logits is not None and report.split is not None:
            figure = mistakes_figure(report.split.images, report.split.labels, report.logits, report.classes, k, title)
            paths.append(save(figure, folder / MISTAKES_NAME))
    return paths
