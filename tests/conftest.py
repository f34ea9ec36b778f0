"""Shared fixtures: tiny generated data (fast), the real bundled MNIST (loaded once), a small trained run."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from helpers import write_idx_folder

from mnistkit import data
from mnistkit.config import make_config
from mnistkit.train import train_run


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


@pytest.fixture(scope="session")
def second_tiny_run(tmp_path_factory, tiny_idx_session) -> Path:
    """Another finished run on the same data as ``tiny_run``, to ensemble with it: an mlp, one epoch, its own seed."""
    out = tmp_path_factory.mktemp("second") / "run"
    from mnistkit import runs

    cfg = make_config(model="mlp", epochs=1, val_size=100, data=str(tiny_idx_session), batch_size=64, seed=1)
    train_run(cfg, runs.create_run_dir(out, cfg.model))
    return out


@pytest.fixture(autouse=True)
def _fresh_torch_state():
    """Tests that ask for determinism must not leak it into the rest of the session."""
    yield
    torch.use_deterministic_algorithms(False)


# Hosts a test may connect to or bind: this machine. None and "" bind every address.
LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1", "0.0.0.0", "::", b"localhost", b"127.0.0.1"}


@pytest.fixture(autouse=True, scope="session")
def _no_network():
    """Tests never reach the network: a test that fell through to a real mirror would pass or fail with the network.
    Any other name fails to resolve, at once, as it does on a machine offline."""
    real_getaddrinfo = socket.getaddrinfo

    def local_only(host, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            raise socket.gaierror(socket.EAI_NONAME, f"tests reach no network, and not {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    patch = pytest.MonkeyPatch()
    patch.setattr(socket, "getaddrinfo", local_only)
    yield
    patch.undo()
