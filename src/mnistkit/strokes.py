"""Pen strokes drawn into 28×28 images with tensor ops: the shared renderer of synthesized handwriting.

A stroke is a straight segment with a width; curves are polylines of short segments. Each pixel's ink is
how far inside the pen's disc its centre lies, clipped to [0, 1], so edges are anti-aliased like MNIST's.
"""

from __future__ import annotations

import torch

SIDE = 28


def render(start: torch.Tensor, end: torch.Tensor, width: torch.Tensor, side: int = SIDE) -> torch.Tensor:
    """Ink in [0, 1], (N, side, side), of N images each drawn with S segments.

    ``start`` and ``end``: (N, S, 2) pixel coordinates (x, y) of each segment's ends, pixel centres at whole
    numbers; ``width``: (N, S) pen widths in pixels, 0 for an unused segment.
    """
    n = start.shape[0]
    coords = torch.arange(side, dtype=start.dtype, device=start.device)
    pixels = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), -1).reshape(1, 1, -1, 2)  # (1, 1, P, 2)
    a, b = start[:, :, None, :], end[:, :, None, :]
    ab = b - a
    t = ((pixels - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-6)
    nearest = a + t.clamp(0, 1)[..., None] * ab
    distance = (pixels - nearest).norm(dim=-1)  # (N, S, P)
    ink = (width[:, :, None] / 2 + 0.5 - distance).clamp(0, 1) * (width[:, :, None] > 0)
    return ink.amax(1).reshape(n, side, side) if ink.shape[1] else torch.zeros(n, side, side, dtype=start.dtype)


def polyline_segments(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, 2) points -> (K - 1, 2) segment starts and ends."""
    return points[:-1], points[1:]


def smooth(points: torch.Tensor, rounds: int = 2) -> torch.Tensor:
    """Chaikin's corner cutting: a polyline's corners rounded off, its ends kept, as a pen draws a curve."""
    for _ in range(rounds):
        a, b = points[:-1], points[1:]
        cut = torch.stack([0.75 * a + 0.25 * b, 0.25 * a + 0.75 * b], 1).reshape(-1, 2)
        points = torch.cat([points[:1], cut, points[-1:]])
    return points
