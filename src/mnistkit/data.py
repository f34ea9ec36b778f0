"""Datasets: reading IDX / pickle / npz files, the bundled MNIST, splits, and fast on-device batches.

Everything is held as one ``uint8`` tensor of shape (N, 28, 28) plus an ``int64`` label tensor; pixels are
turned into floats only when a batch is taken, on the device the model runs on.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib
import io
import lzma
import math
import os
import pickle
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import feedback, fileio
from .catalog import BUNDLED_DIR, DIGITS, MNIST_MD5, get_spec
from .errors import DataError, WriteError, short
from .idx import MAX_FILE_BYTES, encode_idx, find_idx_files, idx_role, read_data_file, read_idx
from .preprocess import check_pixels


@dataclass
class Split:
    """One part of a dataset: ``images`` uint8 (N, 28, 28), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device: torch.device | str) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Dataset:
    """A dataset as loaded from disk: the official training and test parts, before any validation split."""

    name: str
    train: Split
    test: Split | None
    classes: list[str] = field(default_factory=lambda: list(DIGITS))
    checksums: dict[str, str] = field(default_factory=dict)  # file name -> MD5 of its uncompressed bytes
    source: str = ""


@dataclass
class Splits:
    train: Split
    val: Split | None
    test: Split | None


@dataclass(frozen=True)
class Normalization:
    """How uint8 pixels become model input: ``(pixel / divisor - mean) / std``."""

    mean: float = 0.1307
    std: float = 0.3081
    divisor: float = 255.0

    def apply(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 28, 28) or (N, 1, 28, 28) -> float32 (N, 1, 28, 28), normalized."""
        x = images.float()
        if x.dim() == 3:
            x = x.unsqueeze(1)
        scale = 1.0 / (self.divisor * self.std)
        if self.mean == 0.0:
            return x.mul_(scale)
        return x.mul_(scale).sub_(self.mean / self.std)

    def to_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "divisor": self.divisor}


def _to_images(array: np.ndarray, where: str) -> torch.Tensor:
    """Validate and convert an image array to uint8 (N, 28, 28)."""
    if array.ndim == 2 and array.shape[1] == 784:
        array = array.reshape(-1, 28, 28)
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or array.shape[1:] != (28, 28):
        raise DataError(f"{where}: expected images of 28×28 pixels, got an array of shape {tuple(array.shape)}")
    check_pixels(array, where, DataError, float_max=255.0)
    if array.dtype.kind == "f":
        # The tutorial's pickle stores uint8 / 256; other float files commonly use / 255.
        peak = float(array.max()) if array.size else 0.0
        if peak <= 1.0:
            scaled = array.astype(np.float64) * 256.0
            if not np.allclose(scaled, np.round(scaled), atol=1e-3):
                scaled = array.astype(np.float64) * 255.0
            array = np.round(scaled)
    array = np.clip(array, 0, 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(array))


def _to_labels(array: np.ndarray, where: str, num_classes: int = 10) -> torch.Tensor:
    array = np.asarray(array)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError(f"{where}: expected a 1-D array of labels, got shape {tuple(array.shape)}")
    if array.dtype.kind == "f":
        if array.size and not np.all(np.equal(np.mod(array, 1), 0)):
            raise DataError(f"{where}: labels must be whole numbers")
    elif array.dtype.kind not in "iu":
        raise DataError(f"{where}: labels must be integers, got dtype {array.dtype}")
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise DataError(f"{where}: labels must lie in 0..{num_classes - 1}, found {array.min()}..{array.max()}")
    return torch.from_numpy(array.astype(np.int64))


def _make_split(images: np.ndarray, labels: np.ndarray, where: str) -> Split:
    x = _to_images(images, where)
    y = _to_labels(labels, where)
    if len(x) != len(y):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels; the counts must match")
    if not len(x):  # nothing to train or score on: later steps would divide by the count or index an empty set
        raise DataError(
            f"{where}: holds no images; every part of a dataset needs at least one (leave out an empty test part)"
        )
    return Split(x, y)


def load_idx_folder(folder: str | Path, verify: dict[str, str] | None = None, name: str | None = None) -> Dataset:
    """Load a folder of IDX files: the training pair is required, the test pair optional.

    ``verify`` maps a file's stem (name without ``.gz``) to the MD5 its uncompressed bytes must have.
    """
    folder = Path(folder)
    files = find_idx_files(folder)
    if ("train", "images") not in files or ("train", "labels") not in files:
        raise DataError(
            f"{folder}: no IDX training files found; expected train-images-idx3-ubyte[.gz] and "
            "train-labels-idx1-ubyte[.gz] (t10k-* for the test set)"
        )
    arrays, checksums = {}, {}
    for role, path in files.items():
        array, md5 = read_idx(path)
        stem = path.name.removesuffix(".gz")
        if verify and stem in verify and verify[stem] != md5:
            raise DataError(
                f"{path}: checksum mismatch (MD5 {md5}, expected {verify[stem]}); the file is corrupt, replace it"
            )
        arrays[role], checksums[stem] = array, md5
    for part in ("train", "test"):
        if ((part, "images") in files) != ((part, "labels") in files):
            missing = "labels" if (part, "images") in files else "images"
            raise DataError(
                f"{folder}: found {part} {'images' if missing == 'labels' else 'labels'} but no {part} {missing} file"
            )
    train = _make_split(arrays["train", "images"], arrays["train", "labels"], f"{folder} (train)")
    test = (
        _make_split(arrays["test", "images"], arrays["test", "labels"], f"{folder} (test)")
        if ("test", "images") in files
        else None
    )
    return Dataset(name or folder.name, train, test, checksums=checksums, source=str(folder))


# --------------------------------------------------------------------------------------------------
# The tutorial's pickle and Keras-style npz


def _numpy_global(module: str, name: str):
    # numpy 2 moved numpy.core to numpy._core; pickles written by either name the old or the new path.
    for candidate in (module, module.replace("numpy.core", "numpy._core"), module.replace("numpy._core", "numpy.core")):
        try:
            return getattr(importlib.import_module(candidate), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"cannot find {module}.{name}")


class ArrayOnlyUnpickler(pickle._Unpickler):
    """Unpickles NumPy arrays and plain containers, and refuses every other global (so no code can run).

    Built on the pure-Python unpickler: its memo is a dict, where the C unpickler sizes a table by the largest
    index a PUT names, so a 9-byte pickle could make it allocate gigabytes.
    """

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol-5 pickles rebuild arrays from raw bytes this way
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # protocol-2 pickles from Python 3 store bytes this way
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are allowed")
        if module == "_codecs":
            import codecs

            return codecs.encode
        return _numpy_global(module, name)


def safe_unpickle(raw: bytes) -> object:
    try:
        return ArrayOnlyUnpickler(io.BytesIO(raw), encoding="latin-1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"unsafe or invalid pickle: {exc}") from None
    except Exception as exc:  # a malformed pickle can raise almost anything; none of it may escape raw
        raise DataError(f"invalid pickle ({type(exc).__name__}: {exc})") from None


def load_pickle(path: str | Path) -> Dataset:
    """Load the tutorial's ``mnist.pkl.gz``: ((x_train, y_train), (x_valid, y_valid), (x_test, y_test)).

    Its train and valid parts are the official training set in order, so they are joined back; the default
    validation split (the last 10,000) gives exactly the tutorial's split again.
    """
    path = Path(path)
    raw = read_data_file(path, idx=False)
    try:
        obj = safe_unpickle(raw)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None
    layout = "a tuple of three (images, labels) pairs: ((x_train, y_train), (x_valid, y_valid), (x_test, y_test))"
    if not (isinstance(obj, (tuple, list)) and len(obj) in (2, 3)):
        raise DataError(f"{path}: not the tutorial's layout; expected {layout}")
    parts = []
    for i, pair in enumerate(obj):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(a, np.ndarray) for a in pair)):
            raise DataError(f"{path}: part {i} is not an (images, labels) pair of arrays; expected {layout}")
        parts.append(_make_split(pair[0], pair[1], f"{path} (part {i})"))
    train = Split(torch.cat([parts[0].images, parts[1].images]), torch.cat([parts[0].labels, parts[1].labels]))
    test = parts[2] if len(parts) == 3 else None
    return Dataset(
        path.name.split(".")[0], train, test, checksums={path.name: hashlib.md5(raw).hexdigest()}, source=str(path)
    )


def load_npz(path: str | Path) -> Dataset:
    """Load a Keras-style ``.npz`` with ``x_train``, ``y_train`` and optionally ``x_test``, ``y_test``."""
    path = Path(path)
    try:
        raw = fileio.read_regular(path, MAX_FILE_BYTES)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            names = [key for key in NPZ_KEYS if f"{key}.npy" in archive.namelist()]
            _check_npz_sizes(archive, names, path)
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in names}
    except DataError:
        raise
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        KeyError,
        RuntimeError,
        lzma.LZMAError,
    ) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    for key in ("x_train", "y_train"):
        if key not in arrays:
            raise DataError(f"{path}: missing array '{key}'; a .npz needs x_train, y_train (and x_test, y_test)")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(f"{path}: has only one of x_test / y_test; give both or neither")
    train = _make_split(arrays["x_train"], arrays["y_train"], f"{path} (train)")
    test = _make_split(arrays["x_test"], arrays["y_test"], f"{path} (test)") if "x_test" in arrays else None
    return Dataset(path.stem, train, test, checksums={path.name: hashlib.md5(raw).hexdigest()}, source=str(path))


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _check_npz_sizes(archive: zipfile.ZipFile, names: list[str], path: Path) -> None:
    """Refuse an array whose header claims more bytes than its zip entry holds, before NumPy allocates them.

    The zip directory's uncompressed size bounds what reading an entry yields (zipfile stops there and checks
    the CRC), so arrays that fit their entries, and entries that fit ``MAX_FILE_BYTES``, bound the memory used.
    """
    total = 0
    for name in names:
        entry = archive.getinfo(f"{name}.npy")
        total += entry.file_size
        if total > MAX_FILE_BYTES:
            raise DataError(f"{path}: its arrays hold more than the {MAX_FILE_BYTES:,} bytes a data file may hold")
        with archive.open(entry) as f:
            version = np.lib.format.read_magic(f)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(f)
            declared = math.prod(shape) * dtype.itemsize + f.tell()
        if declared > entry.file_size:
            raise DataError(
                f"{path}: array '{name}' claims shape {shape} ({declared:,} bytes) but its entry holds "
                f"{entry.file_size:,} bytes; the file is damaged or forged"
            )


# --------------------------------------------------------------------------------------------------
# Corrections from the drawing page

MIN_TRAINING_CORRECTIONS = 10


def load_corrections(path: str | Path) -> Dataset:
    """The corrections database the server writes, as a training set (no test part)."""
    path = Path(path)
    try:
        store = feedback.FeedbackStore(path, create=False)
        try:
            images, labels, _ = store.images()
            digest = store.checksum()
        finally:
            store.close()
    except feedback.FeedbackError as exc:
        raise DataError(str(exc)) from None
    if len(labels) < MIN_TRAINING_CORRECTIONS:
        raise DataError(
            f"{path}: holds {len(labels)} correction{'s' if len(labels) != 1 else ''}; training needs at least "
            f"{MIN_TRAINING_CORRECTIONS}: correct more drawings on the page first"
        )
    train = _make_split(images, labels, f"{path} (corrections)")
    return Dataset(path.stem, train, None, checksums={path.name: digest}, source=str(path))


EXPORT_FORMATS = ("idx", "npz")


def check_training_set_target(out: str | Path, fmt: str) -> Path:
    """``out``, if ``save_training_set`` can write there as ``fmt`` (``"idx"``: a new or empty folder; ``"npz"``: a
    new file, named with ``.npz`` added where its name lacks it, as NumPy's ``savez`` names it, and as ``data``
    needs to know it), in a folder that exists and is writable. Callers with slow work before the write (reading a
    large corrections database) check first, so that a bad destination fails at once, in one line."""
    out = fileio.expanded(out)
    if fmt not in EXPORT_FORMATS:
        raise DataError(f"unknown export format '{fmt}'; choose one of: {', '.join(EXPORT_FORMATS)}")
    if fmt == "npz" and out.name not in ("", ".", "..") and not out.is_dir() and not out.name.lower().endswith(".npz"):
        out = out.with_name(out.name + ".npz")
    if fmt == "npz" and out.exists():
        raise DataError(f"{out}: already exists; choose another output file")
    if fmt == "idx" and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: already exists and is not an empty folder; choose another output folder")
    fileio.check_folder_exists(out)
    folder = out if out.is_dir() else out.parent  # an empty folder for idx is filled, not made
    if fileio.why_unwritable(folder) is not None:  # a read-only mount too, even for root
        raise WriteError(f"cannot write {out}: {folder} is not writable; choose another output, or make it writable")
    return out


def save_training_set(out: str | Path, images: np.ndarray, labels: np.ndarray, fmt: str) -> Path:
    """Write images and labels in a format ``--data`` reads: a folder of gzipped IDX training files, or a
    Keras-style ``.npz`` with ``x_train``/``y_train``. Written atomically, the folder too: it is filled under a
    temporary name beside it and renamed when whole, so a kill or a full disk never leaves half a training set
    under its name. Nothing is replaced but an empty folder."""
    out = check_training_set_target(out, fmt)
    if fmt == "npz":
        buffer = io.BytesIO()
        np.savez_compressed(buffer, x_train=images, y_train=labels)
        fileio.write_bytes(out, buffer.getvalue())
        return out
    files = {"train-images-idx3-ubyte.gz": images, "train-labels-idx1-ubyte.gz": labels}
    # Named as what it replaces, so that the temporary folder of an export that was killed is removed by the next
    # one; a training set already there was refused above.
    with fileio.atomic_folder(out, replaces=files) as folder:
        for name, array in files.items():
            (folder / name).write_bytes(gzip.compress(encode_idx(array), mtime=0))
    return out


# --------------------------------------------------------------------------------------------------
# Entry points


PICKLE_SUFFIXES = (".pkl", ".pkl.gz", ".pickle", ".pickle.gz")


def locate(path: str | Path) -> Path:
    """What ``path`` names for ``load_path``, found without reading any data: a folder of IDX files (also for
    one IDX file in it), a .npz, or a pickle. Raises DataError when there is no such path or no data format."""
    path = fileio.recorded_path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; pass a folder of IDX files, a .pkl.gz or a .npz")
    if path.is_dir():
        torchvision = torchvision_folder(path)
        if torchvision is not None:
            return torchvision[0]
        if find_idx_files(path):
            return path
        candidates = sorted(p for p in path.iterdir() if p.name.endswith((".npz", ".pkl", ".pkl.gz")))
        if len(candidates) == 1:
            return locate(candidates[0])
        raise DataError(f"{path}: found no IDX files and no single .npz / .pkl.gz file in this folder")
    if feedback.is_feedback_file(path):
        return path
    if path.name.lower().endswith((".npz", *PICKLE_SUFFIXES)):
        return path
    if idx_role(path.name):
        return locate(path.parent)
    raise DataError(
        f"{path}: unknown data format; use IDX files (raw or .gz), a .pkl.gz in the tutorial's layout, or a .npz"
    )


# torchvision's datasets keep their IDX files in ``root/<folder>/raw``; the catalog names of those folders.
TORCHVISION_FOLDERS = {"MNIST": "mnist", "FashionMNIST": "fashion-mnist", "KMNIST": "kmnist"}


def torchvision_folder(path: Path) -> tuple[Path, str] | None:
    """(raw folder, dataset name) if ``path`` is torchvision's ``root``, ``root/<folder>`` or ``root/<folder>/raw``."""
    if path.name == "raw" and path.parent.name in TORCHVISION_FOLDERS:
        return path, TORCHVISION_FOLDERS[path.parent.name]
    if path.name in TORCHVISION_FOLDERS and (path / "raw").is_dir():
        return path / "raw", TORCHVISION_FOLDERS[path.name]
    if find_idx_files(path):  # IDX files of its own: a plain folder, whatever lies below it
        return None
    found = [
        (path / folder / "raw", name)
        for folder, name in TORCHVISION_FOLDERS.items()
        if (path / folder / "raw").is_dir()
    ]
    if len(found) > 1:
        choices = " or ".join(str(raw) for raw, _ in found)
        raise DataError(f"{path}: holds several torchvision datasets; pass one of them: {choices}")
    return found[0] if found else None


def load_torchvision_folder(raw: Path, name: str) -> Dataset:
    """A torchvision ``raw`` folder, with its dataset's class names (Fashion-MNIST's clothes, KMNIST's hiragana)."""
    ds = load_idx_folder(raw, name=name)
    ds.classes = list(get_spec(name).classes)
    return ds


def load_path(path: str | Path) -> Dataset:
    """Load whatever ``path`` is: a folder of IDX files (torchvision's ``root`` too), an IDX images file, a pickle,
    an npz, or the drawing page's corrections database."""
    path = locate(path)
    if path.is_dir():
        torchvision = torchvision_folder(path)
        return load_idx_folder(path) if torchvision is None else load_torchvision_folder(*torchvision)
    if feedback.is_feedback_file(path):
        return load_corrections(path)
    if path.name.lower().endswith(".npz"):
        return load_npz(path)
    return load_pickle(path)


def check_source(data: str | Path | None, dataset: str = "mnist") -> None:
    """Fail now, with load_dataset's message, for a ``data`` path that holds no data mnistkit reads or an unknown
    ``dataset`` name; reads nothing (the contents are checked when loading)."""
    if data is not None:
        locate(data)
    elif dataset.lower() != "mnist":
        get_spec(dataset)


def load_bundled_mnist() -> Dataset:
    """The official MNIST that ships inside the package, verified against the published MD5s."""
    ds = load_idx_folder(BUNDLED_DIR, verify=MNIST_MD5, name="mnist")
    ds.source = "bundled"
    return ds


def load_dataset(data: str | Path | None = None, dataset: str = "mnist") -> Dataset:
    """Load ``data`` (a path) if given, else the named dataset (bundled MNIST, or downloaded once and cached)."""
    if data is not None:
        if not isinstance(data, (str, os.PathLike)):
            raise DataError(f"data must be a path (a str or Path), got {type(data).__name__} {short(data)}")
        if not os.fspath(data):  # Path("") is the current folder
            raise DataError("data is empty: give a path, or leave data out for the dataset")
        return load_path(data)
    if not isinstance(dataset, str):
        raise DataError(f"dataset must be a dataset's name (a str, such as 'mnist'), got {type(dataset).__name__}")
    spec = get_spec(dataset)  # as the catalog spells names: " MNIST" and "m_nist" are the bundled one too
    if spec.name == "mnist":
        return load_bundled_mnist()
    from . import download  # the downloader is only needed for datasets that are not bundled

    folder = download.ensure_dataset(spec.name)
    ds = load_idx_folder(folder, verify=spec.md5_uncompressed or None, name=spec.name)
    ds.classes = list(spec.classes)
    return ds


def load_data(
    dataset: str = "mnist", data: str | Path | None = None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Keras' ``mnist.load_data()``: ``(x_train, y_train), (x_test, y_test)`` as NumPy arrays.

    Images are uint8 of shape (N, 28, 28), labels uint8 of shape (N,), like Keras; the training part is all
    of the official training set (no validation split). ``dataset`` and ``data`` are as in ``load_dataset``.
    """
    ds = load_dataset(data, dataset)
    if ds.test is None:
        raise DataError(f"{ds.source or ds.name}: has no test set; load_data returns training and test parts")
    parts = (ds.train, ds.test)
    return tuple((part.images.numpy(), part.labels.numpy().astype(np.uint8)) for part in parts)  # type: ignore[return-value]


def split_dataset(ds: Dataset, val_size: int = 10_000) -> Splits:
    """Hold out the last ``val_size`` training examples for validation (0 = no validation set)."""
    n = len(ds.train)
    if val_size < 0 or val_size >= n:
        raise DataError(
            f"val_size must be from 0 to {n - 1} (the training set has {n} examples), got {val_size}",
            options=("val_size",),
        )
    if val_size == 0:
        return Splits(ds.train, None, ds.test)
    cut = n - val_size
    train = Split(ds.train.images[:cut], ds.train.labels[:cut])
    val = Split(ds.train.images[cut:], ds.train.labels[cut:])
    return Splits(train, val, ds.test)


def batches(
    split: Split,
    batch_size: int,
    norm: Normalization,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield normalized (x, y) batches by indexing the resident tensors: no per-sample work, no collate.

    With ``shuffle`` a fresh permutation is drawn (on the CPU, so runs repeat across devices). With
    ``world_size > 1`` each rank takes every ``world_size``-th index of it: disjoint shards, and
    ``batch_size`` is the global batch, so each rank's batches hold ``batch_size // world_size``.
    """
    n = len(split)
    device = split.images.device
    if shuffle:
        order = torch.randperm(n, generator=generator).to(device)
    else:
        order = torch.arange(n, device=device)
    if world_size > 1:
        per_rank = n // world_size  # equal shard sizes keep the ranks in step
        order = order[rank : per_rank * world_size : world_size]
        batch_size = max(1, batch_size // world_size)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        # index_select, not images[idx]: on CPU the advanced-indexing gather is several times slower
        yield norm.apply(split.images.index_select(0, idx)), split.labels.index_select(0, idx)


def standardization(split: Split) -> Normalization:
    """Mean and standard deviation of the training pixels (in [0, 1]), for standardizing model input."""
    x = split.images.float().div_(255.0)
    mean, std = round(x.mean().item(), 6), round(x.std().item(), 6)
    if not std > 0:  # rounded: a spread too small to keep would divide by zero all the same
        raise DataError(
            "the training images are all one gray level (pixel standard deviation 0): nothing to learn from; "
            "check the data"
        )
    return Normalization(mean, std)
