"""mnistkit inspect: architecture, named parameters with shapes and counts, total, training metadata."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import run_cli

from mnistkit.errors import CheckpointError, ConfigError
from mnistkit.inference import PRETRAINED_DIR
from mnistkit.models import count_parameters, create_model
from mnistkit.summary import format_parameters, inspect_checkpoint, inspect_model, parameter_table


def test_parameter_table_lists_every_named_parameter():
    model = create_model("cnn", width=8)
    rows = parameter_table(model)
    assert [name for name, _, _ in rows] == [name for name, _ in model.named_parameters()]
    for (_, shape, count), (_, p) in zip(rows, model.named_parameters()):
        assert shape == tuple(p.shape) and count == p.numel()


def test_registry_model_summary_shows_print_net_and_each_parameter():
    model = create_model("mlp")
    text = inspect_model("mlp")
    assert str(model) in text  # exactly what print(net) shows
    for name, p in model.named_parameters():
        line = next(line for line in text.splitlines() if line.startswith(name + " "))
        assert "×".join(map(str, p.shape)) in line and f"{p.numel():,}" in line
    total_line = next(line for line in text.splitlines() if line.startswith("total"))
    assert total_line.split()[-1] == f"{count_parameters(model):,}" == "136,074"  # the tutorial's Mnist_NN
    assert "training" not in text.splitlines()  # an untrained model has no training record


def test_buffers_are_counted_apart_from_parameters():
    text = format_parameters(create_model("cnn", width=4))
    assert "buffer values" in text  # BatchNorm running statistics are not parameters
    assert "buffer values" not in format_parameters(create_model("logreg"))


def test_checkpoint_summary_includes_training_metadata(tiny_run):
    meta = json.loads((tiny_run / "model.json").read_text())
    text = inspect_checkpoint(tiny_run)
    assert str(tiny_run) in text.splitlines()[0]
    assert f"{meta['metrics']['test_accuracy']:.2%}" in text
    assert f"{meta['dataset']['train']:,} train" in text
    assert meta["sha256"] in text
    assert f"{meta['parameters']:,}" in text


def test_pretrained_summary_records_the_command_that_made_it():
    meta = json.loads((PRETRAINED_DIR / "model.json").read_text())
    text = inspect_checkpoint(None)
    assert "bundled pretrained model" in text.splitlines()[0]
    assert any(line.startswith("command") and line.endswith(meta["command"]) for line in text.splitlines())
    assert meta["command"].startswith("mnistkit train")


def test_cli_inspect_prints_summary(capsys, tiny_run):
    code, out, _ = run_cli(capsys, "inspect", "--model", "cnn", "--width", "4")
    assert code == 0 and str(create_model("cnn", width=4)) in out
    code, out, _ = run_cli(capsys, "inspect", "--model", "cnn", "--width", "8", "--stem-width", "4")
    assert code == 0 and str(create_model("cnn", width=8, stem_width=4)) in out
    code, out, _ = run_cli(capsys, "inspect", str(tiny_run))
    assert code == 0 and "test loss / accuracy" in out


def test_inspect_shows_each_fact_on_one_line_whatever_model_json_holds(capsys, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "model.json").read_text())
    meta["command"] = "mnistkit train\nweights sha256  0000 (verified)"
    (run / "model.json").write_text(json.dumps(meta))
    code, out, _ = run_cli(capsys, "inspect", str(run))
    lines = out.splitlines()
    assert code == 0 and any(
        line.startswith("command ") and line.endswith("train\\x0aweights sha256  0000 (verified)") for line in lines
    )
    assert not any(line.startswith("weights sha256  0000") for line in lines)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "no/such/run"], "no checkpoint here"),
        (["inspect", "--model", "resnet"], "unknown model 'resnet'"),
        (
            ["inspect", "--width", "8"],
            "--width, --stem-width, --stem-stride, --block2-stride and --crop apply to --model",
        ),
        (
            ["inspect", "--stem-width", "8"],
            "--width, --stem-width, --stem-stride, --block2-stride and --crop apply to --model",
        ),
        (["inspect", "somewhere", "--model", "cnn"], "not both"),
    ],
)
def test_cli_inspect_errors_are_one_line(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code != 0 and out == ""
    assert err.startswith("mnistkit: error: ") and message in err and err.count("\n") == 1


def test_library_errors_are_typed(tmp_path):
    with pytest.raises(CheckpointError):
        inspect_checkpoint(tmp_path)
    with pytest.raises(ConfigError):
        inspect_model("cnn", depth=3)
