"""Using a trained model: the ``Classifier`` turns images (files, PIL images, arrays) into digits.

A ``Classifier`` wraps a checkpoint's network in an ``InferenceModel`` that owns the whole numeric
contract — float pixels in [0, 1], white ink on black, (N, 1, 28, 28) in; class probabilities out — so the
library, the web server and the exported ONNX / TorchScript files all compute exactly the same thing.
``Classifier.load()`` with no path loads the pretrained convnet that ships inside the package; a list of paths
loads an ``Ensemble``, which averages its members' probabilities.

Names, as in ``train.py``: ``net`` (or ``model``) is the network itself, as ``models.py`` builds it and a
checkpoint stores it; a wrapper is named for what it adds (``Classifier.inference``: the ``InferenceModel``).
"""

from __future__ import annotations

import copy
import glob
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from PIL import Image
from torch import nn

from . import checkpoint, fileio
from .augment import TTA_SHIFTS, shift
from .calibrate import not_a_digit
from .config import check_flag
from .data import Normalization
from .errors import CheckpointError, ConfigError, MnistkitError, short, shown_path
from .models import count_parameters
from .preprocess import FLAT_SIZE, ImageError, ImageInput, check_pixels, image_formats, plain_array, to_mnist

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
BATCH_SIZE = 256  # images per forward pass in predict_array: activations stay in cache (faster than 1024 on CPU)
ACCELERATOR_BATCH_SIZE = 2048  # on a GPU, few large passes: each pass costs its kernel launches whatever its size


class InferenceModel(nn.Module):
    """A trained network with its input normalization, and its test-time augmentation if it was tested with it.

    Input: float32 (N, 1, 28, 28) pixels in [0, 1], white ink on black (MNIST's polarity).
    Output: float32 (N, classes) probabilities, calibrated where the checkpoint records a temperature.
    """

    def __init__(
        self,
        net: nn.Module,
        norm: Normalization,
        tta: bool = False,
        temperature: float = 1.0,
        not_a_digit_below: float | None = None,
    ):
        super().__init__()
        self.net = net
        self.norm = norm
        self.temperature = temperature  # calibration: the logits are divided by it before the softmax
        # Below this not-a-digit score an image is "not a digit"; None for models fitted without validation data.
        self.not_a_digit_below = not_a_digit_below
        # (pixel * 255 / divisor - mean) / std, folded into one multiply and one subtract
        self.scale = 255.0 / (norm.divisor * norm.std)
        self.offset = norm.mean / norm.std
        self.tta = tta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs = self._calibrated_logits(x).softmax(1)
        if not self.tta:
            return probs
        return probs.reshape(len(TTA_SHIFTS), -1, probs.shape[1]).mean(0)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrated logits, (views, N, classes): one view, or one per test-time shift."""
        logits = self._calibrated_logits(x)
        return logits.reshape(len(TTA_SHIFTS) if self.tta else 1, -1, logits.shape[1])

    def probabilities_and_margin(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Probabilities (N, classes), and the not-a-digit margin (N,), below zero for "not a digit": the not-a-digit
        score less its threshold; None without a threshold. The score is the energy of the calibrated logits (their
        log-sum-exp, averaged over the test-time shifts), low where no class fits."""
        logits = self.logits(x)
        energy = logits.logsumexp(-1).mean(0)
        margin = energy - self.not_a_digit_below if self.not_a_digit_below is not None else None
        return logits.softmax(-1).mean(0), margin

    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The class scores before the softmax, (N, classes): the calibrated logits averaged over the shifts."""
        return self.logits(x).mean(0)

    def _calibrated_logits(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scale - self.offset
        if self.tta:
            background = -self.offset  # a blank pixel after normalization
            # All shifts in one batch: one pass through the network (which also keeps it traceable).
            x = torch.cat([shift(x, dy, dx, background) for dy, dx in TTA_SHIFTS])
        return self.net(x) / self.temperature


class InputCheck(nn.Module):
    """Passes on float32 (N, 1, 28, 28) and refuses anything else, for exported models whose runtimes check less:
    a torch.export program guards shapes but not the dtype (uint8 pixels would be read as 0..255), and TorchScript
    guards neither (32×32 images would be answered). Scriptable; torch.export records the dtype check."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        torch.ops.aten._assert_tensor_metadata(x, dtype=torch.float32)  # what a torch.export program keeps of it
        if x.dtype != torch.float32 or x.dim() != 4 or x.shape[1] != 1 or x.shape[2] != 28 or x.shape[3] != 28:
            raise ValueError("expected float32 pixels of shape (N, 1, 28, 28) in [0, 1], white ink on black")
        return x


class CheckedModel(nn.Module):
    """``model`` behind an ``InputCheck`` (plain or scripted); its argument is still named x."""

    def __init__(self, model: nn.Module, check: nn.Module):
        super().__init__()
        self.model = model
        self.check = check

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.check(x))


class EnsembleModel(nn.Module):
    """Several ``InferenceModel``s as one, with the same input and output: the mean of their probabilities.

    An image is "not a digit" when most of the members that have a not-a-digit threshold (more than half of them)
    flag it, each by its own score and threshold: the members' scores need not share a scale (an mlp's energies
    run higher than a convnet's), so they are not averaged. Without such members it flags nothing.
    """

    def __init__(self, members: Sequence[InferenceModel]):
        super().__init__()
        self.members = nn.ModuleList(members)
        calibrated = sum(member.not_a_digit_below is not None for member in members)
        self.votes = calibrated // 2 + 1 if calibrated else 0  # members that must flag an image

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(x) for member in self.members]).mean(0)

    def probabilities_and_margin(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The members' mean probabilities, and a not-a-digit margin below zero where enough members flag an
        image: the ``votes``-th lowest of the calibrated members' margins (None without them)."""
        results = [cast(InferenceModel, member).probabilities_and_margin(x) for member in self.members]
        probabilities = torch.stack([p for p, _ in results]).mean(0)
        margins = [m for _, m in results if m is not None]
        if not margins:
            return probabilities, None
        return probabilities, torch.stack(margins).kthvalue(self.votes, 0).values

    def class_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The members' class scores before the softmax, averaged."""
        return torch.stack([cast(InferenceModel, member).class_scores(x) for member in self.members]).mean(0)


@dataclass
class Prediction:
    """What the model says about one image."""

    source: str  # the file path, or "<image i>" / "<array i>" for in-memory inputs
    digit: int  # index of the most likely class (the digit itself for MNIST)
    label: str  # that class's name ("7"; "Sneaker" for Fashion-MNIST)
    probability: float  # its probability
    top: list[tuple[str, float]]  # the k most likely (label, probability), best first
    probabilities: np.ndarray  # float32 (classes,): every class's probability
    input: np.ndarray  # uint8 (28, 28): the image the model saw, white ink on black
    not_a_digit: bool = False  # no class fits: the model's not-a-digit score is below its calibrated threshold
    ok = True

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: source, digit (the best guess even when not_a_digit), label, probability, not_a_digit and
        top (without the arrays). Valid Unicode: a file name that is not UTF-8 shows its bytes as ``\\xe9``."""
        return {
            "source": fileio.valid_utf8(self.source),
            "digit": self.digit,
            "label": self.label,
            "probability": round(self.probability, 6),
            "not_a_digit": self.not_a_digit,
            "top": [{"label": label, "probability": round(p, 6)} for label, p in self.top],
        }


@dataclass
class FailedPrediction:
    """An image of a batch that could not be read or held no digit; ``error`` says why in one line."""

    source: str
    error: MnistkitError
    ok = False

    def to_dict(self) -> dict[str, Any]:
        return fileio.valid_unicode({"source": self.source, "error": str(self.error)})  # the error names the file


class Classifier:
    """A trained model ready to classify images. Build it with ``Classifier.load(path)``."""

    inference: InferenceModel | EnsembleModel

    def __init__(self, net: nn.Module, meta: dict[str, Any], source: str, device: str | torch.device = "cpu"):
        """Wraps a copy of ``net`` (a model with its checkpoint's ``meta``): the caller's model keeps its mode,
        gradients and layout, and may go on training."""
        try:
            own = copy.deepcopy(net)
        except RuntimeError as exc:  # a tensor deepcopy refuses: one a hook computed (old-style weight_norm)
            raise ConfigError(
                f"cannot copy the model to wrap it ({str(exc).split('. ')[0]}): pass one copy.deepcopy takes (for "
                "weight norm, torch.nn.utils.parametrizations.weight_norm in place of torch.nn.utils.weight_norm)"
            ) from None
        self._wrap(own, meta, source, device)

    @classmethod
    def _of(cls, net: nn.Module, meta: dict[str, Any], source: str, device: str | torch.device = "cpu") -> Classifier:
        """A Classifier of a network built for it (from a checkpoint), which needs no copy."""
        classifier = cls.__new__(cls)
        classifier._wrap(net, meta, source, device)
        return classifier

    def _wrap(self, net: nn.Module, meta: dict[str, Any], source: str, device: str | torch.device) -> None:
        norm = Normalization(**meta["normalization"]) if "normalization" in meta else Normalization()
        calibration = meta.get("calibration") or {}
        threshold = calibration.get("not_a_digit_below")
        temperature = float(calibration.get("temperature", 1.0))
        # Inference never needs gradients; frozen weights also make exported graphs return plain tensors.
        net = net.eval().requires_grad_(False)
        inference = InferenceModel(net, norm, bool(meta.get("tta")), temperature, threshold).eval()
        # Convolutions run about twice as fast on CPU with channels-last (NHWC) weights; other layers ignore it.
        inference.net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stub omits it
        self._hold(inference, meta, source, device)

    def _hold(
        self, inference: InferenceModel | EnsembleModel, meta: dict[str, Any], source: str, device: str | torch.device
    ) -> None:
        self.meta = meta
        self.device = check_device(device)
        self.batch_size = BATCH_SIZE if self.device.type == "cpu" else ACCELERATOR_BATCH_SIZE
        self.source = source
        self.classes: list[str] = list(meta.get("classes") or [str(i) for i in range(10)])
        self.inference = inference.to(self.device)

    @classmethod
    def load(
        cls, path: str | Path | Sequence[str | Path] | None = None, device: str | torch.device = "cpu"
    ) -> Classifier:
        """Load a run folder, a checkpoint's ``.safetensors`` or ``.json``; None loads the bundled pretrained model;
        a list of them loads an ``Ensemble`` of them (a list of one: that model alone).
        ``device`` is where the forward passes run ("cpu", "cuda", "cuda:1", "mps", or "auto": the first of a
        CUDA GPU, Apple's MPS, the CPU); inputs and results stay NumPy arrays.

        Raises ``ConfigError`` for a device that is not one of those or that this machine lacks, before reading
        anything; ``CheckpointError`` for anything that is not a valid mnistkit checkpoint, and for ensemble members
        that do not predict the same classes.
        """
        device = check_device(device)
        if isinstance(path, (list, tuple)):
            members = [cls.load(checkpoint_path(member, in_list=True), device) for member in path]
            return members[0] if len(members) == 1 else Ensemble(members)
        if path is not None:
            path = checkpoint_path(path)
        net, meta = checkpoint.load_checkpoint(PRETRAINED_DIR if path is None else path)
        return cls._of(net, meta, "pretrained" if path is None else str(path), device)

    def single_model(self, what: str) -> InferenceModel:
        """The one network with its normalization; an ensemble raises ``CheckpointError``, naming ``what`` needed it."""
        if not isinstance(self.inference, InferenceModel):
            raise CheckpointError(f"{what} takes one model, not an ensemble; give one of its members")
        return self.inference

    @property
    def threshold(self) -> float | None:
        """Below this not-a-digit score an image is "not a digit"; None for a model that flags nothing, and for an
        ensemble (its members vote: see ``EnsembleModel``)."""
        return self.inference.not_a_digit_below if isinstance(self.inference, InferenceModel) else None

    def model_info(self) -> dict[str, Any]:
        """Model name, parameter count, test accuracy, classes and input contract, for reports and servers; valid
        Unicode (``fileio.valid_unicode``), as JSON needs: the paths in it may name files that are not UTF-8."""
        metrics = self.meta.get("metrics") or {}
        calibration = self.meta.get("calibration") or {}
        return fileio.valid_unicode(
            {
                "model": self.meta.get("model"),
                "model_options": self.meta.get("model_options", {}),
                "source": self.source,
                "parameters": count_parameters(self.inference),
                "test_accuracy": metrics.get("test_accuracy"),
                "classes": self.classes,
                "input": self.meta.get(
                    "input", {"channels": 1, "height": 28, "width": 28, "polarity": "white ink on black"}
                ),
                "tta": bool(self.meta.get("tta")),
                "temperature": float(calibration.get("temperature", 1.0)),
                "not_a_digit_below": self.threshold,
                "command": self.meta.get("command"),
            }
        )

    def predict_array(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class probabilities, float32 (N, classes), for images already in MNIST form.

        ``images``: a NumPy array or torch tensor shaped as one of ``MNIST_SHAPES`` ((28, 28), (N, 28, 28), (N, 1,
        28, 28), (N, 28, 28, 1), (784,) or (N, 784)), white ink on black, either uint8 (or any integer type) in
        0..255, float (bfloat16 too) in [0, 1], or bool (True is ink). No preprocessing is done;
        raises ``ImageError`` for anything else (image files go to ``predict``).
        """
        return self.probabilities_and_flags(images)[0]

    @torch.inference_mode()
    def probabilities_and_flags(self, images: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """``predict_array``'s probabilities, and bool (N,): which images are "not a digit".

        The not-a-digit score is the energy of the calibrated logits (their log-sum-exp, averaged over the
        test-time shifts): low where no class fits. An image is flagged when it is below the threshold chosen
        on held-out data (``calibrate.py``); a model without one flags nothing. An ensemble's members vote (see
        ``EnsembleModel``). A digit classifier that flags also flags several marks side by side
        (``calibrate.not_a_digit``), however well each of them fits a class.
        """
        images = checked_images(images)  # all of them, before any pass: a bad pixel anywhere stops the call
        probabilities, flags = [], []
        n = self.batch_size
        for i in range(0, len(images), n):
            # Converted a batch at a time: a float32 copy of the whole input would be 4 bytes a pixel (3 GB a
            # million images) on top of it.
            x = float_pixels(images[i : i + n])
            batch_probabilities, margin = self.inference.probabilities_and_margin(x.to(self.device))
            if not torch.isfinite(batch_probabilities).all():  # finite weights can still overflow float32 (1e38)
                raise CheckpointError(
                    f"{self.source}: the model answers NaN or infinite probabilities; its weights are damaged"
                )
            probabilities.append(batch_probabilities.cpu())
            if margin is None:
                flags.append(torch.zeros(len(batch_probabilities), dtype=torch.bool))
            else:
                flags.append(not_a_digit(margin < 0, x, self.classes))
        if not probabilities:
            return np.zeros((0, len(self.classes)), dtype=np.float32), np.zeros(0, dtype=bool)
        return torch.cat(probabilities).numpy(), torch.cat(flags).numpy()

    def predict(
        self, images: ImageInput | Sequence[ImageInput], top_k: int = 3, reject: bool = True
    ) -> Prediction | list[Prediction | FailedPrediction]:
        """Preprocess and classify one image or a list of them.

        Each image is a file path, a PIL image or a NumPy array (grayscale or RGB, any size, dark-on-light or
        light-on-dark); it is turned into MNIST form by ``preprocess.to_mnist``. One image gives a
        ``Prediction`` or raises the ``ImageError`` that stopped it. A list (or a stacked array of grayscale
        images, (N, H, W) or (N, H, W, C)) gives one result per image, in order: a ``Prediction``, or a
        ``FailedPrediction`` for an image that could not be used, so one bad file does not stop the others.
        With ``reject`` (and a calibrated model), a prediction the model finds no class for is marked
        ``not_a_digit`` (see ``probabilities_and_flags``); its ``digit`` is still the best guess.
        Raises ``ConfigError`` unless ``top_k`` is a whole number of at least 1 and ``reject`` True or False.
        """
        check_options(top_k, reject)
        single = not (isinstance(images, (list, tuple)) or is_stack(images))
        # A str is a Sequence too: the checks above, not the annotation, tell one image from several.
        items = [cast(ImageInput, images)] if single else list(cast(Sequence[ImageInput], images))
        results: list[Prediction | FailedPrediction | None] = [None] * len(items)
        ready: list[tuple[int, str, np.ndarray]] = []
        for i, item in enumerate(items):
            source = source_name(item, i)
            try:
                if isinstance(item, str) and not item:  # Path("") is the current folder: say what was given
                    raise ImageError("the image path is empty; pass an image file")
                ready.append((i, source, to_mnist(item)))
            except MnistkitError as exc:
                if single:
                    raise
                results[i] = FailedPrediction(source, exc)
        if ready:
            probabilities, flagged = self.probabilities_and_flags(np.stack([array for _, _, array in ready]))
            flagged &= reject
            for (i, source, array), probs, flag in zip(ready, probabilities, flagged):
                results[i] = self._prediction(source, array, probs, top_k, bool(flag))
        # Every slot is filled by now, and a single image's failure was raised above.
        return cast(Prediction, results[0]) if single else cast(list[Prediction | FailedPrediction], results)

    def _prediction(self, source: str, array: np.ndarray, probs: np.ndarray, top_k: int, flag: bool) -> Prediction:
        order = np.argsort(-probs, kind="stable")[:top_k]
        best = int(order[0])
        top = [(self.classes[k], float(probs[k])) for k in order]
        return Prediction(source, best, self.classes[best], float(probs[best]), top, probs, array, flag)

    def save_pretrained(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Save in the Hugging Face Hub's layout (config.json, model.safetensors, README.md model card), which
        ``huggingface_hub``'s ``PyTorchModelHubMixin`` also reads. An existing folder is replaced only with
        ``overwrite``."""
        from . import hub

        return hub.save_pretrained(self, folder, overwrite)

    @classmethod
    def from_pretrained(cls, dir_or_repo_id: str | Path, revision: str | None = None) -> Classifier:
        """Load a Hub model folder, or a Hub repo id through ``huggingface_hub`` (``pip install 'mnistkit[hub]'``),
        downloaded once into its cache. Raises ``CheckpointError`` for anything mnistkit cannot use."""
        from . import hub

        net, meta = hub.from_pretrained(dir_or_repo_id, revision)
        return cls._of(net, meta, str(dir_or_repo_id))


class Ensemble(Classifier):
    """Several models as one: the mean of their probabilities, each member with its own normalization, test-time
    augmentation and calibration (see ``EnsembleModel`` for its not-a-digit flag). Build it with
    ``Classifier.load([path, ...])``; ``members`` are the members' own ``Classifier``s."""

    def __init__(self, members: Sequence[Classifier]):
        if not members:
            raise CheckpointError("an ensemble needs at least one model")
        first = members[0]
        for member in members[1:]:
            if member.classes != first.classes:
                raise CheckpointError(
                    f"{member.source} and {first.source} predict different classes "
                    f"({class_mismatch(member.classes, first.classes)}); the members of an ensemble must agree on them"
                )
        _check_distinct(members)
        self.members = list(members)
        # What identifies the ensemble (corrections record it): its members' weights, in order.
        sha256 = hashlib.sha256(" ".join(str(m.meta.get("sha256")) for m in members).encode()).hexdigest()
        meta = {"model": "ensemble", "classes": first.classes, "sha256": sha256, "members": [m.meta for m in members]}
        inference = EnsembleModel([cast(InferenceModel, member.inference) for member in members])
        self._hold(inference, meta, ", ".join(member.source for member in members), first.device)

    def model_info(self) -> dict[str, Any]:
        """As a single model's, its parameters those of all members; each member's own under ``members``, and how many
        of them must flag an image "not a digit" under ``not_a_digit_votes`` (0: it flags nothing)."""
        members = [member.model_info() for member in self.members]
        tta = any(member["tta"] for member in members)
        votes = cast(EnsembleModel, self.inference).votes
        return {**super().model_info(), "tta": tta, "temperature": None, "not_a_digit_votes": votes, "members": members}


def _check_distinct(members: Sequence[Classifier]) -> None:
    """``CheckpointError`` for two members with the same weights (one path given twice, a run folder and its
    .safetensors, a copy): the mean would count that model twice, with no word of it."""
    seen: dict[str, Classifier] = {}
    for member in members:
        digest = member.meta.get("sha256")
        if not isinstance(digest, str):
            continue
        if digest in seen:
            raise CheckpointError(
                f"{seen[digest].source} and {member.source} are the same model (the same weights); give each member "
                "of an ensemble once"
            )
        seen[digest] = member


def check_options(top_k: object, reject: object) -> None:
    """``predict``'s options, refused before any image is read: a bool is no count, nor a string a flag."""
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ConfigError(f"top_k must be a whole number of at least 1, got {short(top_k)}", options=("top_k",))
    check_flag("reject", reject)


def checkpoint_path(path: object, in_list: bool = False) -> str | Path:
    """``path`` if it can name a checkpoint; ``CheckpointError`` if not (bytes, numbers, sets and dicts would
    otherwise reach ``Path`` as a raw TypeError, bytes even as a list of numbers). ``in_list``: an ensemble's member."""
    name = os.fspath(path) if isinstance(path, (str, os.PathLike)) else None
    if not isinstance(name, str):
        got = ("a list holding " if in_list else "") + type(path).__name__
        got += f" {short(path)}" if isinstance(path, (bytes, int, float)) else ""
        hint = "; decode bytes to a str first" if isinstance(name or path, bytes) else ""
        raise CheckpointError(f"Classifier.load takes a path (a str or Path) or a list of them, got {got}{hint}")
    if not name:  # Path("") is the current folder, whose "no checkpoint here" would not say what went wrong
        raise CheckpointError("the model path is empty; pass a run folder, a .safetensors file or its .json")
    return cast(str | Path, path)


def check_device(device: object) -> torch.device:
    """``device`` as a ``torch.device`` the forward passes can run on here; ``ConfigError`` for anything else, in
    place of torch's errors, which do not say what to pass (and a "meta" device, which holds no numbers, would load
    and fail only at the first prediction)."""
    from .train import resolve_device  # imported here: train imports this module (through evaluate)

    try:
        resolved = resolve_device(str(device)) if isinstance(device, (str, torch.device)) else None
    except RuntimeError:  # torch's words for a name it does not know list every backend it was built with
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda", "mps"):
        shown = short(str(device) if isinstance(device, torch.device) else device)
        raise ConfigError(
            f"device {shown}: not a device the model can run on; use cpu, cuda, cuda:N, mps or auto "
            f"(this machine has: {', '.join(available_devices())})",
            options=("device",),
        )
    if resolved.type != "cpu":
        resolve_device(resolved.type)  # a backend this machine lacks: train's message
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {resolved}: this machine has no such GPU; use one of: {', '.join(available_devices())}",
            options=("device",),
        )
    return resolved


def available_devices() -> list[str]:
    """The devices this machine can run the model on, as ``check_device`` takes them."""
    gpus = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return ["cpu", *gpus, *(["mps"] if torch.backends.mps.is_available() else [])]


def class_mismatch(classes: list[str], expected: list[str]) -> str:
    """Where two class lists first differ, in words: ``26 classes, not 10`` or ``class 0 is 'a', not '0'``."""
    if len(classes) != len(expected):
        return f"{len(classes)} classes, not {len(expected)}"
    i = next(i for i, (a, b) in enumerate(zip(classes, expected)) if a != b)
    return f"class {i} is {classes[i]!r}, not {expected[i]!r}"


def pixels(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Validate MNIST-form images and return float32 (N, 1, 28, 28) in [0, 1] (a new tensor, never the input)."""
    return float_pixels(checked_images(images))


def checked_images(images: object) -> np.ndarray | torch.Tensor:
    """Validated MNIST-form images, (N, 28, 28), not yet converted: a NumPy array (a view of the input where it is
    one), or a CPU tensor for the float types NumPy lacks (bfloat16). Raises ``ImageError`` naming what is wrong."""
    if isinstance(images, torch.Tensor):
        if images.layout != torch.strided or images.is_meta or images.is_nested:
            kind = "a meta" if images.is_meta else "a nested" if images.is_nested else f"a {images.layout}"
            raise ImageError(f"images: {kind} tensor holds no plain pixels; give a dense tensor of the pixels")
        try:
            a: np.ndarray | torch.Tensor = images.numpy(force=True)
        except TypeError:  # a dtype NumPy has no match for
            if not images.is_floating_point():
                raise ImageError(
                    f"images: pixels must be numbers (integers in 0..255 or floats in [0, 1]), got dtype {images.dtype}"
                ) from None
            a = images.detach().cpu()
    else:
        if isinstance(images, np.ndarray):
            images = plain_array(images, "images")
        elif isinstance(images, (list, tuple)):  # NumPy would stack masked items without their masks
            for item in images:
                if isinstance(item, np.ndarray):
                    plain_array(item, "images")
        try:
            a = np.asarray(images)
        except Exception as exc:
            if isinstance(exc, (ValueError, TypeError)) and isinstance(images, (list, tuple)):
                raise ImageError(  # ragged: images of different shapes, or a number beside an image
                    f"images: this {type(images).__name__} does not make one array: its items are not all the same "
                    "shape; give 28×28 images, each a (28, 28) array"
                ) from None
            # What hands its pixels over lazily: a PIL image closed, or of a truncated file, fails here.
            raise ImageError(f"images: cannot read the pixels ({exc})") from None
    given = tuple(a.shape)
    a = mnist_shaped(a)
    if a.ndim != 3 or a.shape[1:] != (28, 28):
        shapes = f"expected 28×28 images shaped {MNIST_SHAPES}"
        if isinstance(images, (np.ndarray, torch.Tensor)) or a.ndim:
            raise ImageError(f"{shapes}, got shape {given}")
        hint = "; predict() reads image files" if isinstance(images, (str, os.PathLike)) else ""
        raise ImageError(f"{shapes}, got {type(images).__name__} {short(images)}{hint}")
    if a.dtype == (torch.bool if isinstance(a, torch.Tensor) else np.bool_):
        return a  # a mask: True is ink, as white is in MNIST's form
    if isinstance(a, torch.Tensor):  # checked as float32 a batch at a time, not copied whole
        for i in range(0, len(a), BATCH_SIZE):
            check_pixels(a[i : i + BATCH_SIZE].float().numpy(), "images")
    else:  # at once: extremes (and for floats a bool mask), no float32 copy
        check_pixels(a, "images")
    return a


# The layouts MNIST-form images come in: one image, a batch with or without a channel axis (PyTorch's and Keras's
# order), and the flattened rows of MNIST's CSV and OpenML copies.
MNIST_SHAPES = "(28, 28), (N, 28, 28), (N, 1, 28, 28), (N, 28, 28, 1), or flattened: (784,) or (N, 784)"


def mnist_shaped(a: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """``a`` as (N, 28, 28) where it is in one of ``MNIST_SHAPES`` (a view, not a copy); otherwise as it was."""
    if a.ndim == 1 and a.shape[0] == FLAT_SIZE:
        return a.reshape(1, 28, 28)
    if a.ndim == 2 and a.shape[1] == FLAT_SIZE:
        return a.reshape(-1, 28, 28)
    if a.ndim == 2 or (a.ndim == 3 and a.shape[2] == 1):
        a = a[None]
    if a.ndim == 4 and a.shape[1] == 1:
        return a[:, 0]
    if a.ndim == 4 and a.shape[3] == 1:
        return a[..., 0]
    return a


def float_pixels(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``checked_images``'s images as float32 (N, 1, 28, 28) in [0, 1], a new tensor."""
    if isinstance(images, torch.Tensor):
        return images.float().unsqueeze(1)  # a float type NumPy lacks (or a mask); float() copies it
    x = torch.from_numpy(images.astype(np.float32))  # astype copies, even from float32
    return (x if images.dtype.kind in "fb" else x.div_(255.0)).unsqueeze(1)


def is_stack(images: object) -> bool:
    """Whether an array holds several images rather than one: 4-D, (N, H, W) whose last axis is not a colour
    axis (2 included: grey and alpha, as Pillow's "LA" images are, rather than N images 2 pixels wide),
    or (N, 784): flattened 28×28 images (a photo 784 pixels wide passes as (H, 784, 1))."""
    if not isinstance(images, np.ndarray):
        return False
    return (
        images.ndim == 4
        or (images.ndim == 3 and images.shape[2] not in (0, 1, 2, 3, 4))  # 0: one image with no channels
        or (images.ndim == 2 and images.shape[1] == FLAT_SIZE)
    )


def source_name(item: object, index: int) -> str:
    if isinstance(item, (str, Path)):
        return str(item)
    if isinstance(item, Image.Image):
        return getattr(item, "filename", "") or f"<image {index}>"
    return f"<array {index}>"


def find_images(args: Sequence[str | Path]) -> tuple[list[str], list[FailedPrediction]]:
    """Expand command-line arguments into image paths, in order: a folder gives the image files under it
    (by extension, sorted, hidden ones skipped); a glob pattern gives its matches (folders among them walked);
    anything else is kept as given, so a missing or unreadable file is reported when it is read.

    Returns (paths, failures): a folder without images or a pattern matching nothing is a failure.
    """
    found: list[str] = []
    failures: list[FailedPrediction] = []
    for arg in map(str, args):
        if "\\x" in arg:  # as mnistkit prints a name that is not UTF-8
            arg = str(fileio.recorded_path(arg))
        path = fileio.expanded(arg)
        if not arg:  # not the current folder, which Path("") is
            failures.append(
                FailedPrediction(arg, ImageError("the image path is empty; pass a file, folder or pattern"))
            )
        elif not path.exists() and glob.has_magic(arg):
            matches = _glob(path)
            if not matches:
                failures.append(FailedPrediction(arg, ImageError(f"{arg}: no file matches this pattern")))
            for match in matches:
                if Path(match).is_dir():
                    images, unread = _walk(Path(match))
                    found, failures = found + images, failures + unread
                else:
                    found.append(match)
        elif path.is_dir():
            images, unread = _walk(path)
            if not images and not unread:
                failures.append(FailedPrediction(arg, ImageError(f"{arg}: no image files in this folder")))
            found, failures = found + images, failures + unread
        else:
            found.append(arg)
    return found, failures


def _glob(pattern: Path) -> list[str]:
    """The paths matching ``pattern``, sorted, hidden ones skipped. ``**`` does not descend into symlinked folders
    (nor does bash's globstar): ``glob.glob`` follows them, so a link back up the tree would never end."""
    if "**" not in pattern.parts:
        return sorted(glob.glob(str(pattern)))
    first = next(i for i, part in enumerate(pattern.parts) if glob.has_magic(part))
    base = Path(*pattern.parts[:first])
    return sorted(
        str(match)
        for match in base.glob(str(Path(*pattern.parts[first:])))
        if not any(part.startswith(".") for part in match.relative_to(base).parts)
    )


def _walk(folder: Path) -> tuple[list[str], list[FailedPrediction]]:
    """The files under ``folder`` with an extension Pillow can open, sorted, hidden files and folders skipped; and
    a failure for each folder under it that cannot be read, whose images would otherwise be missed unsaid."""
    formats = image_formats()
    readable = {ext for ext, fmt in Image.registered_extensions().items() if fmt in formats}
    found: list[str] = []
    failures: list[FailedPrediction] = []

    def unreadable(exc: OSError) -> None:
        where = shown_path(exc.filename, exc.errno)  # a path too long for the system by its ends: one short line
        reason = f"cannot read this folder ({exc.strerror or exc}); its images were skipped"
        failures.append(FailedPrediction(where, ImageError(f"{where}: {reason}")))

    for root, folders, files in os.walk(folder, onerror=unreadable):  # symlinked folders not entered, as bash's **
        folders[:] = [name for name in folders if not name.startswith(".")]
        paths = (Path(root, name) for name in files if not name.startswith("."))
        found += [str(path) for path in paths if path.suffix.lower() in readable and path.is_file()]
    return sorted(found), failures
