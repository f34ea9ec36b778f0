"""Training for real handwriting: the handwriting augmentation, synthesized non-digits, and calibration."""

from __future__ import annotations

import numpy as np
import torch
from helpers import write_idx_folder

from mnistkit import calibrate, handwriting, nondigits, strokes
from mnistkit.augment import augment
from mnistkit.config import make_config
from mnistkit.data import Normalization
from mnistkit.inference import Classifier
from mnistkit.train import train_run

NORM = Normalization(0.1307, 0.3081)
BACKGROUND = -NORM.mean / NORM.std


def test_render_draws_an_anti_aliased_segment_of_the_pen_width():
    start, end = torch.tensor([[[4.0, 14.0]]]), torch.tensor([[[24.0, 14.0]]])
    ink = strokes.render(start, end, torch.tensor([[3.0]]))[0]
    assert ink[14, 4:25].min() == 1 and ink[14, :3].max() == 0  # along the segment, not beyond its round cap
    assert ink[:, 14].sum() == torch.tensor(3.0)  # a 3-px pen across: 1 + 1 + 1, edges clipped at 0.5 px
    assert strokes.render(start, end, torch.tensor([[0.0]])).sum() == 0  # width 0: an unused segment


def test_styles_change_only_the_digits_that_have_them(mnist):
    images, labels = mnist.train.images[:400], mnist.train.labels[:400]
    ink = images.float()[:, None] / 255
    styled = handwriting._draw_styles(
        ink, labels, torch.rand(len(labels), 9, generator=torch.Generator().manual_seed(0))
    )
    changed = (styled - ink).abs().flatten(1).sum(1) > 1
    assert changed[torch.isin(labels, torch.tensor([0, 1, 4, 7, 9]))].float().mean() > 0.9
    assert not changed[torch.isin(labels, torch.tensor([2, 3, 5, 6, 8]))].any()
    assert styled.min() >= 0 and styled.max() <= 1


def test_handwriting_augmentation_keeps_range_background_and_labels_repeatably(mnist):
    x, y = NORM.apply(mnist.train.images[:64]), mnist.train.labels[:64]
    a = augment(x, "handwriting", BACKGROUND, torch.Generator().manual_seed(3), labels=y)
    b = augment(x, "handwriting", BACKGROUND, torch.Generator().manual_seed(3), labels=y)
    assert torch.equal(a, b) and a.shape == x.shape and not torch.equal(a, x)
    assert a.min() >= BACKGROUND - 1e-5 and a.max() <= x.max() + 1e-5
    assert torch.allclose(a[:, :, 0, 0], torch.full((64, 1), BACKGROUND), atol=1e-4)  # the corners stay blank


def test_pen_width_thickens_and_thins():
    ink = torch.zeros(2, 1, 28, 28)
    ink[:, :, 6:22, 12:15] = 1
    thick = handwriting.random_pen_width(ink.clone(), torch.Generator().manual_seed(0))
    masses = [handwriting.random_pen_width(ink, torch.Generator().manual_seed(s)).sum().item() for s in range(20)]
    assert min(masses) < ink.sum().item() < max(masses)
    assert thick.min() >= 0 and thick.max() <= 1


def test_coarse_scan_blurs_a_share_of_the_images_and_keeps_full_ink(mnist, monkeypatch):
    ink = mnist.train.images[:200].float()[:, None] / 255
    some = handwriting.random_coarse_scan(ink, torch.Generator().manual_seed(0))
    changed = (some != ink).flatten(1).any(1)
    assert 0 < changed.float().mean() < 0.3  # COARSE_SHARE of them
    monkeypatch.setattr(handwriting, "COARSE_SHARE", 1.0)
    scanned = handwriting.random_coarse_scan(ink, torch.Generator().manual_seed(0))
    assert torch.allclose(scanned.amax((1, 2, 3)), torch.ones(200))  # the darkest ink is full ink again
    soft = [((a > 0.1) & (a < 0.9)).float().mean() for a in (ink, scanned)]
    assert soft[1] > 2 * soft[0]  # soft, merged strokes


def test_nondigits_are_in_mnist_form_and_of_every_kind(mnist):
    outliers = nondigits.generate(60, mnist.train.images[:100], seed=1)
    assert outliers.shape == (60, 28, 28) and outliers.dtype == torch.uint8
    ink = outliers.float()
    assert (ink.flatten(1).amax(1) > 200).all()  # every one holds ink
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    mass = ink.sum((1, 2))
    cy, cx = (ink * ys).sum((1, 2)) / mass, (ink * xs).sum((1, 2)) / mass
    assert ((cy - 14).abs() < 3).float().mean() > 0.9 and ((cx - 14).abs() < 3).float().mean() > 0.9
    assert torch.equal(outliers, nondigits.generate(60, mnist.train.images[:100], seed=1))


def test_outlier_exposure_adds_non_digits_and_pulls_them_to_uniform(mnist):
    exposure = nondigits.OutlierExposure(mnist.train.images[:200], 0.25, NORM, "none", seed=0)
    x, y = NORM.apply(mnist.train.images[:8]), mnist.train.labels[:8]
    extended = exposure.extend(x, torch.Generator().manual_seed(0))
    assert extended.shape == (10, 1, 28, 28) and torch.equal(extended[:8], x)
    uniform = torch.zeros(10, 10)
    confident = uniform.clone()
    confident[8:, 0] = 20
    assert exposure.loss(uniform, y, 0.0) < exposure.loss(confident, y, 0.0)


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, 10, generator=g) * 3
    labels = torch.multinomial((logits / 2.0).softmax(1), 1, generator=g)[:, 0]  # drawn with T = 2
    assert abs(calibrate.fit_temperature(logits, labels) - 2.0) < 0.1


def test_flag_threshold_flags_the_requested_share():
    scores = torch.linspace(0, 1, 1001)  # 0, 0.001, …, 1
    threshold = calibrate.flag_threshold(scores, 0.01)
    assert threshold == 0.01 and (scores < threshold).sum() == 10


def test_side_by_side_finds_marks_an_empty_column_splits_in_fair_shares(mnist):
    pair = torch.zeros(4, 28, 28, dtype=torch.uint8)
    pair[:, 8:20, 4:12] = 255
    pair[:, 8:20, 15:24] = 255  # two marks, an empty column between them
    pair[1, 8:20, 4:6] = 0
    pair[1, 8:20, 8:12] = 0  # the left mark a thin bar: over 15% of the ink still
    pair[2, 8:20, 4:11] = 0  # the left mark a hairline: a stray speck beside a digit, not a second mark
    pair[3, 10:20, 15:24] = 0  # the right mark a short bar at the top: a 5 whose flag floats beside it
    expected = [True, True, False, False]
    assert calibrate.side_by_side(pair).tolist() == expected
    assert calibrate.side_by_side(pair.float()[:, None] / 255).tolist() == expected
    nothing_below = torch.zeros(4, dtype=torch.bool)
    assert calibrate.not_a_digit(nothing_below, pair, [str(d) for d in range(10)]).tolist() == expected
    assert not calibrate.not_a_digit(nothing_below, pair, ["top", "trouser"] + ["other"] * 8).any()  # not digits
    assert calibrate.side_by_side(mnist.test.images[:2000]).sum() <= 2  # digits hardly ever do
    pairs = nondigits.side_by_side(mnist.train.images[:1000], 200, np.random.default_rng(0))
    assert calibrate.side_by_side(pairs).float().mean() > 0.6


def test_a_run_with_outliers_and_validation_data_is_calibrated(tmp_path):
    folder = write_idx_folder(tmp_path / "data", n_train=600, n_test=100)
    cfg = make_config(
        data=str(folder), model="cnn", width=4, epochs=1, val_size=100, augment="handwriting", outliers=0.25
    )
    (tmp_path / "run").mkdir()
    result = train_run(cfg, tmp_path / "run")
    calibration = result.meta["calibration"]
    assert calibration["temperature"] > 0 and calibration["validation_digits_flagged"] <= 0.01
    assert calibration["validation_digits"] == 100 and 0 <= calibration["held_out_nondigits_flagged"] <= 1
    classifier = Classifier.load(tmp_path / "run")
    assert classifier.inference.temperature == calibration["temperature"]
    assert classifier.threshold == calibration["not_a_digit_below"]
