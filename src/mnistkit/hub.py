"""Hugging Face Hub model folders: ``config.json`` + ``model.safetensors`` + a ``README.md`` model card.

The layout is the one ``huggingface_hub.PyTorchModelHubMixin`` reads and writes: the model's constructor options
sit at the top level of ``config.json`` (``{"num_classes": 10, "width": 32, ...}``), so
``class Net(mnistkit.models.CNN, PyTorchModelHubMixin)`` loads the folder with ``Net.from_pretrained``. mnistkit
adds the registry name under ``architecture`` and its own metadata (normalization, classes, input contract,
metrics, command) under ``mnistkit``; both are keys the mixin ignores. A folder the mixin wrote from an mnistkit
model class has neither: the architecture is then recognised by its tensor names, and the input is taken to be
normalized as mnistkit normalizes MNIST by default.
"""

from __future__ import annotations

import inspect
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from . import __version__, fileio, schema
from .checkpoint import MAX_TENSOR_BYTES, META_NAME, load_checkpoint, load_state
from .config import check_flag
from .data import Normalization
from .errors import CheckpointError, MnistkitError, first_line
from .models import MODELS, count_parameters, create_model

if TYPE_CHECKING:
    from .inference import Classifier

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CARD_NAME = "README.md"
FILES = (CARD_NAME, CONFIG_NAME, WEIGHTS_NAME)  # all write_folder writes: what an overwrite may replace
FORMAT = "mnistkit-hub/1"
HUB_EXTRA = "pip install 'mnistkit[hub]'"
# Checkpoint bookkeeping that the Hub folder replaces with its own files, or holds at the top level of config.json.
NOT_COPIED = ("format", "weights", "sha256", "model", "model_options")
# Each dataset's licence and its id on the Hub, for the model card.
DATASETS = {
    "mnist": ("MNIST", "CC BY-SA 3.0, by Yann LeCun, Corinna Cortes and Christopher J.C. Burges", "ylecun/mnist"),
    "fashion-mnist": ("Fashion-MNIST", "MIT, by Zalando Research", "zalando-datasets/fashion_mnist"),
    "kmnist": ("Kuzushiji-MNIST", "CC BY-SA 4.0, by the ROIS-DS Center for Open Data in the Humanities", None),
}
# Building a model from options in a file can fail in these ways besides mnistkit's own (negative widths, ...).
BUILD_ERRORS = (MnistkitError, ValueError, RuntimeError)
REPO_ID = re.compile(r"^[\w.-]+(/[\w.-]+)?$")


# --------------------------------------------------------------------------------------------------
# Writing


def save_pretrained(classifier: Classifier, folder: str | Path, overwrite: bool = False) -> Path:
    """Write a classifier's network and metadata as a Hub model folder, atomically. An existing folder is replaced
    only with ``overwrite``, and only if it is an earlier Hub folder (an empty one is filled; see
    ``check_replaceable``)."""
    overwrite = check_flag("overwrite", overwrite)  # overwrite="no" must not delete a folder
    folder = fileio.given_path(folder, "folder")
    check_replaceable(folder, "overwrite=True", "choose another folder")
    if folder.exists() and not overwrite and not (folder.is_dir() and not any(folder.iterdir())):
        raise CheckpointError(f"{folder}: already exists; pass overwrite=True to replace it, or choose another folder")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MnistkitError(f"cannot make {folder.parent}: {exc.strerror or exc}") from None
    with fileio.atomic_folder(folder, FILES) as tmp:
        write_folder(classifier, tmp)
    return folder


def check_replaceable(folder: Path, overwrite: str, instead: str, options: tuple[str, ...] = ()) -> None:
    """Refuse, whatever ``overwrite`` says, a ``folder`` that holds anything but an earlier Hub folder's files (a run
    folder, a user's notes, subfolders): replacing the folder would delete them. ``overwrite``: the option's name as
    the caller takes it; ``instead``: what to do."""
    blocker = fileio.in_the_way(folder, FILES)
    if blocker is not None:
        raise CheckpointError(
            f"{folder}: {blocker}; {overwrite} replaces only an earlier Hugging Face model folder "
            f"({', '.join(FILES)} alone) or an empty folder; {instead}",
            options=options,
        )


def write_folder(classifier: Classifier, folder: Path) -> None:
    """Write config.json, model.safetensors and README.md into ``folder`` (which exists)."""
    inference = classifier.single_model("a Hugging Face Hub folder")
    net = inference.net
    state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    # What the classifier really uses, also where the checkpoint left it to the defaults.
    meta = {
        **classifier.meta,
        "classes": classifier.classes,
        "normalization": inference.norm.to_dict(),
        "tta": inference.tta,
    }
    config = hub_config(meta)
    fileio.write_bytes(folder / WEIGHTS_NAME, save_safetensors(state, metadata={"format": "pt"}))
    fileio.write_json(folder / CONFIG_NAME, config)
    fileio.write_text(folder / CARD_NAME, model_card(config, count_parameters(net)))


def hub_config(meta: dict[str, Any]) -> dict[str, Any]:
    """config.json: every constructor option (defaults filled in), the architecture, then mnistkit's metadata."""
    name = meta["model"]
    defaults = {
        p.name: p.default
        for p in inspect.signature(MODELS[name]).parameters.values()
        if p.default is not inspect.Parameter.empty
    }
    extra = _home_as_tilde({k: v for k, v in meta.items() if k not in NOT_COPIED})
    return {
        **defaults,
        **meta.get("model_options", {}),
        "architecture": name,
        "mnistkit": {"format": FORMAT, "mnistkit_version": __version__, **extra},
    }


def _home_as_tilde(value: Any) -> Any:
    """``value`` (metadata: dicts, lists, strings) with the user's home folder written ``~`` at the start of every
    path and in commands: a folder made to be published does not carry the user's name (``/home/ana/...``), and
    ``~`` still finds the files on this machine (``fileio.recorded_path`` expands it)."""
    home = os.path.expanduser("~").rstrip("/")
    if len(home) <= 1:
        return value
    at_home = re.compile(rf"(?<![^\s='\"]){re.escape(home)}(?=/|$|[\s'\"])")

    def tilded(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: tilded(v) for k, v in value.items()}
        if isinstance(value, list):
            return [tilded(v) for v in value]
        return at_home.sub("~", value) if isinstance(value, str) else value

    return tilded(value)


def model_card(config: dict[str, Any], parameters: int) -> str:
    """README.md for the Hub: YAML front matter (licence, tags, data, results), then what a user needs to know."""
    info = config["mnistkit"]
    name = config["architecture"]
    options = {k: v for k, v in config.items() if k not in ("architecture", "mnistkit")}
    dataset = info.get("dataset") or {}
    data_key = str(dataset.get("name", "mnist")).lower()
    data_title, data_licence, data_id = DATASETS.get(
        data_key, (dataset.get("name", "your data"), "the licence of the data it was trained on", None)
    )
    metrics = info.get("metrics") or {}
    accuracy = metrics.get("test_accuracy")
    classes = info["classes"]
    norm = Normalization(**info["normalization"])
    temperature = float((info.get("calibration") or {}).get("temperature", 1.0))
    probabilities = (
        f"`softmax(logits / {temperature:.4g})`, the temperature fitted on held-out data (`config.json`: "
        "`mnistkit.calibration.temperature`)"
        if temperature != 1.0
        else "`softmax(logits)`"
    )
    front: dict[str, Any] = {
        "license": "mit",
        "library_name": "mnistkit",
        "pipeline_tag": "image-classification",
        "tags": ["mnistkit", "image-classification", "pytorch", "pytorch_model_hub_mixin", data_key],
    }
    if data_id:
        front["datasets"] = [data_id]
    if accuracy is not None:
        front["metrics"] = ["accuracy"]
        result = {
            "task": {"type": "image-classification", "name": "Image classification"},
            "dataset": {"name": data_title, "type": data_id or data_key, "split": "test"},
            "metrics": [{"type": "accuracy", "value": round(accuracy, 6), "name": "Test accuracy"}],
        }
        front["model-index"] = [{"name": f"mnistkit-{name}", "results": [result]}]
    # JSON is YAML too: every value written as JSON stays valid front matter whatever characters it holds.
    yaml = "\n".join(f"{key}: {json.dumps(value, ensure_ascii=False)}" for key, value in front.items())
    rows = [
        ("test accuracy", f"{accuracy:.2%}" if accuracy is not None else None),
        ("test loss", _number(metrics.get("test_loss"))),
        ("validation accuracy", f"{metrics['val_accuracy']:.2%}" if metrics.get("val_accuracy") is not None else None),
        ("epochs", metrics.get("epochs")),
        ("training time", f"{metrics['train_seconds']:.0f} s" if metrics.get("train_seconds") is not None else None),
    ]
    table = "\n".join(f"| {label} | {value} |" for label, value in rows if value is not None)
    sizes = ", ".join(
        f"{dataset[k]:,} {label}"
        for k, label in (("train", "training"), ("val", "validation"), ("test", "test"))
        if isinstance(dataset.get(k), int)
    )
    class_name = MODELS[name].__name__
    command = info.get("command")
    versions = ", ".join(
        f"{label} {info[key]}"
        for key, label in (("mnistkit_version", "mnistkit"), ("torch_version", "torch"), ("python_version", "Python"))
        if info.get(key)
    )
    return f"""---
{yaml}
---

# mnistkit {name}: {data_title} classifier

A `{name}` network (`mnistkit.models.{class_name}`, {parameters:,} parameters) trained with
[mnistkit](https://pypi.org/project/mnistkit/) to sort 28×28 grayscale images into {len(classes)} classes:
{", ".join(f"`{c}`" for c in classes)}.

## Model

- Architecture: `{name}` with options `{json.dumps(options)}` (the top level of `config.json`).
- Input: float32 pixels, shape (N, 1, 28, 28), in [0, 1], white ink on black as in MNIST.
  mnistkit normalizes them as `(pixel * 255 / {norm.divisor:g} - {norm.mean:g}) / {norm.std:g}` before the network.
- Output: {len(classes)} class scores (logits); mnistkit's probabilities are {probabilities}.
- Test-time augmentation (average over 1-pixel shifts): {"yes" if info.get("tta") else "no"}.

## Data

Trained on {data_title}{f" ({sizes})" if sizes else ""}.

## Metrics

{f"| metric | value |{chr(10)}|---|---|{chr(10)}{table}" if table else "No metrics were recorded."}

## How it was trained

{f"```{chr(10)}{command}{chr(10)}```" if command else "The training command was not recorded."}
{f"{chr(10)}{versions}.{chr(10)}" if versions else ""}
## How to use

With mnistkit (`pip install mnistkit`), on image files of any size (they are centred and scaled as MNIST is):

```python
from mnistkit import Classifier

classifier = Classifier.from_pretrained("path/or/repo-id")
print(classifier.predict("digit.png").label)
```

With `huggingface_hub` and the model class alone (input normalized as above):

```python
from huggingface_hub import PyTorchModelHubMixin
from mnistkit.models import {class_name}

class Net({class_name}, PyTorchModelHubMixin):
    pass

net = Net.from_pretrained("path/or/repo-id")
```

## Intended use and limits

- Meant for learning, teaching and demos: classifying one centred character per 28×28 image, drawn or
  handwritten like the {data_title} images (light strokes on a dark background once preprocessed).
- Every input gets one of the {len(classes)} classes: there is no "none of these", so letters, several
  characters, photos or blank images get confident but meaningless answers.
- The accuracy above is measured on {data_title}'s own test set; other handwriting, scanners or drawing tools
  usually score lower. Do not use it for decisions about people (forms, cheques, exams) without human review.

## Licence

Code: MIT (mnistkit). Training data: {data_title}, {data_licence}. The weights were learnt from that data;
credit its authors when you share them.
"""


def _number(value: object) -> str | None:
    return f"{value:.4f}" if isinstance(value, (int, float)) else None


# --------------------------------------------------------------------------------------------------
# Reading


def from_pretrained(
    dir_or_repo_id: str | Path,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """Load a Hub model folder, or a Hub repo id through ``huggingface_hub`` (downloaded once, then cached).
    A local mnistkit run folder or checkpoint is loaded too."""
    local_files_only = check_flag("local_files_only", local_files_only)  # refused before a local folder ignores it
    path = fileio.given_path(dir_or_repo_id, "dir_or_repo_id")
    if path.is_file() or (path / META_NAME).is_file():  # an mnistkit checkpoint file or run folder
        return load_checkpoint(path)
    if path.exists() or not REPO_ID.match(str(dir_or_repo_id)):
        return load_folder(path)
    return load_folder(download(str(dir_or_repo_id), revision, cache_dir, local_files_only))


def download(repo_id: str, revision: str | None, cache_dir: str | Path | None, local_files_only: bool) -> Path:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError:
        raise CheckpointError(
            f"{repo_id}: no such folder; to fetch it from the Hugging Face Hub install huggingface_hub: {HUB_EXTRA}"
        ) from None
    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, CARD_NAME],
            )
        )
    except (HFValidationError, OSError, ValueError) as exc:  # the Hub's errors derive from these
        raise CheckpointError(
            f"{repo_id}: no such folder, and the Hugging Face Hub could not provide it ({first_line(exc)})"
        ) from None


def load_folder(folder: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network a Hub folder describes and load its weights. Returns (model in eval mode, meta), with
    meta in the shape of a checkpoint's (``model``, ``model_options``, ``normalization``, ``classes``, ...)."""
    folder = fileio.expanded(folder)
    config = _read_config(folder)
    state = _read_weights(folder)
    name = _architecture(config, state, folder)
    accepted = inspect.signature(MODELS[name]).parameters
    options = {k: v for k, v in config.items() if k in accepted}
    try:
        model = create_model(name, **options)
    except BUILD_ERRORS as exc:
        raise CheckpointError(
            f"{folder / CONFIG_NAME}: invalid options for model '{name}' ({first_line(exc)})"
        ) from None
    load_state(model, state, str(folder / WEIGHTS_NAME))
    info = config.get("mnistkit", {})  # absent from a folder that another tool wrote: the defaults hold
    if not isinstance(info, dict):
        raise CheckpointError(
            f'{folder / CONFIG_NAME}: its "mnistkit" entry must be an object (normalization, classes, ...), '
            f"got {type(info).__name__}; export the model again"
        )
    if info:
        schema.check_hub_description(info, folder / CONFIG_NAME, FORMAT)
    meta = {k: v for k, v in info.items() if k != "format"}
    meta.update(model=name, model_options={k: v for k, v in options.items() if v is not None})
    _check_meta(meta, _outputs(model), folder / CONFIG_NAME)
    return model.eval(), meta


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder; pass a Hugging Face model folder or a Hub repo id")
    if not path.exists():
        raise CheckpointError(f"{folder}: no {CONFIG_NAME} here; a Hugging Face model folder needs one")
    config = schema.load_json(path, schema.HUB_CONFIG)  # a regular file of bounded size, as model.json is
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object of model options")
    if "epochs" in config and "model" in config:  # a training run's config.json, never a model's
        raise CheckpointError(f"{folder}: an mnistkit run folder without its model.json; did the run finish?")
    return config


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / WEIGHTS_NAME
    try:
        blob = fileio.read_regular(path, MAX_TENSOR_BYTES)
    except FileNotFoundError:
        raise CheckpointError(
            f"{folder}: no {WEIGHTS_NAME} here; a Hugging Face model folder holds its weights in that file "
            "(an mnistkit run folder has model.json beside it)"
        ) from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the weights ({exc.strerror or exc})") from None
    try:
        return load_safetensors(blob)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None


def _architecture(config: dict[str, Any], state: dict[str, torch.Tensor], folder: Path) -> str:
    """The registry name config.json gives, or else the one model whose tensor names the weights have."""
    named = config.get("architecture", config.get("model_type", config.get("architectures")))
    if named is not None:
        if isinstance(named, str) and named in MODELS:
            return named
        raise CheckpointError(
            f"{folder / CONFIG_NAME}: describes a {json.dumps(named)} model; mnistkit reads {', '.join(MODELS)}"
        )
    for name, constructor in MODELS.items():
        accepted = inspect.signature(constructor).parameters
        try:
            model = create_model(name, **{k: v for k, v in config.items() if k in accepted})
        except BUILD_ERRORS:
            continue
        if set(model.state_dict()) == set(state):
            return name
    tensors = ", ".join(sorted(state)[:3]) or "none"
    raise CheckpointError(
        f"{folder / WEIGHTS_NAME}: the tensors ({tensors}, ...) fit none of mnistkit's models "
        f"({', '.join(MODELS)}); config.json names no architecture"
    )


def _outputs(model: nn.Module) -> int:
    with torch.no_grad():
        return int(model.eval()(torch.zeros(1, 1, 28, 28)).shape[1])


def _check_meta(meta: dict[str, Any], outputs: int, where: Path) -> None:
    """Fill in what a folder written by the mixin alone lacks, and reject metadata the Classifier cannot use."""
    meta.setdefault("normalization", Normalization().to_dict())
    classes = meta.setdefault("classes", [str(i) for i in range(outputs)])
    if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)) or len(classes) != outputs:
        raise CheckpointError(f"{where}: mnistkit.classes must list {outputs} class names, one per model output")
