"""mnistkit predict / inspect / export end to end: output formats, folders and globs, --show-input, and every
bad input giving one clear line, a non-zero exit and no traceback while the good images are still predicted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli
from PIL import Image, ImageDraw
from test_preprocess import png_header_claiming

from mnistkit.checkpoint import save_checkpoint
from mnistkit.inference import Classifier
from mnistkit.models import create_model
from mnistkit.preprocess import to_mnist

DIGITS = {"seven": 0, "two": 1, "one": 2, "zero": 3}  # name -> index in the MNIST test set


def draw(mnist, name: str, path: Path, size: int = 200) -> Path:
    """A real MNIST test digit drawn black on white at another size, saved in the format the suffix names."""
    digit = mnist.test.images[DIGITS[name]].numpy()
    Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BILINEAR).save(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory, mnist) -> Path:
    """digits/seven.png, two.png, one.png and digits/more/zero.jpg."""
    root = tmp_path_factory.mktemp("digits")
    (root / "more").mkdir()
    for name in ("seven", "two", "one"):
        draw(mnist, name, root / f"{name}.png")
    draw(mnist, "zero", root / "more" / "zero.jpg")
    return root


# --------------------------------------------------------------------------------------------------
# predict


def test_predict_walks_a_folder(capsys, folder):
    code, out, err = run_cli(capsys, "predict", folder)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        str(folder / p) for p in ("more/zero.jpg", "one.png", "seven.png", "two.png")
    ]
    assert [line.split(": ")[1].split()[0] for line in lines] == ["0", "1", "7", "2"]
    assert all("top 3: " in line and line.count("%") == 4 for line in lines)


def test_predict_says_which_folder_it_could_not_read(capsys, folder, monkeypatch):
    real_scandir = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("more"):  # as an unreadable folder (root reads any, so its mode cannot)
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    code, out, err = run_cli(capsys, "predict", folder)
    assert code == 2 and len(out.splitlines()) == 3  # the other images are still classified
    assert (
        err
        == f"mnistkit: error: {folder / 'more'}: cannot read this folder (Permission denied); its images were skipped\n"
    )


def test_predict_json_one_object_per_image_with_top_k(capsys, folder):
    code, out, _ = run_cli(capsys, "predict", "--json", "--top-k", "5", folder / "seven.png", folder / "two.png")
    assert code == 0
    objects = [json.loads(line) for line in out.splitlines()]
    assert [o["source"] for o in objects] == [str(folder / "seven.png"), str(folder / "two.png")]
    assert [o["digit"] for o in objects] == [7, 2] and [o["label"] for o in objects] == ["7", "2"]
    for o in objects:
        assert len(o["top"]) == 5 and o["top"][0] == {"label": o["label"], "probability": o["probability"]}
        assert [t["probability"] for t in o["top"]] == sorted((t["probability"] for t in o["top"]), reverse=True)


def test_predict_says_not_a_digit_and_reject_off_names_one(capsys, folder, tmp_path):
    dot = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(dot).ellipse((80, 80, 110, 110), fill=0)
    dot.save(tmp_path / "dot.png")
    code, out, _ = run_cli(capsys, "predict", tmp_path / "dot.png", folder / "seven.png")
    assert code == 0
    flagged, seven = out.splitlines()
    assert flagged.startswith(f"{tmp_path / 'dot.png'}: ? not a digit (looks most like ") and "top 3: " in flagged
    assert seven.startswith(f"{folder / 'seven.png'}: 7 (")
    code, out, _ = run_cli(capsys, "predict", "--json", tmp_path / "dot.png", folder / "seven.png")
    assert [json.loads(line)["not_a_digit"] for line in out.splitlines()] == [True, False]
    assert all(isinstance(json.loads(line)["digit"], int) for line in out.splitlines())  # the best guess, kept
    code, out, _ = run_cli(capsys, "predict", "--reject", "off", "--json", tmp_path / "dot.png")
    assert code == 0 and json.loads(out)["not_a_digit"] is False


def test_predict_expands_glob_patterns(capsys, folder):
    code, out, _ = run_cli(capsys, "predict", f"{folder}/*.png", f"{folder}/**/*.jpg")
    assert code == 0 and len(out.splitlines()) == 4


def test_show_input_saves_what_the_model_saw(capsys, folder, tmp_path):
    seen = tmp_path / "seen.png"
    code, _, _ = run_cli(capsys, "predict", folder / "seven.png", "--show-input", seen)
    assert code == 0
    saved = np.asarray(Image.open(seen))
    assert saved.shape == (280, 280)
    assert np.array_equal(saved[::10, ::10], to_mnist(folder / "seven.png"))
    # Several images: --show-input is a folder, one PNG per image, named after it.
    code, _, _ = run_cli(capsys, "predict", folder, "--show-input", tmp_path / "inputs")
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == [
        "0000-zero.png",
        "0001-one.png",
        "0002-seven.png",
        "0003-two.png",
    ]
    # One image and a folder that does not exist yet, named as a folder: a folder, not a file of that name.
    code, _, _ = run_cli(capsys, "predict", folder / "seven.png", "--show-input", f"{tmp_path / 'one'}/")
    assert code == 0 and [p.name for p in (tmp_path / "one").iterdir()] == ["0000-seven.png"]


@pytest.mark.parametrize("name", ["missing/seen.png", "missing/inputs/"])
def test_show_input_makes_no_missing_folder_above_it(capsys, folder, tmp_path, name):
    # As -o of show and export: the file's or the folder's parent must exist, and it is said before any work.
    code, out, err = run_cli(capsys, "predict", folder, "--show-input", f"{tmp_path}/{name}")
    assert code == 2 and out == "" and err.count("\n") == 1 and "check the folder exists" in err, err
    assert not (tmp_path / "missing").exists()


def test_show_input_never_writes_over_an_input_or_another_kind_of_file(capsys, folder, tmp_path):
    seven = tmp_path / "seven.png"
    seven.write_bytes((folder / "seven.png").read_bytes())
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me")
    for target, message in ((seven, "one of the images to predict"), (notes, "ending in .png")):
        code, out, err = run_cli(capsys, "predict", seven, "--show-input", target)
        assert code == 2 and out == "" and message in err and err.count("\n") == 1, err
    assert seven.read_bytes() == (folder / "seven.png").read_bytes() and notes.read_text() == "keep me"
    # In a folder of inputs, a name the inputs already hold is refused for that image, and the rest go on.
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "seven.png").write_bytes((folder / "seven.png").read_bytes())
    taken = inputs / "0000-seven.png"  # the name the first image's input would get
    taken.write_bytes((folder / "one.png").read_bytes())
    code, out, err = run_cli(capsys, "predict", inputs / "seven.png", taken, "--show-input", inputs)
    assert code == 2 and "one of the images to predict" in err and out.count("\n") == 2
    assert taken.read_bytes() == (folder / "one.png").read_bytes() and (inputs / "0001-0000-seven.png").is_file()


def test_a_file_name_that_is_not_utf8_prints_escaped(folder, tmp_path):
    name = tmp_path / b"seven\xff.png".decode("utf-8", "surrogateescape")
    name.write_bytes((folder / "seven.png").read_bytes())
    done = subprocess.run(
        [sys.executable, "-m", "mnistkit", "predict", name, folder / "two.png"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},  # strict, as a UTF-8 locale makes it
    )
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout.splitlines()[0].startswith(f"{tmp_path}/seven\\xff.png: 7 (")  # as its JSON shows it
    assert done.stdout.splitlines()[1].startswith(f"{folder / 'two.png'}: 2 (")


def test_a_file_name_with_a_newline_stays_on_one_line(capsys, folder, tmp_path):
    good = tmp_path / "seven\nnew.png"
    good.write_bytes((folder / "seven.png").read_bytes())
    bad = tmp_path / "not\x1b[31man image.png"  # an escape sequence, which a terminal would act on
    bad.write_bytes(b"text")
    code, out, err = run_cli(capsys, "predict", good, bad)
    assert code == 2
    assert out.startswith(f"{tmp_path}/seven\\x0anew.png: 7 (") and out.count("\n") == 1
    assert (
        err.startswith(f"mnistkit: error: {tmp_path}/not\\x1b[31man image.png: not an image") and err.count("\n") == 1
    )


def test_a_dash_reads_the_image_from_standard_input(folder):
    done = subprocess.run(
        [sys.executable, "-m", "mnistkit", "predict", "-"],
        input=(folder / "seven.png").read_bytes(),
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0 and done.stdout.decode().startswith("/dev/stdin: 7 ("), done.stderr


def test_predict_with_a_trained_checkpoint(capsys, folder, tmp_path):
    torch.manual_seed(0)
    save_checkpoint(tmp_path, create_model("mlp"), {"model": "mlp", "model_options": {}})
    code, out, _ = run_cli(capsys, "predict", "--model", tmp_path / "model.safetensors", "--json", folder / "one.png")
    assert code == 0 and json.loads(out)["source"] == str(folder / "one.png")


def test_predict_with_an_ensemble_of_models(capsys, folder, tiny_run, second_tiny_run):
    from mnistkit.inference import Classifier

    image = folder / "seven.png"
    code, out, err = run_cli(
        capsys, "predict", "--model", tiny_run, "--model", second_tiny_run, "--json", "--top-k", 10, image
    )
    assert code == 0, err
    expected = Classifier.load([tiny_run, second_tiny_run]).predict(image, top_k=10).to_dict()
    assert json.loads(out) == json.loads(json.dumps(expected))


# --------------------------------------------------------------------------------------------------
# every bad input: one line, non-zero exit, no traceback


def blank(path: Path) -> Path:
    Image.new("L", (200, 150), 255).save(path)
    return path


def tiny(path: Path) -> Path:
    Image.new("L", (4, 4), 0).save(path)
    return path


def huge(path: Path) -> Path:
    path.write_bytes(png_header_claiming(8000, 8000))  # 64 megapixels claimed, 100 bytes on disk
    return path


def corrupt(path: Path) -> Path:
    whole = Path(path.with_suffix(".whole.png"))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 120), dtype=np.uint8)).save(whole)
    path.write_bytes(whole.read_bytes()[:2000])  # cut off mid-way
    whole.unlink()
    return path


def unknown_dds_format(path: Path) -> Path:
    # Pillow's format plugins raise errors of their own kinds (this one a NotImplementedError, AVIF's decoder a
    # RuntimeError), which a batch took for a crash: a traceback, and no answer for the good images.
    Image.new("RGB", (40, 40)).save(path, "DDS")
    data = bytearray(path.read_bytes())
    data[80:84] = (0x10000000).to_bytes(4, "little")  # the pixel format's flags: none Pillow knows
    path.write_bytes(data)
    return path


def under_an_unknown_users_home(path: Path) -> Path:
    return Path("~no-such-user-of-mnistkit") / path.name  # a shell leaves it as written; Path.expanduser raised


def not_an_image(path: Path) -> Path:
    path.write_text("shopping list: eggs, milk\n")
    return path


BAD_FILES = [
    ("blank.png", blank, "no ink found"),
    ("tiny.png", tiny, "too small to hold a digit"),
    ("huge.png", huge, "too large (limit 25 megapixels)"),
    ("corrupt.png", corrupt, "corrupt or truncated"),
    ("notes.png", not_an_image, "not an image Pillow can read"),
    ("notes.txt", not_an_image, "not an image Pillow can read"),
    ("missing.png", lambda path: path, "file not found"),
    ("format.dds", unknown_dds_format, "cannot read the image (Unknown pixel format flags"),
    ("home.png", under_an_unknown_users_home, "file not found"),
]


@pytest.mark.parametrize("name, make, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_bad_image_is_one_line_and_a_non_zero_exit(capsys, tmp_path, name, make, message):
    path = make(tmp_path / name)
    code, out, err = run_cli(capsys, "predict", path)
    assert code != 0 and out == ""
    assert err.startswith(f"mnistkit: error: {path}: ")  # names the file
    assert err.count("\n") == 1 and message in err


@pytest.mark.parametrize("name, make, message", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_a_batch_with_one_bad_image_predicts_the_rest(capsys, tmp_path, folder, name, make, message):
    bad = make(tmp_path / name)
    code, out, err = run_cli(capsys, "predict", folder / "seven.png", bad, folder / "two.png")
    assert code != 0
    assert [line.split(": ")[1].split()[0] for line in out.splitlines()] == ["7", "2"]
    assert err.count("\n") == 1 and err.startswith(f"mnistkit: error: {bad}: ") and message in err
    code, out, _ = run_cli(capsys, "predict", "--json", folder / "seven.png", bad, folder / "two.png")
    objects = [json.loads(line) for line in out.splitlines()]
    assert code != 0 and [o.get("digit") for o in objects] == [7, None, 2]
    assert objects[1]["source"] == str(bad) and message in objects[1]["error"]


def test_bad_arguments_and_checkpoints(capsys, tmp_path, folder):
    (tmp_path / "empty").mkdir()
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    torch.manual_seed(0)
    save_checkpoint(tampered, create_model("logreg"), {"model": "logreg", "model_options": {}})
    (tampered / "model.safetensors").write_bytes((tampered / "model.safetensors").read_bytes()[:-8] + b"\0" * 8)
    (tmp_path / "a-file").write_text("")
    cases = [
        (["predict", tmp_path / "empty"], "no image files in this folder"),
        (["predict", f"{tmp_path}/*.webp"], "no file matches this pattern"),
        (["predict", "--model", tmp_path / "no-such-run", folder / "one.png"], "no checkpoint here"),
        (["predict", "--model", tampered, folder / "one.png"], "do not match the checksum"),
        (["predict", "--model", folder / "one.png", folder / "one.png"], "not a readable checkpoint description"),
        (["predict", "--top-k", "0", folder / "one.png"], "--top-k must be at least 1"),
        (["predict", folder, "--show-input", tmp_path / "a-file"], "--show-input"),
    ]
    for argv, message in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code != 0 and out == "", argv
        assert err.startswith("mnistkit: error: ") and err.count("\n") == 1 and message in err, (argv, err)


def test_the_console_command_prints_no_traceback(folder, tmp_path):
    bad = not_an_image(tmp_path / "bad.png")
    done = subprocess.run(
        [sys.executable, "-m", "mnistkit", "predict", folder / "seven.png", bad, tmp_path / "gone.png"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stdout.startswith(f"{folder / 'seven.png'}: 7 (")
    assert done.stderr.splitlines() == [
        f"mnistkit: error: {bad}: not an image Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP, …)",
        f"mnistkit: error: {tmp_path / 'gone.png'}: file not found",
    ]


# --------------------------------------------------------------------------------------------------
# inspect and export


def test_inspect_the_pretrained_model_and_a_registry_model(capsys):
    code, out, _ = run_cli(capsys, "inspect")
    assert code == 0
    assert "bundled pretrained model" in out.splitlines()[0]
    assert any(line.split()[:3] == ["features.0.0.weight", "16×1×3×3", "144"] for line in out.splitlines())
    assert next(line for line in out.splitlines() if line.startswith("total")).split()[-1] == "128,986"
    accuracy = f"{Classifier.load().meta['metrics']['test_accuracy']:.2%}"
    assert "command" in out and "mnistkit train --model cnn --width 40 --stem-width 16" in out and accuracy in out
    code, fresh, _ = run_cli(capsys, "inspect", "--model", "cnn", "--width", "40", "--stem-width", "16")
    assert code == 0 and "total" in fresh and "128,986" in fresh and "training" not in fresh.splitlines()


def test_export_writes_where_asked_and_reports_bad_input(capsys, tmp_path):
    code, out, err = run_cli(capsys, "export", "--format", "torchscript", "-o", tmp_path / "missing-folder" / "m.pt")
    assert code != 0 and out == "" and err.count("\n") == 1 and "cannot write" in err
    code, out, err = run_cli(capsys, "export", tmp_path, "--format", "onnx")
    assert code != 0 and err.count("\n") == 1 and "no checkpoint here" in err
    assert list(tmp_path.iterdir()) == []
