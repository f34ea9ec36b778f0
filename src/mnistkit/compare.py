"""Runs side by side (``mnistkit compare``): what differs in their configs and how they did, as a table, and
one figure with their curves overlaid.

A run folder is read through ``schema`` (config.json as recorded, so runs of other mnistkit versions still
compare), ``runs`` (metrics.csv) and ``checkpoint.read_meta`` (model.json, for the test accuracy); a run that
was stopped before it finished has no model.json and is shown without one.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import checkpoint, fileio, plots, runs, schema
from .config import applicable, data_title, model_title
from .errors import CheckpointError, MnistkitError

if TYPE_CHECKING:  # matplotlib is first imported by plots, which chooses its folders before
    from matplotlib.figure import Figure


@dataclass
class RunSummary:
    name: str
    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, float | None]]  # the rows of metrics.csv
    test_accuracy: float | None  # None until the run has finished and saved its checkpoint

    @property
    def epochs(self) -> int:
        return len(self.metrics)

    @property
    def seconds(self) -> float:
        return sum(row["seconds"] or 0.0 for row in self.metrics)

    @property
    def best_val(self) -> tuple[float, int] | None:
        """The best validation accuracy and its epoch, or None without a validation set."""
        scored = [
            (accuracy, int(epoch))
            for row in self.metrics
            if (accuracy := row.get("val_accuracy")) is not None and (epoch := row.get("epoch")) is not None
        ]
        return max(scored, key=lambda pair: pair[0]) if scored else None


def read_run(path: str | Path, name: str | None = None) -> RunSummary:
    path = fileio.recorded_path(path)  # as given, or as mnistkit printed a name that is not UTF-8
    if not path.is_dir():
        problem = "a file, not a run folder" if path.exists() else "no such run folder"
        raise CheckpointError(f"{path}: {problem}; pass folders written by mnistkit train")
    if not (path / runs.CONFIG_NAME).is_file():
        raise CheckpointError(
            f"{path}: not a run folder (no {runs.CONFIG_NAME}); pass folders written by mnistkit train"
        )
    try:
        config = schema.read_config_record(path / runs.CONFIG_NAME)
    except CheckpointError:
        if _is_hub_folder(path):  # its config.json holds the model's options, not a run's
            raise CheckpointError(
                f"{path}: a Hugging Face folder, not a run folder; pass folders written by mnistkit train"
            ) from None
        raise
    metrics = _read_metrics(path)
    test_accuracy = None
    if (path / checkpoint.META_NAME).is_file():
        meta, _ = checkpoint.read_meta(path)
        test_accuracy = meta.get("metrics", {}).get("test_accuracy")
    return RunSummary(name or path.name, path, config, metrics, test_accuracy)


# What mnistkit train writes in metrics.csv: finite numbers, in these ranges (seconds: up to about three years).
METRIC_RANGES = {
    "epoch": (1, schema.MAX_EPOCHS),
    "train_loss": (0, math.inf),
    "val_loss": (0, math.inf),
    "val_accuracy": (0, 1),
    "lr": (0, math.inf),
    "seconds": (0, 1e8),
}


def _is_hub_folder(path: Path) -> bool:
    """A Hugging Face model folder (an ``export --format hf``): its config.json names an architecture."""
    if not checkpoint.is_hub_folder(path):
        return False
    try:
        config = schema.load_json(path / runs.CONFIG_NAME, schema.HUB_CONFIG)
    except MnistkitError:
        return False
    return isinstance(config, dict) and bool({"architecture", "architectures", "model_type"} & set(config))


def _read_metrics(run_dir: Path) -> list[dict[str, float | None]]:
    """metrics.csv's rows; none for a run stopped before its first epoch ended."""
    path = run_dir / runs.METRICS_NAME
    if not path.is_file():
        return []
    try:
        rows = runs.read_metrics(run_dir)
    except (ValueError, TypeError):  # a cell that is not a number, or a row longer than the header
        rows = None
    if rows is None or not all(isinstance(row.get(key), float) for row in rows for key in ("epoch", "train_loss")):
        raise CheckpointError(
            f"{path}: not the metrics mnistkit train writes (epoch, train_loss, ... as numbers); "
            "leave that run out or train it again"
        )
    for number, row in enumerate(rows, 2):
        for key, (low, high) in METRIC_RANGES.items():
            value = row.get(key)
            if value is not None and not (math.isfinite(value) and low <= value <= high):
                raise CheckpointError(
                    f"{path}: line {number}: {key} {value:g} is outside {low:g} to {high:g}, so the file is damaged; "
                    "leave that run out or train it again"
                )
    return rows


def read_runs(paths: Sequence[str | Path]) -> list[RunSummary]:
    """Read several runs, named by their folder names (by the paths as given where folder names repeat)."""
    names = [Path(p).name for p in paths]
    unique = len(set(names)) == len(names)
    return [read_run(p, name if unique else str(p)) for p, name in zip(paths, names)]


def config_differences(summaries: Sequence[RunSummary]) -> list[str]:
    """Config keys whose values are not the same in every run (epochs excepted: the table always shows them),
    among the options that apply to each run (no momentum for adamw: ``config.applicable``)."""
    configs = [applicable(s.config) for s in summaries]
    keys = list(dict.fromkeys(k for config in configs for k in config))
    return [k for k in keys if k != "epochs" and len({repr(config.get(k)) for config in configs}) > 1]


def format_duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _value(value: Any) -> str:
    return "-" if value is None else str(value)


def table(summaries: Sequence[RunSummary]) -> list[list[str]]:
    """The table's rows as strings, the header first: how each run did, then the options that differ ("-"
    where an option does not apply to a run, or it has no value)."""
    differing = config_differences(summaries)
    rows = [["run", "epochs", "best val acc", "test acc", "time", *differing]]
    for s in summaries:
        planned = s.config.get("epochs")
        epochs = str(s.epochs) if planned in (None, s.epochs) else f"{s.epochs}/{planned}"
        best = s.best_val
        config = applicable(s.config)
        rows.append(
            [
                s.name,
                epochs,
                f"{best[0]:.2%} (epoch {best[1]})" if best else "-",
                f"{s.test_accuracy:.2%}" if s.test_accuracy is not None else "-",
                format_duration(s.seconds),
                *(_value(config.get(k)) for k in differing),
            ]
        )
    # A folder name that is not UTF-8 shown as \xe9 before the columns are measured, so that they line up as printed.
    return [[fileio.valid_utf8(cell) for cell in row] for row in rows]


def format_table(summaries: Sequence[RunSummary], width: int | None = None) -> str:
    """The table as text, a run per row; turned to a run per column when a row would be wider than ``width``
    characters (the terminal's width by default), so that nothing runs off the screen."""
    rows = table(summaries)
    text = _align(rows)
    width = width or shutil.get_terminal_size().columns
    if max(map(len, text.splitlines())) > width:
        text = _align([list(column) for column in zip(*rows)])
    return text


def _align(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    # Names (the first column) read best left-aligned, the values right-aligned.
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def to_dict(summaries: Sequence[RunSummary]) -> dict[str, Any]:
    """The table as a JSON document, its names and paths valid Unicode (``fileio.valid_unicode``) as JSON needs."""
    differing = config_differences(summaries)
    document = {
        "differences": differing,
        "runs": [
            {
                "name": s.name,
                "path": str(s.path),
                "config": {k: applicable(s.config).get(k) for k in differing},
                "epochs": s.epochs,
                "planned_epochs": s.config.get("epochs"),
                "best_val_accuracy": s.best_val[0] if s.best_val else None,
                "best_val_epoch": s.best_val[1] if s.best_val else None,
                "test_accuracy": s.test_accuracy,
                "train_seconds": s.seconds,
            }
            for s in summaries
        ],
    }
    return fileio.valid_unicode(document)


def compare_figure(summaries: Sequence[RunSummary]) -> Figure:
    """The runs' loss and validation-accuracy curves overlaid, one colour per run, each named in the legend
    with its model and test accuracy; the title says what data they trained on."""
    data = dict.fromkeys(data_title(s.config.get("data"), s.config.get("dataset")) for s in summaries)
    title = f"{len(summaries)} runs on {' and '.join(data)}: loss and validation accuracy by epoch"
    return plots.compare_figure({legend_label(s): s.metrics for s in summaries}, title=title)


def legend_label(summary: RunSummary) -> str:
    tested = f"test {summary.test_accuracy:.2%}" if summary.test_accuracy is not None else "not tested"
    return f"{summary.name}: {model_title(summary.config)}, {tested}"
