"""Hugging Face Hub model folders: written by mnistkit and read by huggingface_hub's PyTorchModelHubMixin, written
by the mixin and read by mnistkit, the model card, repo ids through the Hub's cache (offline), and bad folders."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from safetensors.torch import save_file

from mnistkit import hub
from mnistkit.catalog import CATALOG
from mnistkit.checkpoint import save_checkpoint
from mnistkit.cli import main
from mnistkit.errors import CheckpointError, ConfigError
from mnistkit.inference import Classifier
from mnistkit.models import CNN, MLP, LogReg, create_model

OPTIONS = {"logreg": {}, "mlp": {}, "cnn": {"width": 4, "stem_width": 3}}
MIXIN_CLASSES = {}
for _name, _base in (("logreg", LogReg), ("mlp", MLP), ("cnn", CNN)):
    # The class a user of the mixin writes: an mnistkit model plus PyTorchModelHubMixin, nothing else.
    MIXIN_CLASSES[_name] = type(f"Hub{_base.__name__}", (_base, PyTorchModelHubMixin), {})


@pytest.fixture(scope="module")
def pixels(mnist):
    return mnist.test.images[:16].numpy().astype(np.float32)[:, None] / 255.0


def make_checkpoint(folder: Path, name: str, **meta) -> Path:
    torch.manual_seed(0)
    folder.mkdir()
    save_checkpoint(
        folder, create_model(name, **OPTIONS[name]), {"model": name, "model_options": OPTIONS[name], **meta}
    )
    return folder


def probabilities_of(net: torch.nn.Module, pixels: np.ndarray, norm: dict) -> np.ndarray:
    """What the mixin's user computes: normalize by config.json's numbers, run the bare network, softmax."""
    x = (torch.from_numpy(pixels) * 255.0 / norm["divisor"] - norm["mean"]) / norm["std"]
    with torch.no_grad():
        return net.eval()(x).softmax(1).numpy()


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_the_mixin_loads_what_mnistkit_saves(tmp_path, pixels, name):
    norm = {"mean": 0.2, "std": 0.4, "divisor": 255.0}
    classifier = Classifier.load(make_checkpoint(tmp_path / "run", name, normalization=norm))
    folder = classifier.save_pretrained(tmp_path / "hf")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == name and config["num_classes"] == 10
    assert {k: config[k] for k in OPTIONS[name]} == OPTIONS[name]  # constructor options at the top level
    assert config["mnistkit"]["normalization"] == norm
    assert config["mnistkit"]["classes"] == [str(d) for d in range(10)]

    net = MIXIN_CLASSES[name].from_pretrained(folder, strict=True)
    # The mixin's user normalizes in another order than mnistkit's fused multiply-subtract: rounding differs.
    np.testing.assert_allclose(probabilities_of(net, pixels, norm), classifier.predict_array(pixels), atol=1e-5)


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_mnistkit_loads_what_the_mixin_saves(tmp_path, pixels, name):
    torch.manual_seed(1)
    net = MIXIN_CLASSES[name](**OPTIONS[name]).eval()
    net.save_pretrained(tmp_path / "mixin")
    config = json.loads((tmp_path / "mixin" / "config.json").read_text())
    assert "architecture" not in config  # recognised by its tensor names

    loaded = Classifier.from_pretrained(tmp_path / "mixin")
    assert loaded.meta["model"] == name and loaded.classes == [str(d) for d in range(10)]
    default_norm = {"mean": 0.1307, "std": 0.3081, "divisor": 255.0}  # mnistkit's MNIST normalization
    np.testing.assert_allclose(loaded.predict_array(pixels), probabilities_of(net, pixels, default_norm), atol=1e-5)
    np.testing.assert_allclose(Classifier.load(tmp_path / "mixin").predict_array(pixels), loaded.predict_array(pixels))


def test_a_round_trip_keeps_classes_normalization_and_tta(tmp_path, pixels):
    fashion = list(CATALOG["fashion-mnist"].classes)
    dataset = {"name": "fashion-mnist", "train": 50_000, "val": 10_000, "test": 10_000}
    source = make_checkpoint(
        tmp_path / "run",
        "cnn",
        classes=fashion,
        tta=True,
        dataset=dataset,
        normalization={"mean": 0.3, "std": 0.35, "divisor": 255.0},
    )
    original = Classifier.load(source)
    again = Classifier.from_pretrained(original.save_pretrained(tmp_path / "hf"))
    assert again.classes == fashion and again.inference.tta is True
    assert again.meta["normalization"] == {"mean": 0.3, "std": 0.35, "divisor": 255.0}
    assert again.meta["model_options"] == {
        "width": 4,
        "stem_width": 3,
        "stem_stride": 1,
        "block2_stride": 1,
        "crop": 0,
        "num_classes": 10,
    }
    np.testing.assert_allclose(again.predict_array(pixels), original.predict_array(pixels), atol=1e-6)
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "Fashion-MNIST" in card and "Ankle boot" in card and "MIT, by Zalando Research" in card


def test_the_model_card_has_the_hubs_front_matter_and_what_users_need(tmp_path):
    folder = Classifier.load().save_pretrained(tmp_path / "pretrained")
    text = (folder / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    data = ModelCard.load(folder / "README.md").data.to_dict()  # huggingface_hub's own parser
    assert front == data
    assert data["license"] == "mit" and data["library_name"] == "mnistkit"
    assert data["pipeline_tag"] == "image-classification" and data["datasets"] == ["ylecun/mnist"]
    result = data["model-index"][0]["results"][0]
    meta = Classifier.load().meta
    assert result["metrics"][0] == {
        "type": "accuracy",
        "value": round(meta["metrics"]["test_accuracy"], 6),
        "name": "Test accuracy",
    }
    for needed in ("## Model", "## Data", "## Metrics", "## Intended use and limits", "## Licence"):
        assert needed in text
    parameters = Classifier.load().model_info()["parameters"]
    assert meta["command"] in text and "CC BY-SA 3.0" in text and f"{parameters:,} parameters" in text
    assert "class Net(CNN, PyTorchModelHubMixin)" in text


def test_the_cards_recipe_gives_mnistkits_probabilities_for_a_calibrated_model(tmp_path, pixels):
    # The bundled model is calibrated (a temperature of about 0.42): a plain softmax of its logits is far from
    # mnistkit's probabilities; the card's recipe, softmax(logits / temperature), is mnistkit's.
    classifier = Classifier.load()
    folder = classifier.save_pretrained(tmp_path / "pretrained")
    config = json.loads((folder / "config.json").read_text())
    temperature = config["mnistkit"]["calibration"]["temperature"]
    assert temperature != 1 and f"`softmax(logits / {temperature:.4g})`" in (folder / "README.md").read_text()
    net = MIXIN_CLASSES["cnn"].from_pretrained(folder, strict=True)
    norm = config["mnistkit"]["normalization"]
    x = (torch.from_numpy(pixels) * 255.0 / norm["divisor"] - norm["mean"]) / norm["std"]
    with torch.no_grad():
        logits = net.eval()(x)
    assert not config["mnistkit"]["tta"]  # one pass, as the card's user makes it
    np.testing.assert_allclose((logits / temperature).softmax(1).numpy(), classifier.predict_array(pixels), atol=1e-5)


def test_a_hub_folder_names_the_home_folder_as_a_tilde(tmp_path, monkeypatch):
    # A folder made to be published must not carry the user's name in its paths and command.
    home = tmp_path / "home" / "ana"
    monkeypatch.setenv("HOME", str(home))
    data = f"{home}/.local/share/mnistkit/feedback.sqlite"
    meta = {"config": {"data": data}, "command": f"mnistkit train --data {data} --out {home}/runs/mine"}
    folder = Classifier.load(make_checkpoint(tmp_path / "run", "mlp", **meta)).save_pretrained(tmp_path / "hf")
    text = (folder / "config.json").read_text() + (folder / "README.md").read_text()
    assert str(home) not in text
    config = json.loads((folder / "config.json").read_text())["mnistkit"]
    assert config["config"]["data"] == "~/.local/share/mnistkit/feedback.sqlite"
    assert config["command"] == "mnistkit train --data ~/.local/share/mnistkit/feedback.sqlite --out ~/runs/mine"


def test_hub_folders_work_wherever_checkpoints_do(tmp_path, tiny_run, capsys):
    out = tmp_path / "hf"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_run), "--format", "hf", "-o", str(out)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    assert f"wrote {out} (hf" in captured.out and "1,000 test images" in captured.out
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(out)])
    assert exit_info.value.code == 0 and "cnn" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(out), "--format", "onnx"])  # a Hub folder as the source of another export
    assert exit_info.value.code == 0 and (out / "model.onnx").is_file()


def test_an_existing_folder_is_replaced_only_when_asked(tmp_path, tiny_run):
    classifier = Classifier.load(tiny_run)
    folder = classifier.save_pretrained(tmp_path / "hf")
    (folder / "README.md").write_text("an earlier card")
    with pytest.raises(CheckpointError, match="already exists; pass overwrite=True"):
        classifier.save_pretrained(folder)
    assert (folder / "README.md").read_text() == "an earlier card"

    classifier.save_pretrained(folder, overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert (folder / "README.md").read_text().startswith("---")
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary or old folder left beside it
    (tmp_path / "empty").mkdir()
    assert (classifier.save_pretrained(tmp_path / "empty") / "config.json").is_file()  # an empty folder is filled


@pytest.mark.parametrize("overwrite, given", [("no", "str 'no'"), (1, "int 1"), (None, "None")])
def test_overwrite_must_be_true_or_false(tmp_path, overwrite, given):
    classifier = Classifier.load()
    folder = classifier.save_pretrained(tmp_path / "hf")
    (folder / "README.md").write_text("an earlier card")
    with pytest.raises(ConfigError, match=re.escape(f"overwrite must be True or False, got {given}")) as caught:
        classifier.save_pretrained(folder, overwrite=overwrite)
    assert caught.value.options == ("overwrite",)
    assert (folder / "README.md").read_text() == "an earlier card"  # "no" is no yes
    classifier.save_pretrained(folder, overwrite=np.True_)
    assert (folder / "README.md").read_text().startswith("---")


def test_local_files_only_must_be_true_or_false(tmp_path):
    folder = Classifier.load().save_pretrained(tmp_path / "hf")
    with pytest.raises(ConfigError, match=re.escape("local_files_only must be True or False, got str 'yes'")):
        hub.from_pretrained(folder, local_files_only="yes")  # refused, though a local folder would not use it
    assert hub.from_pretrained(folder, local_files_only=np.False_)[1]["model"] == "cnn"


def test_a_folder_holding_more_than_a_hub_folder_is_never_replaced(tmp_path, tiny_run, capsys):
    classifier = Classifier.load(tiny_run)
    folder = tmp_path / "proj"
    (folder / "sub").mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    (folder / "config.json").write_text("{}")
    for overwrite in (False, True):
        with pytest.raises(CheckpointError, match=r"proj: holds notes.txt, sub/; overwrite=True replaces only an"):
            classifier.save_pretrained(folder, overwrite=overwrite)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_run), "--format", "hf", "-o", str(folder), "--overwrite"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert "holds notes.txt, sub/; --overwrite replaces only an earlier Hugging Face model folder" in err
    assert err.rstrip().endswith("choose another --out")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "notes.txt", "sub"]
    assert (folder / "config.json").read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["proj"]


def test_a_repo_id_is_read_through_the_hub_cache(tmp_path, pixels):
    # The Hub cache's layout, as huggingface_hub leaves it after a download; nothing touches the network.
    repo = tmp_path / "cache" / "models--someone--mnist-cnn"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    Classifier.load().save_pretrained(repo / "snapshots" / commit)
    net, meta = hub.from_pretrained("someone/mnist-cnn", cache_dir=tmp_path / "cache", local_files_only=True)
    assert meta["model"] == "cnn"
    np.testing.assert_allclose(
        Classifier(net, meta, "hub").predict_array(pixels), Classifier.load().predict_array(pixels), atol=1e-6
    )
    with pytest.raises(CheckpointError, match=r"^someone/other: no such folder, and the Hugging Face Hub could not"):
        hub.from_pretrained("someone/other", cache_dir=tmp_path / "cache", local_files_only=True)


def test_a_repo_id_without_huggingface_hub_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(CheckpointError, match=r"pip install 'mnistkit\[hub\]'") as info:
        Classifier.from_pretrained("someone/mnist-cnn")
    assert "\n" not in str(info.value)


def broken(tmp_path: Path, change) -> Path:
    folder = Classifier.load(make_checkpoint(tmp_path / "run", "cnn")).save_pretrained(tmp_path / "hf")
    config = json.loads((folder / "config.json").read_text())
    change(folder, config)
    if (folder / "config.json").exists():
        (folder / "config.json").write_text(json.dumps(config))
    return folder


def set_keys(**values):
    return lambda folder, config: config.update(values)


@pytest.mark.parametrize(
    "change, message",
    [
        (set_keys(architecture="resnet18"), r'config.json: describes a "resnet18" model; mnistkit reads logreg'),
        (
            lambda folder, config: (config.pop("architecture"), config.update(model_type="vit")),
            r'describes a "vit" model',
        ),
        (lambda folder, config: (folder / "model.safetensors").unlink(), r"hf: no model.safetensors here"),
        (lambda folder, config: (folder / "config.json").unlink(), r"hf: no config.json here"),
        (set_keys(width=8), r"model.safetensors: weights do not fit the model \(features.1.0.weight has shape \(8, "),
        (set_keys(num_classes=7), r"weights do not fit the model"),
        (lambda folder, config: (folder / "model.safetensors").write_bytes(b"junk"), r"not a valid safetensors file"),
        (
            lambda folder, config: (
                config.pop("architecture"),
                save_file({"encoder.weight": torch.zeros(2)}, str(folder / "model.safetensors")),
            ),
            r"the tensors \(encoder.weight, \.\.\.\) fit none of mnistkit's models",
        ),
        (lambda folder, config: config["mnistkit"].update(classes=["a", "b"]), r"must list 10 class names"),
        (
            lambda folder, config: config["mnistkit"].update(normalization={"mean": "x"}),
            r"config.json: damaged model description: mnistkit.normalization.mean: Input should be a valid number",
        ),
        (
            lambda folder, config: config["mnistkit"]["normalization"].update(mean=float("nan")),
            r"mnistkit.normalization.mean: Input should be a finite number \(got nan\)",
        ),
        (
            lambda folder, config: config["mnistkit"].update(calibration={"temperature": "cold"}),
            r"mnistkit.calibration.temperature: Input should be a valid number \(got 'cold'\)",
        ),
        (
            lambda folder, config: ((folder / "model.safetensors").unlink(), os.mkfifo(folder / "model.safetensors")),
            r"model.safetensors: cannot read the weights \(not a regular file but a FIFO\)",
        ),
        (
            lambda folder, config: (
                (folder / "config.json").unlink(),
                (folder / "config.json").symlink_to("/dev/zero"),
            ),
            r"config.json: not a readable model configuration \(not a regular file but a character device\)",
        ),
        (
            set_keys(width=-1),
            r"config.json: invalid options for model 'cnn' \(width must be a whole number from 1 to 1024",
        ),
        (set_keys(model="cnn", epochs=3), r"hf: an mnistkit run folder without its model.json"),
        (
            lambda folder, config: config["mnistkit"].update(format="x"),
            r"config.json: mnistkit.format is 'x', not mnistkit-hub/1; export the model again",
        ),
        (
            lambda folder, config: config["mnistkit"].update(format="mnistkit-hub/2"),
            r"written by a newer mnistkit \(format 'mnistkit-hub/2'; this version reads mnistkit-hub/1\)",
        ),
        (
            set_keys(mnistkit=5),
            r'config.json: its "mnistkit" entry must be an object \(normalization, classes, ...\), got int',
        ),
    ],
)
def test_bad_hub_folders_are_one_clear_line(tmp_path, capsys, change, message):
    folder = broken(tmp_path, change)
    with pytest.raises(CheckpointError, match=message) as info:
        Classifier.load(folder)
    assert "\n" not in str(info.value)
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(folder)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("mnistkit: error: ") and err.count("\n") == 1


def test_a_hub_folder_that_is_not_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match="no such folder; pass a Hugging Face model folder"):
        Classifier.from_pretrained(str(tmp_path / "missing folder"))  # not a repo id: it has a space
