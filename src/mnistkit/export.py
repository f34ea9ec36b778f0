"""Export a checkpoint to ONNX or TorchScript, verified against PyTorch before the file is written.

The exported graph is the ``InferenceModel``: float32 pixels (N, 1, 28, 28) in [0, 1], white ink on black,
in; class probabilities (N, classes) out; the batch size is free. Its outputs are compared with PyTorch's
on 1,000 real MNIST test images in batches of several sizes; only a file that matches is written (atomically).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, data, fileio
from .errors import MnistkitError
from .inference import Classifier, InferenceModel, pixels

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
PARITY_IMAGES = 1000
PARITY_BATCHES = (1, 7, 992)  # sizes the 1,000 images are run in: none equals the traced example's batch of 2
TOLERANCE = 1e-4  # max abs difference of probabilities allowed between the export and PyTorch
INPUT_NAME, OUTPUT_NAME = "pixels", "probabilities"

Runner = Callable[[torch.Tensor], np.ndarray]


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
    """Beside the checkpoint (``run/model.onnx``); for the bundled pretrained model, in the current folder."""
    if source is None:
        return Path("mnistkit-pretrained" + FORMATS[fmt])
    return checkpoint.resolve(source).with_suffix(FORMATS[fmt])


def export_checkpoint(
    source: str | Path | None = None, fmt: str = "onnx", out: str | Path | None = None, overwrite: bool = False
) -> ExportResult:
    """Export a run folder or checkpoint (None: the bundled pretrained model) to ``out`` and verify it.
    An existing ``out`` is replaced only with ``overwrite``."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format '{fmt}'; choose one of: {', '.join(FORMATS)}")
    classifier = Classifier.load(source)
    out = Path(out).expanduser() if out is not None else default_path(source, fmt)
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: already exists; pass --overwrite to replace it, or choose another -o")
    test = data.load_bundled_mnist().test
    x = pixels(test.images[:PARITY_IMAGES])
    with torch.no_grad():
        expected = classifier.model(x).numpy()
    model = classifier.model
    info = {
        "model": classifier.meta["model"],
        "classes": classifier.classes,
        "input": "float32 (N, 1, 28, 28) pixels in [0, 1], white ink on black",
        "output": "float32 (N, classes) probabilities",
        "source": classifier.source,
    }
    example = torch.zeros(2, 1, 28, 28)
    with warnings.catch_warnings(), torch.no_grad(), fileio.atomic_path(out) as tmp:
        # Both exporters are the TorchScript-based ones (they need no extra packages); they warn that they are
        # deprecated and about internal steps. The parity check below is what says whether the file is right.
        warnings.simplefilter("ignore")
        # The network is scripted, not traced, so Python-level shape logic (``len(x)`` in the flat models)
        # stays dynamic; the traced wrapper around it then accepts any batch size.
        try:
            scripted = InferenceModel(torch.jit.script(model.net), model.norm, model.tta, model.temperature)
            traced = torch.jit.trace(scripted.eval(), example)
        except Exception as exc:  # TorchScript rejects unsupported Python in many ways
            raise ExportError(
                f"cannot convert {classifier.meta['model']} to TorchScript: {str(exc).splitlines()[0]}"
            ) from None
        run = (_export_onnx if fmt == "onnx" else _export_torchscript)(traced, example, tmp, info)
        got = np.concatenate([run(part) for part in torch.split(x, list(PARITY_BATCHES))])
        diff = float(np.abs(got - expected).max())
        if not diff <= TOLERANCE:  # also catches NaN
            raise ExportError(
                f"the exported {fmt} model differs from PyTorch by up to {diff:.2e} (allowed {TOLERANCE:.0e}); nothing was written"
            )
    return ExportResult(out, fmt, len(x), PARITY_BATCHES, diff)


def _export_onnx(model: torch.jit.ScriptModule, example: torch.Tensor, path: Path, info: dict) -> Runner:
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise ExportError(
            "ONNX export needs the onnx and onnxruntime packages: pip install 'mnistkit[export]'"
        ) from None
    try:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,  # the dynamo exporter would need onnxscript as well
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    except Exception as exc:  # an operator ONNX lacks, among others; the exporter has no single error type
        raise ExportError(f"cannot convert {info['model']} to ONNX: {str(exc).splitlines()[0]}") from None
    proto = onnx.load(str(path))
    for key, value in info.items():
        proto.metadata_props.add(key=key, value=value if isinstance(value, str) else json.dumps(value))
    onnx.save(proto, str(path))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]


def _export_torchscript(model: torch.jit.ScriptModule, example: torch.Tensor, path: Path, info: dict) -> Runner:
    torch.jit.save(model, str(path), _extra_files={"mnistkit.json": json.dumps(info)})
    loaded = torch.jit.load(str(path))
    return lambda x: loaded(x).numpy()
