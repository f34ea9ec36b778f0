"""mnistkit export: ONNX (through onnxruntime) and TorchScript, verified parity, dynamic batch, atomic output."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from mnistkit import export
from mnistkit.checkpoint import save_checkpoint
from mnistkit.cli import main
from mnistkit.export import ExportError, export_checkpoint
from mnistkit.inference import Classifier
from mnistkit.models import create_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


def onnx_probabilities(path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"pixels": x})[0]


@pytest.fixture(scope="module")
def pixels_of(mnist):
    """Real test digits as the exported graphs take them: float32 (N, 1, 28, 28) in [0, 1]."""
    return lambda n: mnist.test.images[:n].numpy().astype(np.float32)[:, None] / 255.0


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_matches_pytorch_at_any_batch_size(tmp_path, tiny_run, pixels_of, fmt):
    out = tmp_path / f"model.{fmt}"
    result = export_checkpoint(tiny_run, fmt, out)
    assert result.path == out and out.is_file()
    assert result.images == 1000 and result.max_abs_diff <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left behind

    # Batch sizes the export never saw, against the library's own predictions.
    expected = Classifier.load(tiny_run).predict_array(pixels_of(13))
    for n in (1, 5, 13):
        x = pixels_of(n)
        got = onnx_probabilities(out, x) if fmt == "onnx" else torch.jit.load(str(out))(torch.from_numpy(x)).numpy()
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, expected[:n], atol=1e-5)


@pytest.mark.parametrize("name", ["logreg", "mlp"])
def test_flat_models_keep_a_dynamic_batch(tmp_path, pixels_of, name):
    # Their forward flattens with len(x): a plain trace would freeze the batch size into the graph.
    torch.manual_seed(0)
    save_checkpoint(tmp_path, create_model(name), {"model": name, "model_options": {}})
    out = tmp_path / "flat.onnx"
    assert export_checkpoint(tmp_path, "onnx", out).max_abs_diff <= 1e-4
    assert onnx_probabilities(out, pixels_of(3)).shape == (3, 10)


def test_onnx_file_describes_its_contract(tmp_path, tiny_run):
    out = export_checkpoint(tiny_run, "onnx", tmp_path / "m.onnx").path
    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["model"] == "cnn" and json.loads(props["classes"]) == [str(d) for d in range(10)]
    assert "white ink on black" in props["input"]
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"  # symbolic, not a fixed number


def test_test_time_augmentation_is_exported_too(tmp_path, pixels_of):
    torch.manual_seed(0)
    save_checkpoint(
        tmp_path, create_model("cnn", width=4), {"model": "cnn", "model_options": {"width": 4}, "tta": True}
    )
    out = export_checkpoint(tmp_path, "torchscript", tmp_path / "tta.pt").path
    x = pixels_of(4)
    np.testing.assert_allclose(
        torch.jit.load(str(out))(torch.from_numpy(x)).numpy(), Classifier.load(tmp_path).predict_array(x), atol=1e-5
    )


def test_default_output_sits_beside_the_checkpoint(tiny_run):
    assert export.default_path(tiny_run, "onnx") == tiny_run / "model.onnx"
    assert export.default_path(tiny_run / "model.safetensors", "torchscript") == tiny_run / "model.pt"
    assert export.default_path(None, "onnx").name == "mnistkit-pretrained.onnx"


def test_failed_parity_writes_nothing(tmp_path, tiny_run, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_text("the old file")
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no export can match that
    with pytest.raises(ExportError, match="nothing was written"):
        export_checkpoint(tiny_run, "onnx", out, overwrite=True)
    assert out.read_text() == "the old file"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_an_existing_file_is_replaced_only_when_asked(tmp_path, tiny_run):
    out = tmp_path / "model.onnx"
    out.write_text("the old file")
    with pytest.raises(ExportError, match="already exists; pass --overwrite"):
        export_checkpoint(tiny_run, "onnx", out)
    assert out.read_text() == "the old file"
    assert export_checkpoint(tiny_run, "onnx", out, overwrite=True).max_abs_diff <= 1e-4


def test_unknown_format_is_a_library_error(tiny_run):
    with pytest.raises(ExportError, match="unknown export format"):
        export_checkpoint(tiny_run, "tflite")


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_cli_export_of_the_pretrained_model(tmp_path, capsys, pixels_of, fmt):
    out = tmp_path / f"pretrained.{fmt}"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--format", fmt, "-o", str(out)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    assert f"wrote {out}" in captured.out and "1,000 test images" in captured.out
    assert out.stat().st_size <= 2_000_000
    # Checked here too, not only by the exporter: the file alone, on 1,000 test images in one batch.
    x = pixels_of(1000)
    got = onnx_probabilities(out, x) if fmt == "onnx" else torch.jit.load(str(out))(torch.from_numpy(x)).numpy()
    assert np.abs(got - Classifier.load().predict_array(x)).max() <= 1e-4


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0
    assert err.startswith("mnistkit: error: ") and err.count("\n") == 1
