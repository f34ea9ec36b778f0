"""Run folders: where a training run keeps its config, metrics and checkpoint."""

from __future__ import annotations

import csv
import io
import itertools
import os
import platform
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, fileio, schema
from .config import TrainConfig
from .errors import CheckpointError, ConfigError, MnistkitError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from .data import Dataset, Normalization, Splits
    from .train import EpochStats

CONFIG_NAME = "config.json"
METRICS_NAME = "metrics.csv"
METRIC_FIELDS = ["epoch", "train_loss", "val_loss", "val_accuracy", "lr", "seconds"]
BATCH_LOSSES_NAME = "batch_losses.csv"  # the training loss of every batch, for curves.png
# A torchrun job that may restart its workers (--max-restarts) marks the run folder it created, so that
# the restarted workers find it again, also under a default name, and no other job's folder.
CLAIM_NAME = ".torchrun-job"
# Everything a run and its evaluation write into the run folder (the model's files: checkpoint.py; resume/:
# resume.py; the figures: plots.py; tensorboard/: tensorboard_log.py), as patterns. Overwriting a run removes
# all of it, so that nothing of the replaced run, its finished model or its resume state above all, passes for
# the new run's; those go first, so that a removal cut short leaves what looks like a run stopped before its
# first checkpoint. Only these files go: a folder that is not a run (--out .) keeps everything else, and one
# that holds files of these names but no run is not overwritten at all (``_foreign_files``). The exports of the
# replaced model (export.py's default names) go too: beside a new model they would pass for its exports.
RUN_FILES = (
    "model.json",
    "model.safetensors",
    "resume/state.json",
    "resume/state-*.safetensors",
    "resume/.state*.tmp",
    CLAIM_NAME,
    METRICS_NAME,
    BATCH_LOSSES_NAME,
    "curves.png",
    "confusion.png",
    "mistakes.png",
    "tensorboard/events.out.tfevents.*",
    "model.onnx",
    "model.pt2",
    "model.pt",
    "model-hf/*",
    CONFIG_NAME,
)
RUN_FOLDERS = ("resume", "tensorboard", "model-hf")  # removed with the run's files when nothing else is left in them
# Overwriting sets the old run's files aside, in their places, inside the run folder (a rename never crosses a
# file system): first into SETTING_ASIDE, which becomes REPLACED once all are there. They are deleted only when
# the new run has saved its first checkpoint (``discard_replaced``), by way of DISCARDED, so that a deletion cut
# short leaves nothing to put back. Until then a run that is refused or fails puts them back, as does the next
# ``hold`` after a killed one: the folder holds the old run intact or the new one, never a mix. Putting back
# removes the new run's files while REPLACED is there, then renames it PUTTING_BACK and moves the old files out of
# it: a put-back killed half-way goes on from where it stopped, and never takes an old file for a new one.
SETTING_ASIDE = ".mnistkit-replacing"
REPLACED = ".mnistkit-replaced"
PUTTING_BACK = ".mnistkit-putting-back"
DISCARDED = ".mnistkit-discarded"
TRAINING_FILES = ("model.json", "model.safetensors", METRICS_NAME, BATCH_LOSSES_NAME, CONFIG_NAME)  # train writes


def default_run_dir(model: str, root: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(root) / f"{stamp}-{model}"
    suffix = 1
    while path.exists():
        suffix += 1
        path = Path(root) / f"{stamp}-{model}-{suffix}"
    return path


def _new_default_run_dir(model: str) -> tuple[Path, list[Path]]:
    """A folder under runs/ that this process created: runs started in the same second each get their own. With
    the folders made for it (``_make_folders``)."""
    while True:
        path = default_run_dir(model)
        try:
            return path, _make_folders(path, exist_ok=False)
        except FileExistsError:  # another run took that name since default_run_dir looked
            continue
        except OSError as exc:
            raise _cannot_write(path, exc) from None


def _make_folders(path: Path, exist_ok: bool = True) -> list[Path]:
    """Make ``path`` and the folders above it that are missing. Returns those made, ``path`` first, for a refused
    run to remove (``_remove_made``); if making ``path`` fails, those made above it are removed at once."""
    missing = list(itertools.takewhile(lambda folder: not os.path.lexists(folder), [path, *path.parents]))
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except OSError:
        _remove_made(missing[1:])  # path itself was not made, or was made by another run (FileExistsError)
        raise
    return missing


def _remove_made(folders: list[Path]) -> None:
    for folder in folders:
        with suppress(OSError):  # no longer empty: what is in it is someone else's
            folder.rmdir()


def create_run_dir(out: str | Path | None, model: str, overwrite: bool = False) -> Path:
    """Create the run folder. An existing non-empty folder is refused unless ``overwrite``, which removes the
    files of the run that was there (and nothing else)."""
    with writing(out, model, overwrite) as path:
        return path


@contextmanager
def writing(out: str | Path | None, model: str, overwrite: bool = False) -> Iterator[Path]:
    """``create_run_dir``, and the folder held for this process until the block ends (see ``hold``): a second
    run into the same folder is refused, even when both found it empty or missing. With ``overwrite``, the
    replaced run's files are set aside until the new run saves its first checkpoint (``discard_replaced``, else
    when the block ends): if the block fails before that, the new run's files are removed and the old run's put
    back."""
    path, made = _run_folder(out, model)
    with hold(path, "out"):
        try:
            _take(path, overwrite)
        except BaseException:
            _remove_made(made)  # a refused run leaves nothing new behind
            raise
        try:
            yield path
        except BaseException:
            with suppress(OSError):  # what stays aside, the next hold puts back
                _put_back(path)
            raise
        discard_replaced(path)


def _run_folder(out: str | Path | None, model: str) -> tuple[Path, list[Path]]:
    """The run folder, made if missing (to hold it: still empty, so nobody else's run is touched), and the folders
    made for it."""
    if out is None:
        return _new_default_run_dir(model)
    if not str(out).strip():
        raise ConfigError("out is empty: name the run folder, or leave out for runs/<time>-<model>", options=("out",))
    path = fileio.given_path(out, "out")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"out {path}: exists and is not a folder; choose another out", options=("out",))
    if path.is_symlink() and not path.exists():  # mkdir would say only "File exists"
        raise ConfigError(
            f"out {path}: a symbolic link to {os.readlink(path)}, which is missing or leads back to itself; "
            "fix the link or choose another out",
            options=("out",),
        )
    try:
        return path, _make_folders(path)
    except OSError as exc:
        raise _cannot_write(path, exc) from None


def _take(path: Path, overwrite: bool) -> None:
    """Take the held run folder ``path`` for a new run: refused if it is not empty (without ``overwrite``), holds
    files of a run's names but no run, or cannot be written; else the run there (``overwrite``) is set aside."""
    if any(path.iterdir()) and not overwrite:
        raise ConfigError(
            f"out {path}: folder exists and is not empty; pass overwrite to replace that run, or choose another out",
            options=("out", "overwrite"),
        )
    foreign = _foreign_files(path)
    if foreign:
        raise ConfigError(
            f"out {path}: holds {', '.join(foreign[:3])}{' …' if len(foreign) > 3 else ''} but no mnistkit run, "
            "and overwrite replaces only a run's files; choose another out",
            options=("out",),
        )
    old = _run_files(path)
    check_writable(path, [path, *(path / name.parent for name in old)], "out")
    try:
        probe = path / ".mnistkit-write-test"
        probe.write_bytes(b"")
        probe.unlink()
        _set_aside(path, old)
    except OSError as exc:
        raise _cannot_write(path, exc) from None


def check_fresh(run_dir: Path) -> None:
    """ConfigError unless ``run_dir`` is a folder without another run's files, as ``create_run_dir`` leaves it: a
    run given any folder would write over what is there."""
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir {run_dir}: no such folder; make it with runs.create_run_dir(out, model)")
    present = [name for name in TRAINING_FILES if (run_dir / name).exists()]
    if present:
        raise ConfigError(
            f"run_dir {run_dir}: holds {', '.join(present)} already; make the folder with "
            "runs.create_run_dir(out, model), with overwrite=True to replace a run there"
        )


def _cannot_write(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(f"out {path}: cannot write there ({exc.strerror or exc}); choose another out", options=("out",))


def check_writable(path: Path, folders: Iterable[Path], option: str) -> None:
    """ConfigError naming the first of ``folders`` (those that exist) that this process may not write into: found
    before anything of run folder ``path`` is moved, or anything trained, not when the first file is written."""
    for folder in folders:
        why = fileio.why_unwritable(folder) if folder.is_dir() else None
        if why is None:
            continue
        where = "there" if folder == path else str(folder)
        if option == "out":
            then = "choose another out" if why == fileio.READ_ONLY_MOUNT else "make it writable or choose another out"
        elif why == fileio.READ_ONLY_MOUNT:
            then = f"copy the run folder somewhere writable and give {option} the copy"
        else:
            then = "make it writable, then run the same command again"
        raise ConfigError(f"{option} {path}: cannot write {where} ({why}); {then}", options=(option,))


@contextmanager
def hold(run_dir: Path, option: str | None = "resume") -> Iterator[Path]:
    """Hold ``run_dir`` while this process writes it: another ``mnistkit train`` into it (a second start with the
    same out, a resume, an overwrite) is refused, rather than two runs mixing their files, as is an ``evaluate``
    that writes its figures there. The lock is the kernel's (flock on the folder), so a killed run never leaves it
    held. Where there is no flock (Windows, some network file systems), nothing is held. ``option`` names the
    option that gave the folder, in the error (None: none did). Yields ``run_dir``."""
    try:
        fd = os.open(run_dir, os.O_RDONLY)
    except OSError:
        yield run_dir
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                otherwise = ", or choose another out" if option == "out" else ""
                raise ConfigError(
                    f"{f'{option} ' if option else ''}{run_dir}: another mnistkit command is writing this run folder "
                    f"now (a train, or an evaluate drawing its figures); wait for it to end{otherwise}",
                    options=(option,) if option else (),
                ) from None
            except OSError:
                pass
            else:
                _remove_leftovers(run_dir)
        yield run_dir
    finally:
        os.close(fd)  # releases the lock


def recover(run_dir: Path) -> None:
    """Put back the old run that a killed overwrite left aside in ``run_dir``, as the next ``hold`` does, for a
    command that reads the run before it holds the folder (a resume reads its config.json first)."""
    if any((run_dir / name).is_dir() for name in (SETTING_ASIDE, REPLACED, PUTTING_BACK)):
        with hold(run_dir):
            pass


def _remove_leftovers(run_dir: Path) -> None:
    """The temporary files of the training's writes that a killed run never finished, the model's as large as the
    model: removed now, not only by the next write of each, which a resumed run makes of the model only at its end.
    And what an overwrite killed before its new run started set aside: the old run comes back."""
    for name in TRAINING_FILES:
        fileio.remove_stale_temporaries(run_dir / name)
    with suppress(OSError):  # what stays aside, the next hold puts back
        _put_back(run_dir)
    shutil.rmtree(run_dir / DISCARDED, ignore_errors=True)


def _foreign_files(path: Path) -> list[str]:
    """The files in ``path`` that a run would write or an overwrite remove, where ``path`` holds no run (no config.json
    of a run, no model.json of a checkpoint): another program's files, such as its own config.json."""
    present = sorted({str(file.relative_to(path)) for pattern in RUN_FILES for file in path.glob(pattern)})
    if not present:
        return []
    try:
        if {"model", "epochs"} <= set(schema.read_config_record(path / CONFIG_NAME)):
            return []
    except MnistkitError:
        pass
    try:
        schema.read_model_meta(path / "model.json")
        return []
    except MnistkitError:
        return present


def _run_files(path: Path) -> list[Path]:
    """The files of a run in ``path``, relative to it, in the order of RUN_FILES."""
    found = (file for pattern in RUN_FILES for file in path.glob(pattern))
    return [file.relative_to(path) for file in found if not file.is_dir()]  # no run writes a folder in an export


def _remove_run_files(path: Path) -> None:
    for name in _run_files(path):
        (path / name).unlink()
    _remove_empty_run_folders(path)


def _remove_empty_run_folders(path: Path) -> None:
    for name in RUN_FOLDERS:
        with suppress(OSError):
            (path / name).rmdir()  # only ever removes an empty folder


def _set_aside(path: Path, files: list[Path]) -> None:
    """Move ``files`` (a run's, relative to ``path``) into REPLACED, keeping their places; all or, on an error,
    none."""
    if not files:
        return
    aside = path / SETTING_ASIDE
    aside.mkdir()
    try:
        for name in files:
            (aside / name.parent).mkdir(exist_ok=True)
            os.rename(path / name, aside / name)
        os.rename(aside, path / REPLACED)
    except BaseException:  # Ctrl-C too
        with suppress(OSError):
            _move_back(path, aside)
        raise


def _put_back(path: Path) -> None:
    """The run set aside in ``path`` back in its place, instead of the files of the new run that never started."""
    if (path / REPLACED).is_dir():
        _remove_run_files(path)  # only new files are here: all of the old run's are aside
        os.rename(path / REPLACED, path / PUTTING_BACK)
    if (path / PUTTING_BACK).is_dir():
        _move_back(path, path / PUTTING_BACK)
    elif (path / SETTING_ASIDE).is_dir():  # cut short while setting aside: the new run wrote nothing yet
        _move_back(path, path / SETTING_ASIDE)


def _move_back(path: Path, aside: Path) -> None:
    for file in [file for file in aside.rglob("*") if not file.is_dir()]:
        place = path / file.relative_to(aside)
        place.parent.mkdir(exist_ok=True)  # resume/, say, which a take back removed once empty
        os.replace(file, place)
    for folder in sorted(aside.rglob("*"), reverse=True):  # only folders are left, each after those inside it
        folder.rmdir()
    aside.rmdir()


def discard_replaced(path: Path) -> None:
    """The new run in ``path`` has a checkpoint: delete the run it replaces, which ``writing`` set aside (if any)."""
    try:
        os.rename(path / REPLACED, path / DISCARDED)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    shutil.rmtree(path / DISCARDED, ignore_errors=True)  # what stays, the next hold deletes
    _remove_empty_run_folders(path)


def take_back(path: Path) -> None:
    """Remove what a new run that failed before its first resume state wrote (its config.json), and its folder if
    nothing else is in it: left there, it would block the corrected command, which names the same out."""
    with suppress(OSError):  # another process of the same torchrun job may be taking it back too
        _remove_run_files(path)
    remove_if_empty(path)


def remove_if_empty(path: Path) -> None:
    """Take back a run folder that a failed start left empty (bad data, say), so no empty run litters runs/."""
    try:
        if [p.name for p in path.iterdir()] == [CLAIM_NAME]:
            (path / CLAIM_NAME).unlink()
        path.rmdir()  # only ever removes an empty folder
    except OSError:
        pass


def claim(run_dir: Path, job: str) -> None:
    fileio.write_text(run_dir / CLAIM_NAME, job)


def claimed_by(job: str, out: str | Path | None, root: str | Path = "runs") -> Path | None:
    """The run folder that torchrun job ``job`` created: ``out``, or one under ``root`` without --out."""
    candidates = [fileio.expanded(out)] if out is not None else sorted(Path(root).glob("*"))
    for folder in candidates:
        try:
            if (folder / CLAIM_NAME).read_text(encoding="utf-8") == job:
                return folder
        except (OSError, UnicodeDecodeError):
            continue
    return None


def release(run_dir: Path) -> None:
    """The run finished: nothing will restart into its folder."""
    (run_dir / CLAIM_NAME).unlink(missing_ok=True)


def write_config(run_dir: Path, cfg: TrainConfig) -> None:
    fileio.write_json(run_dir / CONFIG_NAME, cfg.to_dict())


def read_config(run_dir: str | Path) -> TrainConfig:
    """The run's config.json as a TrainConfig, checked with the same rules as options given to train."""
    path = Path(run_dir) / CONFIG_NAME
    values = schema.read_config_record(path)
    try:
        return TrainConfig.from_dict(values).validate()
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {schema.RUN_CONFIG.damaged}: {exc}") from None


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


def model_metadata(
    cfg: TrainConfig,
    dataset: Dataset,
    splits: Splits,
    norm: Normalization,
    *,
    parameters: int,
    history: Sequence[EpochStats],
    test_loss: float | None,
    test_accuracy: float | None,
    seconds: dict[str, float],
    calibration: dict[str, Any] | None,
    processes: dict[str, Any],
    command: str | None,
    init: dict[str, str] | None = None,
    mixed: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What model.json records beside the weights: how to use the model, what it was started from (``init``)
    and trained on (``mixed``: the MNIST images mixed in) and how, its scores, and the versions that made it.
    ``seconds`` holds the load and test times."""
    import torch

    last = history[-1]
    return {
        "model": cfg.model,
        "model_options": {"num_classes": len(dataset.classes), **cfg.model_options()},
        "parameters": parameters,
        "normalization": norm.to_dict(),
        "classes": dataset.classes,
        "input": {"channels": 1, "height": 28, "width": 28, "polarity": "white ink on black, as MNIST"},
        "tta": cfg.tta,
        "calibration": calibration,
        "init": init,
        "dataset": _dataset_metadata(dataset, splits, mixed),
        "metrics": {
            "epochs": len(history),
            "train_loss": last.train_loss,
            "val_loss": last.val_loss,
            "val_accuracy": last.val_accuracy,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "train_seconds": sum(h.seconds for h in history),
            "load_seconds": seconds["load"],
            "test_seconds": seconds["test"],
        },
        "config": cfg.to_dict(),
        "processes": processes,
        "command": command,
        "mnistkit_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _dataset_metadata(dataset: Dataset, splits: Splits, mixed: dict[str, Any] | None) -> dict[str, Any]:
    """The data's source and checksums, and the sizes of its parts as trained, validated and tested on (MNIST's
    images mixed in counted: ``mnist_mix`` says how many and from where)."""
    record = {
        "name": dataset.name,
        "source": dataset.source,
        "checksums": dataset.checksums,
        "train": len(splits.train),
        "val": len(splits.val) if splits.val else 0,
        "test": len(splits.test) if splits.test else 0,
    }
    if mixed is not None:
        record["mnist_mix"] = mixed
    return record


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
