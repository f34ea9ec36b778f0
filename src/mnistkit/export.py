"""Export a checkpoint to ONNX, a ``torch.export`` program, TorchScript or a Hugging Face Hub folder, verified
against PyTorch before it is written.

The exported model is the ``InferenceModel``, normalization included: float32 pixels (N, 1, 28, 28) in [0, 1],
white ink on black, in; class probabilities (N, classes) out; the batch size is free. (The Hub folder holds the
network alone, as ``PyTorchModelHubMixin`` expects, and its normalization in config.json.) The export's outputs
are compared with PyTorch's on 1,000 real MNIST test images in batches of several sizes; only an export that
matches is written (atomically).
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import fileio
from .config import check_flag
from .errors import MnistkitError, first_line, short

if TYPE_CHECKING:  # torch loads on first export, so that the command line starts without it
    import numpy as np
    import torch

    from .inference import Classifier, InferenceModel

# Output suffix per format; "hf" is a folder (run/model-hf).
FORMATS = {"onnx": ".onnx", "exported-program": ".pt2", "torchscript": ".pt", "hf": "-hf"}
PARITY_IMAGES = 1000
PARITY_BATCHES = (1, 7, 992)  # sizes the 1,000 images are run in: none equals the traced example's batch of 2
TOLERANCE = 1e-4  # max abs difference of probabilities allowed between the export and PyTorch
INPUT_NAME, OUTPUT_NAME = "pixels", "probabilities"
METADATA_NAME = "mnistkit.json"  # the contract, stored inside .pt2 and .pt files
ONNX_PACKAGES = ("onnx", "onnxruntime", "onnxscript")

Runner = Callable[["torch.Tensor"], "np.ndarray"]


class ExportError(MnistkitError):
    """The model cannot be exported, or the exported file does not reproduce PyTorch's outputs."""


@dataclass
class ExportResult:
    path: Path
    format: str
    images: int  # how many test images the parity check used
    batch_sizes: tuple[int, ...]
    max_abs_diff: float  # largest difference of any probability between the export and PyTorch


def default_path(source: str | Path | None, fmt: str) -> Path:
    """Beside the checkpoint (``run/model.onnx``, ``run/model-hf``); for the bundled model, in the current folder."""
    from . import checkpoint

    if source is None:
        return Path("mnistkit-pretrained" + FORMATS[fmt])
    if checkpoint.is_hub_folder(source):
        stem = fileio.expanded(source) / "model"
    else:
        stem = checkpoint.resolve(source).with_suffix("")
    return stem.with_name(stem.name + FORMATS[fmt])


def export_checkpoint(
    source: str | Path | None = None, fmt: str = "onnx", out: str | Path | None = None, overwrite: bool = False
) -> ExportResult:
    """Export a run folder or checkpoint (None: the bundled pretrained model) to ``out`` and verify it.
    An existing ``out`` is replaced only with ``overwrite``."""
    import numpy as np
    import torch

    from . import hub
    from .data import load_bundled_mnist
    from .inference import Classifier, InferenceModel, pixels

    check_flag("overwrite", overwrite)  # "no" would be taken by its truth, and replace the file
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise ExportError(f"unknown export format {short(fmt)}; choose one of: {', '.join(FORMATS)}")
    if fmt == "onnx":
        _require_onnx_packages()
    classifier = Classifier.load(source)
    out = _output(source, fmt, out)
    if out.exists() and not overwrite:
        raise ExportError(
            f"{out}: already exists; pass overwrite to replace it, or choose another out", options=("overwrite", "out")
        )
    test = load_bundled_mnist().test
    assert test is not None  # the bundled MNIST has its test set
    x = pixels(test.images[:PARITY_IMAGES])
    inference = classifier.single_model("export")
    with torch.no_grad():
        expected = inference(x).numpy()
    # A copy in the default memory layout: the Classifier keeps its convolutions channels-last for speed, which
    # torch.export would have to record as partial views of storage.
    # torch's stub omits memory_format
    net = copy.deepcopy(inference.net).to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    model = InferenceModel(net, inference.norm, inference.tta, inference.temperature).eval()
    # Valid Unicode, as ONNX's protobuf strings and JSON readers need: the source may name a file that is not UTF-8.
    info = fileio.valid_unicode(
        {
            "model": classifier.meta["model"],
            "classes": classifier.classes,
            "input": "float32 (N, 1, 28, 28) pixels in [0, 1], white ink on black",
            "output": "float32 (N, classes) probabilities",
            "source": classifier.source,
        }
    )
    # Each writer first removes the temporary files that killed exports to ``out`` left (fileio).
    writer = fileio.atomic_folder(out, hub.FILES) if fmt == "hf" else fileio.atomic_path(out)
    with torch.no_grad(), writer as tmp:
        if fmt == "hf":
            run = _export_hf(classifier, tmp)
        else:
            run = EXPORTERS[fmt](model, torch.zeros(2, 1, 28, 28), tmp, info)
        got = np.concatenate([run(part) for part in torch.split(x, list(PARITY_BATCHES))])
        diff = float(np.abs(got - expected).max())
        if not diff <= TOLERANCE:  # also catches NaN
            raise ExportError(
                f"the exported {fmt} model differs from PyTorch by up to {diff:.2e} (allowed {TOLERANCE:.0e}); "
                "nothing was written"
            )
    return ExportResult(out, fmt, len(x), PARITY_BATCHES, diff)


def _output(source: str | Path | None, fmt: str, out: str | Path | None) -> Path:
    """Where to write, refusing early what would fail, or lose data, only once the export is done."""
    if out is None:
        return default_path(source, fmt)
    path = fileio.given_path(out, "out")
    if fmt == "hf":
        _check_hf_output(source, path)
    # Path("somedir/") drops the slash, so the string itself is looked at: a name that ends in a separator, "." or
    # ".." names a folder, where the file would otherwise be written under the folder's name instead.
    elif os.path.basename(os.fspath(out)) in ("", ".", "..") or path.is_dir():
        example = path / ("model" + FORMATS[fmt])
        raise ExportError(
            f"{os.fspath(out)}: names a folder, but the {fmt} format writes one file; "
            f"give a file name, such as {example}"
        )
    else:
        _check_suffix(fmt, path)
    _check_file_output(source, fmt, path)
    return fileio.check_folder_exists(path)


def _model_folder(source: str | Path | None) -> Path:
    """The folder of the model being exported: the run, the Hugging Face folder, or the bundled model's."""
    from .inference import PRETRAINED_DIR

    given = PRETRAINED_DIR if source is None else fileio.expanded(source)
    return (given if given.is_dir() else given.parent).resolve()


def _check_suffix(fmt: str, out: Path) -> None:
    """A one-file export's name ends in its format's suffix: under any other name it passes for another kind of file
    (``-o runs/other/model.safetensors``: a run's weights), and whatever reads that name breaks on it."""
    suffix = FORMATS[fmt]
    if out.suffix == suffix:
        return
    article = "an" if fmt[0] in "aeiou" else "a"
    other = next((name for name, its in FORMATS.items() if its == out.suffix), None)
    instead = f" (or pass format {other})" if other else ""
    raise ExportError(
        f"{out}: {article} {fmt} export is a {suffix} file; name it {out.with_suffix(suffix)}{instead}",
        options=("format",),
    )


def _check_file_output(source: str | Path | None, fmt: str, out: Path) -> None:
    """An export must not replace a file that a run writes (its model.json, weights, config, resume state), with or
    without overwrite: in the run it comes from, that would destroy the model being exported; in another, that run.
    An earlier export may be replaced."""
    from fnmatch import fnmatch

    from .runs import RUN_FILES

    exports = {"model" + suffix for suffix in FORMATS.values()}
    patterns = [pattern for pattern in RUN_FILES if pattern.split("/")[0] not in exports]
    run, target = _model_folder(source), out.resolve()
    depth = max(pattern.count("/") for pattern in patterns) + 1
    for folder in target.parents[:depth]:  # each folder that a run file's pattern could reach down from
        inside = target.relative_to(folder).as_posix()
        if not any(fnmatch(inside, pattern) for pattern in patterns):
            continue
        if folder == run:
            raise ExportError(
                f"{out}: is the {inside} of the model being exported, which the export would destroy; "
                f"choose another out, such as {run / ('model' + FORMATS[fmt])}",
                options=("out",),
            )
        raise ExportError(
            f"{out}: has the name of a run's {inside}, which an export must not replace; choose another out",
            options=("out",),
        )


def _check_hf_output(source: str | Path | None, out: Path) -> None:
    """An hf export replaces its whole folder: refuse the folder of the model being exported (or one holding it),
    and any folder that holds more than an earlier export's files, with or without overwrite."""
    from . import hub

    run, target = _model_folder(source), out.resolve()
    if target == run or target in run.parents:
        raise ExportError(
            f"{out}: {'is' if target == run else 'holds'} the folder of the model being exported; "
            "an hf export would replace it; choose another out",
            options=("out",),
        )
    hub.check_replaceable(out, "overwrite", "choose another out", options=("overwrite", "out"))


def _require_onnx_packages() -> None:
    """Check before anything is written: the exporter itself would fail only halfway through."""
    for name in ONNX_PACKAGES:
        try:
            __import__(name)
        except ImportError:
            raise ExportError(
                f"ONNX export needs the {name} package ({', '.join(ONNX_PACKAGES)}): pip install 'mnistkit[export]'"
            ) from None


def _dynamic_batch() -> dict[str, Any]:
    import torch

    return {"x": {0: torch.export.Dim("batch")}}  # "x": InferenceModel.forward's argument


def _export_onnx(model: InferenceModel, example: torch.Tensor, path: Path, info: dict) -> Runner:
    import onnx
    import onnxruntime
    import torch

    try:
        with _quiet_onnx_registry(), warnings.catch_warnings():
            # torch 2.13's own deepcopy of its export graph trips this FutureWarning inside torch.export (the
            # deprecated LeafSpec class is re-created by copy.deepcopy, not by any call of ours; pytorch#169421).
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)`", category=FutureWarning)
            torch.onnx.export(
                model,
                (example,),
                str(path),
                dynamo=True,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_shapes=_dynamic_batch(),
                external_data=False,  # one self-contained file: the weights are far below ONNX's 2 GB limit
                verbose=False,
            )
    except OSError:  # the file could not be written (a full disk): atomic_path says so, naming the file
        raise
    except Exception as exc:  # an operator ONNX lacks, among others; the exporter has no single error type
        _reraise_interrupt(exc)
        raise ExportError(f"cannot convert {info['model']} to ONNX: {first_line(exc)}") from None
    proto = onnx.load(str(path))
    for key, value in info.items():
        proto.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value))
    onnx.save(proto, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]


@contextmanager
def _quiet_onnx_registry() -> Iterator[None]:
    """The dynamo exporter logs a warning per torchvision operator it cannot register when torchvision is not
    installed; mnistkit's models use none of them."""
    logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _export_program(model: InferenceModel, example: torch.Tensor, path: Path, info: dict) -> Runner:
    import torch

    from .inference import CheckedModel, InputCheck

    try:
        program = torch.export.export(CheckedModel(model, InputCheck()), (example,), dynamic_shapes=_dynamic_batch())
    except Exception as exc:  # torch.export rejects unsupported Python in many ways
        _reraise_interrupt(exc)
        raise ExportError(f"cannot export {info['model']} with torch.export: {first_line(exc)}") from None
    # Through a buffer: torch.export.save and load insist on a name ending in .pt2, and the temporary file has none.
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={METADATA_NAME: json.dumps(info)})
    path.write_bytes(buffer.getvalue())
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    return lambda x: loaded(x).numpy()


def _export_torchscript(model: InferenceModel, example: torch.Tensor, path: Path, info: dict) -> Runner:
    import torch

    from .inference import CheckedModel, InferenceModel, InputCheck

    with warnings.catch_warnings():
        # TorchScript is deprecated as a whole in torch 2.13 (every torch.jit call warns so); the format stays for
        # runtimes that only read it. exported-program is its replacement.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        # The network and the input check are scripted, not traced, so any Python-level shape logic in them stays
        # dynamic; the traced wrapper around them then accepts any batch size.
        try:
            scripted = InferenceModel(torch.jit.script(model.net), model.norm, model.tta, model.temperature).eval()
            traced = torch.jit.trace(CheckedModel(scripted, torch.jit.script(InputCheck())), example)
        except Exception as exc:  # TorchScript rejects unsupported Python in many ways
            _reraise_interrupt(exc)
            raise ExportError(f"cannot convert {info['model']} to TorchScript: {first_line(exc)}") from None
        # Through a buffer: torch's file writer aborts the whole process on a full disk; a Python write raises.
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={METADATA_NAME: json.dumps(info)})
        path.write_bytes(buffer.getvalue())
        buffer.seek(0)
        loaded = torch.jit.load(buffer)
    return lambda x: loaded(x).numpy()


def _export_hf(classifier: Classifier, folder: Path) -> Runner:
    from . import hub
    from .inference import Classifier

    hub.write_folder(classifier, folder)
    net, meta = hub.load_folder(folder)
    return Classifier._of(net, meta, str(folder)).predict_array


def _reraise_interrupt(exc: BaseException) -> None:
    """Raise KeyboardInterrupt if ``exc`` wraps one: torch.onnx's exporter reports a Ctrl-C as a failed step of its
    own, and the user stopped the command rather than met a model that cannot be converted."""
    seen: set[int] = set()
    chain: list[BaseException | None] = [exc]
    while chain:
        link = chain.pop()
        if link is None or id(link) in seen:
            continue
        if isinstance(link, KeyboardInterrupt):
            raise KeyboardInterrupt from exc
        seen.add(id(link))
        chain += [link.__cause__, link.__context__]


EXPORTERS = {"onnx": _export_onnx, "exported-program": _export_program, "torchscript": _export_torchscript}
