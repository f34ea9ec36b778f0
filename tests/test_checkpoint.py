"""Safe loading: a tampered, truncated or mismatched checkpoint (final weights or resumable state) gives one
clear CheckpointError line, from the library and from the command line; nothing is ever unpickled."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from helpers import run_cli, train_argv, write_mnist_npz
from PIL import Image
from safetensors.torch import save as save_safetensors

from mnistkit import checkpoint, resume
from mnistkit.cli import main
from mnistkit.errors import CheckpointError


@pytest.fixture
def run(tiny_run, tmp_path) -> Path:
    """A private copy of the finished tiny cnn run (width 4, 2 epochs), free to damage."""
    return Path(shutil.copytree(tiny_run, tmp_path / "run"))


def flip_byte(path: Path, offset: int = -10) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0xFF
    path.write_bytes(bytes(raw))


def edit_json(path: Path, change) -> None:
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def resign(json_path: Path, weights: Path) -> None:
    """Make the JSON's checksum match the (altered) weights, as a careful forger would."""
    import hashlib

    edit_json(json_path, lambda meta: meta.update(sha256=hashlib.sha256(weights.read_bytes()).hexdigest()))


def state_files(run: Path) -> tuple[Path, Path]:
    folder = run / resume.FOLDER
    return folder / resume.STATE_NAME, next(folder.glob("state-*.safetensors"))


def damage_weights_shape(run: Path) -> None:
    weights = run / "model.safetensors"
    state = {
        k: torch.zeros(3, 3) if k == "head.weight" else torch.zeros(1)
        for k in checkpoint.load_checkpoint(run)[0].state_dict()
    }
    weights.write_bytes(save_safetensors(state))
    resign(run / "model.json", weights)


FINAL_DAMAGE = {
    "a flipped byte in the weights": (lambda run: flip_byte(run / "model.safetensors"), "do not match the checksum"),
    "truncated weights": (
        lambda run: (run / "model.safetensors").write_bytes((run / "model.safetensors").read_bytes()[:100]),
        "do not match the checksum",
    ),
    "missing weights": (lambda run: (run / "model.safetensors").unlink(), "cannot read the weights"),
    "garbage re-signed as weights": (
        lambda run: (
            (run / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage"),
            resign(run / "model.json", run / "model.safetensors"),
        ),
        "not a valid safetensors file",
    ),
    "truncated metadata": (
        lambda run: (run / "model.json").write_text((run / "model.json").read_text()[:40]),
        "not a readable checkpoint description",
    ),
    "metadata of something else": (
        lambda run: (run / "model.json").write_text('{"hello": 1}'),
        "not an mnistkit checkpoint",
    ),
    "another model named": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(model="mlp", model_options={})),
        "weights do not fit the model",
    ),
    "another width": (
        lambda run: edit_json(run / "model.json", lambda m: m["model_options"].update(width=8)),
        "has shape (4, 1, 3, 3), the model needs (8, 1, 3, 3)",
    ),
    "an unknown model": (
        lambda run: edit_json(run / "model.json", lambda m: m.update(model="resnet9000")),
        "unknown model 'resnet9000'",
    ),
    "wrong shapes, re-signed": (damage_weights_shape, "weights do not fit the model"),
}


@pytest.mark.parametrize("damage", FINAL_DAMAGE, ids=list(FINAL_DAMAGE))
def test_a_damaged_final_checkpoint_is_one_clear_line(run, damage, capsys):
    do, message = FINAL_DAMAGE[damage]
    do(run)
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(")", r"\)")):
        checkpoint.load_checkpoint(run)
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(run), "--no-plots"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("mnistkit: error: ") and message in err, err


RESUME_DAMAGE = {
    "a flipped byte in the state tensors": (
        lambda run: flip_byte(state_files(run)[1]),
        "tensors do not match the checksum",
    ),
    "truncated state tensors": (
        lambda run: state_files(run)[1].write_bytes(state_files(run)[1].read_bytes()[:64]),
        "tensors do not match the checksum",
    ),
    "missing state tensors": (lambda run: state_files(run)[1].unlink(), "cannot read the checkpoint's tensors"),
    "truncated state.json": (
        lambda run: state_files(run)[0].write_text(state_files(run)[0].read_text()[:50]),
        "not a readable resume checkpoint",
    ),
    "state.json of another format": (
        lambda run: edit_json(state_files(run)[0], lambda m: m.update(format="other/9")),
        "not an mnistkit resume checkpoint",
    ),
    "an epoch that is not a number": (
        lambda run: edit_json(state_files(run)[0], lambda m: m["progress"].update(epoch="two")),
        "damaged resume checkpoint",
    ),
    "no resume folder": (lambda run: shutil.rmtree(run / resume.FOLDER), "no resumable checkpoint"),
}


@pytest.mark.parametrize("damage", RESUME_DAMAGE, ids=list(RESUME_DAMAGE))
def test_a_damaged_resume_checkpoint_is_one_clear_line(run, damage, capsys):
    do, message = RESUME_DAMAGE[damage]
    (run / "model.json").unlink()  # as if the run had stopped before its end, so it can be resumed
    do(run)
    with pytest.raises(CheckpointError, match=message):
        resume.load(run)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert len(err.strip().splitlines()) == 1 and message in err, err


def test_resuming_with_a_config_that_does_not_match_the_state_is_one_clear_line(run, capsys):
    (run / "model.json").unlink()
    edit_json(run / "config.json", lambda cfg: cfg.update(width=8))  # the saved weights have width 4
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "its config.json changed since the last checkpoint" in err
    # A checkpoint saved before they carried the options' digest: the weights themselves do not fit.
    edit_json(run / "resume" / "state.json", lambda state: state.pop("config_sha256"))
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--resume", str(run), "--quiet"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "weights do not fit the model" in err and "needs (8, 1, 3, 3)" in err


def test_loading_never_unpickles(run, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model, meta = checkpoint.load_checkpoint(run)
    state = resume.load(run)
    assert meta["model"] == "cnn" and state.done
    assert not any(name.endswith((".pt", ".pth", ".pkl", ".ckpt")) for name in map(str, run.rglob("*")))


@pytest.mark.parametrize(("name", "reader"), [("model.onnx", "ONNX runtimes"), ("model.pt2", "torch.export.load")])
def test_an_exported_file_given_as_a_checkpoint_says_what_reads_it(tmp_path, name, reader):
    (tmp_path / name).write_bytes(b"\x08\x07exported")
    with pytest.raises(CheckpointError, match=f"{name}: an exported model, for {reader}; mnistkit reads the run"):
        checkpoint.resolve(tmp_path / name)


def test_the_weights_of_a_hugging_face_folder_point_to_the_folder(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"the weights of a Hugging Face folder; pass the folder, {tmp_path}$"):
        checkpoint.resolve(tmp_path / "model.safetensors")


def strings_of(path: Path) -> list[str]:
    """Every string (keys included) in the JSON file at ``path``, which must be valid UTF-8."""
    found, pending = [], [json.loads(path.read_bytes().decode("utf-8"))]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            found += list(item)
            pending += list(item.values())
        elif isinstance(item, list):
            pending += item
        elif isinstance(item, str):
            found.append(item)
    return found


def test_runs_on_names_that_are_not_utf8_record_valid_unicode_and_load(mnist, tmp_path, capsys):
    # Linux names are bytes: Python keeps those that are not UTF-8 as lone surrogates, which JSON readers refuse.
    folder = tmp_path / os.fsdecode(b"caf\xe9")
    folder.mkdir()
    data = write_mnist_npz(folder / os.fsdecode(b"d\xe9.npz"), mnist, 300, 100)
    run, tuned = folder / os.fsdecode(b"run-\xe9"), tmp_path / "tuned"
    assert run_cli(capsys, *train_argv(data, run, "--quiet", epochs=1, val_size=50))[0] == 0
    assert run_cli(capsys, *train_argv(data, tuned, "--quiet", "--init", run, epochs=1, val_size=50))[0] == 0
    for path in (run / "model.json", run / "config.json", tuned / "model.json", tuned / "config.json"):
        strings = strings_of(path)
        assert all(text.encode("utf-8") for text in strings)  # none holds a surrogate
        assert f"{tmp_path}/caf\\xe9/d\\xe9.npz" in strings  # the data's path, its bytes shown
    meta = json.loads((tuned / "model.json").read_text())
    assert meta["dataset"]["checksums"] == {"d\\xe9.npz": meta["dataset"]["checksums"]["d\\xe9.npz"]}
    assert meta["init"]["path"].startswith(f"{tmp_path}/caf\\xe9/run-\\xe9/") and meta["command"].endswith("run-\\xe9")
    Image.fromarray(255 - mnist.test.images[0].numpy()).save(tmp_path / "seven.png")
    for argv in (
        ["predict", "--model", run, tmp_path / "seven.png"],
        ["evaluate", run, "--no-plots"],  # its data found again by the recorded path, its bytes restored
        ["inspect", run],
        ["export", run, "--format", "torchscript", "-o", tmp_path / "m.pt"],
    ):
        code, _, err = run_cli(capsys, *argv)
        assert code == 0 and "error" not in err, (argv, err)
