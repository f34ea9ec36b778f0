"""Every JSON file mnistkit reads (a model's model.json, a run's config.json, a resume checkpoint's state.json) is
checked before it is used: a tampered or garbled one is one CheckpointError line naming the file and the field,
exit status 2 from every command that reads it, never a traceback, a hang or an unbounded read. Weights must be
finite floating point even when their checksum is right. A property test mutates the files at random."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from mnistkit import checkpoint, compare, fileio, resume, runs, schema, summary
from mnistkit.cli import main
from mnistkit.errors import CheckpointError, MnistkitError
from mnistkit.inference import Classifier
from mnistkit.train import EpochStats


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    """A private copy of the finished tiny cnn run (width 4, 2 epochs), free to damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def resign(run: Path) -> None:
    """Make model.json's checksum match the weights as they now are, as a careful forger would."""
    digest = hashlib.sha256((run / "model.safetensors").read_bytes()).hexdigest()
    edit_json(run / "model.json", lambda meta: meta.update(sha256=digest))


def rewrite_weights(run: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    state = load_safetensors((run / "model.safetensors").read_bytes())
    change(state)
    (run / "model.safetensors").write_bytes(save_safetensors(state))
    resign(run)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def set_raw(path: Path, key: str, raw_json: str) -> None:
    """Replace the value of top-level ``key`` by raw JSON text (deep nesting that json.dumps cannot write)."""
    document = json.loads(path.read_text())
    document[key] = "__RAW__"
    path.write_text(json.dumps(document).replace('"__RAW__"', raw_json))


def one_line_exit_2(argv: list[str], capsys, message: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, (argv, out, err)
    assert err.count("\n") == 1 and err.startswith("mnistkit: error: ") and message in err, (argv, err)
    assert "Traceback" not in err
    return err


# --------------------------------------------------------------------------------------------------
# model.json: one test per kind of damage, through every command that reads a model

MODEL_DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "classes not a list": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(classes="0123456789")),
        "classes: Input should be a valid list",
    ),
    "classes of numbers": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(classes=list(range(10)))),
        "classes.0: Input should be a valid string",
    ),
    "three classes for ten outputs": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(classes=["a", "b", "c"])),
        "classes: 3 names for a model with 10 outputs",
    ),
    "classes null": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(classes=None)),
        "classes: Input should be a valid list",
    ),
    "a class name that would forge a line of output": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(classes=["7\nmnistkit: error: fake"] * 10)),
        "classes.0: a class name must be printable text, without line breaks or control characters",
    ),
    "a blank class name": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(classes=[" "] + [str(i) for i in range(1, 10)])),
        "classes.0: a class name must not be blank or only spaces (got ' ')",
    ),
    "two outputs of one name": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(classes=[str(i % 9) for i in range(10)])),
        "classes: two outputs are both named '0'; each class needs a name of its own",
    ),
    "a class name with a terminal escape sequence": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(classes=["\x1b]0;pwned\x07"] * 10)),
        "classes.0: a class name must be printable text",
    ),
    "std 0": (
        lambda run: edit_json(run / "model.json", lambda m: m["normalization"].update(std=0)),
        "normalization.std: Input should be greater than 0",
    ),
    "a NaN mean": (
        lambda run: edit_json(run / "model.json", lambda m: m["normalization"].update(mean=float("nan"))),
        "normalization.mean: Input should be a finite number",
    ),
    "a std so small that pixels overflow float32": (
        lambda run: edit_json(run / "model.json", lambda m: m["normalization"].update(std=1e-320)),
        "normalization: (pixel / divisor - mean) / std reaches inf for pixels 0..255; it must stay within ±10,000,000",
    ),
    "a divisor so small that pixels overflow float32": (
        lambda run: edit_json(run / "model.json", lambda m: m["normalization"].update(divisor=1e-300)),
        "normalization: (pixel / divisor - mean) / std reaches",
    ),
    "a temperature so small that the logits overflow": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(calibration={"temperature": 1e-300})),
        "calibration.temperature: Input should be greater than or equal to 0.001 (got 1e-300)",
    ),
    "std as text": (
        lambda run: edit_json(run / "model.json", lambda m: m["normalization"].update(std="0.3")),
        "normalization.std: Input should be a valid number",
    ),
    "model as a number": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(model=5)),
        "model: Input should be a valid string",
    ),
    "tta as text": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(tta="yes")),
        "tta: Input should be a valid boolean",
    ),
    "metrics as a list": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(metrics=[1, 2])),
        "metrics: Input should be a valid dictionary",
    ),
    "an accuracy of 3": (
        lambda run: edit_json(run / "model.json", lambda m: m["metrics"].update(test_accuracy=3)),
        "metrics.test_accuracy: Input should be less than or equal to 1",
    ),
    "width as text": (
        lambda run: edit_json(run / "model.json", lambda m: m["model_options"].update(width="4")),
        "model_options.width: Input should be a valid integer",
    ),
    "a negative width": (
        lambda run: edit_json(run / "model.json", lambda m: m["model_options"].update(width=-4)),
        "width must be a whole number from 1 to 1024, got -4",
    ),
    "a huge width": (
        lambda run: edit_json(run / "model.json", lambda m: m["model_options"].update(width=10**30)),
        "width must be a whole number from 1 to 1024",
    ),
    "a billion classes": (
        lambda run: edit_json(run / "model.json", lambda m: m["model_options"].update(num_classes=10**9)),
        "classes: 10 names for a model with 1000000000 outputs",
    ),
    "deeply nested": (lambda run: set_raw(run / "model.json", "dataset", nested(100_000)), "nested more than 32"),
    "nested 40 deep": (lambda run: set_raw(run / "model.json", "extra", nested(40)), "nested more than 32"),
    "9 MiB": (
        lambda run: (run / "model.json").write_text((run / "model.json").read_text() + " " * (9 << 20)),
        "more than the 8,388,608 allowed",
    ),
    "a number of 5000 digits": (
        lambda run: set_raw(run / "model.json", "parameters", "9" * 5000),
        "not a readable checkpoint description",
    ),
    "not UTF-8": (lambda run: (run / "model.json").write_bytes(b'{"format": "\xff"}'), "not UTF-8 text"),
    "a weights path out of the folder": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(weights="../model.safetensors")),
        "weights: String should match pattern",
    ),
    "a weights path to /dev/zero": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(weights="/dev/zero")),
        "weights: String should match pattern",
    ),
    "weights a symlink to /dev/zero": (
        lambda run: ((run / "model.safetensors").unlink(), (run / "model.safetensors").symlink_to("/dev/zero")),
        "not a regular file but a character device",
    ),
    "weights a FIFO": (
        lambda run: ((run / "model.safetensors").unlink(), os.mkfifo(run / "model.safetensors")),
        "not a regular file but a FIFO",
    ),
    "a checksum that is not one": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(sha256="x" * 64)),
        "sha256: String should match pattern",
    ),
    "NaN weights, re-signed": (
        lambda run: rewrite_weights(run, lambda s: s["head.weight"].fill_(float("nan"))),
        "the weights hold NaN or infinite values (in head.weight)",
    ),
    "infinite weights, re-signed": (
        lambda run: rewrite_weights(run, lambda s: s["features.0.2.running_var"].fill_(float("inf"))),
        "the weights hold NaN or infinite values (in features.0.2.running_var)",
    ),
    "float64 weights beyond float32's range, re-signed": (
        lambda run: rewrite_weights(run, lambda s: s.update({"head.weight": s["head.weight"].double() + 1e300})),
        "the weights hold NaN or infinite values (in head.weight)",
    ),
    "an init without its checksum": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(init={"path": "pretrained"})),
        "init.sha256: Field required",
    ),
    "an init checksum that is not one": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(init={"path": "pretrained", "sha256": "x"})),
        "init.sha256: String should match pattern",
    ),
    "all MNIST mixed in": (
        lambda run: edit_json(
            run / "model.json", lambda m: m["dataset"].update(mnist_mix={"fraction": 1.0, "seed": 0, "train": 9})
        ),
        "dataset.mnist_mix.fraction: Input should be less than 1",
    ),
    "integer weights, re-signed": (
        lambda run: rewrite_weights(run, lambda s: s.update({k: v.to(torch.int32) for k, v in s.items()})),
        "holds torch.int32, the model needs floating-point numbers",
    ),
}


@pytest.mark.parametrize("damage", MODEL_DAMAGE, ids=list(MODEL_DAMAGE))
def test_a_damaged_model_json_is_one_line_in_every_command(run, damage, tmp_path, capsys, monkeypatch):
    do, message = MODEL_DAMAGE[damage]
    do(run)
    with pytest.raises(CheckpointError) as error:
        checkpoint.load_checkpoint(run)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert str(error.value).startswith(str(run)), "the message names the file"
    image = tmp_path / "seven.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)

    def never_listen(*args):
        raise AssertionError("serve must refuse the model before it listens")

    monkeypatch.setattr("mnistkit.server.listen", never_listen)
    monkeypatch.chdir(tmp_path)
    for argv in (
        ["predict", "--model", str(run), str(image)],
        ["evaluate", str(run), "--no-plots"],
        ["inspect", str(run)],
        ["export", str(run), "--format", "torchscript", "-o", str(tmp_path / "m.pt")],
        ["serve", "--model", str(run), "--port", "0"],
    ):
        one_line_exit_2(argv, capsys, message)
    try:
        schema.read_model_meta(run / "model.json")
    except CheckpointError:  # compare reads model.json (for the test accuracy), not the weights
        one_line_exit_2(["compare", str(run), "--no-plot"], capsys, message)
    assert not (tmp_path / "m.pt").exists()


def test_a_run_on_data_at_a_path_that_is_not_utf8_reads_back(run):
    """Python keeps a path's bytes that are not UTF-8 as lone surrogates, and older versions' json.dumps wrote them
    so (this one writes them as valid Unicode); such a run must still load, with the path as it was."""
    data, name = os.fsdecode(b"digits-\xff/d\xe9.npz"), os.fsdecode(b"d\xe9.npz")
    edit_json(run / "config.json", lambda c: c.update(data=data))
    edit_json(
        run / "model.json",
        lambda m: (
            m.update(command=f"mnistkit train --data {data}"),
            m["config"].update(data=data),
            m["dataset"].update(source=data, checksums={name: "0" * 32}),
        ),
    )
    net, meta = checkpoint.load_checkpoint(run)
    assert meta["config"]["data"] == data and meta["dataset"]["checksums"] == {name: "0" * 32}
    assert runs.read_config(run).data == data
    assert Classifier.load(run).model_info()["command"] == "mnistkit train --data digits-\\xff/d\\xe9.npz"


def test_the_bundled_model_and_a_fresh_run_pass_the_schema(tiny_run):
    schema.read_model_meta(Path(checkpoint.__file__).parent / "pretrained" / "model.json")
    schema.read_model_meta(tiny_run / "model.json")
    schema.read_config_record(tiny_run / runs.CONFIG_NAME)
    schema.read_resume_state(tiny_run / resume.FOLDER / resume.STATE_NAME)


def test_a_checkpoint_saved_by_the_library_with_only_model_and_options_still_loads(tmp_path):
    from mnistkit.models import create_model

    checkpoint.save_checkpoint(tmp_path, create_model("mlp"), {"model": "mlp", "model_options": {}})
    assert Classifier.load(tmp_path).classes == [str(d) for d in range(10)]


def test_history_records_match_the_epoch_stats_the_training_loop_saves():
    saved = EpochStats(1, 0.5, 0.4, 0.9, 0.01, 2.0, batch_losses=[0.6, 0.4]).row()
    assert set(schema.EpochRecord.model_fields) == set(saved)


# --------------------------------------------------------------------------------------------------
# The resume state and config.json, through train --resume (and compare for the config)


def state_json(run: Path) -> Path:
    return run / resume.FOLDER / resume.STATE_NAME


def state_tensors(run: Path) -> Path:
    return next((run / resume.FOLDER).glob("state-*.safetensors"))


def edit_progress(run: Path, **changes) -> None:
    edit_json(state_json(run), lambda m: m["progress"].update(changes))


def resign_state(run: Path, change: Callable[[dict[str, torch.Tensor]], None]) -> None:
    tensors = load_safetensors(state_tensors(run).read_bytes())
    change(tensors)
    blob = save_safetensors(tensors)
    state_tensors(run).write_bytes(blob)
    edit_json(state_json(run), lambda m: m.update(sha256=hashlib.sha256(blob).hexdigest()))


RESUME_DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "epoch 0": (lambda run: edit_progress(run, epoch=0), "progress.epoch: Input should be greater than or equal to 1"),
    "epoch -5": (lambda run: edit_progress(run, epoch=-5), "progress.epoch: Input should be greater than or equal"),
    "epoch 10**12": (lambda run: edit_progress(run, epoch=10**12), "progress.epoch: Input should be less than"),
    "epoch as text": (lambda run: edit_progress(run, epoch="two"), "progress.epoch: Input should be a valid integer"),
    "an epoch its history does not reach": (
        lambda run: edit_progress(run, epoch=7),
        "progress: history: its epochs are not 1 to 6",
    ),
    "step -1": (lambda run: edit_progress(run, step=-1), "progress.step: Input should be greater than or equal to 0"),
    "step 10**15": (lambda run: edit_progress(run, step=10**15), "progress.step: Input should be less than"),
    "a step beyond the epoch": (
        lambda run: edit_progress(run, step=500, done=False),
        "step 500 does not fit an epoch of 8 batches",
    ),
    "history as text": (
        lambda run: edit_progress(run, history="junk"),
        "progress.history: Input should be a valid list",
    ),
    "history of numbers": (
        lambda run: edit_progress(run, history=[1, 2]),
        "progress.history.0: Input should be a valid dictionary",
    ),
    "history with a NaN loss": (
        lambda run: edit_json(state_json(run), lambda m: m["progress"]["history"][0].update(train_loss=float("nan"))),
        "progress.history.0.train_loss: Input should be a finite number",
    ),
    "history with an unknown key": (
        lambda run: edit_json(state_json(run), lambda m: m["progress"]["history"][0].update(colour="red")),
        "progress.history.0.colour: Extra inputs are not permitted",
    ),
    "done as text": (lambda run: edit_progress(run, done="yes"), "progress.done: Input should be a valid boolean"),
    "a NaN best loss": (
        lambda run: edit_progress(run, best_loss=float("nan")),
        "progress.best_loss: Input should be greater than or equal to 0",
    ),
    "no progress": (
        lambda run: edit_json(state_json(run), lambda m: m.pop("progress")),
        "progress: Field required",
    ),
    "deeply nested state": (lambda run: set_raw(state_json(run), "state", nested(50_000)), "nested more than 32"),
    "a tensors path out of the folder": (
        lambda run: edit_json(state_json(run), lambda m: m.update(tensors="../../model.safetensors")),
        "tensors: String should match pattern",
    ),
    "tensors a symlink to /dev/zero": (
        lambda run: (state_tensors(run).unlink(), state_tensors_link(run).symlink_to("/dev/zero")),
        "not a regular file but a character device",
    ),
    "state.json a FIFO": (
        lambda run: (state_json(run).unlink(), os.mkfifo(state_json(run))),
        "no resumable checkpoint",
    ),
    "NaN weights in the state, re-signed": (
        lambda run: resign_state(run, lambda t: t["state.model.head.weight"].fill_(float("nan"))),
        "the weights hold NaN or infinite values (in head.weight)",
    ),
}


def state_tensors_link(run: Path) -> Path:
    return run / resume.FOLDER / json.loads(state_json(run).read_text())["tensors"]


@pytest.mark.parametrize("damage", RESUME_DAMAGE, ids=list(RESUME_DAMAGE))
def test_a_damaged_resume_state_is_one_line(run, damage, capsys):
    (run / "model.json").unlink()  # as if the run had stopped before its end, so it can be resumed
    do, message = RESUME_DAMAGE[damage]
    do(run)
    one_line_exit_2(["train", "--resume", str(run), "--quiet"], capsys, message)


CONFIG_DAMAGE: dict[str, tuple[Callable[[Path], object], str]] = {
    "lr -1": (lambda run: edit_json(run / "config.json", lambda c: c.update(lr=-1)), "lr must be a positive number"),
    "lr as text": (
        lambda run: edit_json(run / "config.json", lambda c: c.update(lr="fast")),
        "lr: Input should be a valid number",
    ),
    "epochs 0": (lambda run: edit_json(run / "config.json", lambda c: c.update(epochs=0)), "epochs must be from 1"),
    "a seed of 2**70": (
        lambda run: edit_json(run / "config.json", lambda c: c.update(seed=2**70)),
        "seed must be from -2**63 to 2**64 - 1",
    ),
    "width 100000": (
        lambda run: edit_json(run / "config.json", lambda c: c.update(width=100_000)),
        "width must be a whole number from 1 to 1024",
    ),
    "an init checksum that is not one": (
        lambda run: edit_json(run / "config.json", lambda c: c.update(init="pretrained", init_sha256="ab")),
        "init_sha256: String should match pattern",
    ),
    "all MNIST mixed in": (
        lambda run: edit_json(run / "config.json", lambda c: c.update(mix_mnist=1.0)),
        "mix_mnist must be in [0, 1)",
    ),
    "a list for a value": (
        lambda run: edit_json(run / "config.json", lambda c: c.update(augment=["shift"])),
        "augment: a string, number, true, false or null, not a list of 1 items",
    ),
    "a list": (lambda run: (run / "config.json").write_text("[1, 2]"), "not a run config (expected a JSON object)"),
    "deeply nested": (lambda run: set_raw(run / "config.json", "data", nested(100_000)), "nested more than 32"),
    "a symlink to /dev/zero": (
        lambda run: ((run / "config.json").unlink(), (run / "config.json").symlink_to("/dev/zero")),
        "not a regular file but a character device",
    ),
}


@pytest.mark.parametrize("damage", CONFIG_DAMAGE, ids=list(CONFIG_DAMAGE))
def test_a_damaged_config_json_is_one_line(run, damage, capsys):
    (run / "model.json").unlink()
    do, message = CONFIG_DAMAGE[damage]
    do(run)
    err = one_line_exit_2(["train", "--resume", str(run), "--quiet"], capsys, message)
    assert f"{run / 'config.json'}: " in err  # the message names the file
    with pytest.raises(CheckpointError, match="config.json: "):
        runs.read_config(run)


@pytest.mark.parametrize("damage", ["a list", "deeply nested", "a symlink to /dev/zero", "a list for a value"])
def test_compare_reads_config_json_with_the_same_limits(run, damage, capsys):
    (run / "model.json").unlink()
    do, message = CONFIG_DAMAGE[damage]
    do(run)
    if damage == "a symlink to /dev/zero":  # compare looks for a regular config.json to tell a run folder
        message = "not a run folder (no config.json)"
    one_line_exit_2(["compare", str(run), "--no-plot"], capsys, message)


# --------------------------------------------------------------------------------------------------
# The bounded reader itself


def test_read_regular_refuses_fifos_devices_and_large_files_before_reading(tmp_path):
    os.mkfifo(tmp_path / "pipe")  # nothing ever writes to it: a blocking open would hang here
    (tmp_path / "zero").symlink_to("/dev/zero")
    (tmp_path / "big").write_bytes(bytes(101))
    (tmp_path / "ok").write_bytes(bytes(100))
    for name, reason in [("pipe", "a FIFO"), ("zero", "a character device"), ("big", "101 bytes, more than the 100")]:
        with pytest.raises(OSError) as error:
            fileio.read_regular(tmp_path / name, 100)
        assert reason in error.value.strerror
    with pytest.raises(IsADirectoryError):
        fileio.read_regular(tmp_path, 100)
    assert fileio.read_regular(tmp_path / "ok", 100) == bytes(100)


# --------------------------------------------------------------------------------------------------
# Property test: random mutations of each file load fine or give one CheckpointError line

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(["", "cnn", "mlp", "model.safetensors", "../x", "/dev/zero", "0" * 64])
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
MUTATIONS = ["replace", "delete", "insert", "nest", "truncate", "pad"]
FUZZ = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)


def paths_in(value, prefix=()) -> list[tuple]:
    """Every place in a JSON document: object keys and list indices, down to the leaves."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_in(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value[:3]):
            found += paths_in(child, (*prefix, index))
    return found


def mutate(text: str, data) -> str:
    """A random damage of a JSON document's text: a value replaced, a key removed or added, a value nested
    thousands deep, the text cut short, or padded past the size limit."""
    document = json.loads(text)
    kind = data.draw(st.sampled_from(MUTATIONS))
    if kind == "truncate":
        return text[: data.draw(st.integers(0, len(text)))]
    if kind == "pad":
        return text + " " * data.draw(st.sampled_from([1, schema.MAX_JSON_BYTES]))
    path = data.draw(st.sampled_from(paths_in(document)))
    *parents, last = path
    holder = document
    for step in parents:
        holder = holder[step]
    if kind == "delete":
        holder.pop(last)
        return json.dumps(document)
    if kind == "insert" and isinstance(holder, dict):
        holder[data.draw(st.text(max_size=8))] = data.draw(JSON_VALUES)
        return json.dumps(document)
    holder[last] = "__NESTED__" if kind == "nest" else data.draw(JSON_VALUES)
    return json.dumps(document).replace('"__NESTED__"', nested(data.draw(st.integers(1, 5000))))


def refused_in_one_line(read: Callable[[], object]) -> None:
    """``read`` may succeed or raise mnistkit's own error with a one-line message; anything else fails."""
    try:
        read()
    except MnistkitError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))


@FUZZ
@given(data=st.data())
def test_random_damage_to_model_json_loads_or_is_one_line(tiny_run, tiny_idx_session, data):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(shutil.copytree(tiny_run, Path(tmp) / "run"))
        (run / "model.json").write_text(mutate((run / "model.json").read_text(), data))

        def read_every_way():
            classifier = Classifier.load(run)
            classifier.model_info()
            classifier.predict_array(np.zeros((1, 28, 28), np.uint8))
            summary.inspect_checkpoint(run)
            compare.format_table([compare.read_run(run)])
            from mnistkit.evaluate import evaluate_checkpoint

            evaluate_checkpoint(run, "test", data=tiny_idx_session)

        refused_in_one_line(read_every_way)


@FUZZ
@given(data=st.data())
def test_random_damage_to_config_json_loads_or_is_one_line(tiny_run, data):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(shutil.copytree(tiny_run, Path(tmp) / "run"))
        (run / "config.json").write_text(mutate((run / "config.json").read_text(), data))
        refused_in_one_line(lambda: runs.read_config(run))
        refused_in_one_line(lambda: compare.to_dict([compare.read_run(run)]))


@settings(FUZZ, max_examples=25)
@given(data=st.data())
def test_random_damage_to_the_resume_state_resumes_or_is_one_line(tiny_run, capsys, data):
    """Through ``train --resume`` itself, so the state is restored into a real model, optimizer and schedule."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(shutil.copytree(tiny_run, Path(tmp) / "run"))
        (run / "model.json").unlink()
        state_json(run).write_text(mutate(state_json(run).read_text(), data))
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(["train", "--resume", str(run), "--quiet"])
        err = capsys.readouterr().err
        assert (exit_info.value.code, err) == (0, "") or (exit_info.value.code == 2 and err.count("\n") == 1), err


def test_files_of_a_newer_mnistkit_say_to_upgrade(tiny_run, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    meta = json.loads((run / "model.json").read_text())
    for found, said in (("mnistkit-checkpoint/2", "written by a newer mnistkit"), ("other/9", "not an mnistkit")):
        (run / "model.json").write_text(json.dumps({**meta, "format": found}))
        with pytest.raises(CheckpointError, match=said):
            schema.read_model_meta(run / "model.json")
