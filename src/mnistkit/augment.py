"""Data augmentation on whole batches, on the device, with tensor ops (no per-image PIL work).

The transforms act on normalized batches (N, 1, 28, 28) and fill uncovered pixels with the background
value (a blank pixel after normalization), so the digit moves while the canvas stays blank. Labels are
untouched: small shifts, rotations and scalings do not change which digit an image shows. ``handwriting``
(in ``handwriting.py``) adds what real writing shows and MNIST lacks: pen widths, slant, elastic distortion and
writing styles.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .geometry import affine_grid
from .handwriting import augment_handwriting


def random_shift(
    x: torch.Tensor, background: float, max_shift: int = 2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Translate each image by a random whole number of pixels in [-max_shift, max_shift] on both axes."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=background)
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator).to(x.device)
    rows = (offsets[0, :, None] + torch.arange(h, device=x.device))[:, :, None]  # (n, h, 1)
    cols = (offsets[1, :, None] + torch.arange(w, device=x.device))[:, None, :]  # (n, 1, w)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded[batch, 0, rows, cols].unsqueeze(1)


def random_affine(
    x: torch.Tensor,
    background: float,
    degrees: float = 10.0,
    scale: float = 0.1,
    shear: float = 0.1,
    translate: float = 2.5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random rotation (±degrees), scaling (1 ± scale), shear and translation (±translate px), bilinear."""
    n, _, h, w = x.shape
    u = torch.rand(5, n, generator=generator) * 2 - 1  # uniform in [-1, 1], drawn on the CPU for repeatability
    angle = u[0] * math.radians(degrees)
    factor = 1 + u[1] * scale
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack(
        [
            torch.stack([cos, -sin + u[2] * shear, u[3] * 2 * translate / w], 1),
            torch.stack([sin, cos, u[4] * 2 * translate / h], 1),
        ],
        1,
    ).to(device=x.device, dtype=x.dtype)
    grid = affine_grid(theta, h, w)
    # grid_sample fills with zeros; shift so that zero is the background, then shift back.
    return F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background


def shift(x: torch.Tensor, dy: int, dx: int, background: float) -> torch.Tensor:
    """Translate every image by (dy, dx) pixels, filling with the background."""
    n, _, h, w = x.shape
    p = max(abs(dy), abs(dx))
    padded = F.pad(x, (p,) * 4, value=background)
    return padded[:, :, p - dy : p - dy + h, p - dx : p - dx + w]


TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def tta_probabilities(
    model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, background: float
) -> torch.Tensor:
    """Test-time augmentation: the mean softmax of ``model`` over each image and its four 1-pixel shifts.

    All shifts go through the model as one batch: one pass (which also keeps the graph traceable for export).
    """
    probs = model(torch.cat([shift(x, dy, dx, background) for dy, dx in TTA_SHIFTS])).float().softmax(1)
    return probs.reshape(len(TTA_SHIFTS), -1, probs.shape[1]).mean(0)


def augment(
    x: torch.Tensor,
    kind: str,
    background: float,
    generator: torch.Generator | None = None,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x`` augmented by ``kind``; ``labels`` let the handwriting kind draw class-specific styles."""
    if kind == "handwriting":
        return augment_handwriting(x, background, generator, labels)
    if kind == "shift":
        return random_shift(x, background, generator=generator)
    if kind == "affine":
        return random_affine(x, background, generator=generator)
    return x
