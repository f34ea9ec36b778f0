"""The Classifier and the bundled pretrained model: loading, predicting files / PIL images / arrays, batches with
bad images, folder and glob expansion, ensembles, and the pretrained model's accuracy, size and recorded command."""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shlex
import shutil
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_digits, run_cli
from PIL import Image, ImageDraw
from torch import nn

from mnistkit import cli, nondigits
from mnistkit.checkpoint import load_checkpoint, save_checkpoint
from mnistkit.config import TrainConfig, make_config
from mnistkit.data import Normalization
from mnistkit.errors import CheckpointError, ConfigError
from mnistkit.inference import (
    MNIST_SHAPES,
    PRETRAINED_DIR,
    Classifier,
    Ensemble,
    FailedPrediction,
    Prediction,
    find_images,
)
from mnistkit.models import create_model
from mnistkit.preprocess import ImageError

ROUND_TRIP_IMAGES = 300


@pytest.fixture(scope="module")
def pretrained() -> Classifier:
    return Classifier.load()


@pytest.fixture
def saved(tmp_path):
    """A checkpoint of a small untrained cnn, as any training run saves it."""
    torch.manual_seed(0)
    (tmp_path / "run").mkdir()
    save_checkpoint(tmp_path / "run", create_model("cnn", width=4), {"model": "cnn", "model_options": {"width": 4}})
    return tmp_path / "run"


def test_weights_that_overflow_are_one_error_not_nan_probabilities(saved, capsys):
    net, meta = load_checkpoint(saved)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.fill_(1e38)  # finite, and so accepted, but their sums overflow float32
    classifier = Classifier(net, meta, str(saved))
    with pytest.raises(CheckpointError, match="the model answers NaN or infinite probabilities; its weights are"):
        classifier.predict_array(np.zeros((2, 28, 28), np.uint8))


def test_wrapping_a_model_leaves_it_as_the_caller_had_it(saved):
    net, meta = load_checkpoint(saved)
    net.train()
    before = {name: p.clone() for name, p in net.state_dict().items()}
    classifier = Classifier(net, meta, str(saved))
    classifier.predict_array(np.zeros((2, 28, 28), np.uint8))
    # A notebook may train the model further: still in train mode, its weights learning, in their own layout.
    assert net.training and all(p.requires_grad for p in net.parameters())
    assert all(p.is_contiguous() for p in net.parameters())
    assert all(torch.equal(before[name], p) for name, p in net.state_dict().items())
    with torch.no_grad():
        next(net.parameters()).add_(1.0)  # and what it learns after is not the classifier's
    assert not any(p.requires_grad for p in classifier.inference.parameters())
    assert not torch.equal(next(net.parameters()), next(classifier.inference.net.parameters()))


def test_a_model_deepcopy_refuses_is_one_clear_error():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.nn.utils.weight_norm is deprecated: the point here
        net = nn.Sequential(nn.Flatten(), torch.nn.utils.weight_norm(nn.Linear(784, 10)))
    net(torch.zeros(1, 1, 28, 28))  # its weight is now computed by a hook, which deepcopy refuses
    with pytest.raises(ConfigError, match=r"^cannot copy the model to wrap it \(Only Tensors created explicitly"):
        Classifier(net, {"model": "mine"}, "mine")


def save_black_on_white(digit: np.ndarray, path, size: int = 200) -> None:
    """A real MNIST test digit as someone would draw it: black on white, at another size, as a PNG."""
    Image.fromarray(255 - digit).resize((size, size), Image.Resampling.BILINEAR).save(path)


# --------------------------------------------------------------------------------------------------
# the pretrained model


def test_pretrained_model_is_small_and_accurate(pretrained, mnist):
    size = sum(p.stat().st_size for p in PRETRAINED_DIR.iterdir())
    assert size <= 2_000_000 and pretrained.model_info()["parameters"] <= 200_000
    probabilities = pretrained.predict_array(mnist.test.images)
    accuracy = float((probabilities.argmax(1) == mnist.test.labels.numpy()).mean())
    assert accuracy >= 0.995
    assert accuracy == pytest.approx(pretrained.meta["metrics"]["test_accuracy"], abs=1e-4)  # what its metadata claims


def test_pretrained_metadata_records_the_command_that_reproduces_its_config(pretrained):
    command = pretrained.meta["command"]
    argv = shlex.split(command)
    assert argv[:2] == ["mnistkit", "train"]
    args = cli.build_parser().parse_args(argv[1:])
    # Exactly what `mnistkit train` does with those options: the same config as the one the model was trained with.
    config = make_config(args.preset, **{name: getattr(args, name) for name in cli.CONFIG_OPTIONS})
    # Read back as mnistkit reads any saved config: options added since it was saved take their defaults.
    assert config == TrainConfig.from_dict(pretrained.meta["config"])
    assert pretrained.model_info()["command"] == command


def test_real_digits_drawn_black_on_white_at_200px_round_trip(pretrained, mnist, tmp_path):
    images, labels = mnist.test.images[:ROUND_TRIP_IMAGES].numpy(), mnist.test.labels[:ROUND_TRIP_IMAGES].numpy()
    paths = []
    for i, digit in enumerate(images):
        paths.append(tmp_path / f"{i:03d}.png")
        save_black_on_white(digit, paths[-1])
    results = pretrained.predict(paths)
    assert all(r.ok for r in results)
    accuracy = np.mean([r.digit == label for r, label in zip(results, labels)])
    assert accuracy >= 0.98, accuracy


def test_probabilities_use_the_training_normalization(pretrained, mnist):
    x = mnist.test.images[:16]
    norm = Normalization(**pretrained.meta["normalization"])
    temperature = pretrained.meta["calibration"]["temperature"]  # fitted on validation data, in the metadata
    with torch.no_grad():
        expected = (pretrained.inference.net(norm.apply(x)) / temperature).softmax(1).numpy()
    np.testing.assert_allclose(pretrained.predict_array(x), expected, atol=1e-5)
    np.testing.assert_allclose(pretrained.predict_array(x.numpy().astype(np.float32) / 255), expected, atol=1e-5)
    np.testing.assert_allclose(pretrained.predict_array(x[:, None]), expected, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_predictions_on_a_gpu_match_the_cpu(pretrained, mnist):
    on_gpu = Classifier.load(device="cuda")
    assert on_gpu.device.type == "cuda" and on_gpu.batch_size > pretrained.batch_size
    images = mnist.test.images[:3000].numpy()
    np.testing.assert_allclose(on_gpu.predict_array(images), pretrained.predict_array(images), atol=1e-4)


def test_a_device_the_model_cannot_run_on_is_one_config_error(saved, tmp_path):
    for device in ["gpu", "CPU", "meta", None, 5, torch.device("meta")]:
        with pytest.raises(ConfigError, match=r"^device .*: not a device the model can run on; use cpu, cuda, cuda:N"):
            Classifier.load(saved, device=device)
    with pytest.raises(ConfigError, match=r"this machine has: cpu"):
        Classifier.load(tmp_path / "missing", device="gpu")  # checked before the checkpoint is read
    with pytest.raises(ConfigError, match="^device"):
        Classifier.load([saved, saved], device="gpu")
    if not torch.cuda.is_available():
        for device in ["cuda", "cuda:0", torch.device("cuda", 1)]:
            with pytest.raises(ConfigError, match="no CUDA GPU is available here"):
                Classifier.load(saved, device=device)
    else:
        with pytest.raises(ConfigError, match="cuda:99: this machine has no such GPU; use one of: cpu, cuda:0"):
            Classifier.load(saved, device="cuda:99")
    for device in ["cpu", "auto", torch.device("cpu")]:
        assert Classifier.load(saved, device=device).device.type in ("cpu", "cuda", "mps")


def dot_and_letter() -> list[np.ndarray]:
    """Two things that are no digit, drawn dark on white: a filled dot, and an H."""
    dot = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(dot).ellipse((80, 80, 110, 110), fill=0)
    letter = Image.new("L", (200, 200), 255)
    ImageDraw.Draw(letter).line([(50, 30), (50, 170)], fill=0, width=12)
    ImageDraw.Draw(letter).line([(150, 30), (150, 170)], fill=0, width=12)
    ImageDraw.Draw(letter).line([(50, 100), (150, 100)], fill=0, width=12)
    return [np.asarray(dot), np.asarray(letter)]


def test_not_a_digit_flags_what_is_no_digit_and_keeps_the_best_guess(pretrained, mnist):
    calibration = pretrained.meta["calibration"]
    assert calibration["temperature"] > 0 and calibration["held_out_nondigits_flagged"] >= 0.9
    nondigits = pretrained.predict(dot_and_letter())
    assert [r.not_a_digit for r in nondigits] == [True, True]
    assert all(0 <= r.digit <= 9 and r.to_dict()["not_a_digit"] is True for r in nondigits)
    assert not any(r.not_a_digit for r in pretrained.predict(dot_and_letter(), reject=False))
    digits = pretrained.predict(mnist.test.images[:200].numpy())
    assert sum(r.not_a_digit for r in digits) <= 2 and digits[0].to_dict()["not_a_digit"] is False
    probabilities, flagged = pretrained.probabilities_and_flags(mnist.test.images)
    np.testing.assert_array_equal(probabilities, pretrained.predict_array(mnist.test.images))
    assert flagged.mean() <= 0.005  # of the MNIST test digits


def test_two_digits_side_by_side_are_not_a_digit(pretrained, mnist):
    seven, two = mnist.test.images[0].numpy(), mnist.test.images[1].numpy()  # each read right alone
    page = np.full((120, 200), 255, np.uint8)
    page[30:86, 30:86] = 255 - np.kron(seven, np.ones((2, 2), np.uint8))
    page[30:86, 100:156] = 255 - np.kron(two, np.ones((2, 2), np.uint8))
    assert [r.digit for r in pretrained.predict([255 - seven, 255 - two])] == [7, 2]
    assert pretrained.predict(page).not_a_digit
    assert not pretrained.predict(page, reject=False).not_a_digit


def test_a_model_without_calibration_never_flags(saved):
    classifier = Classifier.load(saved)
    assert classifier.threshold is None and classifier.inference.temperature == 1.0
    assert not classifier.predict(dot_and_letter()[0]).not_a_digit


# --------------------------------------------------------------------------------------------------
# predict


def test_predict_takes_paths_pil_images_and_arrays(pretrained, mnist, tmp_path):
    seven = mnist.test.images[0].numpy()
    save_black_on_white(seven, tmp_path / "seven.png")
    inputs = [
        tmp_path / "seven.png",
        str(tmp_path / "seven.png"),
        Image.open(tmp_path / "seven.png"),
        seven,
        255 - seven,
    ]
    for item in inputs:
        result = pretrained.predict(item, top_k=3)
        assert isinstance(result, Prediction)
        assert result.digit == 7 and result.label == "7" and result.probability > 0.9
        assert [label for label, _ in result.top][0] == "7" and len(result.top) == 3
        assert [p for _, p in result.top] == sorted((p for _, p in result.top), reverse=True)
        assert result.probabilities.shape == (10,) and result.probabilities.sum() == pytest.approx(1, abs=1e-5)
        assert result.input.shape == (28, 28) and result.input.dtype == np.uint8
    assert np.array_equal(pretrained.predict(seven).input, seven)  # MNIST form goes in untouched
    assert pretrained.predict(str(tmp_path / "seven.png")).source == str(tmp_path / "seven.png")


def test_predict_a_stacked_array_is_a_batch(pretrained, mnist):
    images, labels = mnist.test.images[:20].numpy(), mnist.test.labels[:20].numpy()
    results = pretrained.predict(images, top_k=1)
    assert [r.digit for r in results] == list(pretrained.predict_array(images).argmax(1))
    assert np.mean([r.digit == y for r, y in zip(results, labels)]) >= 0.95
    assert [r.source for r in results[:2]] == ["<array 0>", "<array 1>"]


def test_every_layout_of_mnist_form_images_reads_the_same(pretrained, mnist):
    """PyTorch's (N, 1, 28, 28), Keras's (N, 28, 28, 1), and the flattened rows of MNIST's CSV and OpenML copies."""
    images = mnist.test.images[:6].numpy()
    expected = pretrained.predict_array(images)
    digits = [r.digit for r in pretrained.predict(images)]
    for layout in [images[:, None], images[..., None], images.reshape(6, 784), torch.from_numpy(images).flatten(1)]:
        np.testing.assert_array_equal(pretrained.predict_array(layout), expected)
        if isinstance(layout, np.ndarray):
            assert [r.digit for r in pretrained.predict(layout)] == digits
    for one in [images[0].reshape(784), images[0][..., None]]:
        np.testing.assert_allclose(pretrained.predict_array(one), expected[:1], atol=1e-6)  # batch size: rounding
        assert pretrained.predict(one).digit == digits[0]
    # A photo 784 pixels wide is one image once it has its channel axis.
    wide = np.full((300, 784, 1), 255, np.uint8)
    wide[100:200, 350:370] = 0
    assert pretrained.predict(wide).digit == 1


def test_a_mask_is_ink_where_true(pretrained, mnist):
    images = mnist.test.images[:4].numpy()
    mask = images > 127
    binary = np.where(mask, 255, 0).astype(np.uint8)
    np.testing.assert_array_equal(pretrained.predict_array(mask), pretrained.predict_array(binary))
    np.testing.assert_array_equal(pretrained.predict_array(torch.from_numpy(mask)), pretrained.predict_array(binary))


def test_one_bad_image_in_a_batch_does_not_stop_the_others(pretrained, mnist, tmp_path):
    save_black_on_white(mnist.test.images[1].numpy(), tmp_path / "two.png")
    (tmp_path / "junk.png").write_text("no picture here")
    results = pretrained.predict(
        [tmp_path / "two.png", tmp_path / "junk.png", tmp_path / "gone.png", np.zeros((40, 40), np.uint8)]
    )
    assert [r.ok for r in results] == [True, False, False, False]
    assert results[0].digit == 2
    failures = results[1:]
    assert all(isinstance(r, FailedPrediction) and isinstance(r.error, ImageError) for r in failures)
    assert [r.to_dict()["source"] for r in failures] == [
        str(tmp_path / "junk.png"),
        str(tmp_path / "gone.png"),
        "<array 3>",
    ]
    assert "not an image" in failures[0].to_dict()["error"] and "file not found" in str(failures[1].error)
    assert "no ink found" in str(failures[2].error)
    json.dumps([r.to_dict() for r in results])  # all JSON-ready


def test_names_that_are_not_utf8_are_valid_unicode_in_json(pretrained, mnist, tmp_path, capsys):
    seven, gone = tmp_path / os.fsdecode(b"caf\xe9.png"), tmp_path / os.fsdecode(b"gon\xe9.png")
    save_black_on_white(mnist.test.images[0].numpy(), seven)
    found, missing = pretrained.predict([seven, gone])
    shown = f"{tmp_path}/gon\\xe9.png"  # the byte that is not UTF-8, as Python writes it: no lone surrogate
    assert missing.to_dict() == {"source": shown, "error": f"{shown}: file not found"}
    code, out, _ = run_cli(capsys, "predict", "--json", seven)
    assert code == 0 and json.loads(out)["source"] == found.to_dict()["source"] == f"{tmp_path}/caf\\xe9.png"


def test_a_single_bad_image_raises(pretrained, tmp_path):
    with pytest.raises(ImageError, match="file not found"):
        pretrained.predict(tmp_path / "gone.png")
    with pytest.raises(ImageError, match="no ink found"):
        pretrained.predict(Image.new("L", (100, 100), 255))


def test_predict_refuses_a_top_k_or_reject_it_cannot_use(pretrained, mnist):
    seven = mnist.test.images[0].numpy()
    for top_k in [0, -1, 2.5, "3", None, True]:
        with pytest.raises(ConfigError, match=r"^top_k must be a whole number of at least 1, got ") as caught:
            pretrained.predict(seven, top_k=top_k)
        assert caught.value.options == ("top_k",)
        with pytest.raises(ConfigError, match="^top_k"):
            pretrained.predict([seven, seven], top_k=top_k)
    for reject in ["no", None, 0, 1]:
        with pytest.raises(ConfigError, match=r"^reject must be True or False, got ") as caught:
            pretrained.predict(seven, reject=reject)
        assert caught.value.options == ("reject",)
    assert len(pretrained.predict(seven, top_k=np.int64(2)).top) == 2  # a NumPy integer is a whole number
    assert len(pretrained.predict(seven, top_k=50).top) == 10  # more than there are classes: all of them
    assert pretrained.predict(seven, reject=np.bool_(False)).digit == 7


def test_predict_array_checks_its_input(pretrained):
    assert pretrained.predict_array(np.zeros((0, 28, 28), np.uint8)).shape == (0, 10)
    for bad, message in [
        (np.zeros((3, 32, 32)), "expected 28×28"),
        (np.zeros(783), "expected 28×28"),
        (np.zeros((3, 28, 28, 2)), "expected 28×28"),
        (np.full((28, 28), 2.0), r"\[0, 1\]"),
        (np.full((28, 28), 256), "0..255"),
        (np.array([["a"] * 28] * 28), "must be numbers"),
    ]:
        with pytest.raises(ImageError, match=message):
            pretrained.predict_array(bad)


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
def test_predict_array_names_what_is_no_array(pretrained, tmp_path):
    shapes = "^" + re.escape(f"expected 28×28 images shaped {MNIST_SHAPES}, got ")
    for bad, got in [
        ("digit.png", "str 'digit.png'; predict\\(\\) reads image files$"),
        (tmp_path / "digit.png", "PosixPath .*; predict\\(\\) reads image files$"),
        (None, "NoneType None$"),
        (True, "bool True$"),
        (b"\x89PNG", "bytes b'.x89PNG'$"),
        (np.array(3), r"shape \(\)$"),
    ]:
        with pytest.raises(ImageError, match=shapes + got):
            pretrained.predict_array(bad)
    for ragged in [[np.zeros((28, 28)), np.zeros((28, 27))], [[1, 2], [3]]]:
        with pytest.raises(ImageError, match="^images: this list does not make one array: its items are not all the"):
            pretrained.predict_array(ragged)
    with pytest.raises(ImageError, match="must be numbers .*, got dtype torch.complex32"):
        pretrained.predict_array(torch.zeros((1, 28, 28), dtype=torch.complex32))
    # A PIL image of a file cut short gives its pixels only when asked, and fails then.
    whole = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)).save(whole, "PNG")
    (tmp_path / "cut.png").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    with Image.open(tmp_path / "cut.png") as lazy:
        for given in (lazy, [lazy]):
            with pytest.raises(ImageError, match="^images: cannot read the pixels"):
                pretrained.predict_array(given)
    closed = Image.new("L", (28, 28))
    closed.close()
    with pytest.raises(ImageError, match="^images: cannot read the pixels \\(Operation on closed image\\)"):
        pretrained.predict_array(closed)


def test_predict_array_refuses_masked_pixels_and_names_the_shape_it_was_given(pretrained, mnist):
    images = mnist.test.images[:4].numpy()
    np.testing.assert_allclose(
        pretrained.predict_array(np.ma.masked_array(images)), pretrained.predict_array(images), atol=1e-6
    )
    with pytest.raises(ImageError, match=r"^images: a masked array with 1 masked pixels; fill them"):
        pretrained.predict_array(np.ma.masked_array(images, mask=np.arange(images.size).reshape(images.shape) == 9))
    masked_item = np.ma.masked_array(images[0], mask=images[0] > 0)
    with pytest.raises(ImageError, match=r"^images: a masked array with [\d,]+ masked pixels"):
        pretrained.predict_array([masked_item, images[1]])  # in a list, which NumPy would stack without its mask
    with pytest.raises(ImageError, match=r"got shape \(784, 1\)$"):
        pretrained.predict_array(np.zeros((784, 1), np.uint8))


def test_an_array_with_no_channels_is_one_image_and_one_error(pretrained):
    with pytest.raises(ImageError, match=r"^array: expected \(H, W\) grayscale.*got shape \(28, 28, 0\)$"):
        pretrained.predict(np.zeros((28, 28, 0), np.uint8))


def test_predict_array_takes_bfloat16_and_float8_tensors(pretrained, mnist):
    images = mnist.test.images[:8].float().div(255).to(torch.bfloat16)
    expected = pretrained.predict_array(images.float())
    np.testing.assert_array_equal(pretrained.predict_array(images), expected)
    np.testing.assert_array_equal(pretrained.predict_array(images[:, None]), expected)
    eight_bit = images.to(torch.float8_e4m3fn)  # nor has NumPy these
    np.testing.assert_array_equal(pretrained.predict_array(eight_bit), pretrained.predict_array(eight_bit.float()))
    with pytest.raises(ImageError, match=r"float pixels must lie in \[0, 1\]"):
        pretrained.predict_array(images * 2)


def test_predict_array_converts_a_batch_at_a_time(saved):
    classifier = Classifier.load(saved)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4096, 28, 28), dtype=np.uint8)
    expected = np.concatenate([classifier.predict_array(images[i : i + 256]) for i in range(0, 4096, 256)])
    float32_copy = images.size * 4
    for given in [images, images / np.float32(255), torch.from_numpy(images)[:, None]]:
        tracemalloc.start()
        try:
            probabilities = classifier.predict_array(given)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < float32_copy / 3, f"{type(given).__name__} {given.dtype}: {peak:,} bytes"
        np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    bad = images / np.float32(255)
    bad[-1, 0, 0] = np.nan  # in the last batch: still refused before the first is run
    classifier.inference = None  # type: ignore[assignment]  # a pass would fail: none is made
    with pytest.raises(ImageError, match=r"float pixels must lie in \[0, 1\]"):
        classifier.predict_array(bad)
    with pytest.raises(ImageError, match=r"integer pixels must lie in 0..255, found 0..300"):
        classifier.predict_array(np.concatenate([images.astype(np.int16), np.full((1, 28, 28), 300, np.int16)]))
    bf16 = torch.zeros((600, 28, 28), dtype=torch.bfloat16)
    bf16[-1] = float("inf")
    with pytest.raises(ImageError, match=r"float pixels must lie in \[0, 1\]"):
        classifier.predict_array(bf16)


def test_a_saved_checkpoint_loads_and_predicts(saved):
    classifier = Classifier.load(saved / "model.safetensors")
    assert classifier.model_info()["model"] == "cnn" and classifier.model_info()["model_options"] == {"width": 4}
    probabilities = classifier.predict_array(np.zeros((2, 28, 28), np.uint8))
    assert probabilities.shape == (2, 10) and np.allclose(probabilities.sum(1), 1, atol=1e-5)


def test_bad_checkpoints_raise_checkpoint_error(tmp_path, saved):
    with pytest.raises(CheckpointError, match="no checkpoint here"):
        Classifier.load(tmp_path / "missing")
    (tmp_path / "model.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        Classifier.load(tmp_path)
    with open(saved / "model.safetensors", "r+b") as f:
        f.seek(-4, 2)
        f.write(b"\0\0\0\0")
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        Classifier.load(saved)


def test_load_refuses_what_is_no_path_and_an_empty_one(saved):
    for path, got in [
        (b"run10", r"got bytes b'run10'; decode bytes to a str first"),
        ({"run"}, "got set$"),
        ({"path": "run"}, "got dict$"),
        (3, "got int 3$"),
        ([saved, b"run10"], "got a list holding bytes"),
        ([[saved, saved]], "got a list holding list$"),
    ]:
        with pytest.raises(
            CheckpointError, match=r"^Classifier.load takes a path \(a str or Path\) or a list of them, " + got
        ):
            Classifier.load(path)
    for path in ["", [saved, ""]]:
        with pytest.raises(CheckpointError, match="^the model path is empty; pass a run folder"):
            Classifier.load(path)
    assert Classifier.load((saved,)).source == str(saved)  # a tuple is a list too


def test_an_empty_image_path_is_named_as_one(pretrained, tmp_path, monkeypatch):
    with pytest.raises(ImageError, match="^the image path is empty; pass an image file$"):
        pretrained.predict("")
    failed = pretrained.predict(["", np.zeros((40, 40), np.uint8)])[0]
    assert isinstance(failed, FailedPrediction) and str(failed.error).startswith("the image path is empty")
    save_black_on_white(np.zeros((28, 28), np.uint8), tmp_path / "blank.png")
    monkeypatch.chdir(tmp_path)  # "" is not the current folder, with its images
    found, failures = find_images([""])
    assert found == [] and [str(f.error) for f in failures] == [
        "the image path is empty; pass a file, folder or pattern"
    ]


# --------------------------------------------------------------------------------------------------
# ensembles


def digits_and_nondigits() -> np.ndarray:
    return np.concatenate([make_digits(30, seed=5)[0], nondigits.generate(30, seed=3).numpy()])


def test_an_ensemble_averages_its_members_probabilities(tiny_run, second_tiny_run):
    cnn, mlp = Classifier.load(tiny_run), Classifier.load(second_tiny_run)
    ensemble = Classifier.load([tiny_run, second_tiny_run])
    assert isinstance(ensemble, Ensemble) and type(Classifier.load([tiny_run])) is Classifier
    images = digits_and_nondigits()
    own = cnn.predict_array(images), mlp.predict_array(images)
    assert np.abs(own[0] - own[1]).max() > 0.01  # the members disagree, so the mean means something
    np.testing.assert_allclose(ensemble.predict_array(images), (own[0] + own[1]) / 2, atol=1e-6)
    for prediction in ensemble.predict([Image.fromarray(255 - image) for image in images[:5]]):
        expected = (cnn.predict_array(prediction.input) + mlp.predict_array(prediction.input))[0] / 2
        np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-6)
        assert prediction.digit == int(np.argmax(expected))


def twin(run: Path, folder: Path) -> Path:
    """A checkpoint in ``folder`` that answers as ``run``'s, with other weights: a BatchNorm's count of the
    batches it has seen, which inference does not use, one higher; without BatchNorm, the last bias one float32
    step further (a change a millionth of the smallest one training makes)."""
    net, meta = load_checkpoint(run)
    counts = [buffer for name, buffer in net.named_buffers() if name.endswith("num_batches_tracked")]
    if counts:
        counts[0] += 1
    else:
        bias = list(net.parameters())[-1].data
        bias[-1] = torch.nextafter(bias[-1], torch.tensor(np.inf))
    folder.mkdir()
    save_checkpoint(folder, net, {k: v for k, v in meta.items() if k not in ("format", "weights", "sha256")})
    return folder


def test_an_ensemble_flags_what_most_of_its_calibrated_members_flag(tiny_run, second_tiny_run, saved, tmp_path):
    images = digits_and_nondigits()
    cnn, mlp = Classifier.load(tiny_run), Classifier.load(second_tiny_run)
    probabilities, flags = cnn.probabilities_and_flags(images)
    mlp_flags = mlp.probabilities_and_flags(images)[1]
    assert (flags != mlp_flags).any()  # the members disagree on some images
    # A model and its twin are that model: same probabilities, same flags.
    twice = Classifier.load([tiny_run, twin(tiny_run, tmp_path / "cnn")]).probabilities_and_flags(images)
    np.testing.assert_allclose(twice[0], probabilities, atol=1e-6)
    np.testing.assert_array_equal(twice[1], flags)
    # Two calibrated members must both flag an image; three, two of them.
    pair = Classifier.load([tiny_run, second_tiny_run])
    np.testing.assert_array_equal(pair.probabilities_and_flags(images)[1], flags & mlp_flags)
    trio = Classifier.load([tiny_run, second_tiny_run, twin(second_tiny_run, tmp_path / "mlp")])
    np.testing.assert_array_equal(trio.probabilities_and_flags(images)[1], mlp_flags)
    assert pair.threshold is None and [
        pair.model_info()["not_a_digit_votes"],
        trio.model_info()["not_a_digit_votes"],
    ] == [2, 2]
    # A member without calibration (saved: no validation data) adds its probabilities but has no vote.
    mixed = Classifier.load([tiny_run, saved])
    assert mixed.model_info()["not_a_digit_votes"] == 1
    np.testing.assert_array_equal(mixed.probabilities_and_flags(images)[1], flags)
    uncalibrated = Classifier.load([saved, twin(saved, tmp_path / "saved")])
    assert uncalibrated.model_info()["not_a_digit_votes"] == 0
    assert not uncalibrated.probabilities_and_flags(images)[1].any()


def test_an_ensemble_refuses_one_model_given_twice(tiny_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    for members in ([tiny_run, tiny_run], [tiny_run, tiny_run / "model.safetensors"], [tiny_run, copy]):
        with pytest.raises(CheckpointError) as raised:
            Classifier.load(members)
        assert str(raised.value) == (
            f"{members[0]} and {members[1]} are the same model (the same weights); give each member of an ensemble once"
        )


def test_ensemble_members_must_agree_on_their_classes(tmp_path, saved):
    letters = tmp_path / "letters"
    letters.mkdir()
    meta = {"model": "cnn", "model_options": {"width": 4}, "classes": list("abcdefghij")}
    save_checkpoint(letters, create_model("cnn", width=4), meta)
    with pytest.raises(CheckpointError) as raised:
        Classifier.load([saved, letters])
    assert str(raised.value) == (
        f"{letters} and {saved} predict different classes (class 0 is 'a', not '0'); "
        "the members of an ensemble must agree on them"
    )
    many = tmp_path / "many"
    many.mkdir()
    meta = {"model": "cnn", "model_options": {"width": 4, "num_classes": 12}, "classes": list("abcdefghijkl")}
    save_checkpoint(many, create_model("cnn", width=4, num_classes=12), meta)
    with pytest.raises(CheckpointError, match=r"predict different classes \(12 classes, not 10\)"):
        Classifier.load([saved, many])


def test_an_ensemble_describes_itself_and_its_members(tiny_run, second_tiny_run, tmp_path):
    ensemble = Classifier.load([tiny_run, second_tiny_run])
    members = [Classifier.load(tiny_run).model_info(), Classifier.load(second_tiny_run).model_info()]
    info = ensemble.model_info()
    assert info["model"] == "ensemble" and info["members"] == members
    assert info["parameters"] == members[0]["parameters"] + members[1]["parameters"]
    assert info["classes"] == members[0]["classes"] and info["source"] == f"{tiny_run}, {second_tiny_run}"
    assert info["not_a_digit_below"] is None and info["test_accuracy"] is None
    assert len(ensemble.meta["sha256"]) == 64 and ensemble.meta["sha256"] != Classifier.load(tiny_run).meta["sha256"]
    with pytest.raises(CheckpointError, match="takes one model, not an ensemble; give one of its members"):
        ensemble.save_pretrained(tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


# --------------------------------------------------------------------------------------------------
# finding images


def test_find_images_walks_folders_expands_globs_and_reports_empty_ones(tmp_path):
    (tmp_path / "digits" / "more").mkdir(parents=True)
    (tmp_path / "digits" / ".hidden").mkdir()
    (tmp_path / "empty").mkdir()
    for name in [
        "digits/b.png",
        "digits/a.JPG",
        "digits/more/c.bmp",
        "digits/.d.png",
        "digits/.hidden/e.png",
        "digits/notes.txt",
        "x1.png",
        "x2.png",
    ]:
        (tmp_path / name).write_bytes(b"")
    found, failures = find_images(
        [tmp_path / "digits", str(tmp_path / "x*.png"), tmp_path / "empty", str(tmp_path / "nope*.png"), "missing.png"]
    )
    names = [str(p).replace(str(tmp_path) + "/", "") for p in found]
    assert names == ["digits/a.JPG", "digits/b.png", "digits/more/c.bmp", "x1.png", "x2.png", "missing.png"]
    assert [str(f.error).replace(str(tmp_path) + "/", "") for f in failures] == [
        "empty: no image files in this folder",
        "nope*.png: no file matches this pattern",
    ]


@pytest.mark.timeout(60)
def test_a_folder_too_deep_for_the_system_is_one_short_line(tmp_path, monkeypatch):
    deep = str(tmp_path / "/".join(["d" * 250] * 20))  # past PATH_MAX: os.walk cannot open it

    def walk(top, onerror):
        onerror(OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), deep))
        return iter([])

    monkeypatch.setattr(os, "walk", walk)
    found, failures = find_images([str(tmp_path)])
    message = str(failures[0].error)
    assert found == [] and len(message) < 200 and f"({len(deep)} characters)" in message
    assert message.endswith("cannot read this folder (File name too long); its images were skipped")


def test_a_recursive_glob_does_not_follow_links_back_up_the_tree(tmp_path):
    (tmp_path / "digits" / "more").mkdir(parents=True)
    for name in ["digits/a.png", "digits/more/b.png", "digits/more/.c.png"]:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "digits" / "more" / "up").symlink_to("..")  # glob.glob would follow these without end
    (tmp_path / "digits" / "itself").symlink_to(tmp_path / "digits")
    found, failures = find_images([str(tmp_path / "digits" / "**" / "*.png")])
    assert [p.replace(str(tmp_path) + "/", "") for p in found] == ["digits/a.png", "digits/more/b.png"]
    assert failures == []


def test_classifier_is_importable_from_the_package():
    import mnistkit
    from mnistkit.inference import Classifier

    assert mnistkit.Classifier is Classifier


def test_a_grey_and_alpha_array_is_one_image(mnist):
    image = 255 - mnist.test.images[0].numpy()
    # Not 28 images 2 pixels wide: Pillow's "LA" as an array, read as that image is.
    result = Classifier.load().predict(np.dstack([image, np.full_like(image, 255)]))
    assert result.digit == 7
    with pytest.raises(ImageError, match=r"\(H, W, 2\) grayscale and alpha, .*got shape \(100,\)"):
        Classifier.load().predict(np.zeros(100, np.uint8))


@pytest.mark.parametrize("kind", ["meta", "sparse", "nested"])
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype stage")
def test_a_tensor_without_plain_pixels_is_one_clear_error(pretrained, kind):
    images = {
        "meta": lambda: torch.zeros(1, 28, 28, device="meta"),
        "sparse": lambda: torch.zeros(1, 28, 28).to_sparse(),
        "nested": lambda: torch.nested.nested_tensor([torch.zeros(28, 28)]),
    }[kind]()
    with pytest.raises(ImageError, match="tensor holds no plain pixels; give a dense tensor of the pixels"):
        pretrained.predict_array(images)
