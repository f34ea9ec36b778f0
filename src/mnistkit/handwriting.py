"""Augmentation for real handwriting: what people write that MNIST's 60,000 digits rarely show.

On normalized batches (N, 1, 28, 28), on the device, like ``augment``'s transforms:

- coarse scans: a share of the images shrunk to a few pixels and enlarged again, as a low-resolution scan or
  thumbnail gives (blurred strokes, small loops closed);
- pen width: strokes thickened or thinned (grey-level dilation or erosion, blended for fractional widths);
- slant, rotation, scale and aspect: one random affine map per image;
- elastic distortion: a smooth random displacement field, as an unsteady hand gives;
- writing styles: a bar through a 0, a flag or a foot on a 1, a crossbar on a 7, an open top on a 4 and a
  hooked tail on a 9, drawn onto the MNIST digits of those classes (labels unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypedDict

import torch
import torch.nn.functional as F

from . import strokes
from .geometry import affine_grid

WIDTH_SHARE = 0.6  # of the images get a new pen width
STYLE_SHARE = 0.35  # of the 0s, 1s, 4s, 7s and 9s get a style MNIST lacks
COARSE_SHARE = 0.1  # of the images pass through a coarse scan
COARSE_SIDES = (10, 11, 12, 14, 16)  # the 28-px canvas shrunk to this: the digit 7 to 11 px tall
ROTATION = 12.0  # degrees
SLANT = 0.3  # horizontal shear
SCALE = (0.85, 1.1)
ASPECT = 0.2  # width scaled by up to 1 ± this, relative to the height
SHIFT = 2.0  # pixels
ELASTIC = 1.2  # pixels: the typical displacement of the smooth random field


def augment_handwriting(
    x: torch.Tensor, background: float, generator: torch.Generator | None = None, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Styles (where ``labels`` are given), coarse scans, pen width, then one warp (affine and elastic) per
    image."""
    peak = (x.amax() - background).clamp_min(1e-6)  # a full-ink pixel, normalized
    ink = (x - background) / peak
    if labels is not None:
        ink = add_styles(ink, labels, generator)
    ink = random_coarse_scan(ink, generator)
    ink = random_pen_width(ink, generator)
    ink = random_warp(ink, generator)
    return background + peak * ink


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def _cross_max(ink: torch.Tensor) -> torch.Tensor:
    """Each pixel's maximum over itself and its four neighbours (a dilation by a 3-pixel cross)."""
    p = F.pad(ink, (1, 1, 1, 1))
    return torch.stack([ink, p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]]).amax(0)


def random_coarse_scan(ink: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ink in [0, 1] with a share of the images scanned coarsely: averaged down to a side from ``COARSE_SIDES``
    and enlarged back (bilinear), so that thick strokes merge and small loops fill as they do at 8 to 16 px."""
    n, _, h, w = ink.shape
    picked = torch.rand(n, generator=generator) < COARSE_SHARE
    sides = torch.randint(len(COARSE_SIDES), (n,), generator=generator)
    out = ink
    for i, side in enumerate(COARSE_SIDES):
        chosen = torch.nonzero(picked & (sides == i))[:, 0].to(ink.device)
        if len(chosen):
            small = F.interpolate(ink[chosen], size=(side, side), mode="area")
            scanned = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
            # as preprocessing does with a scan, the darkest ink becomes full ink again
            scanned = scanned / scanned.amax((1, 2, 3), keepdim=True).clamp_min(1e-6)
            out = out.index_copy(0, chosen, scanned)
    return out


def random_pen_width(ink: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ink in [0, 1] with a share of the images drawn with a wider (up to +2 px) or narrower (up to -1 px) pen."""
    n = ink.shape[0]
    amount = _uniform(n, -1.0, 1.0, generator) * (torch.rand(n, generator=generator) < WIDTH_SHARE)
    amount = amount.to(ink.device, ink.dtype).view(n, 1, 1, 1)
    once = _cross_max(ink)
    wider = torch.where(amount > 0.5, _cross_max(once), once)
    grow = (amount.clamp(0, 1) * 2).clamp(max=1)  # up to one cross dilation, then the second blends in
    thicker = ink + grow * (once - ink) + (amount - 0.5).clamp(min=0) * 2 * (wider - once)
    thinner = 1 - _cross_max(1 - ink)  # erosion by the cross
    return torch.where(amount >= 0, thicker, ink + (-amount) * 0.6 * (thinner - ink))


def random_warp(ink: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One bilinear resampling per image: rotation, slant, scale, aspect and shift, plus elastic distortion.

    Each image's distortion has a random strength from none to the full ranges above, so that digits as MNIST
    has them stay as common in training as the unusual ones."""
    n, _, h, w = ink.shape
    strength = torch.rand(n, generator=generator)
    angle = _uniform(n, -1, 1, generator) * math.radians(ROTATION) * strength
    slant = _uniform(n, -SLANT, SLANT, generator) * strength
    scale = 1 + (_uniform(n, *SCALE, generator) - 1) * strength
    aspect = 1 + _uniform(n, -ASPECT, ASPECT, generator) * strength
    shift = _uniform(2 * n, -SHIFT, SHIFT, generator).view(2, n) * 2 / w
    cos, sin = torch.cos(angle), torch.sin(angle)
    sx, sy = 1 / (scale * aspect), 1 / scale  # theta maps output to input coordinates: the inverse scale
    theta = torch.stack(
        [
            torch.stack([cos * sx, (slant * cos - sin) * sy, shift[0]], 1),
            torch.stack([sin * sx, (slant * sin + cos) * sy, shift[1]], 1),
        ],
        1,
    ).to(ink.device, ink.dtype)
    grid = affine_grid(theta, h, w)
    field = torch.randn(n, 2, 4, 4, generator=generator) * (strength.view(n, 1, 1, 1) * ELASTIC * 2 / w)
    field = field.to(ink.device, ink.dtype)
    grid = grid + F.interpolate(field, size=(h, w), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    return F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp(0, 1)


# --------------------------------------------------------------------------------------------------
# writing styles


class _Geometry(TypedDict):
    top: torch.Tensor
    bottom: torch.Tensor
    left: torch.Tensor
    right: torch.Tensor
    column_at: Callable[[torch.Tensor], torch.Tensor]  # each image's ink-weighted column near a given row


def _geometry(ink: torch.Tensor) -> _Geometry:
    """Per image (float, pixel units): the ink's box, and the columns of its top and bottom ends."""
    a = ink[:, 0]
    mask = a > 0.3
    n, h, w = a.shape
    rows, cols = mask.any(2).float(), mask.any(1).float()
    index_h = torch.arange(h, dtype=a.dtype, device=a.device)
    index_w = torch.arange(w, dtype=a.dtype, device=a.device)
    top = rows.argmax(1).to(a.dtype)
    bottom = (h - 1 - rows.flip(1).argmax(1)).to(a.dtype)
    left = cols.argmax(1).to(a.dtype)
    right = (w - 1 - cols.flip(1).argmax(1)).to(a.dtype)

    def column_at(row: torch.Tensor) -> torch.Tensor:
        band = ((index_h[None, :] - row[:, None]).abs() <= 1).to(a.dtype)[:, :, None]  # (n, h, 1)
        weight = (a * band).sum(1)  # (n, w)
        return (weight * index_w).sum(1) / weight.sum(1).clamp_min(1e-6)

    return {"top": top, "bottom": bottom, "left": left, "right": right, "column_at": column_at}


def add_styles(ink: torch.Tensor, labels: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ink in [0, 1] with a share of the 0s, 1s, 4s, 7s and 9s redrawn in a style MNIST rarely has."""
    n = ink.shape[0]
    labels = labels.cpu()
    u = torch.rand(n, 9, generator=generator)  # every random choice of every image, drawn at once
    chosen = torch.nonzero((u[:, 8] < STYLE_SHARE) & torch.isin(labels, torch.tensor([0, 1, 4, 7, 9])))[:, 0]
    if not len(chosen):
        return ink
    styled = _draw_styles(ink[chosen].detach().float().cpu(), labels[chosen], u[chosen])
    out = ink.clone()
    out[chosen.to(ink.device)] = styled.to(ink.device, ink.dtype)
    return out


def _draw_styles(ink: torch.Tensor, labels: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    n = ink.shape[0]
    g = _geometry(ink)
    top, bottom, left, right = g["top"], g["bottom"], g["left"], g["right"]
    h = (bottom - top + 1).clamp_min(1)
    bw = (right - left + 1).clamp_min(1)
    start = torch.zeros(n, 2, 2)
    end = torch.zeros(n, 2, 2)
    width = torch.zeros(n, 2)
    pen = 1.6 + 1.2 * u[:, 7]

    zero = labels == 0  # a bar through it, from upper right to lower left
    start[:, 0] = torch.stack([right - bw * (0.2 * u[:, 0] - 0.1), top - h * (0.15 * u[:, 1] - 0.05)], 1)
    end[:, 0] = torch.stack([left + bw * (0.2 * u[:, 2] - 0.1), bottom + h * (0.15 * u[:, 3] - 0.05)], 1)
    width[:, 0] = torch.where(zero, pen, width[:, 0])

    one = labels == 1  # a flag down to the left from the top, and sometimes a foot
    top_x, bottom_x = g["column_at"](top), g["column_at"](bottom)
    length, angle = h * (0.2 + 0.25 * u[:, 0]), math.radians(15) + math.radians(40) * u[:, 1]
    flag_end = torch.stack([top_x - length * torch.cos(angle), top + length * torch.sin(angle)], 1)
    foot = h * (0.12 + 0.18 * u[:, 2])
    one_start = torch.stack([torch.stack([top_x, top], 1), torch.stack([bottom_x - foot, bottom], 1)], 1)
    one_end = torch.stack([flag_end, torch.stack([bottom_x + foot, bottom], 1)], 1)
    with_foot = one & (u[:, 3] < 0.4)
    start[one], end[one] = one_start[one], one_end[one]
    width[one, 0] = pen[one]
    width[with_foot, 1] = pen[with_foot]

    seven = labels == 7  # a crossbar through the stem
    row = top + h * (0.45 + 0.2 * u[:, 0])
    stem = g["column_at"](row)
    half, tilt = h * (0.12 + 0.13 * u[:, 1]), h * 0.06 * (u[:, 2] - 0.5)
    start[seven, 0] = torch.stack([stem - half, row + tilt], 1)[seven]
    end[seven, 0] = torch.stack([stem + half, row - tilt], 1)[seven]
    width[seven, 0] = pen[seven]

    nine = labels == 9  # a tail hooked to the left
    hook = h * (0.15 + 0.15 * u[:, 0])
    tail = torch.stack([bottom_x, bottom], 1)
    bend = torch.stack([bottom_x - 0.5 * hook, bottom + 0.05 * h], 1)
    tip = torch.stack([bottom_x - hook, bottom - 0.3 * hook], 1)
    start[nine] = torch.stack([tail, bend], 1)[nine]
    end[nine] = torch.stack([bend, tip], 1)[nine]
    width[nine] = pen[nine, None]

    limit = strokes.SIDE - 1.5  # a style stays on the canvas
    out = torch.maximum(ink, strokes.render(start.clamp(0.5, limit), end.clamp(0.5, limit), width)[:, None])
    four = labels == 4
    if four.any():
        out[four] = _open_top(out[four], u[four, 0])
    return out


def _open_top(ink: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """4s with the top of the stroke left of the stem erased: the closed triangle of a 4 opened."""
    g = _geometry(ink)
    top, bottom = g["top"], g["bottom"]
    h = bottom - top + 1
    low = (ink[:, 0] * (torch.arange(ink.shape[2])[None, :, None] > top[:, None, None] + 0.6 * h[:, None, None])).sum(1)
    stem = low.argmax(1).float()  # the column holding most of the ink of the lowest 40%: the stem
    rows = torch.arange(ink.shape[2]).view(1, -1, 1).float()
    cols = torch.arange(ink.shape[3]).view(1, 1, -1).float()
    cut = (rows < (top + h * (0.2 + 0.15 * u))[:, None, None]) & (cols < (stem - 1.5)[:, None, None])
    return ink * ~cut[:, None]
