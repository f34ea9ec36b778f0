"""How well mnistkit reads handwriting that is not MNIST, and how often it says "not a digit".

Builds its test images from data the model never trained on, then runs them through ``Classifier.predict``
(the path ``mnistkit predict`` takes) and prints, per condition, the accuracy of the best guess, the share
flagged "not a digit", and the images per second:

- MNIST test digits re-rendered as ink on paper: 100–300 px pages, off-centre, dim paper, a shadow across,
  light gradients, photo noise and blur, heavy JPEG, light ink on a dark board, thin pens (stroke 1/45 to
  1/28 of the digit's height, redrawn along the digit's skeleton) and markers (1/7 to 1/4.5), and crops cut
  to the digit's own box (16–64 px tall), stretched to fill a 16×16 box in black and white (as Semeion's
  digits are), on ruled or squared notebook paper, and in a form's box or on a line;
- scikit-learn's bundled UCI handwritten digits (8×8 scans of 43 other writers), the same ones drawn at
  100 px and as the 8×8 arrays they ship as;
- the MNIST test set itself, as 28×28 arrays;
- non-digits: letters rendered from the fonts installed on this machine (skipped if there are none),
  dots, scribbles, two digits side by side, and blank pages with a shadow across (refused as blank, or
  flagged).

Needs the dev extra (scikit-learn). Usage:
  .venv/bin/python benchmarks/realworld.py [--n 500] [--model RUN] [--reject off] [--json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from mnistkit import data
from mnistkit.inference import Classifier

FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
# Letters that are no digit in anyone's hand: O, D, Q (0), I, l, i, j, J (1), Z, z (2), S, s (5), G, b (6),
# B (8), g, q (9) are left out.
LETTERS = "ACEFHKLMNPRTUVWXYacdefhkmnprtuvwxy"

Render = Callable[[np.ndarray, np.random.Generator], np.ndarray]


# --------------------------------------------------------------------------------------------------
# ink: an MNIST digit as a high-resolution pen stroke


def digit_ink(digit: np.ndarray, height: int) -> np.ndarray:
    """The digit's ink in [0, 1], cropped and enlarged so that it is ``height`` pixels tall."""
    rows, cols = np.flatnonzero(digit.any(1)), np.flatnonzero(digit.any(0))
    crop = digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    width = max(1, round(crop.shape[1] * height / crop.shape[0]))
    return np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.BICUBIC), np.float64) / 255


def skeleton(mask: np.ndarray) -> np.ndarray:
    """Zhang–Suen thinning: the one-pixel centre line of a binary mask."""
    m = np.pad(mask.astype(np.uint8), 1)
    while True:
        changed = False
        for step in (0, 1):
            p = [
                m[:-2, 1:-1],
                m[:-2, 2:],
                m[1:-1, 2:],
                m[2:, 2:],
                m[2:, 1:-1],
                m[2:, :-2],
                m[1:-1, :-2],
                m[:-2, :-2],
            ]  # P2..P9 clockwise from north
            count = sum(p)
            transitions = sum((p[i] == 0) & (p[(i + 1) % 8] == 1) for i in range(8))
            if step == 0:
                cond = (p[0] * p[2] * p[4] == 0) & (p[2] * p[4] * p[6] == 0)
            else:
                cond = (p[0] * p[2] * p[6] == 0) & (p[0] * p[4] * p[6] == 0)
            remove = (m[1:-1, 1:-1] == 1) & (count >= 2) & (count <= 6) & (transitions == 1) & cond
            if remove.any():
                m[1:-1, 1:-1][remove] = 0
                changed = True
        if not changed:
            return m[1:-1, 1:-1].astype(bool)


def pen_ink(digit: np.ndarray, height: int, pen: float) -> np.ndarray:
    """The digit redrawn along its skeleton with a round pen ``pen`` pixels wide, ``height`` pixels tall."""
    hi = 4 * height if height < 150 else 2 * height  # drawn large, then reduced: anti-aliased edges
    scale = hi / height
    centre = skeleton(digit_ink(digit, hi) > 0.5)
    ys, xs = np.nonzero(centre)
    canvas = Image.new("L", (centre.shape[1] + 4 * round(pen * scale), hi + 4 * round(pen * scale)), 0)
    draw = ImageDraw.Draw(canvas)
    r = pen * scale / 2
    off = 2 * round(pen * scale)
    for y, x in zip(ys, xs):
        draw.ellipse((x + off - r, y + off - r, x + off + r, y + off + r), fill=255)
    size = (max(1, round(canvas.width / scale)), max(1, round(canvas.height / scale)))
    ink = np.asarray(canvas.resize(size, Image.Resampling.BOX), np.float64) / 255
    # Cut to the ink: the canvas's margins (two pens wide) would push a marker's digit past a small page's edge.
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def on_page(ink: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """The ink placed at a random spot of a page ``size`` = (width, height): its coverage in [0, 1]."""
    w, h = size
    page = np.zeros((h, w))
    ih, iw = min(ink.shape[0], h), min(ink.shape[1], w)
    top, left = rng.integers(0, h - ih + 1), rng.integers(0, w - iw + 1)
    page[top : top + ih, left : left + iw] = ink[:ih, :iw]
    return page


def photograph(coverage: np.ndarray, light: np.ndarray, paper: float = 0.92, ink: float = 0.08) -> np.ndarray:
    """What a camera sees: the light times the reflectance (paper where no ink, ink's where covered)."""
    reflectance = paper * (1 - coverage) + ink * coverage
    return np.clip(255 * light * reflectance, 0, 255)


def page_size(rng: np.random.Generator, low: int = 100, high: int = 300) -> tuple[int, int]:
    return int(rng.integers(low, high + 1)), int(rng.integers(low, high + 1))


def digit_on_page(digit: np.ndarray, rng: np.random.Generator, fill=(0.45, 0.85)) -> tuple[np.ndarray, tuple]:
    size = page_size(rng)
    height = max(12, round(min(size) * rng.uniform(*fill)))
    return on_page(digit_ink(digit, height), size, rng), size


def ramp(size: tuple[int, int], rng: np.random.Generator, low: float) -> np.ndarray:
    """Light falling linearly from 1 to ``low`` across the page in a random direction."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    angle = rng.uniform(0, 2 * np.pi)
    t = (xs - w / 2) * np.cos(angle) + (ys - h / 2) * np.sin(angle)
    t = (t - t.min()) / max(np.ptp(t), 1)
    return 1 - (1 - low) * t


def to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(a), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# conditions: each turns one MNIST test digit into one image


def clean(digit, rng):
    coverage, size = digit_on_page(digit, rng)
    return to_uint8(photograph(coverage, np.ones(size[::-1])))


def off_centre_small(digit, rng):
    size = page_size(rng, 200, 300)
    height = round(min(size) * rng.uniform(0.15, 0.3))
    return to_uint8(photograph(on_page(digit_ink(digit, height), size, rng), np.ones(size[::-1])))


def dim_paper(digit, rng):
    coverage, size = digit_on_page(digit, rng)
    return to_uint8(photograph(coverage, np.full(size[::-1], rng.uniform(0.22, 0.45))))


def shadow_light(size: tuple[int, int], rng: np.random.Generator, hard: bool = False) -> np.ndarray:
    """The light on a page with a shadow across it: it drops to 30–55% on one side of a random line, over a soft
    edge (1 px to 8% of the page) or, ``hard``, a step (a shadow in direct sun)."""
    w, h = size
    ys, xs = np.mgrid[0:h, 0:w]
    angle = rng.uniform(0, 2 * np.pi)
    cx, cy = rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h
    side = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
    soft = 0.3 if hard else rng.uniform(1, 0.08 * min(size))
    dark = rng.uniform(0.3, 0.55)
    return dark + (1 - dark) / (1 + np.exp(np.clip(-side / soft, -50, 50)))


def shadow(digit, rng):
    coverage, size = digit_on_page(digit, rng)
    return to_uint8(photograph(coverage, shadow_light(size, rng)))


def gradient(digit, rng):
    coverage, size = digit_on_page(digit, rng)
    return to_uint8(photograph(coverage, ramp(size, rng, rng.uniform(0.25, 0.45))))


def photo_noise_blur(digit, rng):
    coverage, size = digit_on_page(digit, rng)
    image = photograph(coverage, ramp(size, rng, rng.uniform(0.6, 0.9)))
    blurred = Image.fromarray(to_uint8(image)).filter(ImageFilter.GaussianBlur(rng.uniform(0.6, 1.6)))
    return to_uint8(np.asarray(blurred, np.float64) + rng.normal(0, rng.uniform(4, 12), coverage.shape))


def heavy_jpeg(digit, rng):
    coverage, size = digit_on_page(digit, rng)
    image = Image.fromarray(to_uint8(photograph(coverage, ramp(size, rng, 0.8)))).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(15, 45)))
    return np.asarray(Image.open(buffer).convert("L"))


def light_on_dark(digit, rng):
    """Chalk on a board: light strokes on a dark, unevenly lit surface."""
    coverage, size = digit_on_page(digit, rng)
    board = rng.uniform(20, 60) * ramp(size, rng, 0.6)
    return to_uint8(board * (1 - coverage) + rng.uniform(170, 240) * coverage)


def thin_pen(digit, rng):
    size = page_size(rng, 150, 300)
    height = round(min(size) * rng.uniform(0.5, 0.85))
    ink = pen_ink(digit, height, height / rng.uniform(28, 45))
    return to_uint8(photograph(on_page(ink, size, rng), ramp(size, rng, 0.85)))


def thick_pen(digit, rng):
    size = page_size(rng)
    height = round(min(size) * rng.uniform(0.45, 0.8))
    ink = pen_ink(digit, height, height / rng.uniform(4.5, 7))
    return to_uint8(photograph(on_page(ink, size, rng), ramp(size, rng, 0.85)))


def tight_ink(digit: np.ndarray, height: int) -> np.ndarray:
    """``digit_ink`` cut to its visible ink's box (bicubic's faint fringe left out): the ink touches every edge."""
    ink = digit_ink(digit, height)
    rows, cols = np.flatnonzero(ink.max(1) > 0.05), np.flatnonzero(ink.max(0) > 0.05)
    return ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def cropped_to_ink(digit, rng):
    """A scan or a crop cut to the digit's own box, 16–64 px tall: the ink touches every edge."""
    ink = tight_ink(digit, int(rng.integers(16, 65)))
    return to_uint8(photograph(ink, np.ones(ink.shape)))


def box_filled_16(digit, rng):
    """As Semeion's digits: stretched to fill a 16×16 box (the shape not kept: a 1 becomes a broad bar), then
    black or white at a fixed threshold."""
    crop = Image.fromarray(to_uint8(255 * tight_ink(digit, 128)))
    scan = np.asarray(crop.resize((16, 16), Image.Resampling.BILINEAR)) > 127
    return np.where(scan, 0, 255).astype(np.uint8)


def notebook_paper(digit, rng):
    """A clean page of a notebook: ruled or squared lines 2 px wide, every 12–25% of the page, 10–35% darker
    than the paper. Drawn after every other source (``run``), so that their draws stay as they were."""
    coverage, size = digit_on_page(digit, rng)
    pitch = rng.uniform(0.12, 0.25) * min(size)
    ys, xs = np.indices(size[::-1]) + rng.uniform(0, pitch, (2, 1, 1))
    lines = (ys % pitch < 2) | ((xs % pitch < 2) & (rng.random() < 0.5))
    paper = 0.92 * (1 - rng.uniform(0.1, 0.35) * lines)
    return to_uint8(255 * (paper * (1 - coverage) + 0.08 * coverage))


def boxed(digit, rng):
    """The digit in a form's field: a square or rounded box around it, cropped at the box or with paper around,
    or a line under it; lines 1–2.5% of the page wide. Drawn after the notebook pages (``run``)."""
    coverage, size = digit_on_page(digit, rng, fill=(0.45, 0.65))
    pad = rng.uniform(0.05, 0.15) * min(size)
    coverage = np.pad(coverage, round(2 * pad))  # room for the box on the page
    h, w = coverage.shape
    size = (w, h)
    rows, cols = np.flatnonzero(coverage.any(1)), np.flatnonzero(coverage.any(0))
    box = (cols[0] - pad, rows[0] - pad, cols[-1] + pad, rows[-1] + pad)
    line = max(2, round(rng.uniform(0.01, 0.025) * max(size)))
    scale = 4  # drawn large, then reduced: anti-aliased lines
    marks = Image.new("L", (w * scale, h * scale), 0)
    draw = ImageDraw.Draw(marks)
    big = tuple(round(v * scale) for v in box)
    kind = rng.choice(["box", "rounded box", "box cropped", "line under"])
    if kind == "line under":
        draw.line((big[0] - pad * scale, big[3], big[2] + pad * scale, big[3]), fill=255, width=line * scale)
    elif kind == "rounded box":
        draw.rounded_rectangle(big, radius=round(pad * scale), outline=255, width=line * scale)
    else:
        draw.rectangle(big, outline=255, width=line * scale)
    lines = np.asarray(marks.resize(size, Image.Resampling.BOX), np.float64) / 255
    image = photograph(np.maximum(coverage, lines), ramp(size, rng, 0.8))
    if kind == "box cropped":
        left, top, right, bottom = (max(0, round(v)) for v in box)
        image = image[top : bottom + 1, left : right + 1]
    return to_uint8(image)


def edge_band(digit, rng):
    """A scan's dark margin past the page, or the desk along a photo's side: a near-black band 3–12% of the side
    wide along one edge, or two (a third of the pages), soft, with the digit anywhere on the page. Drawn after the
    boxes (``run``)."""
    coverage, size = digit_on_page(digit, rng, fill=(0.4, 0.65))
    image = photograph(coverage, ramp(size, rng, 0.9))
    band = np.zeros(image.shape)
    sides = [int(rng.integers(4))]
    if rng.random() < 1 / 3:
        sides.append(int((sides[0] + rng.integers(1, 4)) % 4))
    for side in sides:
        view = (band, band[::-1], band.T, band.T[::-1])[side]
        view[: max(2, round(rng.uniform(0.03, 0.12) * view.shape[0]))] = 1
    blurred = Image.fromarray((band * 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2)))
    soft = np.asarray(blurred, np.float64) / 255
    dark = rng.uniform(5, 50)
    return to_uint8(image * (1 - soft) + dark * soft + rng.normal(0, 2, image.shape))


def page_on_desk(digit, rng):
    """A note or a sheet photographed lying on a darker desk (reflectance 0.15–0.55, a smooth grain), filling
    55–90% of the photo's shorter side, turned up to 15°, the digit 45–70% of its height. Drawn after the bands
    (``run``)."""
    size = page_size(rng, 160, 320)
    side = round(min(size) * rng.uniform(0.55, 0.9))
    ink = digit_ink(digit, round(side * rng.uniform(0.45, 0.7)))
    coverage = np.zeros((side, side))
    top, left = (side - ink.shape[0]) // 2, (side - ink.shape[1]) // 2
    coverage[top : top + ink.shape[0], left : left + ink.shape[1]] = ink
    angle = rng.uniform(-15, 15)
    turned = [
        np.asarray(Image.fromarray(a.astype(np.float32)).rotate(angle, Image.Resampling.BILINEAR, expand=True))
        for a in (coverage, np.ones((side, side)))
    ]
    w, h = size
    at = [int(rng.integers(0, max(1, room + 1))) for room in (h - turned[0].shape[0], w - turned[0].shape[1])]
    cover, note = np.zeros((h, w)), np.zeros((h, w))
    for full, part in ((cover, turned[0]), (note, turned[1])):
        part = part[: h - at[0], : w - at[1]]
        full[at[0] : at[0] + part.shape[0], at[1] : at[1] + part.shape[1]] = part
    grain = np.asarray(
        Image.fromarray(rng.uniform(0.9, 1.1, (8, 8)).astype(np.float32)).resize(size, Image.Resampling.BICUBIC)
    )
    desk = rng.uniform(0.15, 0.55) * grain
    reflectance = note * (0.92 * (1 - cover) + 0.08 * cover) + (1 - note) * desk
    return to_uint8(255 * ramp(size, rng, 0.8) * reflectance + rng.normal(0, 2, (h, w)))


def neighbour_at_edge(digit, rng, others: np.ndarray):
    """A crop from a row of digits: the digit with paper on both sides, and at the left or right edge 15–50% of
    a neighbour (another test digit) of the same height, 10–30% of the height apart. Drawn after the desks
    (``run``)."""
    height = int(rng.integers(60, 140))
    ink = digit_ink(digit, height)
    other = digit_ink(others[rng.integers(len(others))], height)
    gap = np.zeros((height, int(rng.uniform(0.1, 0.3) * height)))
    part = max(2, int(other.shape[1] * rng.uniform(0.15, 0.5)))
    if rng.random() < 0.5:
        row = np.concatenate([other[:, -part:], gap, ink, gap], 1)
    else:
        row = np.concatenate([gap, ink, gap, other[:, :part]], 1)
    coverage = np.pad(row, ((int(rng.uniform(0.1, 0.3) * height),) * 2, (0, 0)))
    return to_uint8(photograph(coverage, ramp(coverage.shape[::-1], rng, 0.9)))


def dot_grid(digit, rng):
    """Dot-grid paper (a bullet journal's): dots 1.5–3 px wide every 5–9% of the page's shorter side, 25–55% darker
    than the paper, under the digit too. Drawn after the neighbours (``run``)."""
    coverage, size = digit_on_page(digit, rng)
    w, h = size
    pitch = rng.uniform(0.05, 0.09) * min(size)
    radius = rng.uniform(0.75, 1.5)
    ys, xs = np.mgrid[0:h, 0:w]
    oy, ox = rng.uniform(0, pitch, 2)
    dy, dx = (ys + oy) % pitch, (xs + ox) % pitch
    dots = np.clip(radius + 0.5 - np.hypot(np.minimum(dy, pitch - dy), np.minimum(dx, pitch - dx)), 0, 1)
    paper = 0.92 * (1 - rng.uniform(0.25, 0.55) * dots)
    return to_uint8(255 * ramp(size, rng, 0.85) * (paper * (1 - coverage) + 0.08 * coverage))


CONDITIONS: dict[str, Render] = {
    "clean, 100-300 px pages": clean,
    "small, off-centre": off_centre_small,
    "dim paper": dim_paper,
    "shadow across": shadow,
    "light gradient": gradient,
    "photo noise and blur": photo_noise_blur,
    "JPEG quality 15-45": heavy_jpeg,
    "light ink on dark": light_on_dark,
    "thin pen (1/45-1/28)": thin_pen,
    "thick pen (1/7-1/4.5)": thick_pen,
    "cropped to the ink, 16-64 px": cropped_to_ink,
    "stretched to 16x16, binary": box_filled_16,  # draws no random numbers: later draws unchanged
}


# --------------------------------------------------------------------------------------------------
# other sources


def uci_digits(rng: np.random.Generator, n: int) -> tuple[list[np.ndarray], np.ndarray] | None:
    """n of scikit-learn's bundled UCI digits as they ship: 8×8 arrays of 17 gray levels (as uint8), light ink on
    black, the digit filling the height."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        return None
    bunch = load_digits()
    picks = rng.permutation(len(bunch.images))[:n]
    return [to_uint8(bunch.images[i] * 255 / 16) for i in picks], bunch.target[picks]


def scan_on_paper(scan: np.ndarray) -> np.ndarray:
    """An 8×8 scan enlarged to 80 px (bicubic) and drawn as dark ink on a light 100-px page."""
    ink = Image.fromarray(scan).resize((80, 80), Image.Resampling.BICUBIC)
    page = np.zeros((100, 100))
    page[10:90, 10:90] = np.asarray(ink, np.float64) / 255
    return to_uint8(photograph(page, np.ones((100, 100))))


def fonts() -> list[Path]:
    found = []
    for folder in FONT_DIRS:
        found += sorted(Path(folder).rglob("*.ttf")) + sorted(Path(folder).rglob("*.otf"))
    return found


def letters(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    faces = fonts()
    images = []
    for _ in range(n if faces else 0):
        size = page_size(rng)
        font = ImageFont.truetype(str(faces[rng.integers(len(faces))]), round(min(size) * rng.uniform(0.4, 0.8)))
        page = Image.new("L", size, 0)
        letter = LETTERS[rng.integers(len(LETTERS))]
        left, top, right, bottom = ImageDraw.Draw(page).textbbox((0, 0), letter, font=font)
        x = rng.uniform(-left, max(-left + 1, size[0] - right))
        y = rng.uniform(-top, max(-top + 1, size[1] - bottom))
        ImageDraw.Draw(page).text((x, y), letter, fill=255, font=font)
        images.append(to_uint8(photograph(np.asarray(page, np.float64) / 255, np.ones(size[::-1]))))
    return images


def dots(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    images = []
    for _ in range(n):
        size = page_size(rng)
        page = Image.new("L", size, 0)
        draw = ImageDraw.Draw(page)
        for _ in range(rng.integers(1, 4)):
            r = rng.uniform(2, 0.08 * min(size))
            x, y = rng.uniform(r, size[0] - r), rng.uniform(r, size[1] - r)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
        images.append(to_uint8(photograph(np.asarray(page, np.float64) / 255, np.ones(size[::-1]))))
    return images


def scribbles(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """A pen wandering with momentum and sudden turns, as someone testing a pen does."""
    images = []
    for _ in range(n):
        size = page_size(rng)
        page = Image.new("L", size, 0)
        pos = np.array(size, np.float64) * rng.uniform(0.3, 0.7, 2)
        heading, points = rng.uniform(0, 2 * np.pi), []
        for _ in range(rng.integers(40, 120)):
            heading += rng.normal(0, 0.5) + (rng.uniform(-2.5, 2.5) if rng.random() < 0.08 else 0)
            pos = np.clip(pos + 0.03 * min(size) * np.array([np.cos(heading), np.sin(heading)]), 5, np.array(size) - 5)
            points.append(tuple(pos))
        ImageDraw.Draw(page).line(points, fill=255, width=max(1, round(min(size) / rng.uniform(25, 60))), joint="curve")
        images.append(to_uint8(photograph(np.asarray(page, np.float64) / 255, np.ones(size[::-1]))))
    return images


def blank_shadowed(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Blank pages with a shadow across, every other one with a hard edge."""
    images = []
    for i in range(n):
        size = page_size(rng, 100, 600)
        images.append(to_uint8(photograph(np.zeros(size[::-1]), shadow_light(size, rng, hard=i % 2 == 0))))
    return images


def digit_pairs(rng: np.random.Generator, n: int, test: np.ndarray) -> list[np.ndarray]:
    images = []
    for _ in range(n):
        height = int(rng.integers(50, 110))
        inks = [digit_ink(test[rng.integers(len(test))], height) for _ in range(2)]
        gap = int(rng.integers(height // 10, height // 3))
        row = np.zeros((height, inks[0].shape[1] + gap + inks[1].shape[1]))
        row[:, : inks[0].shape[1]] = inks[0]
        row[:, inks[0].shape[1] + gap :] = inks[1]
        size = (row.shape[1] + int(rng.integers(20, 120)), height + int(rng.integers(20, 120)))
        images.append(to_uint8(photograph(on_page(row, size, rng), np.ones(size[::-1]))))
    return images


# --------------------------------------------------------------------------------------------------


def score(classifier: Classifier, images: list, labels: np.ndarray | None, reject: bool) -> dict:
    start = time.perf_counter()
    results = classifier.predict(images, top_k=1, reject=reject)
    seconds = time.perf_counter() - start
    ok = [r for r in results if r.ok]
    row = {
        "images": len(images),
        "refused": len(images) - len(ok),  # an ImageError (e.g. "no ink found")
        "not_a_digit": sum(r.not_a_digit for r in ok) / max(1, len(images)),
        "images_per_s": len(images) / seconds,
    }
    if labels is not None:
        row["accuracy"] = sum(r.ok and r.digit == int(y) for r, y in zip(results, labels)) / max(1, len(images))
    return row


def run(args: argparse.Namespace) -> dict:
    classifier = Classifier.load(args.model)
    test = data.load_dataset(None, "mnist").test
    rng = np.random.default_rng(args.seed)
    picks = rng.permutation(len(test))[: args.n]
    digits, labels = test.images.numpy()[picks], test.labels.numpy()[picks]
    report: dict = {"model": classifier.source, "reject": args.reject, "digits": {}, "nondigits": {}}
    for name, render in CONDITIONS.items():
        images = [render(d, rng) for d in digits]
        report["digits"][name] = score(classifier, images, labels, args.reject == "on")
    uci = uci_digits(rng, args.n)
    if uci is not None:  # the same digits both ways
        scans, uci_labels = uci
        on_paper = [scan_on_paper(scan) for scan in scans]
        report["digits"]["UCI digits (scikit-learn)"] = score(classifier, on_paper, uci_labels, args.reject == "on")
        report["digits"]["UCI digits, 8x8 arrays"] = score(classifier, scans, uci_labels, args.reject == "on")
    start = time.perf_counter()
    probabilities, flagged = classifier.probabilities_and_flags(test.images.numpy())
    seconds = time.perf_counter() - start
    flagged &= args.reject == "on"
    report["mnist_test"] = {
        "images": len(test),
        "accuracy": float((probabilities.argmax(1) == test.labels.numpy()).mean()),
        "not_a_digit": float(flagged.mean()),
        "images_per_s": len(test) / seconds,
    }
    sources = {
        "letters (installed fonts)": letters(rng, args.n),
        "dots": dots(rng, args.n),
        "scribbles": scribbles(rng, args.n),
        "two digits side by side": digit_pairs(rng, args.n, test.images.numpy()),
        "blank pages, shadow across": blank_shadowed(rng, args.n),
    }
    for name, images in sources.items():
        if images:
            report["nondigits"][name] = score(classifier, images, None, args.reject == "on")
        else:
            report["nondigits"][name] = None  # no fonts installed
    notebook = [notebook_paper(d, rng) for d in digits]
    report["digits"]["ruled or squared paper"] = score(classifier, notebook, labels, args.reject == "on")
    in_boxes = [boxed(d, rng) for d in digits]
    report["digits"]["in a box or on a line"] = score(classifier, in_boxes, labels, args.reject == "on")
    banded = [edge_band(d, rng) for d in digits]
    report["digits"]["dark band along an edge"] = score(classifier, banded, labels, args.reject == "on")
    on_desk = [page_on_desk(d, rng) for d in digits]
    report["digits"]["page on a darker desk"] = score(classifier, on_desk, labels, args.reject == "on")
    in_a_row = [neighbour_at_edge(d, rng, test.images.numpy()) for d in digits]
    report["digits"]["a neighbour's part at the edge"] = score(classifier, in_a_row, labels, args.reject == "on")
    dotted = [dot_grid(d, rng) for d in digits]
    report["digits"]["dot-grid paper"] = score(classifier, dotted, labels, args.reject == "on")
    report["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()}
    return report


def format_report(report: dict) -> str:
    lines = [f"model: {report['model']}   not-a-digit flag: {report['reject']}", ""]
    lines.append(f"{'digits':<30} {'n':>5} {'accuracy':>9} {'flagged':>8} {'refused':>8} {'images/s':>9}")
    for name, row in report["digits"].items():
        lines.append(
            f"{name:<30} {row['images']:>5} {row['accuracy']:>9.1%} {row['not_a_digit']:>8.1%} "
            f"{row['refused']:>8} {row['images_per_s']:>9.0f}"
        )
    m = report["mnist_test"]
    lines.append(
        f"{'MNIST test, 28x28 arrays':<30} {m['images']:>5} {m['accuracy']:>9.2%} {m['not_a_digit']:>8.2%} "
        f"{'':>8} {m['images_per_s']:>9.0f}"
    )
    lines += ["", f"{'non-digits':<30} {'n':>5} {'flagged':>9} {'refused':>8} {'images/s':>9}"]
    for name, row in report["nondigits"].items():
        if row is None:
            lines.append(f"{name:<30} skipped: no fonts found in {', '.join(FONT_DIRS)}")
            continue
        lines.append(
            f"{name:<30} {row['images']:>5} {row['not_a_digit']:>9.1%} {row['refused']:>8} {row['images_per_s']:>9.0f}"
        )
    load = ", ".join(f"{x:.1f}" for x in report["machine"]["load"])
    lines += ["", f"{report['machine']['platform']}, {report['machine']['cpus']} CPUs, load average {load}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="images per condition [default: 500]")
    parser.add_argument("--model", default=None, help="a run folder or checkpoint [default: the bundled model]")
    parser.add_argument("--reject", choices=["on", "off"], default="on", help="the not-a-digit flag [default: on]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args()
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else format_report(report))


if __name__ == "__main__":
    main()
