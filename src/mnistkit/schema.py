"""What mnistkit accepts in the JSON files it reads: a model's ``model.json``, a run's ``config.json`` and a
resume checkpoint's ``state.json``. A file is read only if it is a regular file (a symlink is followed and the
file it ends at is checked) of at most ``MAX_JSON_BYTES``, UTF-8 JSON nested at most ``MAX_DEPTH`` deep;
its content is then checked field by field with pydantic, strictly (no coercion), numbers in range.

Any violation is one ``CheckpointError`` line naming the file and the field. A checked document is returned
as it was read (a dict), so its readers keep working on plain JSON; keys added by other mnistkit versions
are kept where they cannot hurt.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_type_hints

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from . import fileio
from .errors import CheckpointError, ConfigError, short

CheckpointFormat = Literal["mnistkit-checkpoint/1"]
ResumeFormat = Literal["mnistkit-resume/1"]
CHECKPOINT_FORMAT: str = get_args(CheckpointFormat)[0]
RESUME_FORMAT: str = get_args(ResumeFormat)[0]
MAX_JSON_BYTES = 8 << 20  # the largest real one, a resume state after 10,000 epochs, is about 2 MB
MAX_DEPTH = 32  # mnistkit writes at most 8 levels (an optimizer's state inside a resume state)
MAX_EPOCHS = 100_000
# The default of a key that may be left out but not set to null: pydantic does not validate defaults, so the
# field reads None when absent while a null in the file is refused. Typed Any, as no annotation says that.
ABSENT: Any = None


@dataclass(frozen=True)
class Document:
    """How messages about one kind of file begin, after its path."""

    unreadable: str  # the file cannot be read or is not JSON
    foreign: str  # JSON, but not this kind of file
    damaged: str  # this kind of file, with a field that is wrong


MODEL_META = Document("not a readable checkpoint description", "not an mnistkit checkpoint", "damaged checkpoint")
RUN_CONFIG = Document("cannot read the run's config", "not a run config", "invalid run config")
HUB_CONFIG = Document("not a readable model configuration", "not a model configuration", "damaged model description")
RESUME_STATE = Document(
    "not a readable resume checkpoint", "not an mnistkit resume checkpoint", "damaged resume checkpoint"
)


# --------------------------------------------------------------------------------------------------
# Reading


def load_json(path: str | Path, doc: Document) -> Any:
    """The JSON value in ``path``, read with the limits above; one CheckpointError line for anything else."""
    try:
        value = json.loads(fileio.read_regular(path, MAX_JSON_BYTES).decode("utf-8"))
    except OSError as exc:
        reason = exc.strerror or str(exc)
    except UnicodeDecodeError:
        reason = "not UTF-8 text"
    except RecursionError:
        reason = f"nested more than {MAX_DEPTH} levels deep"
    except ValueError as exc:  # not JSON, or an integer of more digits than Python converts
        reason = str(exc)
    else:
        if depth(value) <= MAX_DEPTH:
            return value
        reason = f"nested more than {MAX_DEPTH} levels deep"
    raise CheckpointError(f"{path}: {doc.unreadable} ({reason})")


def depth(value: Any) -> int:
    """How deeply ``value`` nests objects and arrays: 0 for a number or string, 1 for a flat list or object.
    Iterative, and stops counting past ``MAX_DEPTH``."""
    deepest, pending = 0, [(value, 1)]
    while pending and deepest <= MAX_DEPTH:
        item, level = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, level)
            pending.extend((child, level + 1) for child in children)
    return deepest


def read_model_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's ``model.json``, checked."""
    return _read(path, MODEL_META, ModelMeta, CHECKPOINT_FORMAT)


def check_hub_description(description: dict[str, Any], path: str | Path, fmt: str) -> None:
    """The ``mnistkit`` part of a Hub folder's ``config.json`` (``path``), checked as ``model.json`` is; its
    ``format``, where it gives one (a folder written by hand may not), must be ``fmt``."""
    found = description.get("format", fmt)
    _check_format(found, fmt, path, f"mnistkit.format is {short(found)}, not {fmt}; export the model again")
    try:
        ModelDescription.model_validate(description)
    except ValidationError as exc:
        raise CheckpointError(f"{path}: {HUB_CONFIG.damaged}: mnistkit.{first_problem(exc)}") from None


def read_resume_state(path: str | Path) -> dict[str, Any]:
    """A resume checkpoint's ``state.json``, checked."""
    return _read(path, RESUME_STATE, ResumeState, RESUME_FORMAT)


def read_config_record(path: str | Path) -> dict[str, Any]:
    """A run's ``config.json`` as a record of scalar options, checked loosely: runs saved by other mnistkit
    versions (other keys) still read. ``runs.read_config`` turns it into a validated ``TrainConfig``."""
    return _read(path, RUN_CONFIG, ConfigRecord, None)


def _read(path: str | Path, doc: Document, model: type[BaseModel], fmt: str | None) -> dict[str, Any]:
    value = load_json(path, doc)
    if not isinstance(value, dict):
        raise CheckpointError(f"{path}: {doc.foreign} (expected a JSON object)")
    if fmt is not None:
        _check_format(value.get("format"), fmt, path, f"{doc.foreign} (format {fmt} expected)")
    try:
        model.model_validate(value)
    except ValidationError as exc:
        raise CheckpointError(f"{path}: {doc.damaged}: {first_problem(exc)}") from None
    return value


def _check_format(found: Any, fmt: str, path: str | Path, foreign: str) -> None:
    """CheckpointError unless ``found`` is format ``fmt``: a later version of it says to upgrade, anything else is
    ``foreign``."""
    if found == fmt:
        return
    if _newer(found, fmt):
        raise CheckpointError(
            f"{path}: written by a newer mnistkit (format {short(found)}; this version reads {fmt}); "
            "upgrade mnistkit to read it"
        )
    raise CheckpointError(f"{path}: {foreign}")


def _newer(found: Any, fmt: str) -> bool:
    """Whether ``found`` names a later version of format ``fmt`` ("mnistkit-checkpoint/2" for ".../1")."""
    kind, _, version = fmt.rpartition("/")
    found_kind, _, found_version = found.rpartition("/") if isinstance(found, str) else ("", "", "")
    return found_kind == kind and found_version.isdigit() and int(found_version) > int(version)


def first_problem(exc: ValidationError) -> str:
    """pydantic's first error as 'field: what is wrong (got value)', on one line."""
    error = exc.errors(include_url=False)[0]
    field = ".".join(printable(str(part)) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] not in ("missing", "value_error"):  # a value error (a check across fields) says what it saw
        message += f" (got {short(error['input'])})"
    return f"{field}: {message}" if field else message


def printable(name: str) -> str:
    """A key as a message shows it: as it is if it reads plainly, else quoted with its escapes, shortened."""
    return name if name.isprintable() and 0 < len(name) <= 40 and name.strip() == name else short(name)


# --------------------------------------------------------------------------------------------------
# Options of a dataclass (TrainConfig), by their annotations


def typed_fields(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` checked against the field types of dataclass ``cls``, strictly (an int is a float, nothing
    else converts): ConfigError naming the option for the first value of the wrong type."""
    adapters = _adapters(cls)
    checked = {}
    for name, value in values.items():
        try:
            checked[name] = adapters[name].validate_python(_checkable(value), strict=True)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            raise ConfigError(f"{name}: {error['msg']} (got {short(value)})") from None
        if isinstance(value, str):
            checked[name] = value  # as given, not as checked: a path keeps the bytes that name its file
    return checked


def _checkable(value: Any) -> Any:
    """``value`` as pydantic can check it: a path's bytes that are not UTF-8 (see ``Text``) are checked as "?"."""
    if isinstance(value, str):
        return fileio.valid_utf8(value)
    return value


@cache
def _adapters(cls: type) -> dict[str, TypeAdapter]:
    hints = get_type_hints(cls)
    return {f.name: TypeAdapter(hints[f.name]) for f in dataclasses.fields(cls)}


# --------------------------------------------------------------------------------------------------
# The documents


class _Closed(BaseModel):
    """A part whose keys mnistkit fixes: an unknown key is an error."""

    model_config = ConfigDict(strict=True, extra="forbid")


class _Open(BaseModel):
    """A part other mnistkit versions may add keys to (JSON values, bounded by the file's size and depth).

    A key whose default is None but whose type is not optional may be left out, but is never null: its readers
    take it with ``meta.get(key, default)``.
    """

    model_config = ConfigDict(strict=True, extra="allow")


MAX_NAME = 200
Name = Annotated[str, Field(max_length=MAX_NAME)]
MAX_TEXT = 10_000


def _string(limit: int) -> AfterValidator:
    def check(value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"Input should be a valid string (got {short(value)})")
        if len(value) > limit:
            raise ValueError(f"String should have at most {limit} characters")
        return value

    return AfterValidator(check)


# A path, or a command holding paths: mnistkit writes them as valid Unicode (``fileio.valid_utf8``), but older
# versions wrote a file name's bytes that are not UTF-8 as the lone surrogates Python keeps them as, which
# pydantic's str refuses; their runs must still read.
Text = Annotated[Any, _string(MAX_TEXT)]
FileName = Annotated[Any, _string(MAX_NAME)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Count = Annotated[int, Field(ge=0, le=10**12)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def _scalar(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        raise ValueError(f"a string, number, true, false or null, not {short(value)}")
    return value


Scalar = Annotated[Any, AfterValidator(_scalar)]  # one check, where a union would report one error per member


# A standardized pixel is at most 1e6 from 0 (a training set's std is at least 1e-6: rounded to 6 decimals and not
# 0); pixels normalized far beyond that are no model's input, and overflow float32 (a tiny std or divisor).
MAX_NORMALIZED = 1e7


class Normalization(_Closed):
    mean: Finite
    std: Positive
    divisor: Positive

    @model_validator(mode="after")
    def _pixels_in_range(self) -> Normalization:
        reach = max(abs((pixel / self.divisor - self.mean) / self.std) for pixel in (0, 255))
        if not reach <= MAX_NORMALIZED:
            raise ValueError(
                f"(pixel / divisor - mean) / std reaches {reach:.3g} for pixels 0..255; it must stay within "
                f"±{MAX_NORMALIZED:,.0f}"
            )
        return self


Checksums = Annotated[dict[FileName, Name], Field(max_length=100)]  # file name -> its digest


class MnistMix(_Open):
    """MNIST images mixed into the training set (``train --mix-mnist``), and its test set where the data had none."""

    fraction: Annotated[float, Field(ge=0, lt=1)]
    seed: int
    train: Count
    test: Count = 0
    name: Text | None = None  # a folder's name, for a folder of IDX files
    source: Text | None = None
    checksums: Checksums = {}


class DatasetRecord(_Open):
    name: Text | None = None  # a folder's name, for a folder of IDX files
    source: Text | None = None
    checksums: Checksums = {}
    train: Count = 0  # MNIST images mixed in included
    val: Count = 0
    test: Count = 0
    mnist_mix: MnistMix | None = None


class InitRecord(_Closed):
    """The weights a fine-tuned run started from: ``pretrained`` or a checkpoint's path, and their SHA-256."""

    path: Text
    sha256: Sha256


class Metrics(_Open):
    epochs: Annotated[int, Field(ge=0, le=MAX_EPOCHS)] | None = None
    train_loss: Finite | None = None
    val_loss: Finite | None = None
    test_loss: Finite | None = None
    val_accuracy: Fraction | None = None
    test_accuracy: Fraction | None = None
    train_seconds: NonNegative | None = None
    load_seconds: NonNegative | None = None
    test_seconds: NonNegative | None = None

    @model_validator(mode="after")
    def _losses_with_accuracies(self) -> Metrics:
        for split in ("val", "test"):
            if getattr(self, f"{split}_loss") is not None and getattr(self, f"{split}_accuracy") is None:
                raise ValueError(f"{split}_accuracy: missing beside {split}_loss")
        return self


class ConfigRecord(_Open):
    """The options a run was trained with, as recorded: the types its readers rely on (evaluate: the data;
    compare: the epochs). ``TrainConfig.validate`` checks the ranges where a run is resumed, with the messages
    the command line gives."""

    __pydantic_extra__: dict[str, Scalar]
    dataset: Name = "mnist"
    data: Text | None = None
    val_size: int = 0
    epochs: int = 1
    init: Text | None = None
    init_sha256: Sha256 | None = None


class Calibration(_Open):
    """How far to trust the outputs: a softmax temperature and the energy below which an input is no digit."""

    # calibrate.fit_temperature searches 0.05 to 20; logits divided by a far smaller one overflow to NaN.
    temperature: Annotated[float, Field(ge=1e-3, le=1e3)]
    not_a_digit_below: Finite | None = None


def _readable(name: str) -> str:
    if not name.isprintable():
        raise ValueError(
            f"a class name must be printable text, without line breaks or control characters (got {short(name)})"
        )
    if not name.strip():
        raise ValueError(f"a class name must not be blank or only spaces (got {short(name)})")
    return name


# Printed as they are (one line per image, on a terminal): a line break or an escape sequence would forge output,
# and a blank name would show an answer as nothing.
ClassName = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_readable)]


def _distinct(names: list[str]) -> list[str]:
    repeated = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if repeated is not None:
        raise ValueError(f"two outputs are both named {short(repeated)}; each class needs a name of its own")
    return names


# A prediction names its class: two outputs of one name could not be told apart.
ClassNames = Annotated[list[ClassName], AfterValidator(_distinct)]


class ModelDescription(_Open):
    """What a model's metadata says about it besides its architecture and weights: how its input is scaled, what its
    outputs are called, how it was made. ``model.json`` holds it, and so does a Hub folder's ``config.json`` (in
    its ``mnistkit`` part)."""

    normalization: Normalization = ABSENT  # absent: data.Normalization's defaults, MNIST's
    classes: ClassNames = ABSENT  # one per output; absent: the digits
    tta: bool = False
    calibration: Calibration | None = None  # absent or null: temperature 1 and nothing flagged
    init: InitRecord | None = None  # absent or null: trained from fresh weights
    parameters: Count | None = None
    input: Annotated[dict[Name, Scalar], Field(max_length=16)] = ABSENT
    dataset: DatasetRecord = ABSENT
    metrics: Metrics = ABSENT
    config: ConfigRecord = ABSENT
    command: Text | None = None
    created: Name | None = None
    mnistkit_version: Name | None = None
    torch_version: Name | None = None
    python_version: Name | None = None


class ModelMeta(ModelDescription):
    """``model.json``: how to rebuild the network, where its weights are, and its ``ModelDescription``."""

    format: CheckpointFormat
    model: Name
    model_options: Annotated[dict[Name, int], Field(max_length=16)] = {}  # models.create_model checks the values
    weights: Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*\.safetensors$")] = "model.safetensors"
    sha256: Sha256

    @model_validator(mode="after")
    def _one_name_per_output(self) -> ModelMeta:
        outputs = self.model_options.get("num_classes", 10)  # every model's default
        if self.classes is not None and len(self.classes) != outputs:
            raise ValueError(f"classes: {len(self.classes)} names for a model with {outputs} outputs")
        return self


class EpochRecord(_Closed):
    """One entry of a run's history: ``train.EpochStats`` as saved (a test keeps the two in step)."""

    epoch: Annotated[int, Field(ge=1, le=MAX_EPOCHS)]
    train_loss: Finite
    val_loss: Finite | None
    val_accuracy: Fraction | None
    lr: NonNegative
    seconds: NonNegative


class LoopStateRecord(_Open):
    epoch: Annotated[int, Field(ge=1, le=MAX_EPOCHS + 1)]
    step: Annotated[int, Field(ge=0, le=10**9)]
    done: bool
    history: Annotated[list[EpochRecord], Field(max_length=MAX_EPOCHS)]
    epoch_seconds: NonNegative
    best_loss: Annotated[float, Field(ge=0)]  # infinite until a validation loss is seen
    epochs_without_gain: Annotated[int, Field(ge=0, le=MAX_EPOCHS)]

    @model_validator(mode="after")
    def _history_fits_epoch(self) -> LoopStateRecord:
        if [h.epoch for h in self.history] != list(range(1, self.epoch)):
            raise ValueError(f"history: its epochs are not 1 to {self.epoch - 1}, as epoch {self.epoch} needs")
        if self.done and self.step:
            raise ValueError(f"step: a finished run is at an epoch's start, not at step {self.step}")
        return self


class ResumeState(_Open):
    """``state.json``: where the run is, and the nested optimizer/scheduler/RNG state whose tensors live in the
    safetensors file it names (``resume.restore`` checks that they fit the run)."""

    format: ResumeFormat
    tensors: Annotated[str, Field(pattern=r"^state-\d+-\d+-[0-9a-f]{12}\.safetensors$")]
    sha256: Sha256
    progress: LoopStateRecord
    state: dict[str, Any]
    config_sha256: Sha256 | None = None  # of the run's options when saved (``resume.config_digest``)
