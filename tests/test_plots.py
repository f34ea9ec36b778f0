"""The figures: mnistkit show, curves.png of every run, evaluate's confusion.png and mistakes.png.

Each command must write a real PNG of the documented pixel size with real content: the tests decode the file,
check its size, and look for the ink and the colours that the figure is made of.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli
from PIL import Image

from mnistkit import plots
from mnistkit.data import load_dataset
from mnistkit.errors import WriteError
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


# --------------------------------------------------------------------------------------------------
# show


def test_show_writes_a_labelled_grid(tiny_idx, tmp_path, capsys):
    out = tmp_path / "grid.png"
    code, stdout, _ = run_cli(capsys, "show", "--data", str(tiny_idx), "--val-size", "100", "--n", "16", "-o", str(out))
    assert code == 0 and str(out) in stdout
    rgb = read_png(out, (400, 520))  # 4 x 4 cells of 1 x 1.2 inches, plus 0.4 inch of title, at 100 dpi
    assert (rgb.max(axis=2) < 60).mean() > 0.3  # black image backgrounds fill most of it
    assert pixels_of(rgb, (250, 250, 250), 5) > 16 * 30  # and every image has its bright block


def titles_of(fig) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


def test_show_titles_are_the_labels_or_with_a_digit_the_indices(tiny_idx):
    ds = load_dataset(tiny_idx)
    fig = plots.show("test", n=12, data=tiny_idx)
    assert titles_of(fig) == [str(k) for k in ds.test.labels[:12].tolist()]
    assert fig.get_suptitle() == "test split: images #0 to #11 of 200, titled by their label"
    fig = plots.show("train", n=400, digit=3, data=tiny_idx, val_size=100)
    threes = (ds.train.labels[:500] == 3).nonzero().flatten().tolist()
    assert titles_of(fig) == [f"#{i}" for i in threes]  # each image's index in the split, as --index takes it
    assert fig.get_suptitle() == (
        f"train split, class 3: first {len(threes)} of {len(threes)}, titled by their index "
        "(show --index I draws one large)"
    )
    fig = plots.show("train", index=threes[1], digit=3, data=tiny_idx, val_size=100)
    assert fig.axes[0].get_title() == f"train image #{threes[1]}, label 3"


def test_grids_have_full_rows_where_they_can():
    assert [plots.grid_columns(n) for n in (1, 12, 16, 20, 32, 64, 100, 13)] == [1, 4, 4, 5, 8, 8, 10, 4]
    fig = plots.image_grid(np.zeros((32, 28, 28), np.uint8), ["x"] * 32)
    assert fig.get_size_inches() == pytest.approx((8.0, 4.8))  # 8 columns of 4 rows


def test_show_index_draws_one_image_large(tiny_idx, tmp_path, capsys):
    out = tmp_path / "one.png"
    code, _, _ = run_cli(capsys, "show", "--data", str(tiny_idx), "--split", "test", "--index", "5", "-o", str(out))
    assert code == 0
    rgb = read_png(out, (500, 540))
    assert pixels_of(rgb, (250, 250, 250), 5) > 2000  # the class block, 10 x 4 pixels drawn about 15 px each
    label = int(load_dataset(tiny_idx).test.labels[5])
    fig = plots.show("test", index=5, data=tiny_idx)
    assert fig.axes[0].get_title() == f"test image #5, label {label}"


def test_show_on_the_bundled_mnist(tmp_path, capsys):
    out = tmp_path / "samples.png"
    code, _, _ = run_cli(capsys, "show", "--split", "val", "--digit", "7", "--n", "20", "-o", str(out))
    assert code == 0
    read_png(out, (500, 520))  # 20 images: 5 columns, 4 rows


@pytest.mark.parametrize(
    "args, message",
    [
        (["--val-size", "100", "--digit", "10"], "--digit 10: classes are numbered 0..9"),
        (["--split", "test", "--index", "200"], "--index 200: the test images are numbered 0..199"),
        (["--split", "test", "--index", "0", "--digit", "9"], "--index 0: that test image is a "),
        (["--split", "test", "--n", "0"], "--n must be between 1 and 400"),
        (["--split", "test", "--n", "401"], "--n must be between 1 and 400"),
        ([], "--val-size 10000: "),
        (["--split", "val", "--val-size", "0"], "has no val split"),
        (["--split", "test", "-o", "grid.jpg"], "figures are written as PNG"),
        (["--split", "test", "-o", "missing/grid.png"], "missing/grid.png: No such file or directory; check the"),
    ],
)
def test_show_bad_options_give_one_line(tiny_idx, tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = run_cli(capsys, "show", "--data", str(tiny_idx), *args)
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


def tick_labels(axis) -> list[str]:
    """The labels of an axis's ticks within its view, as drawn."""
    low, high = sorted(axis.get_view_interval())
    return [t.get_text() for t in axis.get_ticklabels() if low <= t.get_position()[axis is axis.axes.yaxis] <= high]


def test_curves_follow_metrics_and_batch_losses(tiny_run):
    from mnistkit import runs

    rows = runs.read_metrics(tiny_run)
    batches = runs.read_batch_losses(tiny_run)
    assert sorted(batches) == [1, 2] and len(batches[1]) == len(batches[2]) == 8  # 500 images in batches of 64
    fig = plots.curves_figure(rows, batch_losses=batches)
    fig.canvas.draw()
    loss_ax, acc_ax = fig.axes
    per_batch, train, val = loss_ax.lines
    assert list(per_batch.get_ydata()) == batches[1] + batches[2]
    assert list(per_batch.get_xdata()) == pytest.approx([b / 8 for b in range(1, 17)])  # across each epoch
    assert list(train.get_ydata()) == [r["train_loss"] for r in rows]
    assert list(val.get_ydata()) == [r["val_loss"] for r in rows]
    assert list(acc_ax.lines[0].get_ydata()) == pytest.approx([100 * r["val_accuracy"] for r in rows])
    assert acc_ax.get_ylim()[1] <= 100.5
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == [
        "train, each batch",
        "train, epoch mean",
        "validation",
    ]
    assert tick_labels(loss_ax.xaxis) == ["0", "1", "2"] and tick_labels(acc_ax.xaxis) == ["0", "1", "2"]
    best = max(r["val_accuracy"] for r in rows)
    assert acc_ax.get_title().startswith(f"validation accuracy: best {best:.2%} at epoch ")


def test_curves_title_says_model_data_and_test_accuracy(tiny_run):
    import json

    from PIL import Image

    meta = json.loads((tiny_run / "model.json").read_text())
    config = json.loads((tiny_run / "config.json").read_text())
    title = plots.run_title(config, meta, "run")
    data_name = Path(config["data"]).name
    assert title == f"run: cnn (width 4) trained on {data_name}, 2 epochs\n" + (
        f"test accuracy {meta['metrics']['test_accuracy']:.2%} on 200 test images"
    )
    assert plots.run_title({"model": "mlp", "dataset": "fashion-mnist", "epochs": 1}, None, "x") == (
        "x: mlp trained on Fashion-MNIST, 1 epoch (not tested: training stopped before the end)"
    )
    with Image.open(tiny_run / plots.CURVES_NAME) as image:
        assert image.size == (1000, 400)


def test_names_that_are_not_utf8_are_drawn(tiny_run, tmp_path):
    run = tmp_path / os.fsdecode(b"run-\xff")  # a folder name in another encoding: Python keeps the byte as a surrogate
    shutil.copytree(tiny_run, run)
    plots.write_curves(run)  # titled with the folder's name
    confusion = np.eye(10, dtype=np.int64)
    for figure in (
        plots.confusion_figure(confusion, [str(k) for k in range(10)], title=run.name),
        plots.image_grid(np.zeros((1, 28, 28), np.uint8), ["0"], title=run.name),
        plots.compare_figure({run.name: [{"epoch": 1.0, "train_loss": 1.0, "val_accuracy": 0.5}]}, title=run.name),
    ):
        assert plots.png_bytes(figure).startswith(b"\x89PNG")


def test_a_single_epoch_is_points_on_whole_epoch_ticks():
    one = [{"epoch": 1.0, "train_loss": 0.3, "val_loss": 0.2, "val_accuracy": 0.95}]
    fig = plots.curves_figure(one)
    fig.canvas.draw()
    loss_ax, acc_ax = fig.axes
    assert tick_labels(loss_ax.xaxis) == ["1"] and tick_labels(acc_ax.xaxis) == ["1"]  # not 0.945 ... 1.050
    assert all(line.get_marker() == "o" for line in loss_ax.lines)
    fig = plots.curves_figure(one, batch_losses={1: [2.3, 1.0, 0.5, 0.3]})
    fig.canvas.draw()
    assert tick_labels(fig.axes[0].xaxis) == ["0", "1"]
    many = [{"epoch": float(e), "train_loss": 1 / e, "val_loss": None, "val_accuracy": None} for e in range(1, 37)]
    fig = plots.curves_figure(many)
    fig.canvas.draw()
    labels = tick_labels(fig.axes[0].xaxis)
    assert labels and all(label.isdigit() for label in labels)


def test_curves_without_validation_and_at_100_percent():
    no_val = [{"epoch": e, "train_loss": 1 / e, "val_loss": None, "val_accuracy": None} for e in (1, 2, 3)]
    fig = plots.curves_figure(no_val)
    assert [t.get_text() for t in fig.axes[1].texts] == ["no validation set:\ntrained on every training image"]
    perfect = [{"epoch": e, "train_loss": 0.1, "val_loss": 0.0, "val_accuracy": 1.0} for e in (1, 2)]
    fig = plots.curves_figure(perfect)
    assert fig.axes[1].get_ylim()[1] == 100.5  # a flat line at 100 % is not padded up to 105 %
    assert len(plots.png_bytes(fig)) > 1000


# --------------------------------------------------------------------------------------------------
# evaluate: confusion.png and mistakes.png


def test_evaluate_writes_confusion_and_mistakes(tiny_run, tmp_path, capsys):
    folder = tmp_path / "plots"
    code, stdout, _ = run_cli(capsys, "evaluate", str(tiny_run), "--plots", str(folder))
    assert code == 0 and "plots: " in stdout
    confusion = read_png(folder / plots.CONFUSION_NAME, (900, 700))
    matrix = confusion[:, :650]  # left of the colour bars
    assert (matrix[..., 2] - matrix[..., 0] > 60).sum() > 10_000  # right answers tinted by the Blues colour map
    mistakes = read_png(folder / plots.MISTAKES_NAME, (800, 920))  # 16 images, 4 per row, 2 x 2.2 inches each
    assert (mistakes.max(axis=2) < 60).mean() > 0.3
    if "accuracy: 100.00%" not in stdout:
        assert pixels_of(mistakes, RED, 20) > 100  # the titles of wrong predictions are red
        assert (matrix[..., 0] - matrix[..., 2] > 60).sum() > 1_000  # and mistakes tinted red in the matrix


def test_evaluate_plots_default_to_the_run_folder_and_can_be_skipped(tiny_run, capsys):
    for name in (plots.CONFUSION_NAME, plots.MISTAKES_NAME):
        (tiny_run / name).unlink(missing_ok=True)
    code, _, _ = run_cli(capsys, "evaluate", str(tiny_run), "--no-plots")
    assert code == 0 and not (tiny_run / plots.CONFUSION_NAME).exists()
    code, stdout, _ = run_cli(capsys, "evaluate", str(tiny_run), "--json")
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
    right = np.trace(drawn)
    assert ax.get_title() == f"accuracy {report.accuracy:.2%}: {right} of 200 images right, {200 - right} wrong"
    # colours are shares of each true class: right answers in one image, mistakes in another
    diagonal, mistakes = (np.ma.filled(image.get_array(), 0.0) for image in ax.images)
    rows_with_images = drawn.sum(axis=1) > 0
    assert (diagonal + mistakes).sum(axis=1)[rows_with_images] == pytest.approx(1.0)
    assert (np.diag(diagonal) > 0).sum() > 0 and np.diag(mistakes).sum() == 0


def test_confusion_gives_mistakes_their_own_scale():
    confusion = np.array([[980, 1, 0], [2, 990, 30], [0, 0, 1000]])
    fig = plots.confusion_figure(confusion, ["a", "b", "c"], title="run: cnn on the MNIST test split")
    ax, mistakes_bar, right_bar = fig.axes
    assert ax.get_title() == "run: cnn on the MNIST test split\naccuracy 98.90%: 2,970 of 3,003 images right, 33 wrong"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert mistakes_bar.get_ylabel() == "mistakes: share of the true class (log scale)"
    assert right_bar.get_ylabel() == "right answers: share of the true class"
    right, wrong = ax.images
    assert (right.norm.vmin, right.norm.vmax) == (0, 1)
    # the scale of the mistakes runs from the smallest share to the largest, not from 0 to 100%
    assert wrong.norm.vmax == pytest.approx(30 / 1022) and wrong.norm.vmin == pytest.approx(1 / 981)
    smallest = wrong.cmap(wrong.norm(1 / 981))
    assert smallest[1] < 0.9  # even one mistake is a visible pink, not the white of an empty cell


def test_evaluation_plots_are_titled_with_what_was_evaluated(tiny_run, tmp_path, monkeypatch):
    report = evaluate_checkpoint(tiny_run)
    assert report.about == f"cnn (width 4) on the {report.data_name} test split (200 images)"
    assert report.data_name == Path(json.loads((tiny_run / "config.json").read_text())["data"]).name
    figures = {}
    save = plots.save

    def keep_and_save(fig, path):
        figures[Path(path).name] = fig
        return save(fig, path)

    monkeypatch.setattr(plots, "save", keep_and_save)
    plots.write_evaluation_plots(report, tmp_path, title="run")
    assert figures["confusion.png"].axes[0].get_title().startswith(f"run: {report.about}\naccuracy ")
    assert figures["mistakes.png"].get_suptitle() == (
        f"run: {report.about}\nthe 16 highest-loss images: #index in the split, true → predicted (probability)"
    )


def test_a_failed_write_leaves_no_plots_folder_it_made(tiny_run, tmp_path, monkeypatch):
    report = evaluate_checkpoint(tiny_run)
    save = plots.save

    def full_disk_at_the_second(fig, path):
        if Path(path).name == plots.MISTAKES_NAME:
            raise WriteError(f"cannot write {path}: No space left on device")
        return save(fig, path)

    monkeypatch.setattr(plots, "save", full_disk_at_the_second)
    with pytest.raises(WriteError):
        plots.write_evaluation_plots(report, tmp_path / "plots")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    (tmp_path / "kept" / "notes.txt").write_text("mine")
    with pytest.raises(WriteError):
        plots.write_evaluation_plots(report, tmp_path / "kept")
    assert (tmp_path / "kept" / "notes.txt").read_text() == "mine"


def test_evaluate_makes_the_plots_folder_but_not_a_missing_one_above_it(tiny_run, tmp_path, capsys):
    folder = tmp_path / "missing" / "plots"
    code, stdout, stderr = run_cli(capsys, "evaluate", str(tiny_run), "--plots", str(folder))
    assert code == 2 and stdout == "", "refused before the report is printed"
    assert stderr == (
        f"mnistkit: error: cannot write {folder}: No such file or directory; check the folder exists and is writable\n"
    )
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "missing").mkdir()
    code, stdout, _ = run_cli(capsys, "evaluate", str(tiny_run), "--plots", str(folder))
    assert code == 0 and (folder / plots.CONFUSION_NAME).is_file()


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
    titles = titles_of(fig)
    assert titles[0] == f"#3: c → a (0.99)\nloss {losses[0]:.2f}" and titles[1].startswith("#1: a → b (0.91)")
    assert re.match(r"#2: c → c \(0\.\d\d\)", titles[2])
    colours = [ax.title.get_color() for ax in fig.axes if ax.get_title()]
    assert colours == ["tab:red", "tab:red", "black"]


def test_a_figure_is_drawn_again_but_a_file_of_the_users_is_kept(tiny_idx, tiny_run, tmp_path, capsys):
    notes, figure = tmp_path / "notes.png", tmp_path / "grid.png"
    notes.write_bytes(b"my notes")
    Image.new("L", (8, 8)).save(tmp_path / "photo.png")  # a PNG, but not one mnistkit drew
    show = ["show", "--data", tiny_idx, "--val-size", "100", "--n", "4", "-o"]
    for target in (notes, tmp_path / "photo.png"):
        code, _, err = run_cli(capsys, *show, target)
        assert code == 2 and "is not a figure that mnistkit wrote; pass --overwrite" in err
    assert notes.read_bytes() == b"my notes"
    assert run_cli(capsys, *show, figure)[0] == 0 and run_cli(capsys, *show, figure)[0] == 0  # its own figure
    assert run_cli(capsys, *show, notes, "--overwrite")[0] == 0 and Image.open(notes).format == "PNG"
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "mistakes.png").write_text("mine")
    code, out, err = run_cli(capsys, "evaluate", tiny_run, "--plots", tmp_path / "plots")
    assert code == 2 and out == "" and "mistakes.png: exists" in err
    code, _, err = run_cli(capsys, "compare", tiny_run, "-o", tmp_path / "photo.png")
    assert code == 2 and "photo.png: exists" in err


# --------------------------------------------------------------------------------------------------
# Where matplotlib cannot write its own folders (a read-only or missing HOME): no warning, a private folder


def env_without_matplotlib_folders(home: Path, tmp: Path) -> dict[str, str]:
    """This process's environment with HOME at ``home`` and the temporary folder at ``tmp``: nothing else tells
    matplotlib where to write."""
    unset = ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")
    return {**{k: v for k, v in os.environ.items() if k not in unset}, "HOME": str(home), "TMPDIR": str(tmp)}


def unusable_home(tmp_path: Path) -> Path:
    """A HOME in which no folder can be made, even by root: a file."""
    home = tmp_path / "home"
    home.write_text("a file, not a folder")
    return home


@pytest.fixture
def private_folder(tmp_path, monkeypatch) -> Path:
    """In this process, an unusable HOME and the temporary folder in tmp_path; the folder mnistkit would use."""
    monkeypatch.setenv("HOME", str(unusable_home(tmp_path)))
    for name in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(name, "")  # set first, so that the test's end takes back what it sets
        monkeypatch.delenv(name)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path / f"mnistkit-matplotlib-{os.getuid()}"


def test_a_figure_drawn_where_matplotlib_cannot_write_its_folders_warns_nothing(tmp_path):
    (tmp_path / "tmp").mkdir()
    draw = (
        "import numpy as np; from mnistkit import plots; plots.save(plots.image_grid(np.eye(28)[None], ['0']), 'a.png')"
    )
    env = env_without_matplotlib_folders(unusable_home(tmp_path), tmp_path / "tmp")
    done = subprocess.run(
        [sys.executable, "-c", draw], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stderr == ""
    read_png(tmp_path / "a.png", (100, 120))
    folder = tmp_path / "tmp" / f"mnistkit-matplotlib-{os.getuid()}"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert list(folder.glob("fontlist-*.json"))  # matplotlib's font cache, kept for the next command


def test_matplotlib_gets_a_private_folder_only_where_its_own_cannot_be_made(private_folder, tmp_path, monkeypatch):
    plots.use_private_matplotlib_folder()
    assert os.environ["MPLCONFIGDIR"] == str(private_folder) and private_folder.is_dir()
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "chosen"))
    plots.use_private_matplotlib_folder()
    assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "chosen")  # the user's choice stands
    monkeypatch.delenv("MPLCONFIGDIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    plots.use_private_matplotlib_folder()
    assert "MPLCONFIGDIR" not in os.environ  # matplotlib's own folders can be made there: nothing is changed


def test_a_private_folder_that_others_may_write_in_is_not_used(private_folder):
    private_folder.mkdir()
    private_folder.chmod(0o777)  # as another user could have made it, to put their matplotlibrc in it
    plots.use_private_matplotlib_folder()
    assert "MPLCONFIGDIR" not in os.environ  # matplotlib makes a temporary folder of its own, and says so
