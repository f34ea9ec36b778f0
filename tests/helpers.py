"""Set-up shared by the test modules: IDX bytes, tiny learnable 'digits', a folder of IDX files, real digits as a
.npz, and the arguments of a short `mnistkit train`."""

from __future__ import annotations

import gzip
import os
import struct
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from mnistkit.data import Dataset


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def make_digits(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tiny learnable 'digits': class k lights up a distinct block of the 28x28 image, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        row, col = divmod(int(k), 5)
        images[i, 2 + row * 12 : 12 + row * 12, 1 + col * 5 : 5 + col * 5] = 250
    return images, labels


def write_idx_folder(folder: Path, n_train: int = 600, n_test: int = 200, gz: bool = True, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = make_digits(n_train, seed)
    xt, yt = make_digits(n_test, seed + 1)
    files = {
        "train-images-idx3-ubyte": x,
        "train-labels-idx1-ubyte": y,
        "t10k-images-idx3-ubyte": xt,
        "t10k-labels-idx1-ubyte": yt,
    }
    for name, array in files.items():
        raw = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / name).write_bytes(raw)
    return folder


def write_mnist_npz(path: Path, mnist: Dataset, n_train: int, n_test: int | None = None) -> Path:
    """The first ``n_train`` training digits and first ``n_test`` test digits (None: all) of ``mnist`` as a
    Keras-style .npz at ``path``."""
    train, test = mnist.train, mnist.test
    np.savez(
        path,
        x_train=train.images[:n_train].numpy(),
        y_train=train.labels[:n_train].numpy(),
        x_test=test.images[:n_test].numpy(),
        y_test=test.labels[:n_test].numpy(),
    )
    return path


def train_argv(
    data: Path, out: Path, *extra: str, model: str = "logreg", epochs: int = 2, val_size: int = 100
) -> list[str]:
    """The arguments of ``mnistkit train`` for a short run on ``data`` into ``out``, then ``extra`` flags."""
    options = {"--data": data, "--model": model, "--epochs": epochs, "--val-size": val_size, "--out": out}
    return ["train", *(str(word) for option in options.items() for word in option), *extra]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``mnistkit ARGV…`` in this process: its exit code and what it printed (stdout, stderr)."""
    from mnistkit.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def children(pid: int) -> list[int]:
    """The processes ``pid`` started (from any of its threads)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")  # a zombie has ended
    except FileNotFoundError:
        return True


def assert_all_end(pids: list[int], what: str, timeout: float = 60) -> None:
    """Wait until every process of ``pids`` has ended; fail, saying ``what`` happened, if one outlives ``timeout``."""
    deadline = time.monotonic() + timeout
    while not all(gone(pid) for pid in pids):
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def unwritable(monkeypatch, folder: Path | None = None, read_only_mount: bool = True) -> None:
    """Make ``folder`` (None: every folder) one this process may not write into, as ``os.access`` and the mount's
    flag (``statvfs``) tell it, on a read-only mount or not: root writes anywhere, so the files' own modes cannot."""
    real_access, real_statvfs = os.access, os.statvfs
    monkeypatch.setattr(
        os, "access", lambda path, mode: folder is not None and Path(path) != folder and real_access(path, mode)
    )

    class Mount:
        def __init__(self, path):
            self.f_flag = real_statvfs(path).f_flag | (os.ST_RDONLY if read_only_mount else 0)

    monkeypatch.setattr(os, "statvfs", Mount)
