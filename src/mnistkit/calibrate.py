"""Calibrated confidence and the "not a digit" threshold, fitted on held-out data after training.

- Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017): one number T divides
  the logits so that the validation set's negative log-likelihood is lowest; the top class never changes.
- The not-a-digit score is the energy of the calibrated logits, their log-sum-exp (Liu et al., "Energy-based
  Out-of-distribution Detection", 2020): low when no class fits. On held-out synthesized non-digits it flags
  more than the top probability does at the same share of digits flagged. Its threshold is the one that flags
  ``DIGIT_FLAG_RATE`` of the validation digits; the share of held-out synthesized non-digits (drawn from a
  seed training never uses) it flags is recorded beside it.
- Several marks side by side (two digits, a word) are flagged by their shape, before any score: the network sees
  each part as a fine digit, but an empty column splits the ink into parts that each hold a fair share of it,
  which no single digit does (``side_by_side``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from . import nondigits
from .catalog import DIGITS
from .data import Normalization, Split
from .evaluate import predict_logits

DIGIT_FLAG_RATE = 0.001  # of the validation digits flagged "not a digit"
# Both sides of an empty column must hold more than this share of the ink, and each side must be at least
# SIDE_BY_SIDE_HEIGHT of the ink's height (so that a 5 whose flag floats beside it is still a digit): 0.012%
# of MNIST's training digits and 0.02% of its test digits are split so (a 1 drawn as two lines, a broken 4),
# and 85% of two digits side by side.
SIDE_BY_SIDE_SHARE = 0.15
SIDE_BY_SIDE_HEIGHT = 0.5
INK_LEVEL = 40 / 255  # a column with no pixel above this is empty
HELD_OUT_NONDIGITS = 4000
HELD_OUT_SEED = 1_000_003  # not a seed a training run's pool is drawn from by default


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimising the cross-entropy of ``logits / T`` (golden-section search on log T)."""
    logits, labels = logits.double(), labels.to(logits.device)

    def nll(log_t: float) -> float:
        return nn.functional.cross_entropy(logits / math.exp(log_t), labels).item()

    low, high = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if nll(a) < nll(b):
            high = b
        else:
            low = a
    return round(math.exp((low + high) / 2), 4)


def energy(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The not-a-digit score: the log-sum-exp of the calibrated logits."""
    return (logits.double() / temperature).logsumexp(1)


def flag_threshold(digit_scores: torch.Tensor, rate: float = DIGIT_FLAG_RATE) -> float:
    """The score below which ``rate`` of ``digit_scores`` lie."""
    return round(float(torch.quantile(digit_scores.double(), rate)), 6)


def side_by_side(x: torch.Tensor) -> torch.Tensor:
    """bool (N,): which images, (N, 1, 28, 28) in [0, 1] or uint8 (N, 28, 28), show several marks side by side:
    an empty column inside the ink splits it into a left and a right part that each hold more than
    ``SIDE_BY_SIDE_SHARE`` of it and are each at least ``SIDE_BY_SIDE_HEIGHT`` as tall as the whole."""
    a = x.reshape(len(x), 28, 28).double()
    if not x.is_floating_point():
        a = a / 255
    ink = a > INK_LEVEL  # (N, rows, columns)
    mass = a.sum(1)  # (N, 28): the ink in each column
    filled = ink.any(1)
    inside = (filled.cumsum(1) > 0) & (filled.flip(1).cumsum(1).flip(1) > 0)
    left = (mass.cumsum(1) - mass) / mass.sum(1, keepdim=True).clamp_min(1e-12)  # share of the ink left of it
    split = torch.minimum(left, 1 - left) * (inside & ~filled)
    # Rows with ink left of each column, and right of it (the empty column itself adds nothing to either).
    heights = [_height(ink.cummax(2).values), _height(ink.flip(2).cummax(2).values.flip(2))]
    whole = _height(ink.any(2, keepdim=True))[:, :1].clamp_min(1)
    tall = torch.minimum(*heights) >= SIDE_BY_SIDE_HEIGHT * whole
    return (split * tall).amax(1) > SIDE_BY_SIDE_SHARE


def _height(rows: torch.Tensor) -> torch.Tensor:
    """(N, columns): from bool (N, rows, columns), how many rows lie from the first to the last true one."""
    top = rows.to(torch.uint8).argmax(1)
    bottom = rows.shape[1] - 1 - rows.flip(1).to(torch.uint8).argmax(1)
    return torch.where(rows.any(1), bottom - top + 1, torch.zeros_like(top))


def not_a_digit(below_threshold: torch.Tensor, images: torch.Tensor, classes: Sequence[str]) -> torch.Tensor:
    """bool (N,): the not-a-digit flag of ``images`` whose score is ``below_threshold`` (bool (N,)) or not. A model
    of the ten digits also flags several marks side by side; a model of other classes (clothes: a pair of
    trousers is two marks side by side) flags by its score alone."""
    below_threshold = below_threshold.cpu()
    return below_threshold | side_by_side(images.cpu()) if list(classes) == DIGITS else below_threshold


def calibrate(
    model: nn.Module,
    val: Split,
    norm: Normalization,
    digits: torch.Tensor,
    classes: Sequence[str],
    batch_size: int = 1000,
) -> dict:
    """Fit the temperature and the not-a-digit threshold on ``val``; ``digits`` (uint8 training images) make
    the side-by-side non-digits, ``classes`` are the model's. Returns the model metadata's ``calibration``."""
    logits = predict_logits(model, val, norm, batch_size)
    temperature = fit_temperature(logits, val.labels)
    scores = energy(logits, temperature)
    threshold = flag_threshold(scores)
    outliers = nondigits.generate(HELD_OUT_NONDIGITS, digits, HELD_OUT_SEED).to(val.images.device)
    outlier_split = Split(outliers, torch.zeros(len(outliers), dtype=torch.int64, device=val.images.device))
    outlier_scores = energy(predict_logits(model, outlier_split, norm, batch_size), temperature)
    return {
        "temperature": temperature,
        "not_a_digit_below": threshold,
        "score": "energy: log-sum-exp of the calibrated logits",
        "validation_digits": len(val),
        "validation_digits_flagged": round(
            float(not_a_digit(scores < threshold, val.images, classes).double().mean()), 6
        ),
        "held_out_nondigits": len(outliers),
        "held_out_nondigits_flagged": round(
            float(not_a_digit(outlier_scores < threshold, outliers, classes).double().mean()), 6
        ),
    }
