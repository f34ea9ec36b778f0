"""Checkpoints: weights in safetensors, metadata in JSON. Loading never unpickles anything."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from . import fileio, schema
from .errors import CheckpointError, MnistkitError
from .models import create_model

WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"
FORMAT = schema.CHECKPOINT_FORMAT
MAX_TENSOR_BYTES = 4 << 30  # a resume state of the widest cnn (weights, two Adam moments, best weights): 1.2 GB


def save_checkpoint(folder: str | Path, model: nn.Module, meta: dict[str, Any], stem: str = "model") -> Path:
    """Write ``<stem>.safetensors`` and ``<stem>.json`` atomically; the JSON records the weights' SHA-256.

    ``meta`` must hold ``model`` (registry name) and ``model_options``; the weights are written first, so a
    crash between the two files leaves the old JSON, whose checksum then names the mismatch.
    """
    folder = Path(folder)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    blob = save_safetensors(state)
    meta = {"format": FORMAT, **meta, "weights": f"{stem}.safetensors", "sha256": hashlib.sha256(blob).hexdigest()}
    fileio.write_bytes(folder / f"{stem}.safetensors", blob)
    fileio.write_json(folder / f"{stem}.json", meta)
    return folder / f"{stem}.json"


# The files ``mnistkit export`` writes, and what reads them.
EXPORT_SUFFIXES = {".onnx": "ONNX runtimes", ".pt2": "torch.export.load", ".pt": "torch.jit.load (TorchScript)"}


def resolve(path: str | Path) -> Path:
    """Find the metadata JSON for a run folder, a ``.safetensors`` file or the ``.json`` itself (a name printed with
    ``\\xNN`` for a byte that is not UTF-8 finds it too: ``fileio.recorded_path``)."""
    path = fileio.recorded_path(path)
    if path.suffix in EXPORT_SUFFIXES and path.is_file():
        raise CheckpointError(
            f"{path}: an exported model, for {EXPORT_SUFFIXES[path.suffix]}; mnistkit reads the run folder it was "
            "exported from (or its model.safetensors), or a Hugging Face folder"
        )
    if path.is_dir():
        path = path / META_NAME
    elif path.suffix == ".safetensors":
        if not path.with_suffix(".json").exists() and is_hub_folder(path.parent):
            raise CheckpointError(f"{path}: the weights of a Hugging Face folder; pass the folder, {path.parent}")
        path = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here; pass a run folder, a .safetensors file or its .json")
    return path


def read_meta(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The checked metadata JSON (see ``schema.ModelMeta``) and where it is."""
    meta_path = resolve(path)
    return schema.read_model_meta(meta_path), meta_path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model named in the metadata and load its verified weights. Returns (model in eval mode, meta).
    A Hugging Face Hub model folder (config.json, model.safetensors and no model.json) is read as well."""
    if is_hub_folder(path):
        from .hub import load_folder  # imported here: hub builds on this module

        model, meta = load_folder(path)
        return model.to(device).eval(), meta
    meta, meta_path = read_meta(path)
    try:
        model = create_model(meta["model"], **meta.get("model_options", {}))
    except MnistkitError as exc:
        raise CheckpointError(f"{meta_path}: {exc}") from None
    weights_path = meta_path.parent / meta.get("weights", WEIGHTS_NAME)  # a plain file name: the schema says so
    try:
        state = read_tensors(weights_path, meta["sha256"], "weights", meta_path.name)
    except CheckpointError as exc:
        from .resume import command, has_state  # imported here: resume builds on this module

        if not has_state(meta_path.parent):
            raise
        raise CheckpointError(
            f"{exc}; {command(meta_path.parent)} writes them again from the run's final state"
        ) from None
    load_state(model, state, str(weights_path))
    return model.to(device).eval(), meta


def is_hub_folder(path: str | Path) -> bool:
    """A folder in the Hugging Face Hub's layout: config.json or model.safetensors, but no mnistkit model.json."""
    path = fileio.recorded_path(path)
    hub_files = (path / "config.json").is_file() or (path / WEIGHTS_NAME).is_file()
    return path.is_dir() and hub_files and not (path / META_NAME).exists()


def read_tensors(path: Path, sha256: object, what: str, listed_in: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file whose SHA-256 a JSON file (``listed_in``) records; one clear line for any damage."""
    try:
        blob = fileio.read_regular(path, MAX_TENSOR_BYTES)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if hashlib.sha256(blob).hexdigest() != sha256:
        raise CheckpointError(
            f"{path}: {what} do not match the checksum in {listed_in}; the file was modified or truncated"
        )
    try:
        return load_safetensors(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None


def load_state(model: nn.Module, state: dict[str, torch.Tensor], where: str) -> None:
    """``load_state_dict`` after ``check_state``."""
    check_state(model.state_dict(), state, where)
    model.load_state_dict(state)


def check_state(expected: dict[str, torch.Tensor], state: object, where: str) -> None:
    """One clear line unless ``state`` holds exactly ``expected``'s tensors: the same names and shapes, floating
    point where the model's are, and finite (a checksum only says the file is the one saved, not that it is sound).
    """
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{where}: weights do not fit the model (not a mapping of names to tensors)")
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    common = sorted(set(expected) & set(state))
    wrong = [k for k in common if expected[k].shape != state[k].shape]
    mistyped = [k for k in common if expected[k].is_floating_point() != state[k].is_floating_point()]
    if mistyped:
        k = mistyped[0]
        kind = "floating-point numbers" if expected[k].is_floating_point() else "integers"
        raise CheckpointError(
            f"{where}: weights do not fit the model ({k} holds {state[k].dtype}, the model needs {kind})"
        )
    # Checked as the model will hold them: a float64 1e300 is finite, but infinite once loaded into float32.
    not_finite = [
        k for k in common if state[k].is_floating_point() and not torch.isfinite(state[k].to(expected[k].dtype)).all()
    ]
    if not_finite:
        raise CheckpointError(
            f"{where}: the weights hold NaN or infinite values (in {not_finite[0]}); they cannot be used"
        )
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}")
        if wrong:
            k = wrong[0]
            parts.append(f"{k} has shape {tuple(state[k].shape)}, the model needs {tuple(expected[k].shape)}")
        raise CheckpointError(f"{where}: weights do not fit the model ({'; '.join(parts)})")
