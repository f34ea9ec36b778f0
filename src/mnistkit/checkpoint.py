"""Checkpoints: weights in safetensors, metadata in JSON. Loading never unpickles anything."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from . import fileio
from .errors import CheckpointError, MnistkitError
from .models import create_model

WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"
FORMAT = "mnistkit-checkpoint/1"


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


def resolve(path: str | Path) -> Path:
    """Find the metadata JSON for a run folder, a ``.safetensors`` file or the ``.json`` itself."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / META_NAME
    elif path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here; pass a run folder, a .safetensors file or its .json")
    return path


def read_meta(path: str | Path) -> tuple[dict[str, Any], Path]:
    meta_path = resolve(path)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: not a readable checkpoint description ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or "model" not in meta or "sha256" not in meta:
        raise CheckpointError(f"{meta_path}: not an mnistkit checkpoint (missing format, model or sha256)")
    return meta, meta_path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model named in the metadata and load its verified weights. Returns (model in eval mode, meta).
    A Hugging Face Hub model folder (config.json, model.safetensors and no model.json) is read as well."""
    if is_hub_folder(path):
        from .hub import load_folder  # imported here: hub builds on this module

        model, meta = load_folder(path)
        return model.to(device).eval(), meta
    meta, meta_path = read_meta(path)
    weights_path = meta_path.parent / str(meta.get("weights", WEIGHTS_NAME))
    state = read_tensors(weights_path, meta["sha256"], "weights", meta_path.name)
    try:
        model = create_model(meta["model"], **meta.get("model_options", {}))
    except MnistkitError as exc:
        raise CheckpointError(f"{meta_path}: {exc}") from None
    load_state(model, state, str(weights_path))
    return model.to(device).eval(), meta


def is_hub_folder(path: str | Path) -> bool:
    """A folder in the Hugging Face Hub's layout: config.json or model.safetensors, but no mnistkit model.json."""
    path = Path(path).expanduser()
    hub_files = (path / "config.json").is_file() or (path / WEIGHTS_NAME).is_file()
    return path.is_dir() and hub_files and not (path / META_NAME).exists()


def read_tensors(path: Path, sha256: object, what: str, listed_in: str) -> dict[str, torch.Tensor]:
    """Read a safetensors file whose SHA-256 a JSON file (``listed_in``) records; one clear line for any damage."""
    try:
        blob = path.read_bytes()
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
    """``load_state_dict`` with one clear line for missing, unexpected or mis-shaped tensors."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
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
    model.load_state_dict(state)
