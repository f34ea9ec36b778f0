"""Batch augmentation on the device: digits move, the canvas stays blank, values stay in range, repeatable."""

from __future__ import annotations

import pytest
import torch

from mnistkit.augment import augment, random_affine, random_shift, shift
from mnistkit.config import AUGMENTATIONS

BACKGROUND = -0.4242  # a blank pixel after normalization


def digits(n: int = 16) -> torch.Tensor:
    x = torch.full((n, 1, 28, 28), BACKGROUND)
    x[:, :, 8:20, 12:16] = 2.8  # a bar in the middle: room to move without leaving the canvas
    return x


def test_shift_moves_whole_pixels_and_fills_with_background():
    x = digits(1)
    moved = shift(x, 2, -1, BACKGROUND)
    assert torch.equal(moved[:, :, 10:22, 11:15], x[:, :, 8:20, 12:16])
    assert (moved == BACKGROUND).sum() == (x == BACKGROUND).sum()


def test_random_shift_keeps_every_digit_intact():
    x = digits()
    out = random_shift(x, BACKGROUND, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    ink = (out > 0).flatten(1).sum(1)
    assert torch.equal(ink, (x > 0).flatten(1).sum(1))  # nothing cut off, nothing added
    assert not torch.equal(out, x)


def test_random_affine_stays_in_range_and_keeps_the_background():
    x = digits()
    out = random_affine(x, BACKGROUND, generator=torch.Generator().manual_seed(0))
    assert out.min() >= BACKGROUND - 1e-5 and out.max() <= 2.8 + 1e-5
    assert torch.allclose(out[:, :, 0, 0], torch.full((16, 1), BACKGROUND), atol=1e-5)  # corners stay blank
    # the ink mass moves but is roughly kept (bilinear resampling of a small rotation/scale)
    mass = (out - BACKGROUND).flatten(1).sum(1) / (x - BACKGROUND).flatten(1).sum(1)
    assert ((mass > 0.7) & (mass < 1.35)).all()


@pytest.mark.parametrize("kind", AUGMENTATIONS)
def test_augment_is_repeatable_with_a_seeded_generator(kind):
    x = digits()
    a = augment(x, kind, BACKGROUND, torch.Generator().manual_seed(5))
    b = augment(x, kind, BACKGROUND, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == x.shape
    if kind == "none":
        assert a is x
