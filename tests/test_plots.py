"""The figures: mnistkit show, curves.png of every run, evaluate's confusion.png and mistakes.png.

Each command must write a real PNG of the documented pixel size with real content: the tests decode the file,
check its size, and look for the ink and the colours that the figure is made of.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mnistkit import cli, plots
from mnistkit.data import load_dataset
from mnistkit.evaluate import evaluate_checkpoint

BLUE, ORANGE, GREEN, RED = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
)  # matplotlib's C0, C1, C2, tab:red


def read_png(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode a PNG, check its pixel size and that it is not a blank canvas; return its RGB pixels."""
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.size == size
        rgb = np.asarray(image.convert("RGB")).astype(int)
    assert (rgb < 200).any(axis=2).mean() > 0.01, f"{path} is (nearly) blank"
    assert len(np.unique(rgb.reshape(-1, 3), axis=0)) > 32, f"{path} has almost no distinct colours"
    return rgb


def pixels_of(rgb: np.ndarray, colour: tuple[int, int, int], tolerance: int = 12) -> int:
    return int((np.abs(rgb - np.array(colour)).max(axis=2) <= tolerance).sum())


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


# --------------------------------------------------------------------------------------------------
# show


def test_show_writes_a_labelled_grid(tiny_idx, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, stdout, _ = run_cli(
        ["show", "--data", str(tiny_idx), "--val-size", "100", "--n", "16", "-o", str(out)], capsys
    )
    assert code == 0 and str(out) in stdout
    rgb = read_png(out, (400, 520))  # 4 x 4 cells of 1 x 1.2 inches, plus 0.4 inch of title, at 100 dpi
    assert (rgb.max(axis=2) < 60).mean() > 0.3  # black image backgrounds fill most of it
    assert pixels_of(rgb, (250, 250, 250), 5) > 16 * 30  # and every image has its bright block


def test_show_titles_are_the_labels(tiny_idx):
    ds = load_dataset(tiny_idx)
    fig = plots.show("test", n=12, data_path=tiny_idx)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [str(k) for k in ds.test.labels[:12].tolist()]
    fig = plots.show("train", n=400, digit=3, data_path=tiny_idx, val_size=100)
    threes = int((ds.train.labels[:500] == 3).sum())
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["3"] * threes
    assert fig.get_suptitle() == f"train, class 3: first {threes} of {threes} images"


def test_show_index_draws_one_image_large(tiny_idx, tmp_path, capsys):
    out = tmp_path / "one.png"
    code, _, _ = run_cli(["show", "--data", str(tiny_idx), "--split", "test", "--index", "5", "-o", str(out)], capsys)
    assert code == 0
    rgb = read_png(out, (500, 540))
    assert pixels_of(rgb, (250, 250, 250), 5) > 2000  # the class block, 10 x 4 pixels drawn about 15 px each
    label = int(load_dataset(tiny_idx).test.labels[5])
    fig = plots.show("test", index=5, data_path=tiny_idx)
    assert fig.axes[0].get_title() == f"test image 5, label {label}"


def test_show_on_the_bundled_mnist(tmp_path, capsys):
    out = tmp_path / "samples.png"
    code, _, _ = run_cli(["show", "--split", "val", "--digit", "7", "--n", "20", "-o", str(out)], capsys)
    assert code == 0
    read_png(out, (500, 520))  # 20 images: 5 columns, 4 rows


@pytest.mark.parametrize(
    "args, message",
    [
        (["--val-size", "100", "--digit", "10"], "--digit 10: classes are numbered 0..9"),
        (["--split", "test", "--index", "200"], "--index 200: the test images are numbered 0..199"),
        (["--split", "test", "--n", "0"], "--n must be between 1 and 400"),
        (["--split", "test", "--n", "401"], "--n must be between 1 and 400"),
        ([], "--val-size 10000: "),
        (["--split", "val", "--val-size", "0"], "has no val split"),
        (["--split", "test", "-o", "grid.jpg"], "figures are written as PNG"),
    ],
)
def test_show_bad_options_give_one_line(tiny_idx, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = run_cli(["show", "--data", str(tiny_idx), *args], capsys)
    assert code == 2 and stdout == ""
    assert stderr.startswith("mnistkit: error: ") and stderr.count("\n") == 1 and message in stderr
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.jpg"))


def test_save_writes_png_only(tmp_path):
    fig = plots.image_grid(np.zeros((1, 28, 28), np.uint8), ["0"])
    with pytest.raises(Exception, match="written as PNG"):
        plots.save(fig, tmp_path / "x.svg")
    assert plots.save(fig, tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


# --------------------------------------------------------------------------------------------------
# curves.png


def test_every_run_writes_curves(tiny_run):
    rgb = read_png(tiny_run / plots.CURVES_NAME, (1000, 400))
    # train loss (blue), validation loss (orange), validation accuracy (green): each a drawn line with markers
    assert pixels_of(rgb, BLUE) > 200 and pixels_of(rgb, ORANGE) > 200 and pixels_of(rgb, GREEN) > 200


def test_curves_follow_metrics_csv(tiny_run):
    from mnistkit import runs

    rows = runs.read_metrics(tiny_run)
    fig = plots.curves_figure(rows)
    loss_ax, acc_ax = fig.axes
    train, val = loss_ax.lines
    assert list(train.get_ydata()) == [r["train_loss"] for r in rows]
    assert list(val.get_ydata()) == [r["val_loss"] for r in rows]
    assert list(acc_ax.lines[0].get_ydata()) == pytest.approx([100 * r["val_accuracy"] for r in rows])
    assert acc_ax.get_ylim()[1] <= 100.5


def test_curves_without_validation_and_at_100_percent():
    no_val = [{"epoch": e, "train_loss": 1 / e, "val_loss": None, "val_accuracy": None} for e in (1, 2, 3)]
    fig = plots.curves_figure(no_val)
    assert "no validation set" in [t.get_text() for t in fig.axes[1].texts]
    perfect = [{"epoch": e, "train_loss": 0.1, "val_loss": 0.0, "val_accuracy": 1.0} for e in (1, 2)]
    fig = plots.curves_figure(perfect)
    assert fig.axes[1].get_ylim()[1] == 100.5  # a flat line at 100 % is not padded up to 105 %
    assert len(plots.png_bytes(fig)) > 1000


# --------------------------------------------------------------------------------------------------
# evaluate: confusion.png and mistakes.png


def test_evaluate_writes_confusion_and_mistakes(tiny_run, tmp_path, capsys):
    folder = tmp_path / "plots"
    code, stdout, _ = run_cli(["evaluate", str(tiny_run), "--plots", str(folder)], capsys)
    assert code == 0 and "plots: " in stdout
    confusion = read_png(folder / plots.CONFUSION_NAME, (800, 700))
    matrix = confusion[:, :650]  # left of the colour bar
    assert (matrix[..., 2] - matrix[..., 0] > 60).sum() > 10_000  # cells tinted by the Blues colour map
    mistakes = read_png(folder / plots.MISTAKES_NAME, (800, 920))  # 16 images, 4 per row, 2 x 2.2 inches each
    assert (mistakes.max(axis=2) < 60).mean() > 0.3
    if "accuracy: 100.00%" not in stdout:
        assert pixels_of(mistakes, RED, 20) > 100  # the titles of wrong predictions are red


def test_evaluate_plots_default_to_the_run_folder_and_can_be_skipped(tiny_run, capsys):
    for name in (plots.CONFUSION_NAME, plots.MISTAKES_NAME):
        (tiny_run / name).unlink(missing_ok=True)
    code, _, _ = run_cli(["evaluate", str(tiny_run), "--no-plots"], capsys)
    assert code == 0 and not (tiny_run / plots.CONFUSION_NAME).exists()
    code, stdout, _ = run_cli(["evaluate", str(tiny_run), "--json"], capsys)
    assert code == 0 and json.loads(stdout)["count"] == 200
    assert (tiny_run / plots.CONFUSION_NAME).is_file() and (tiny_run / plots.MISTAKES_NAME).is_file()


def test_confusion_numbers_agree_with_the_accuracy(tiny_run):
    report = evaluate_checkpoint(tiny_run)
    meta = json.loads((tiny_run / "model.json").read_text())
    fig = plots.confusion_figure(report.confusion, report.classes)
    ax = fig.axes[0]
    drawn = np.zeros((10, 10), dtype=np.int64)
    for text in ax.texts:
        col, row = text.get_position()
        drawn[int(row), int(col)] = int(text.get_text())
    assert (drawn == report.confusion.numpy()).all()
    assert drawn.sum() == report.count == 200
    assert np.trace(drawn) / drawn.sum() == pytest.approx(report.accuracy)
    # the same accuracy as the run measured on its test set when it finished
    assert report.accuracy == pytest.approx(meta["metrics"]["test_accuracy"], abs=0.1 / report.count)
    assert f"accuracy {report.accuracy:.2%} ({np.trace(drawn)} of 200)" in ax.get_title()
    # colours are fractions of each true class
    fractions = ax.images[0].get_array()
    rows_with_images = drawn.sum(axis=1) > 0
    assert np.asarray(fractions).sum(axis=1)[rows_with_images] == pytest.approx(1.0)


def test_top_losses_and_their_titles():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 0.1], [5.0, 0.0, 0.0]])
    labels = torch.tensor([0, 0, 2, 2])  # right, wrong, barely right, very wrong
    top, losses, predicted, probabilities = plots.top_losses(logits, labels, k=3)
    assert top.tolist() == [3, 1, 2]
    assert losses.tolist() == sorted(losses.tolist(), reverse=True)
    assert predicted.tolist() == [0, 1, 2]
    assert probabilities[0].item() == pytest.approx(logits[3].softmax(0)[0].item())
    images = torch.zeros(4, 28, 28, dtype=torch.uint8)
    fig = plots.mistakes_figure(images, labels, logits, ["a", "b", "c"], k=3)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0].startswith("c → a (0.99)") and titles[1].startswith("a → b (0.91)")
    assert re.match(r"c → c \(0\.\d\d\)", titles[2])
    colours = [ax.title.get_color() for ax in fig.axes if ax.get_title()]
    assert colours == ["tab:red", "tab:red", "black"]
