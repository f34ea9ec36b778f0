"""Synthesized non-digits, and training the model to say so (outlier exposure).

What people draw or photograph that is no digit, in MNIST form as ``preprocess.to_mnist`` would give it
(the marks scaled to a 20-px box, centred by mass): letters, scribbles, symbols, dots and blobs, specks,
and several digits side by side. Trained on with a uniform target (Hendrycks et al., "Deep Anomaly
Detection with Outlier Exposure", 2019), they teach the model to spread its probability over the classes
when it sees no digit, so that a low score (``calibrate.py``) flags them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import strokes
from .augment import augment
from .data import Normalization

BOX = 20  # MNIST's digit box
CENTRE = 14.0  # where MNIST's centre of mass lies (pixel indices)
KINDS = ("letter", "scribble", "symbol", "blobs", "specks", "digits")
POOL_SIZE = 10_000  # non-digits drawn for a training run (fewer for a smaller training set)
OUTLIER_WEIGHT = 0.5  # of the uniform-target loss, beside the digits' own


def _arc(cx: float, cy: float, rx: float, ry: float, start: float, stop: float) -> list[tuple[float, float]]:
    """Points along an elliptic arc, angles in degrees counter-clockwise from the right (y grows downwards)."""
    angles = np.radians(np.linspace(start, stop, max(3, round(abs(stop - start) / 30) + 1)))
    return [(cx + rx * float(np.cos(a)), cy - ry * float(np.sin(a))) for a in angles]


# Stroke letters in a unit box (x right, y down), one list of polylines each. Letters that are also digits in
# some hands (O, I, l, S, Z, B, G, D, J, Q, b, g, q, z, s, o) are left out.
LETTERS: dict[str, list[list[tuple[float, float]]]] = {
    "C": [_arc(0.5, 0.5, 0.5, 0.5, 45, 315)],
    "L": [[(0, 0), (0, 1), (0.75, 1)]],
    "P": [[(0, 1), (0, 0), (0.7, 0), (0.95, 0.15), (0.95, 0.4), (0.7, 0.55), (0, 0.55)]],
    "U": [[(0, 0), (0, 0.65)] + _arc(0.5, 0.65, 0.5, 0.35, 180, 360) + [(1, 0)]],
    "a": [
        [(0.1, 0.15), (0.5, 0), (0.85, 0.12), (0.9, 0.4), (0.9, 1)],
        [(0.9, 0.5), (0.4, 0.5), (0.1, 0.68), (0.12, 0.92), (0.45, 1), (0.9, 0.82)],
    ],
    "c": [_arc(0.5, 0.5, 0.5, 0.5, 55, 305)],
    "d": [_arc(0.42, 0.68, 0.42, 0.32, 0, 360), [(0.84, 0), (0.84, 1)]],
    "f": [[(0.85, 0.05), (0.6, 0), (0.4, 0.1), (0.35, 0.3), (0.35, 1)], [(0.05, 0.4), (0.75, 0.4)]],
    "p": [[(0, 0.05), (0, 1)], _arc(0.5, 0.32, 0.5, 0.27, 180, -180)],
    "t": [[(0.4, 0), (0.4, 0.85), (0.55, 1), (0.85, 0.95)], [(0.05, 0.3), (0.8, 0.3)]],
    "u": [[(0, 0), (0, 0.65)] + _arc(0.5, 0.65, 0.5, 0.35, 180, 360) + [(1, 0)], [(1, 0), (1, 1)]],
    "y": [[(0, 0), (0.5, 0.55)], [(1, 0), (0.3, 1)]],
    "A": [[(0, 1), (0.5, 0), (1, 1)], [(0.22, 0.62), (0.78, 0.62)]],
    "E": [[(1, 0), (0, 0), (0, 1), (1, 1)], [(0, 0.5), (0.7, 0.5)]],
    "F": [[(1, 0), (0, 0), (0, 1)], [(0, 0.5), (0.7, 0.5)]],
    "H": [[(0, 0), (0, 1)], [(1, 0), (1, 1)], [(0, 0.5), (1, 0.5)]],
    "K": [[(0, 0), (0, 1)], [(1, 0), (0, 0.55)], [(0.3, 0.38), (1, 1)]],
    "M": [[(0, 1), (0, 0), (0.5, 0.6), (1, 0), (1, 1)]],
    "N": [[(0, 1), (0, 0), (1, 1), (1, 0)]],
    "R": [[(0, 1), (0, 0), (0.7, 0), (0.95, 0.15), (0.95, 0.35), (0.7, 0.5), (0, 0.5)], [(0.4, 0.5), (1, 1)]],
    "T": [[(0, 0), (1, 0)], [(0.5, 0), (0.5, 1)]],
    "V": [[(0, 0), (0.5, 1), (1, 0)]],
    "W": [[(0, 0), (0.25, 1), (0.5, 0.3), (0.75, 1), (1, 0)]],
    "X": [[(0, 0), (1, 1)], [(1, 0), (0, 1)]],
    "Y": [[(0, 0), (0.5, 0.5), (1, 0)], [(0.5, 0.5), (0.5, 1)]],
    "e": [
        [
            (0.1, 0.5),
            (0.95, 0.5),
            (0.85, 0.2),
            (0.5, 0.05),
            (0.15, 0.25),
            (0.05, 0.6),
            (0.25, 0.9),
            (0.6, 1),
            (0.9, 0.85),
        ]
    ],
    "h": [[(0, 0), (0, 1)], [(0, 0.6), (0.3, 0.42), (0.7, 0.42), (1, 0.6), (1, 1)]],
    "k": [[(0, 0), (0, 1)], [(0.9, 0.4), (0, 0.75)], [(0.3, 0.65), (1, 1)]],
    "m": [
        [(0, 1), (0, 0.1)],
        [(0, 0.3), (0.25, 0.05), (0.5, 0.3), (0.5, 1)],
        [(0.5, 0.3), (0.75, 0.05), (1, 0.3), (1, 1)],
    ],
    "n": [[(0, 1), (0, 0.05)], [(0, 0.3), (0.5, 0.02), (1, 0.3), (1, 1)]],
    "r": [[(0, 1), (0, 0.05)], [(0, 0.45), (0.4, 0.08), (1, 0.05)]],
    "w": [[(0, 0), (0.25, 1), (0.5, 0.4), (0.75, 1), (1, 0)]],
    "x": [[(0, 0), (1, 1)], [(1, 0), (0, 1)]],
}
SYMBOLS: dict[str, list[list[tuple[float, float]]]] = {
    "+": [[(0.5, 0), (0.5, 1)], [(0, 0.5), (1, 0.5)]],
    "*": [[(0.5, 0), (0.5, 1)], [(0.07, 0.25), (0.93, 0.75)], [(0.07, 0.75), (0.93, 0.25)]],
    "#": [[(0.35, 0), (0.25, 1)], [(0.75, 0), (0.65, 1)], [(0, 0.33), (1, 0.33)], [(0, 0.67), (1, 0.67)]],
    "=": [[(0, 0.3), (1, 0.3)], [(0, 0.7), (1, 0.7)]],
    "-": [[(0, 0.5), (1, 0.5)]],
    "~": [[(0, 0.6), (0.25, 0.35), (0.5, 0.5), (0.75, 0.65), (1, 0.4)]],
    "<": [[(1, 0), (0, 0.5), (1, 1)]],
    ">": [[(0, 0), (1, 0.5), (0, 1)]],
    "tick": [[(0, 0.6), (0.35, 1), (1, 0)]],
    "arrow": [[(0, 0.5), (1, 0.5)], [(0.65, 0.2), (1, 0.5), (0.65, 0.8)]],
    "triangle": [[(0.5, 0), (1, 1), (0, 1), (0.5, 0)]],
    "star": [[(0.5, 0), (0.2, 1), (1, 0.35), (0, 0.35), (0.8, 1), (0.5, 0)]],
}
# Widths relative to heights: wide symbols stay wide, and a dash stays a dash.
WIDE = {"m": 1.3, "w": 1.2, "W": 1.3, "M": 1.1, "-": 3.0, "~": 2.5, "=": 1.6, "arrow": 1.6}


def generate(n: int, digits: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """n non-digits in MNIST form, uint8 (n, 28, 28), white ink on black, of every kind in turn.

    ``digits``: uint8 (M, 28, 28) digits to put side by side (MNIST training images); without them that
    kind is left out.
    """
    rng = np.random.default_rng(seed)
    kinds = [k for k in KINDS if k != "digits" or digits is not None]
    chosen = [kinds[i % len(kinds)] for i in range(n)]
    out = torch.zeros(n, strokes.SIDE, strokes.SIDE)
    marks = {i: _marks(kind, rng) for i, kind in enumerate(chosen) if kind != "digits"}
    # Rendered in groups of similar segment counts, and a bounded number at a time: the renderer holds
    # (images, segments, pixels).
    drawn = sorted(marks, key=lambda i: sum(len(line) for line in marks[i][0]))
    for start in range(0, len(drawn), 256):
        part = drawn[start : start + 256]
        out[part] = _render([marks[i] for i in part])
    side = [i for i, kind in enumerate(chosen) if kind == "digits"]
    if side and digits is not None:
        out[side] = side_by_side(digits, len(side), rng)
    return (out * 255).round().clamp(0, 255).to(torch.uint8)


def _jittered(lines: list[list[tuple[float, float]]], rng: np.random.Generator, aspect: float) -> list[np.ndarray]:
    """A glyph as a hand would draw it: every point moved a little, slanted, rotated, its corners rounded."""
    slant, angle = rng.uniform(-0.3, 0.3), rng.uniform(-0.2, 0.2)
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    out = []
    for line in lines:
        p = np.asarray(line, dtype=np.float64) + rng.normal(0, 0.05, (len(line), 2))
        p[:, 0] = (p[:, 0] + slant * (1 - p[:, 1])) * aspect
        out.append(p @ rotate.T)
    return out


def _marks(kind: str, rng: np.random.Generator) -> tuple[list[np.ndarray], float]:
    """The polylines of one non-digit (any scale) and its pen width in pixels once scaled to the box."""
    pen = rng.uniform(1.6, 3.0)
    if kind in ("letter", "symbol"):
        table = LETTERS if kind == "letter" else SYMBOLS
        name = list(table)[rng.integers(len(table))]
        return _jittered(table[name], rng, WIDE.get(name, 1.0) * rng.uniform(0.7, 1.15)), pen
    if kind == "scribble" and rng.random() < 0.5:
        return [_wander(rng)], pen
    if kind == "scribble":
        lines = []
        for _ in range(rng.integers(1, 3)):
            points = rng.uniform(0, 1, (rng.integers(5, 14), 2)) * [rng.uniform(0.6, 1.6), 1]
            lines.append(strokes.smooth(torch.from_numpy(points), 1).numpy())
        return lines, pen
    if kind == "blobs":  # dots scaled up: filled discs and ellipses, one to three of them
        count = rng.integers(1, 4)
        centres = rng.uniform(0, 1, (count, 2))
        size = rng.uniform(0.25, 0.6) if count > 1 else 1.0
        lines = [np.array([c, c + rng.normal(0, 0.15 * size, 2)]) for c in centres]
        return lines, -size  # negative: a width relative to the box, not in pixels
    # specks: the noise left on a near-blank page
    centres = rng.uniform(0, 1, (rng.integers(4, 13), 2))
    return [np.array([c, c]) for c in centres], rng.uniform(1.5, 3.5)


def _wander(rng: np.random.Generator) -> np.ndarray:
    """A pen wandering on, turning a little at every step and now and then sharply, as someone trying a pen does."""
    steps = rng.integers(30, 100)
    turns = rng.normal(0, 0.5, steps) + np.where(rng.random(steps) < 0.08, rng.uniform(-2.5, 2.5, steps), 0)
    heading = rng.uniform(0, 2 * np.pi) + np.cumsum(turns)
    walk = np.cumsum(np.stack([np.cos(heading), np.sin(heading)], 1), 0)
    # Kept inside a box about as wide as the walk usually gets, so that it folds back over itself.
    side = rng.uniform(10, 30)
    return np.abs((walk + side) % (2 * side) - side)


def _render(items: list[tuple[list[np.ndarray], float]]) -> torch.Tensor:
    """Polylines scaled so that the marks fill a 20-px box, placed with their centre of mass at the centre."""
    n = len(items)
    segments = max(sum(len(p) - 1 for p in lines) for lines, _ in items)
    start, end, width = torch.zeros(n, segments, 2), torch.zeros(n, segments, 2), torch.zeros(n, segments)
    for i, (lines, pen) in enumerate(items):
        points = np.concatenate(lines)
        low, high = points.min(0), points.max(0)
        pen = -pen * BOX if pen < 0 else pen
        scale = max(BOX - pen, 1.0) / max(float((high - low).max()), 1e-6)
        a = np.concatenate([(p[:-1] - low) * scale for p in lines])
        b = np.concatenate([(p[1:] - low) * scale for p in lines])
        length = np.linalg.norm(b - a, axis=1) + pen  # a dot still has mass
        mass = ((a + b) / 2 * length[:, None]).sum(0) / length.sum()
        offset = CENTRE - mass
        k = len(a)
        start[i, :k], end[i, :k], width[i, :k] = torch.from_numpy(a + offset), torch.from_numpy(b + offset), pen
    return strokes.render(start, end, width)


def side_by_side(digits: torch.Tensor, n: int, rng: np.random.Generator) -> torch.Tensor:
    """n images of two or three random digits in a row, scaled together into the box: ink in [0, 1]."""
    out = torch.zeros(n, strokes.SIDE, strokes.SIDE)
    counts = rng.integers(2, 4, n)
    for count in (2, 3):
        rows = np.flatnonzero(counts == count)
        if not len(rows):
            continue
        picks = torch.from_numpy(rng.integers(0, len(digits), (len(rows), count)))
        # Each digit's 20-px box side by side, then the row scaled so its width fits the 28-px canvas.
        row = torch.cat([digits[picks[:, j], :, 3:25].float() / 255 for j in range(count)], 2)[:, None]
        height = round(strokes.SIDE * strokes.SIDE / row.shape[-1])
        small = F.interpolate(row, size=(height, strokes.SIDE), mode="area")[:, 0]
        top = (strokes.SIDE - height) // 2
        out[rows, top : top + height] = small
    return out


class OutlierExposure:
    """Adds synthesized non-digits to every training batch and scores them against a uniform target.

    ``share``: non-digits per digit in a batch. The pool is drawn once, from ``seed``, out of the training
    digits (for the side-by-side kind); each batch takes a random sample of it, warped like the digits.
    """

    def __init__(self, digits: torch.Tensor, share: float, norm: Normalization, augment_kind: str, seed: int):
        self.share, self.norm, self.augment_kind = share, norm, augment_kind
        self.pool = generate(min(POOL_SIZE, len(digits)), digits.cpu(), seed).to(digits.device)

    def extend(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The batch followed by ``share × len(x)`` non-digits, normalized and augmented like it."""
        count = max(1, round(self.share * len(x)))
        picks = torch.randint(0, len(self.pool), (count,), generator=generator).to(self.pool.device)
        background = -self.norm.mean / self.norm.std
        extra = augment(self.norm.apply(self.pool[picks]), self.augment_kind, background, generator)
        return torch.cat([x, extra.to(x.dtype)])

    @staticmethod
    def loss(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float) -> torch.Tensor:
        """Cross-entropy on the digits plus ``OUTLIER_WEIGHT`` × cross-entropy to uniform on the non-digits."""
        n = len(labels)
        digits = F.cross_entropy(logits[:n], labels, label_smoothing=label_smoothing)
        uniform = -logits[n:].float().log_softmax(1).mean(1).mean()
        return digits + OUTLIER_WEIGHT * uniform
