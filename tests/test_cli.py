"""The command line end to end: train, evaluate, data; and every bad input as one line, a non-zero exit, no
traceback."""

from __future__ import annotations

import argparse
import errno
import gzip
import io
import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import idx_bytes, run_cli, train_argv, unwritable, write_idx_folder
from PIL import Image

from mnistkit.cli import build_parser, print_text
from mnistkit.config import PRESET_PURPOSES, PRESETS


def assert_one_line_error(code: int, err: str, message: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mnistkit: error: ") and message in lines[0], lines[0]


def test_help_lists_every_command(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for command in ("train", "evaluate", "data", "show", "compare", "predict", "inspect", "export", "bench"):
        assert command in out
    assert build_parser().parse_args(["train"]).command == "train"  # every train option has a default


def test_train_then_evaluate_on_a_folder(tiny_idx, tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, *train_argv(tiny_idx, out_dir, "--quiet", model="mlp"))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("training mlp on ") and lines[1].startswith("epoch 1/2  train loss ")
    assert "val acc" in lines[1] and lines[3].startswith("test accuracy ")
    assert {"config.json", "metrics.csv", "model.safetensors", "model.json"} <= {p.name for p in out_dir.iterdir()}

    code, out, err = run_cli(capsys, "evaluate", str(out_dir), "--no-plots")
    assert code == 0, err
    assert "accuracy" in out and "precision" in out and "confusion matrix" in out
    code, out, _ = run_cli(capsys, "evaluate", str(out_dir), "--split", "val", "--json", "--no-plots")
    report = json.loads(out)
    confusion = np.array(report["confusion"])
    assert report["count"] == confusion.sum() == 100  # the last 100 training images, as the run held out
    assert report["accuracy"] == pytest.approx(np.trace(confusion) / 100)


def test_data_list_and_info(capsys):
    code, out, _ = run_cli(capsys, "data", "list")
    assert code == 0 and "mnist" in out and "fashion-mnist" in out and "kmnist" in out
    code, out, _ = run_cli(capsys, "data", "info", "mnist")
    assert code == 0 and out.count("verified") >= 4
    code, out, _ = run_cli(capsys, "data", "info", "mnist", "--json")
    assert json.loads(out)["bundled"]["verified"] is True


def test_output_to_a_full_disk_is_one_line(tmp_path):
    command = [sys.executable, "-m", "mnistkit", "data", "list"]
    env = {**os.environ, "MNISTKIT_DATA": str(tmp_path / "cache")}
    with open("/dev/full", "w") as full:  # every write: no space left on the device
        disk_full = subprocess.run(command, stdout=full, stderr=subprocess.PIPE, text=True, env=env)
    assert disk_full.returncode == 2
    assert disk_full.stderr == (
        "mnistkit: error: cannot write to standard output: No space left on device; free some space and run again\n"
    )


def test_console_script_runs_without_traceback(tiny_idx, tmp_path):
    env = {**os.environ, "MNISTKIT_DATA": str(tmp_path / "cache")}
    bad = subprocess.run(
        [sys.executable, "-m", "mnistkit", "train", "--lr", "0"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert bad.stderr.strip() == "mnistkit: error: --lr must be a positive number up to 1e+30, got 0.0"
    good = subprocess.run(
        [sys.executable, "-m", "mnistkit", *train_argv(tiny_idx, tmp_path / "r", epochs=1, val_size=50)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert good.returncode == 0, good.stderr
    assert "\x1b" not in good.stdout and "\r" not in good.stdout  # not a terminal: plain lines only


# --------------------------------------------------------------------------------------------------
# Bad input: one clear line each


def _corrupt(folder: Path, name: str, content: bytes) -> Path:
    (folder / name).write_bytes(content)
    return folder


BAD_DATA = {
    "missing": (lambda tmp: tmp / "nowhere", "no such file or folder"),
    "wrong magic": (
        lambda tmp: _corrupt(
            write_idx_folder(tmp / "d", 20, 5),
            "train-images-idx3-ubyte.gz",
            gzip.compress(b"\x01\x02\x03\x04" + b"\x00" * 20),
        ),
        "not an IDX file",
    ),
    "truncated": (
        lambda tmp: _corrupt(
            write_idx_folder(tmp / "d", 20, 5),
            "train-images-idx3-ubyte.gz",
            gzip.compress(idx_bytes(np.zeros((20, 28, 28), np.uint8))[:500]),
        ),
        "truncated IDX file",
    ),
    "corrupt gzip": (
        lambda tmp: _corrupt(
            write_idx_folder(tmp / "d", 20, 5), "train-labels-idx1-ubyte.gz", b"\x1f\x8b\x08\x00garbage"
        ),
        "corrupt gzip",
    ),
    "count mismatch": (
        lambda tmp: _corrupt(
            write_idx_folder(tmp / "d", 20, 5), "train-labels-idx1-ubyte.gz", idx_bytes(np.zeros(7, np.uint8))
        ),
        "20 images but 7 labels",
    ),
    "pickle layout": (
        lambda tmp: _corrupt(tmp, "x.pkl.gz", gzip.compress(pickle.dumps({"a": 1}))),
        "not the tutorial's layout",
    ),
    "pickle code": (
        lambda tmp: _corrupt(tmp, "y.pkl.gz", gzip.compress(pickle.dumps(((print, 1), (2, 3), (4, 5))))),
        "refusing to load builtins.print",
    ),
    "unreadable": (lambda tmp: _corrupt(tmp, "z.npz", b"not a zip"), "not a readable .npz"),
    "npz claiming terabytes": (lambda tmp: _npz_claiming(tmp / "huge.npz", (10**7, 28, 28 * 10**4)), "claims shape"),
    "gzip bomb": (lambda tmp: _gzip_bomb(write_idx_folder(tmp / "d", 20, 5)), "decompresses to more than"),
    "gzip header claiming terabytes": (
        lambda tmp: _corrupt(
            write_idx_folder(tmp / "d", 20, 5),
            "train-images-idx3-ubyte.gz",
            gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 2**31, 28, 28)),
        ),
        "its IDX header declares 1,683,627,180,048 bytes",
    ),
    "constant images": (lambda tmp: _constant_images(tmp / "c"), "pixel standard deviation 0"),
    "a symlink to /dev/zero": (lambda tmp: _symlink(tmp / "zero.npz", "/dev/zero"), "not a regular file"),
    "a FIFO": (lambda tmp: _fifo(tmp / "pipe.pkl.gz"), "not a regular file but a FIFO"),
}


def _npz_claiming(path: Path, shape: tuple[int, ...]) -> Path:
    """An .npz whose x_train header claims ``shape`` (terabytes) over a few bytes of data."""
    import io
    import zipfile

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", header.getvalue() + bytes(100))
        archive.writestr("y_train.npy", header.getvalue() + bytes(100))
    return path


def _gzip_bomb(folder: Path) -> Path:
    """Training images whose header declares 20 images but whose gzip stream inflates to 64 MiB."""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(idx_bytes(np.zeros((20, 28, 28), np.uint8)))]
    parts += [packer.compress(bytes(1 << 20)) for _ in range(64)]
    (folder / "train-images-idx3-ubyte.gz").write_bytes(b"".join([*parts, packer.flush()]))
    return folder


def _constant_images(folder: Path) -> Path:
    """Every pixel 7, in more images than the default validation split takes."""
    n = 10_050
    write_idx_folder(folder, n, 5)
    return _corrupt(folder, "train-images-idx3-ubyte.gz", gzip.compress(idx_bytes(np.full((n, 28, 28), 7, np.uint8))))


def _symlink(path: Path, target: str) -> Path:
    path.symlink_to(target)
    return path


def _fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_data_is_one_line(case, tmp_path, capsys):
    make, message = BAD_DATA[case]
    code, _, err = run_cli(capsys, "train", "--data", str(make(tmp_path)), "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "run").exists()  # a run that could not start leaves no empty folder behind


def test_checksum_mismatch_of_a_cached_download_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MNISTKIT_DATA", str(tmp_path / "cache"))
    folder = write_idx_folder(tmp_path / "cache" / "datasets" / "kmnist", 20, 5)
    assert folder.is_dir()
    monkeypatch.setenv("MNISTKIT_MIRRORS", "http://127.0.0.1:9/")  # never reached: nothing listening on port 9
    code, _, err = run_cli(capsys, "train", "--dataset", "kmnist", "--out", str(tmp_path / "run"))
    assert code != 0 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "resnet"], "unknown model 'resnet'"),
        (["--dataset", "cifar"], "unknown dataset 'cifar'"),
        (["--lr", "-1"], "lr must be a positive number"),
        (["--lr", "1e308"], "lr must be a positive number up to 1e+30"),
        (["--epochs", "0"], "epochs must be from 1"),
        (["--epochs", str(2**70)], "epochs must be from 1 to 100,000"),
        (["--batch-size", "0"], "--batch-size must be from 1"),
        (["--val-size", "600"], "--val-size must be from 0 to 599"),
        (["--seed", str(2**70)], "seed must be from -2**63 to 2**64 - 1, got 1180591620717411303424"),
        (["--width", "100000"], "--width must be a whole number from 1 to 1024, got 100000"),
        (["--width", "0"], "--width must be a whole number from 1 to 1024, got 0"),
        (["--stem-width", "-3"], "--stem-width must be a whole number from 1 to 1024, got -3"),
        (["--weight-decay", "inf"], "--weight-decay must be from 0 to 1000"),
        (["--grad-clip", "nan"], "--grad-clip must be a positive number"),
    ],
)
def test_bad_options_are_one_line(argv, message, tiny_idx, tmp_path, capsys):
    data_args = [] if "--dataset" in argv else ["--data", str(tiny_idx)]
    code, _, err = run_cli(capsys, "train", *data_args, *argv, "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, message)
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--checkpoint-every", "-1"], "mnistkit: error: --checkpoint-every must be 0 (epoch ends only) or a number"),
        (
            ["--early-stopping", "2", "--val-size", "0"],
            "mnistkit: error: --early-stopping needs a validation set; use --val-size > 0",
        ),
    ],
)
def test_library_errors_are_shown_with_their_flags(argv, message, tiny_idx, tmp_path, capsys):
    code, _, err = run_cli(
        capsys, "train", "--data", str(tiny_idx), "--epochs", "1", *argv, "--out", str(tmp_path / "r")
    )
    assert_one_line_error(code, err, message)


@pytest.mark.parametrize("argv", [["--val-size", "600"], ["--early-stopping", "1", "--val-size", "0"]])
def test_a_run_refused_once_its_data_is_loaded_never_says_it_is_training(argv, tiny_idx, tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "--data", str(tiny_idx), *argv, "--out", str(tmp_path / "run"))
    assert code == 2 and out == "", out  # no "training ... -> run" line for a run that does not train
    assert len(err.strip().splitlines()) == 1 and "--val-size" in err
    assert not (tmp_path / "run").exists()  # nor a folder that would stop the corrected command


def test_a_value_that_spells_an_option_stays_a_value(tiny_idx, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("out").mkdir()
    Path("out", "model.json").write_text("precious")
    code, _, err = run_cli(capsys, "train", "--data", str(tiny_idx), "--out", "out")
    assert err.strip() == (
        "mnistkit: error: --out out: folder exists and is not empty; pass --overwrite to replace that run, "
        "or choose another --out"
    )


def test_with_flags_names_the_flag_of_the_command_that_ran():
    from mnistkit.cli import command_flags, with_flags
    from mnistkit.errors import ConfigError, MnistkitError

    parser = build_parser()
    train_flags = command_flags(parser, parser.parse_args(["train"]))
    assert train_flags["resume_every"] == "--checkpoint-every" and train_flags["batch_size"] == "--batch-size"
    assert command_flags(parser, parser.parse_args(["export"]))["out"] == "--out"  # -o/--out: the long one
    named = ConfigError("loss became nan; lower the learning rate (lr) or set grad_clip", options=("lr", "grad_clip"))
    assert with_flags(named, train_flags) == "loss became nan; lower the learning rate (--lr) or set --grad-clip"
    in_a_path = ConfigError("out /runs/out: cannot write there; choose another out", options=("out",))
    assert with_flags(in_a_path, train_flags) == "--out /runs/out: cannot write there; choose another --out"
    not_a_word = ConfigError("data: has no test split; use split val", options=("split", "data"))
    assert with_flags(not_a_word, train_flags) == "data: has no test split; use --split val"
    assert with_flags(MnistkitError("lr must be positive"), train_flags) == "lr must be positive"  # names no option


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--width", "0"], "--width, --stem-width, --stem-stride, --block2-stride and --crop apply to --model NAME"),
        (["--model", "cnn", "--width", "0"], "--width must be a whole number from 1 to 1024, got 0"),
        (["--model", "cnn", "--width", "100000"], "--width must be a whole number from 1 to 1024, got 100000"),
        (["--model", "cnn", "--stem-width", str(2**70)], "--stem-width must be a whole number from 1 to 1024"),
        (["--model", "mlp", "--width", "8"], "invalid options for model 'mlp': it takes no option --width"),
    ],
)
def test_inspect_with_out_of_range_widths_is_one_line(argv, message, capsys):
    code, out, err = run_cli(capsys, "inspect", *argv)
    assert code == 2 and out == ""
    assert_one_line_error(code, err, message)


def test_train_refuses_a_cnn_option_for_another_model_before_it_starts(tiny_idx, tmp_path, capsys):
    code, out, err = run_cli(capsys, *train_argv(tiny_idx, tmp_path / "run", "--crop", "2"))
    assert_one_line_error(code, err, "invalid options for model 'logreg': it takes no option --crop")
    assert out == "" and not (tmp_path / "run").exists()


def test_train_names_the_preset_whose_model_options_another_model_does_not_take(tiny_idx, tmp_path, capsys):
    argv = train_argv(tiny_idx, tmp_path / "run", "--preset", "cnn", "--model", "mlp")
    code, out, err = run_cli(capsys, *argv)
    assert_one_line_error(
        code, err, "preset 'cnn' is made for model 'cnn' (it sets --width), not 'mlp': leave the preset out"
    )
    assert out == "" and not (tmp_path / "run").exists()


def test_existing_run_folder_is_never_overwritten_unasked(tiny_idx, tmp_path, capsys):
    out_dir = tmp_path / "run"
    out_dir.mkdir()
    (out_dir / "config.json").write_text('{"model": "mlp", "epochs": 3}')  # an earlier run's
    (out_dir / "model.json").write_text("precious")
    code, _, err = run_cli(capsys, "train", "--data", str(tiny_idx), "--epochs", "1", "--out", str(out_dir))
    assert_one_line_error(code, err, "pass --overwrite")
    assert (out_dir / "model.json").read_text() == "precious"
    code, _, err = run_cli(capsys, *train_argv(tiny_idx, out_dir, "--overwrite", "--quiet", epochs=1, val_size=50))
    assert code == 0, err
    assert json.loads((out_dir / "model.json").read_text())["model"] == "logreg"


def test_unwritable_output_is_one_line(tiny_idx, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, "train", "--data", str(tiny_idx), "--out", str(blocker / "run"))
    assert_one_line_error(code, err, "cannot write there")


def test_nan_loss_is_one_line_with_epoch_and_step(tiny_idx, tmp_path, capsys):
    diverging = ("--optimizer", "sgd", "--lr", "1e12", "--schedule", "none", "--quiet")
    code, _, err = run_cli(capsys, *train_argv(tiny_idx, tmp_path / "run", *diverging, model="mlp", epochs=3))
    assert_one_line_error(code, err, "at epoch 1, step")
    assert not (tmp_path / "run").exists()  # nothing was saved: the corrected command may use the same out


def test_evaluate_two_runs_as_an_ensemble(tiny_run, second_tiny_run, tiny_idx_session, tmp_path, capsys):
    from mnistkit.data import load_dataset
    from mnistkit.inference import Classifier

    before = {p.name for p in tiny_run.iterdir()} | {p.name for p in second_tiny_run.iterdir()}
    code, out, err = run_cli(capsys, "evaluate", str(tiny_run), str(second_tiny_run), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert [m["source"] for m in report["members"]] == [str(tiny_run), str(second_tiny_run)]
    test = load_dataset(str(tiny_idx_session)).test
    predicted = Classifier.load([tiny_run, second_tiny_run]).predict_array(test.images).argmax(1)
    assert report["count"] == 200 and report["accuracy"] == (predicted == test.labels.numpy()).mean()
    # No plots unless asked where: an ensemble has no run folder, and its members' plots are their own.
    assert {p.name for p in tiny_run.iterdir()} | {p.name for p in second_tiny_run.iterdir()} == before

    code, out, err = run_cli(
        capsys, "evaluate", str(tiny_run), str(second_tiny_run), "--plots", str(tmp_path / "plots")
    )
    assert code == 0, err
    assert out.startswith(f"ensemble of 2, the mean of their probabilities:\n  {tiny_run}  (its run's test accuracy ")
    assert "accuracy" in out and f"plots: {tmp_path / 'plots' / 'confusion.png'}" in out
    assert {p.name for p in (tmp_path / "plots").iterdir()} == {"confusion.png", "mistakes.png"}


def test_an_ensemble_of_runs_on_other_data_is_one_line(tiny_run, tiny_idx_session, capsys):
    from mnistkit.inference import PRETRAINED_DIR

    code, _, err = run_cli(capsys, "evaluate", str(tiny_run), str(PRETRAINED_DIR), "--no-plots")
    assert_one_line_error(
        code,
        err,
        f"{PRETRAINED_DIR}: its test split (MNIST, 10,000 images) is not the one of {tiny_run} "
        f"({tiny_idx_session.name}, 200 images); pass --data or --dataset to evaluate every member on the same images",
    )


def test_a_run_on_data_given_by_a_relative_path_evaluates_from_anywhere(tiny_idx, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tiny_idx.parent)
    code, _, err = run_cli(capsys, *train_argv(Path(tiny_idx.name), tmp_path / "run", "--quiet", model="logreg"))
    assert code == 0, err
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"] == str(tiny_idx)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "evaluate", "run", "--no-plots", "--json")
    assert code == 0 and json.loads(out)["count"] == 200, err
    # The data moved away: the message says it is the run's own data, and how to give it.
    tiny_idx.rename(tmp_path / "moved")
    code, _, err = run_cli(capsys, "evaluate", "run", "--no-plots")
    assert_one_line_error(code, err, f"{tiny_idx}: the images this run trained on are not there; give their path")
    assert "with --data" in err
    code, _, err = run_cli(capsys, "evaluate", "run", "--no-plots", "--data", tmp_path / "moved")
    assert code == 0, err


def test_evaluate_checks_the_plots_folder_before_it_reports(tiny_run, tmp_path, capsys):
    taken = tmp_path / "afile"
    taken.write_text("not a folder")
    for plots in (taken, taken / "below"):
        code, out, err = run_cli(capsys, "evaluate", str(tiny_run), "--json", "--plots", str(plots))
        assert out == "", plots
        assert_one_line_error(code, err, f"{plots}: cannot create the --plots folder ({taken} is a file); pass --plots")


@pytest.mark.parametrize("read_only_mount", [True, False])
def test_evaluate_of_a_run_it_cannot_write_says_so_before_it_reports(tiny_run, capsys, monkeypatch, read_only_mount):
    unwritable(monkeypatch, tiny_run, read_only_mount)
    code, out, err = run_cli(capsys, "evaluate", str(tiny_run))
    why = "a read-only file system" if read_only_mount else "permission denied"
    assert out == ""
    assert_one_line_error(
        code,
        err,
        f"{tiny_run}: cannot write the figures there ({why}); pass --plots DIR for another folder, or --no-plots",
    )
    code, out, err = run_cli(capsys, "evaluate", str(tiny_run), "--no-plots")
    assert code == 0 and "accuracy" in out, err


def test_evaluate_of_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    code, _, err = run_cli(capsys, "evaluate", str(tmp_path / "nothing"))
    assert_one_line_error(code, err, "no checkpoint here")


# --------------------------------------------------------------------------------------------------
# Names that are not UTF-8 (Python keeps such a byte as a lone surrogate): printed as \xe9, as in the JSON


@pytest.fixture
def cafe(tmp_path: Path) -> tuple[Path, str]:
    """A folder whose name holds the byte 0xE9, not UTF-8, and its path as mnistkit prints it."""
    folder = tmp_path / os.fsdecode(b"caf\xe9")
    folder.mkdir()
    return folder, f"{tmp_path}/caf\\xe9"


def test_an_ensemble_in_a_folder_not_named_in_utf8_is_printed_and_json_readable(
    tiny_run, second_tiny_run, cafe, capsys
):
    folder, shown = cafe
    first, second = shutil.copytree(tiny_run, folder / "a"), shutil.copytree(second_tiny_run, folder / "b")
    code, out, err = run_cli(capsys, "evaluate", first, second, "--plots", folder / "plots")
    assert code == 0, err
    assert out.startswith(f"ensemble of 2, the mean of their probabilities:\n  {shown}/a  (its run's test accuracy ")
    assert f"plots: {shown}/plots/confusion.png  {shown}/plots/mistakes.png" in out
    code, out, err = run_cli(capsys, "evaluate", first, second, "--json", "--no-plots")
    assert code == 0 and "\\ud" not in out, err  # no escaped surrogate, which strict JSON parsers refuse
    assert [member["source"] for member in json.loads(out)["members"]] == [f"{shown}/a", f"{shown}/b"]


def test_a_data_cache_not_named_in_utf8_is_printed_and_json_readable(cafe, capsys, monkeypatch):
    folder, shown = cafe
    monkeypatch.setenv("MNISTKIT_DATA", str(folder))
    code, out, _ = run_cli(capsys, "data", "info", "kmnist")
    assert code == 0 and f"download cache {shown}/kmnist:" in out.splitlines()
    code, out, _ = run_cli(capsys, "data", "info", "kmnist", "--json")
    assert code == 0 and "\\ud" not in out and json.loads(out)["folder"] == f"{shown}/kmnist"


def test_an_error_about_a_name_not_in_utf8_prints_it_as_its_json_would(cafe, capsys):
    folder, shown = cafe
    code, _, err = run_cli(capsys, "evaluate", folder / "gone")
    assert_one_line_error(code, err, f"{shown}/gone: no checkpoint here")


def test_a_name_not_in_utf8_typed_as_printed_finds_its_files(tiny_run, cafe, capsys, mnist):
    folder, shown = cafe
    run = shutil.copytree(tiny_run, folder / "run")
    Image.fromarray(255 - mnist.test.images[0].numpy()).save(folder / "seven.png")
    code, out, err = run_cli(capsys, "evaluate", f"{shown}/run", "--no-plots")
    assert code == 0 and "accuracy" in out, err
    code, out, err = run_cli(capsys, "compare", f"{shown}/run", str(run), "--no-plot")
    assert code == 0, err
    code, out, err = run_cli(capsys, "predict", f"{shown}/seven.png", "--model", f"{shown}/run")
    assert code == 0 and out.startswith(f"{shown}/seven.png: "), err


def test_a_name_not_in_utf8_prints_to_a_strict_stream():
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")  # errors="strict": a lone surrogate would raise
    print_text("saved " + os.fsdecode(b"run-\xe9"), file=stream)
    stream.flush()
    assert stream.buffer.getvalue() == b"saved run-\\xe9\n"


# --------------------------------------------------------------------------------------------------
# Help that helps


def train_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["train"]


def test_every_train_option_says_what_it_does():
    for action in train_parser()._actions:
        if action.dest == "help":
            continue
        words = re.sub(r"\[default: [^]]*\]", "", action.help or "").strip()
        assert len(words.split()) >= 3, f"{action.option_strings}: {action.help!r}"


def test_presets_are_listed_with_what_they_set(capsys):
    code, out, _ = run_cli(capsys, "presets")
    assert code == 0
    for name in PRESETS:
        assert re.search(rf"^{name} +{re.escape(PRESET_PURPOSES[name])}$", out, re.MULTILINE)
    flags = " ".join(out.split())  # the option lists wrap
    assert "--model mlp --optimizer sgd --lr 0.001 --momentum 0.0" in flags and "--no-normalize" in flags
    assert "--augment affine --tta --val-size 0" in flags
    code, help_text, _ = run_cli(capsys, "train", "--help")
    assert code == 0 and out in help_text.replace("\n  ", "\n")  # the same list ends train --help


@pytest.mark.parametrize(
    "argv, message",
    [
        (["trian"], "invalid choice: 'trian'; did you mean 'train'? choose from train, presets,"),
        (
            ["train", "--optimizer", "adamm"],
            "invalid choice: 'adamm'; did you mean 'adam'? choose from sgd, adam, adamw",
        ),
        (["train", "--preset", "fats"], "did you mean 'fast'?"),
        (["data", "lsit"], "did you mean 'list'?"),
    ],
)
def test_mistyped_commands_and_choices_get_a_suggestion(argv, message, capsys):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == "" and message in err
    assert err.count("\n") == 1 and err.rstrip().endswith("--help)")  # one line, not the usage block first


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--epochs", "x"], "mnistkit train: error: argument --epochs: invalid int value: 'x'"),
        (["evaluate"], "mnistkit evaluate: error: the following arguments are required: RUN_OR_CHECKPOINT"),
        (["train", "--colour"], "mnistkit train: error: unrecognized arguments: --colour"),
        (["feedback", "list", "-x", "1"], "mnistkit feedback list: error: unrecognized arguments: -x 1"),
        (["--colour"], "mnistkit: error: the following arguments are required: COMMAND"),
    ],
)
def test_a_command_line_argparse_refuses_is_one_line_naming_the_help(argv, message, capsys):
    code, out, err = run_cli(capsys, *argv)
    command = message.split(": error")[0]
    assert code == 2 and out == "" and err == f"{message} (see {command} --help)\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--model", "mpl"], "unknown model 'mpl'; did you mean 'mlp'? choose one of: logreg, mlp, cnn"),
        (["--dataset", "fashion"], "unknown dataset 'fashion'; did you mean 'fashion-mnist'?"),
        (["--data", "nowhere"], "nowhere: no such file or folder"),
    ],
)
def test_a_mistake_stops_train_before_it_announces_anything(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "train", *argv, "--out", "run")
    assert_one_line_error(code, err, message)
    assert out == "" and not (tmp_path / "run").exists()


def test_output_into_a_pipe_whose_reader_quit_ends_quietly_with_141():
    """| head that has read all it wants: no traceback, and the exit status of a writer stopped by SIGPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # before the command writes anything: its first line finds the reader gone
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mnistkit", "presets"], stdout=write_end, stderr=subprocess.PIPE, timeout=60
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141 and done.stderr == b"", done.stderr.decode()


INTERRUPTED_IN_AN_IMPORT = """
import importlib.abc, os, signal, sys

class Interrupt(importlib.abc.MetaPathFinder):  # Ctrl-C at the moment NumPy's linear algebra starts importing
    def find_spec(self, name, path, target=None):
        if name == "numpy.linalg":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, Interrupt())
from mnistkit.cli import main
main(sys.argv[1:])
"""


def test_ctrl_c_while_the_libraries_import_stops_in_one_line(tiny_idx, tmp_path):
    # torch imports NumPy from C and clears the KeyboardInterrupt: the run went on, or failed later with a traceback.
    argv = [sys.executable, "-c", INTERRUPTED_IN_AN_IMPORT, *train_argv(tiny_idx, tmp_path / "run", "--quiet")]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert (done.returncode, done.stderr) == (130, "mnistkit: interrupted\n")
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------------------------------
# Faults of the environment (a path, its permissions, the disk, a closed output): one line each

LONG = "b" * 300  # longer than any file system's name limit (255 bytes)

NAME_TOO_LONG = {
    "train --out": lambda data, run: ["train", "--data", data, "--epochs", "1", "--out", f"runs/{LONG}"],
    "train --data": lambda data, run: ["train", "--data", f"{LONG}.npz"],
    "train --resume": lambda data, run: ["train", "--resume", LONG],
    "train --init": lambda data, run: ["train", "--data", data, "--init", LONG, "--out", "run"],
    "export -o": lambda data, run: ["export", run, "-o", f"{LONG}.pt2"],
    "evaluate --plots": lambda data, run: ["evaluate", run, "--plots", LONG],
    "evaluate": lambda data, run: ["evaluate", LONG],
    "predict": lambda data, run: ["predict", "--model", run, f"{LONG}.png"],
    "predict --model": lambda data, run: ["predict", "--model", LONG, "digit.png"],
    "inspect": lambda data, run: ["inspect", LONG],
    "compare": lambda data, run: ["compare", LONG],
    "feedback stats --db": lambda data, run: ["feedback", "stats", "--db", f"{LONG}.sqlite"],
}


@pytest.mark.parametrize("case", sorted(NAME_TOO_LONG))
def test_a_name_too_long_is_one_line(case, tiny_idx_session, tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *NAME_TOO_LONG[case](str(tiny_idx_session), str(tiny_run)))
    assert_one_line_error(code, err, "File name too long")
    assert code == 2 and out == ""
    assert not [path for path in tmp_path.rglob("*") if not path.is_dir()]  # no file made (train made runs/)


def test_a_name_too_long_is_shown_by_its_ends():
    from mnistkit.errors import os_error

    exc = OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), f"runs/{LONG}/config.json")
    message = os_error(exc)
    assert message == f"runs/{'b' * 35}...{'b' * 18}/config.json (317 characters): File name too long; shorten the name"


def test_a_data_cache_path_too_long_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MNISTKIT_DATA", str(tmp_path / LONG))
    code, _, err = run_cli(capsys, "data", "list")
    assert_one_line_error(code, err, "File name too long; shorten the name")


FAULTS = {
    errno.EACCES: "noexec/config.json: Permission denied; check the permissions of this path and of the folders above",
    errno.EPERM: "noexec/config.json: Operation not permitted; check the permissions of this path",
    errno.EROFS: "noexec/config.json: Read-only file system; choose a path on a writable file system",
    errno.ELOOP: "noexec/config.json: Too many levels of symbolic links; a symbolic link in the path leads back",
    errno.ENOTDIR: "noexec/config.json: Not a directory; a file stands where the path needs a folder",
    errno.EISDIR: "noexec/config.json: Is a directory; a folder stands where the path needs a file",
    errno.EIO: "noexec/config.json: Input/output error; check it, then run again",
    errno.ENOSPC: "cannot write (noexec/config.json): No space left on device; free some space and run again",
}


@pytest.mark.parametrize("code", sorted(FAULTS), ids=errno.errorcode.get)
def test_an_os_error_is_one_line_that_says_what_to_do(code, tmp_path, capsys, monkeypatch):
    from mnistkit.inference import Classifier

    def load(*args, **kwargs):
        raise OSError(code, os.strerror(code), "noexec/config.json")

    monkeypatch.setattr(Classifier, "load", load)
    exit_code, out, err = run_cli(capsys, "predict", "--model", "noexec", str(tmp_path / "digit.png"))
    assert_one_line_error(exit_code, err, FAULTS[code])
    assert exit_code == 2 and out == ""


def test_permission_denied_on_the_data_is_one_line(tmp_path, capsys, monkeypatch):
    def check_source(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "imgx/small.npz")

    monkeypatch.setattr("mnistkit.data.check_source", check_source)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, "train", "--data", "imgx/small.npz", "--out", "run")
    assert_one_line_error(code, err, "imgx/small.npz: Permission denied; check the permissions")
    assert not (tmp_path / "run").exists()


def test_a_stream_misused_is_a_bug_with_its_traceback(tmp_path, monkeypatch):
    from mnistkit.inference import Classifier

    def load(*args, **kwargs):
        raise io.UnsupportedOperation("fileno")

    monkeypatch.setattr(Classifier, "load", load)
    with pytest.raises(io.UnsupportedOperation):
        from mnistkit.cli import main

        main(["predict", "--model", "run", str(tmp_path / "digit.png")])


@pytest.mark.parametrize(
    "argv",
    [["predict", "digit.png"], ["predict", "--json", "digit.png"], ["evaluate", "run", "--json"], ["feedback", "list"]],
    ids=" ".join,
)
def test_a_closed_standard_output_is_refused_up_front(argv, tmp_path):
    # `>&-`: Python's sys.stdout is None, and every line printed would be dropped without a word
    command = ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "mnistkit", *argv]
    env = {**os.environ, "MNISTKIT_DATA": str(tmp_path / "cache")}
    done = subprocess.run(command, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("mnistkit: error: standard output is closed; run again with it open")
    assert done.stderr.count("\n") == 1


def test_serve_runs_with_standard_output_closed_and_says_where_on_stderr(tmp_path):
    # A detached server answers over HTTP; its address (the port that --port 0 chose) and log go to stderr.
    import re
    import urllib.request

    command = ["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "mnistkit", "serve", "--port", "0"]
    server = subprocess.Popen([*command, "--no-feedback"], stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert server.stderr is not None
        first = server.stderr.readline()
        address = re.search(r"at (http://127\.0\.0\.1:\d+/)", first)
        assert address, first
        with urllib.request.urlopen(address[1] + "api/health", timeout=30) as answer:
            assert answer.status == 200
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["feedback", "delete", "--db", "", "2"], "--db"),
        (["feedback", "stats", "--db", ""], "--db"),
        (["serve", "--feedback-db", ""], "--feedback-db"),
        (["predict", "digit.png", "--show-input", ""], "--show-input"),
        (["evaluate", "run", "--plots", ""], "--plots"),
        (["evaluate", ""], "RUN_OR_CHECKPOINT"),
        (["train", "--data", ""], "--data"),
        (["train", "--resume", ""], "--resume"),
        (["compare", "run", ""], "RUN"),
        (["predict", ""], "IMAGE|DIR|GLOB"),
    ],
    ids=" ".join,
)
def test_an_empty_path_is_refused_not_read_as_the_default_or_here(capsys, monkeypatch, tmp_path, argv, named):
    # `--db "$DB"` with DB unset: the default corrections database would lose a correction without a word
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    code, out, err = run_cli(capsys, *argv)
    assert (code, out) == (2, "")
    assert err == f"mnistkit: error: {named} is empty: give a path\n"


def test_a_deleted_working_folder_is_named_in_one_line(tmp_path):
    # torch's import would stop the process with "Intel oneMKL FATAL ERROR: Cannot load …libtorch_cpu.so"
    gone = tmp_path / "gone"
    gone.mkdir()
    script = (
        "import os, sys; os.chdir(sys.argv[1]); os.rmdir(sys.argv[1]); "
        "from mnistkit.cli import main; main(['predict', 'x.png'])"
    )
    done = subprocess.run([sys.executable, "-c", script, str(gone)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == (
        "mnistkit: error: the current folder no longer exists (deleted); cd to a folder that exists and run again\n"
    )


def test_evaluate_drawing_into_a_run_folder_another_command_holds_is_refused(tiny_idx, tmp_path, capsys):
    # A train --overwrite of the folder meanwhile would otherwise be given the old model's figures.
    from mnistkit import runs

    run_dir = tmp_path / "run"
    assert run_cli(capsys, *train_argv(tiny_idx, run_dir, "--quiet", epochs=1))[0] == 0
    with runs.hold(run_dir):
        code, out, err = run_cli(capsys, "evaluate", run_dir)
        assert (code, out) == (2, "")
        assert err == (
            f"mnistkit: error: {run_dir}: another mnistkit command is writing this run folder now (a train, or an "
            "evaluate drawing its figures); wait for it to end\n"
        )
        assert run_cli(capsys, "evaluate", run_dir, "--no-plots")[0] == 0  # reading it is not refused
    assert run_cli(capsys, "evaluate", run_dir)[0] == 0 and (run_dir / "confusion.png").is_file()
