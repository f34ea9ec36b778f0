"""Shared fixtures: tiny generated data (fast), the real bundled MNIST (loaded once), a small trained run."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from mnistkit import data
from mnistkit.config import make_config
from mnistkit.train import train_run


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


@pytest.fixture
def tiny_idx(tmp_path: Path) -> Path:
    """A folder of gzipped IDX files: 600 training and 200 test images of an easy generated task."""
    return write_idx_folder(tmp_path / "tiny")


@pytest.fixture(scope="session")
def tiny_idx_session(tmp_path_factory) -> Path:
    return write_idx_folder(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def mnist() -> data.Dataset:
    """The real bundled MNIST (verified), loaded once per test session."""
    return data.load_bundled_mnist()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_idx_session) -> Path:
    """A finished run folder: a cnn trained for 2 epochs on the tiny generated data."""
    out = tmp_path_factory.mktemp("run") / "run"
    from mnistkit import runs

    cfg = make_config(model="cnn", width=4, epochs=2, val_size=100, data=str(tiny_idx_session), batch_size=64)
    train_run(cfg, runs.create_run_dir(out, cfg.model))
    return out


@pytest.fixture(autouse=True)
def _fresh_torch_state():
    """Tests that ask for determinism must not leak it into the rest of the session."""
    yield
    torch.use_deterministic_algorithms(False)
