"""mnistkit export: ONNX (dynamo exporter, run through onnxruntime), torch.export programs and TorchScript:
verified parity, normalization inside, dynamic batch, no deprecation warnings, atomic output."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from mnistkit import export, fileio
from mnistkit.checkpoint import save_checkpoint
from mnistkit.cli import main
from mnistkit.errors import MnistkitError
from mnistkit.export import ExportError, export_checkpoint
from mnistkit.inference import Classifier
from mnistkit.models import create_model

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")


def onnx_probabilities(path, x: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"pixels": x})[0]


# How each runtime refuses input: onnxruntime's InvalidArgument, a torch.export guard's AssertionError, an aten
# check's RuntimeError, TorchScript's torch.jit.Error.
REFUSED = (onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument, AssertionError, RuntimeError, torch.jit.Error)


def run_export(path, fmt: str, x: np.ndarray) -> np.ndarray:
    """Run an exported file by its format's own runtime, without mnistkit."""
    if fmt == "onnx":
        return onnx_probabilities(path, x)
    if fmt == "exported-program":
        return torch.export.load(str(path)).module()(torch.from_numpy(x)).numpy()
    return torch.jit.load(str(path))(torch.from_numpy(x)).numpy()


def export_recording_warnings(*args, **kwargs) -> tuple[export.ExportResult, list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = export_checkpoint(*args, **kwargs)
    return result, [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]


@pytest.fixture(scope="module")
def pixels_of(mnist):
    """Real test digits as the exported graphs take them: float32 (N, 1, 28, 28) in [0, 1]."""
    return lambda n: mnist.test.images[:n].numpy().astype(np.float32)[:, None] / 255.0


@pytest.mark.parametrize("fmt", ["onnx", "exported-program", "torchscript"])
def test_export_matches_pytorch_at_any_batch_size(tmp_path, tiny_run, pixels_of, fmt):
    out = tmp_path / ("model" + export.FORMATS[fmt])
    result = export_checkpoint(tiny_run, fmt, out)
    assert result.path == out and out.is_file()
    assert result.images == 1000 and result.max_abs_diff <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary or external-data file left behind

    # Batch sizes the export never saw, against the library's own predictions.
    expected = Classifier.load(tiny_run).predict_array(pixels_of(13))
    for n in (1, 5, 13):
        got = run_export(out, fmt, pixels_of(n))
        assert got.shape == (n, 10)
        np.testing.assert_allclose(got, expected[:n], atol=1e-5)


@pytest.mark.parametrize("fmt", ["onnx", "exported-program", "torchscript"])
def test_an_export_refuses_input_it_cannot_read(tmp_path, tiny_run, pixels_of, fmt):
    """uint8 pixels would be read as 0..255 and a 32×32 image answered, where no runtime checks them itself."""
    out = export_checkpoint(tiny_run, fmt, tmp_path / ("model" + export.FORMATS[fmt])).path
    x = pixels_of(2)
    wrong = {
        "uint8": np.rint(x * 255).astype(np.uint8),
        "float64": x.astype(np.float64),
        "32x32": np.zeros((2, 1, 32, 32), np.float32),
        "3 channels": np.repeat(x, 3, axis=1),
        "flat": x.reshape(2, 784),
    }
    for bad in wrong.values():
        with pytest.raises(REFUSED):
            run_export(out, fmt, bad)
    if fmt == "torchscript":  # the check's own words
        with pytest.raises(torch.jit.Error, match=r"expected float32 pixels of shape \(N, 1, 28, 28\)"):
            run_export(out, fmt, wrong["32x32"])
    assert run_export(out, fmt, x).shape == (2, 10)


@pytest.mark.parametrize("name", ["logreg", "mlp", "cnn"])
def test_every_model_exports_to_onnx_with_a_dynamic_batch_and_no_deprecation_warning(tmp_path, pixels_of, name):
    torch.manual_seed(0)
    options = {"width": 4} if name == "cnn" else {}
    save_checkpoint(tmp_path, create_model(name, **options), {"model": name, "model_options": options})
    out = tmp_path / f"{name}.onnx"
    result, deprecations = export_recording_warnings(tmp_path, "onnx", out)
    assert result.max_abs_diff <= 1e-4
    assert deprecations == []  # the legacy TorchScript-based exporter would warn here
    assert onnx_probabilities(out, pixels_of(3)).shape == (3, 10)
    assert onnx.load(str(out)).opset_import[0].version >= 18  # written by the dynamo exporter


def test_exported_program_carries_the_normalization_and_warns_of_nothing(tmp_path, pixels_of):
    torch.manual_seed(0)
    net = create_model("mlp")
    norm = {"mean": 0.5, "std": 0.25, "divisor": 255.0}
    save_checkpoint(tmp_path, net, {"model": "mlp", "model_options": {}, "normalization": norm})
    out = tmp_path / "mlp.pt2"
    result, deprecations = export_recording_warnings(tmp_path, "exported-program", out)
    assert result.max_abs_diff <= 1e-4 and deprecations == []
    x = torch.from_numpy(pixels_of(6))
    with torch.no_grad():
        by_hand = net.eval()((x - 0.5) / 0.25).softmax(1)
    np.testing.assert_allclose(torch.export.load(str(out)).module()(x).numpy(), by_hand.numpy(), atol=1e-5)


def test_the_exported_program_runs_without_mnistkit(tmp_path, tiny_run, pixels_of):
    out = export_checkpoint(tiny_run, "exported-program", tmp_path / "model.pt2").path
    x = pixels_of(4)
    np.save(tmp_path / "x.npy", x)
    # The three lines of docs/export.md, in a process where importing mnistkit fails.
    script = f"""
import sys; sys.modules["mnistkit"] = None
import numpy as np, torch, json
model = torch.export.load({str(out)!r}).module()
probabilities = model(torch.from_numpy(np.load({str(tmp_path / "x.npy")!r})))
extra = {{"mnistkit.json": ""}}
torch.export.load({str(out)!r}, extra_files=extra)
np.save({str(tmp_path / "p.npy")!r}, probabilities.numpy())
print(json.loads(extra["mnistkit.json"])["classes"])
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().replace("'", '"')) == [str(d) for d in range(10)]
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), Classifier.load(tiny_run).predict_array(x), atol=1e-5)


def test_a_missing_onnx_package_is_named_before_anything_is_written(tmp_path, tiny_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now raises ImportError
    with pytest.raises(ExportError, match=r"needs the onnxscript package.*pip install 'mnistkit\[export\]'"):
        export_checkpoint(tiny_run, "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_onnx_file_describes_its_contract(tmp_path, tiny_run):
    out = export_checkpoint(tiny_run, "onnx", tmp_path / "m.onnx").path
    proto = onnx.load(str(out))
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["model"] == "cnn" and json.loads(props["classes"]) == [str(d) for d in range(10)]
    assert "white ink on black" in props["input"]
    batch = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch.dim_param == "batch"  # symbolic, not a fixed number


def test_a_source_not_named_in_utf8_is_recorded_as_valid_unicode(tmp_path, tiny_run):
    run = shutil.copytree(tiny_run, tmp_path / os.fsdecode(b"caf\xe9"))
    shown = str(tmp_path / "caf\\xe9")  # as fileio.valid_utf8 writes the byte that is not UTF-8
    onnx_model = onnx.load(str(export_checkpoint(run, "onnx", tmp_path / "m.onnx").path))
    assert {p.key: p.value for p in onnx_model.metadata_props}["source"] == shown
    extra = {export.METADATA_NAME: ""}
    torch.jit.load(str(export_checkpoint(run, "torchscript", tmp_path / "m.pt").path), _extra_files=extra)
    assert json.loads(extra[export.METADATA_NAME].decode("utf-8"))["source"] == shown


@pytest.mark.parametrize("fmt", ["exported-program", "torchscript"])
def test_test_time_augmentation_is_exported_too(tmp_path, pixels_of, fmt):
    torch.manual_seed(0)
    save_checkpoint(
        tmp_path, create_model("cnn", width=4), {"model": "cnn", "model_options": {"width": 4}, "tta": True}
    )
    out = export_checkpoint(tmp_path, fmt, tmp_path / ("tta" + export.FORMATS[fmt])).path
    x = pixels_of(4)
    np.testing.assert_allclose(run_export(out, fmt, x), Classifier.load(tmp_path).predict_array(x), atol=1e-5)


def test_default_output_sits_beside_the_checkpoint(tiny_run):
    assert export.default_path(tiny_run, "onnx") == tiny_run / "model.onnx"
    assert export.default_path(tiny_run / "model.safetensors", "torchscript") == tiny_run / "model.pt"
    assert export.default_path(tiny_run / "model.json", "exported-program") == tiny_run / "model.pt2"
    assert export.default_path(tiny_run, "hf") == tiny_run / "model-hf"
    assert export.default_path(None, "onnx").name == "mnistkit-pretrained.onnx"
    assert export.default_path(None, "hf").name == "mnistkit-pretrained-hf"


def test_failed_parity_writes_nothing(tmp_path, tiny_run, monkeypatch):
    out = tmp_path / "model.onnx"
    out.write_text("the old file")
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no export can match that
    with pytest.raises(ExportError, match="nothing was written"):
        export_checkpoint(tiny_run, "onnx", out, overwrite=True)
    assert out.read_text() == "the old file"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


@pytest.mark.parametrize("fmt", ["exported-program", "torchscript"])
def test_a_full_disk_is_one_error_and_leaves_nothing(tmp_path, tiny_run, monkeypatch, fmt):
    def disk_full(path, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    # Where torch wrote the file itself, a full disk aborted the whole process from inside its C++ writer.
    monkeypatch.setattr(Path, "write_bytes", disk_full)
    out = tmp_path / ("model" + export.FORMATS[fmt])
    with pytest.raises(MnistkitError, match=f"{out.name}: No space left on device"):
        export_checkpoint(tiny_run, fmt, out)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_under_the_onnx_exporter_names_the_file(tmp_path, tiny_run, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.onnx, "export", disk_full)  # the exporter writes the file itself
    with pytest.raises(MnistkitError) as error:
        export_checkpoint(tiny_run, "onnx", tmp_path / "model.onnx")
    assert (
        str(error.value)
        == f"cannot write {tmp_path / 'model.onnx'}: No space left on device; free some space and run again"
    )
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_is_replaced_only_when_asked(tmp_path, tiny_run):
    out = tmp_path / "model.onnx"
    out.write_text("the old file")
    with pytest.raises(ExportError, match="already exists; pass overwrite"):
        export_checkpoint(tiny_run, "onnx", out)
    assert out.read_text() == "the old file"
    assert export_checkpoint(tiny_run, "onnx", out, overwrite=True).max_abs_diff <= 1e-4


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its bytes (None for a folder)."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def export_fails(capsys, *argv: str) -> str:
    """Run ``mnistkit export ARGV``, which must stop with one line (exit 2); that line."""
    with pytest.raises(SystemExit) as exit_info:
        main(["export", *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.startswith("mnistkit: error: ") and err.count("\n") == 1, err
    return err


def test_an_hf_export_never_replaces_the_run_it_exports(tmp_path, tiny_run, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "runs" / "lr")  # a copy: the shared run must survive a regression
    before = tree(tmp_path)
    for source in (run, run / "model.safetensors"):
        err = export_fails(capsys, str(source), "--format", "hf", "-o", str(run), "--overwrite")
        assert f"{run}: is the folder of the model being exported" in err and "choose another --out" in err
    err = export_fails(capsys, str(run), "--format", "hf", "-o", str(run.parent), "--overwrite")
    assert f"{run.parent}: holds the folder of the model being exported" in err
    assert tree(tmp_path) == before  # config.json, metrics, the resume checkpoint: all still there


@pytest.mark.parametrize("name", ["model.json", "model.safetensors", "config.json", "resume/state.json"])
@pytest.mark.parametrize("which", ["lr", "other"])
def test_a_file_export_never_replaces_a_file_of_a_run(tmp_path, tiny_run, capsys, name, which):
    # The run it exports, or another: -o runs/other/model.safetensors once wrote TorchScript as that run's weights.
    run = shutil.copytree(tiny_run, tmp_path / "runs" / "lr")  # a copy: the shared run must survive a regression
    shutil.copytree(tiny_run, tmp_path / "runs" / "other")
    before = tree(tmp_path)
    out = tmp_path / "runs" / which / name
    err = export_fails(capsys, str(run), "--format", "torchscript", "-o", str(out), "--overwrite")
    assert f"{out}: a torchscript export is a .pt file; name it {out.with_suffix('.pt')}\n" in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("fmt", ["onnx", "exported-program", "torchscript"])
def test_a_file_export_is_named_for_its_format(tmp_path, tiny_run, capsys, fmt):
    suffix = export.FORMATS[fmt]
    for name, hint in [
        ("model", ""),
        ("model.safetensors", ""),
        ("model.pt2.bak", ""),
        ("model.pt2", "exported-program"),
    ]:
        if name.endswith(suffix):
            continue
        err = export_fails(capsys, str(tiny_run), "--format", fmt, "-o", str(tmp_path / name))
        article = "a" if fmt == "torchscript" else "an"
        assert f"{tmp_path / name}: {article} {fmt} export is a {suffix} file; name it" in err
        assert (f"(or pass --format {hint})" in err) == bool(hint), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", ["lr", "other"])
def test_a_file_export_never_replaces_a_run_file_of_its_suffix(tmp_path, tiny_run, capsys, which):
    # A run's pattern (tensorboard/events.out.tfevents.*) that a name with the format's suffix can still match.
    run = shutil.copytree(tiny_run, tmp_path / "runs" / "lr")
    shutil.copytree(tiny_run, tmp_path / "runs" / which, dirs_exist_ok=True)
    (tmp_path / "runs" / which / "tensorboard").mkdir()
    out = tmp_path / "runs" / which / "tensorboard" / "events.out.tfevents.1.pt"
    out.write_bytes(b"events")
    before = tree(tmp_path)
    err = export_fails(capsys, str(run), "--format", "torchscript", "-o", str(out), "--overwrite")
    if which == "lr":
        assert f"{out}: is the tensorboard/events.out.tfevents.1.pt of the model being exported" in err
        assert f"such as {run / 'model.pt'}" in err
    else:
        assert f"{out}: has the name of a run's tensorboard/events.out.tfevents.1.pt" in err
        assert "choose another --out" in err
    assert tree(tmp_path) == before


def test_another_runs_own_export_is_replaced_only_when_asked(tmp_path, tiny_run, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "runs" / "lr")
    other = shutil.copytree(tiny_run, tmp_path / "runs" / "other")
    (other / "model.pt").write_bytes(b"other's own export")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(other), "--format", "torchscript"])  # the default name beside it: already there
    assert exit_info.value.code == 2 and "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run), "--format", "torchscript", "-o", str(other / "model.pt"), "--overwrite"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert torch.jit.load(str(other / "model.pt")) is not None
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run), "--format", "torchscript"])  # the default name still works
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert (run / "model.pt").is_file()


def test_an_hf_export_replaces_an_earlier_export_only(tmp_path, tiny_run, capsys):
    out = tmp_path / "hf"
    export_checkpoint(tiny_run, "hf", out)
    (out / "README.md").write_text("an earlier card")
    assert "already exists; pass --overwrite" in export_fails(capsys, str(tiny_run), "--format", "hf", "-o", str(out))
    assert (out / "README.md").read_text() == "an earlier card"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_run), "--format", "hf", "-o", str(out), "--overwrite"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert (out / "README.md").read_text().startswith("---")
    assert [p.name for p in tmp_path.iterdir()] == ["hf"]  # no temporary or old folder left beside it

    (out / "model.onnx").write_text("an export of the hf folder, not part of it")
    before = tree(tmp_path)
    err = export_fails(capsys, str(tiny_run), "--format", "hf", "-o", str(out), "--overwrite")
    assert f"{out}: holds model.onnx; --overwrite replaces only an earlier Hugging Face model folder" in err
    assert tree(tmp_path) == before


@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_a_folder_is_no_file_name(tmp_path, tiny_run, capsys, overwrite):
    # Path("somedir/") drops the slash: this once wrote the file "somedir".
    err = export_fails(capsys, str(tiny_run), "-o", f"{tmp_path / 'somedir'}/", *overwrite)
    assert f"{tmp_path / 'somedir'}/: names a folder, but the onnx format writes one file" in err
    assert f"give a file name, such as {tmp_path / 'somedir' / 'model.onnx'}" in err
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "somedir").mkdir()
    (tmp_path / "somedir" / "notes.txt").write_text("mine")
    for out in (f"{tmp_path / 'somedir'}/", str(tmp_path / "somedir")):  # an existing folder, with or without slash
        err = export_fails(capsys, str(tiny_run), "--format", "torchscript", "-o", out, *overwrite)
        assert "names a folder, but the torchscript format writes one file" in err
    assert tree(tmp_path) == {"somedir": None, "somedir/notes.txt": b"mine"}


@pytest.mark.parametrize("fmt", ["torchscript", "hf"])
def test_a_missing_folder_is_refused_before_the_export(tmp_path, tiny_run, capsys, monkeypatch, fmt):
    # Said before the model is exported and checked (seconds to a minute), not when the result is written.
    monkeypatch.setattr("mnistkit.data.load_bundled_mnist", lambda: pytest.fail("the export was done first"))
    out = tmp_path / "missing" / ("model" + export.FORMATS[fmt])
    err = export_fails(capsys, str(tiny_run), "--format", fmt, "-o", str(out))
    assert f"cannot write {out}: No such file or directory; check the folder exists" in err
    assert list(tmp_path.iterdir()) == []


def test_unknown_format_is_a_library_error(tiny_run):
    with pytest.raises(ExportError, match="unknown export format"):
        export_checkpoint(tiny_run, "tflite")


@pytest.mark.parametrize("fmt", ["onnx", "exported-program", "torchscript"])
def test_cli_export_of_the_pretrained_model(tmp_path, capsys, pixels_of, fmt):
    out = tmp_path / ("pretrained" + export.FORMATS[fmt])
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--format", fmt, "-o", str(out)])
    captured = capsys.readouterr()
    assert exit_info.value.code == 0, captured.err
    assert f"wrote {out}" in captured.out and "1,000 test images" in captured.out
    assert out.stat().st_size <= 2_000_000
    # Checked here too, not only by the exporter: the file alone, on 1,000 test images in one batch.
    x = pixels_of(1000)
    assert np.abs(run_export(out, fmt, x) - Classifier.load().predict_array(x)).max() <= 1e-4


def test_cli_export_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "missing")])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0
    assert err.startswith("mnistkit: error: ") and err.count("\n") == 1


def interrupted_converter(how: str):
    """A converter that, as torch.onnx's exporter does, reports a Ctrl-C as its own failure (colours included)."""

    def convert(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            failure = RuntimeError("Failed to export the model. \x1b[96mThis is step 1/3\x1b[0m of exporting")
            if how == "cause":
                raise failure from interrupt
            try:
                raise ValueError("wrapped once more")  # the interrupt two links down, as a __context__
            except ValueError:
                raise failure  # noqa: B904  # the implicit context is what is tested

    return convert


CONVERTERS = {
    "onnx": (torch.onnx, "export"),
    "exported-program": (torch.export, "export"),
    "torchscript": (torch.jit, "script"),
}


@pytest.mark.parametrize("how", ["cause", "context"])
@pytest.mark.parametrize("fmt", ["onnx", "exported-program", "torchscript"])
def test_ctrl_c_in_a_converter_is_an_interruption(tmp_path, tiny_run, capsys, monkeypatch, fmt, how):
    monkeypatch.setattr(*CONVERTERS[fmt], interrupted_converter(how))
    out = tmp_path / ("model" + export.FORMATS[fmt])
    with pytest.raises(KeyboardInterrupt):
        export_checkpoint(tiny_run, fmt, out)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tiny_run), "--format", fmt, "-o", str(out)])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "mnistkit: interrupted\n"
    assert list(tmp_path.iterdir()) == []


def test_a_converters_colours_stay_out_of_the_error(tmp_path, tiny_run, capsys, monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError(
            "Failed to export. \x1b[96mThis is step 1/3\x1b[0m \x1b]8;;https://x\x1b\\link\x1b]8;;\x1b\\\nmore"
        )

    monkeypatch.setattr(torch.onnx, "export", fails)
    err = export_fails(capsys, str(tiny_run), "-o", str(tmp_path / "model.onnx"))
    assert err == "mnistkit: error: cannot convert cnn to ONNX: Failed to export. This is step 1/3 link\n"
    assert list(tmp_path.iterdir()) == []


def test_an_export_removes_what_killed_exports_of_its_name_left(tmp_path, tiny_run):
    # The rules are fileio's (test_fileio.py); here, both of the writers an export uses, hf's with the hub's files.
    (tmp_path / ".model.pt.k1ll3d_0.tmp").write_bytes(b"half an export")
    (tmp_path / ".other.pt.abcdefgh.tmp").write_bytes(b"another export's")
    killed_hf = tmp_path / ".model-hf.abcdefgh.tmp"
    killed_hf.mkdir()
    for name in ("config.json", ".README.md.12345678.tmp"):
        (killed_hf / name).write_bytes(b"half an export")
    export_checkpoint(tiny_run, "torchscript", tmp_path / "model.pt")
    export_checkpoint(tiny_run, "hf", tmp_path / "model-hf")
    assert sorted(os.listdir(tmp_path)) == [".other.pt.abcdefgh.tmp", "model-hf", "model.pt"]


def test_a_running_export_keeps_its_temporary_file_from_another(tmp_path, tiny_run, monkeypatch):
    out = tmp_path / "model.onnx"
    convert = export.EXPORTERS["onnx"]

    def then_another_export_cleans(model, example, path, info):
        runner = convert(model, example, path, info)  # written twice (the exporter, then the metadata): still locked
        fileio.remove_stale_temporaries(out)
        assert path.is_file()
        return runner

    monkeypatch.setitem(export.EXPORTERS, "onnx", then_another_export_cleans)
    assert export_checkpoint(tiny_run, "onnx", out).path == out
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"overwrite": "no"}, "overwrite must be True or False, got str 'no'"),
        ({"fmt": ["onnx"]}, "unknown export format a list of 1 items; choose one of"),
        ({"out": 5}, "out must be a path (a str or Path), got int"),
        ({"out": ""}, "out is empty: give a path"),
    ],
    ids=["overwrite 'no'", "format as a list", "out a number", "out empty"],
)
def test_export_options_of_the_wrong_kind_are_one_clear_error_and_nothing_is_written(tmp_path, options, message):
    kept = tmp_path / "model.pt2"
    kept.write_text("keep")  # "no" taken by its truth would have replaced it
    arguments = {"fmt": "exported-program", "out": kept, **options}
    with pytest.raises(MnistkitError) as error:
        export_checkpoint(None, **arguments)
    assert str(error.value).startswith(message)
    assert kept.read_text() == "keep" and sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]
