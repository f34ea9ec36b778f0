"""Digits drawn as a person would: strokes through points given as fractions of the canvas, made with real mouse
or touch input in Chromium; and MNIST digits as pictures, with the pixels the page makes of them. Used by the
browser tests and by benchmarks/page_latency.py. And real handwriting as strokes: MNIST digits thinned to a skeleton
and traced into the path a pen took, for benchmarks/page_handwriting.py and the tests of what it found."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image, ImageDraw

Stroke = list[tuple[float, float]]


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 16) -> Stroke:
    """Points on an ellipse from angle ``start`` to ``end`` (degrees; 0 is right, 90 is down)."""
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a)))
        for a in (start + (end - start) * i / n for i in range(n + 1))
    ]


def line(*points: tuple[float, float], n: int = 6) -> Stroke:
    """A polyline through ``points``, with ``n`` points on each segment."""
    out = [points[0]]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        out += [(x0 + (x1 - x0) * i / n, y0 + (y1 - y0) * i / n) for i in range(1, n + 1)]
    return out


DIGITS: dict[int, list[Stroke]] = {
    0: [arc(0.5, 0.5, 0.22, 0.32, -90, 270, 24)],
    1: [line((0.5, 0.15), (0.5, 0.85), n=10)],
    2: [arc(0.5, 0.34, 0.2, 0.18, 200, 380) + line((0.68, 0.42), (0.3, 0.82), (0.74, 0.82))[1:]],
    3: [arc(0.5, 0.33, 0.18, 0.16, 210, 450) + arc(0.5, 0.67, 0.2, 0.18, 270, 510)[1:]],
    4: [line((0.58, 0.15), (0.28, 0.62), (0.76, 0.62)), line((0.62, 0.35), (0.62, 0.88))],
    5: [line((0.7, 0.17), (0.36, 0.17), (0.34, 0.46)) + arc(0.5, 0.64, 0.2, 0.19, 235, 510)[1:]],
    6: [line((0.62, 0.15), (0.4, 0.4), n=4) + arc(0.5, 0.66, 0.18, 0.19, 200, 560, 24)[1:]],
    7: [line((0.28, 0.18), (0.72, 0.18), (0.42, 0.86))],
    8: [arc(0.5, 0.32, 0.15, 0.15, 90, 450, 20), arc(0.5, 0.67, 0.19, 0.19, -90, 270, 20)],
    9: [arc(0.5, 0.35, 0.17, 0.17, 0, 360, 20), line((0.67, 0.35), (0.63, 0.86))],
}


def variant(strokes: list[Stroke], scale: float = 1.0, dx: float = 0.0, dy: float = 0.0, slant: float = 0.0):
    """The strokes scaled about the centre, shifted, and slanted (x moves by ``slant`` per unit up)."""
    return [
        [(0.5 + (x - 0.5) * scale + slant * (0.5 - y) * scale + dx, 0.5 + (y - 0.5) * scale + dy) for x, y in stroke]
        for stroke in strokes
    ]


VARIANTS = [dict(), dict(scale=0.7, dx=-0.08, dy=0.05, slant=0.15), dict(scale=0.85, dx=0.1, dy=-0.06, slant=-0.1)]


def on_screen(page, stroke: Stroke) -> list[tuple[float, float]]:
    box = page.locator("#pad").bounding_box()
    return [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]


def mouse_stroke(page, stroke: Stroke, release: bool = True, steps: int = 3) -> None:
    """Draw one stroke with the left mouse button held down, ``steps`` mouse events from each point to the next
    (Chromium takes one a frame); ``release=False`` keeps the pen down at its end."""
    at = on_screen(page, stroke)
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=steps)
    if release:
        page.mouse.up()


def draw_with_mouse(page, strokes: list[Stroke], hold_last: bool = False, steps: int = 3) -> None:
    """Draw every stroke; with ``hold_last`` the mouse button stays down at the end (release it to lift the pen)."""
    for i, stroke in enumerate(strokes):
        mouse_stroke(page, stroke, release=not (hold_last and i == len(strokes) - 1), steps=steps)


def draw_with_touch(page, cdp, strokes: list[Stroke]) -> None:
    """Draw every stroke with one finger, through Chromium's touch input (``cdp``: a CDP session of ``page``)."""
    for stroke in strokes:
        at = on_screen(page, stroke)
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": at[0][0], "y": at[0][1]}]})
        for x, y in at[1:]:
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
        cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def mnist_drawing(digit: np.ndarray) -> bytes:
    """An MNIST digit as a 280×280 PNG picture: dark ink on white paper."""
    buffer = io.BytesIO()
    Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR).save(buffer, format="PNG")
    return buffer.getvalue()


# Puts the picture on the page's canvas as an upload would, and returns what the page sends for it.
PAGE_PIXELS = """async (png) => {
    const bytes = Uint8Array.from(atob(png), (c) => c.charCodeAt(0));
    const picture = await createImageBitmap(new Blob([bytes], { type: 'image/png' }));
    items = [{ kind: 'image', source: picture, smooth: true }];
    redraw();
    return padPixels();
}"""


def page_pixels(page, png: bytes) -> list:
    """The 28×28 pixels the drawing page sends for the picture ``png``: the ink's square, area-averaged."""
    return page.evaluate(PAGE_PIXELS, base64.b64encode(png).decode())


# --- real handwriting as strokes: MNIST digits thinned to a skeleton and traced into pen strokes ----------------

TRACE_SCALE = 4  # the digit is enlarged this many times before thinning: a smoother skeleton, fewer false branches
SPUR = 2.0  # branches shorter than this (MNIST pixels) from an end to a junction are thinning's noise, not strokes
SMOOTH = 2  # points averaged on either side along a traced stroke: a pen's path, not the pixel grid's steps
NEIGHBOURS = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]


def thinned(mask: np.ndarray) -> np.ndarray:
    """Zhang and Suen's thinning of a bool image to a skeleton one pixel wide."""
    skeleton = np.pad(mask.astype(bool), 1)
    while True:
        changed = False
        for first in (True, False):
            p = [np.roll(skeleton, (-dy, -dx), (0, 1)) for dy, dx in NEIGHBOURS]  # P9, P2, P3, ..., P8 in order
            p2, p4, p6, p8 = p[1], p[3], p[5], p[7]
            count = sum(q.astype(int) for q in p)
            ring = p[1:] + p[:1]  # P2 ... P9, P2: the neighbours in order round the pixel
            turns = sum((~a & b).astype(int) for a, b in zip(ring, ring[1:] + ring[:1]))
            if first:
                side = ~(p2 & p4 & p6) & ~(p4 & p6 & p8)
            else:
                side = ~(p2 & p4 & p8) & ~(p2 & p6 & p8)
            remove = skeleton & (count >= 2) & (count <= 6) & (turns == 1) & side
            if remove.any():
                skeleton &= ~remove
                changed = True
        if not changed:
            return skeleton[1:-1, 1:-1]


def _links(skeleton: np.ndarray) -> dict[tuple[int, int], list[tuple[int, int]]]:
    """Each skeleton pixel's neighbours; a diagonal neighbour only where no pixel beside both links them, so a
    staircase is one path and not a row of little triangles."""
    on = {(int(y), int(x)) for y, x in zip(*np.nonzero(skeleton))}
    links: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for y, x in on:
        links[(y, x)] = [
            (y + dy, x + dx)
            for dy, dx in NEIGHBOURS
            if (y + dy, x + dx) in on and not (dy and dx and ((y + dy, x) in on or (y, x + dx) in on))
        ]
    return links


def _pruned(links: dict[tuple[int, int], list[tuple[int, int]]], shortest: float):
    """``links`` without the branches shorter than ``shortest`` pixels that run from an end to a junction."""
    for end in [p for p, near in links.items() if len(near) == 1]:
        path = [end]
        while len(links.get(path[-1], [])) <= 2 and len(path) <= shortest:
            ahead = [q for q in links.get(path[-1], []) if len(path) < 2 or q != path[-2]]
            if not ahead:
                break
            path.append(ahead[0])
        if len(path) <= shortest and len(links.get(path[-1], [])) > 2:
            for p in path[:-1]:
                for q in links.pop(p, []):
                    if q in links:
                        links[q] = [r for r in links[q] if r != p]
    return links


def _walks(links: dict[tuple[int, int], list[tuple[int, int]]]) -> list[list[tuple[int, int]]]:
    """The skeleton as pen paths covering every link once: from the ends first, then round the loops; at a
    junction a path goes on along the straightest way not yet drawn."""
    done: set[frozenset] = set()

    def walk(start: tuple[int, int]) -> list[tuple[int, int]]:
        path = [start]
        while True:
            here = path[-1]
            ahead = [q for q in links[here] if frozenset((here, q)) not in done]
            if not ahead:
                return path
            back = path[max(0, len(path) - 4)]
            heading = (here[0] - back[0], here[1] - back[1])
            nxt = max(ahead, key=lambda q: heading[0] * (q[0] - here[0]) + heading[1] * (q[1] - here[1]))
            done.add(frozenset((here, nxt)))
            path.append(nxt)

    paths = []
    starts = sorted(links, key=lambda p: (len(links[p]) != 1, p))  # ends first, then top to bottom
    for start in starts:
        while any(frozenset((start, q)) not in done for q in links[start]):
            paths.append(walk(start))
    return paths


def _smoothed(path: list[tuple[int, int]]) -> list[tuple[float, float]]:
    """A path's points (y, x) averaged with their neighbours along it, ends kept."""
    a = np.array(path, dtype=float)
    if len(a) <= 2:
        return [(float(y), float(x)) for y, x in a]
    padded = np.concatenate([a[:1].repeat(SMOOTH, 0), a, a[-1:].repeat(SMOOTH, 0)])
    kernel = np.ones(2 * SMOOTH + 1) / (2 * SMOOTH + 1)
    out = np.stack([np.convolve(padded[:, k], kernel, mode="valid") for k in (0, 1)], 1)
    out[0], out[-1] = a[0], a[-1]
    return [(float(y), float(x)) for y, x in out]


def _spaced(points: list[tuple[float, float]], step: float) -> list[tuple[float, float]]:
    """Points at least ``step`` apart along the path, its last point kept."""
    kept = [points[0]]
    for p in points[1:]:
        if math.dist(p, kept[-1]) >= step:
            kept.append(p)
    if len(points) > 1 and kept[-1] != points[-1]:
        if math.dist(points[-1], kept[-1]) > step / 3:
            kept.append(points[-1])
        else:
            kept[-1] = points[-1]  # no stub of a segment at the end
    return kept


def traced_strokes(digit: np.ndarray, step: float = 0.04) -> list[Stroke]:
    """An MNIST digit (uint8 28×28, white on black) as pen strokes: its ink thinned to a skeleton and traced.

    Points are (x, y) as fractions of the skeleton's box side (the longer of its sides), the box's centre at
    (0.5, 0.5), about ``step`` of that side apart: a mouse sampled at 60-120 Hz moves about so far between events.
    """
    big = Image.fromarray(digit).resize((28 * TRACE_SCALE,) * 2, Image.Resampling.BILINEAR)
    links = _pruned(_links(thinned(np.asarray(big) >= 128)), SPUR * TRACE_SCALE)
    paths = [_smoothed(path) for path in _walks(links) if len(path) > 1]
    if not paths:
        return []
    ys, xs = zip(*(p for path in paths for p in path))
    side = max(max(ys) - min(ys), max(xs) - min(xs), 1.0)
    cy, cx = (max(ys) + min(ys)) / 2, (max(xs) + min(xs)) / 2
    strokes = [[(0.5 + (x - cx) / side, 0.5 + (y - cy) / side) for y, x in path] for path in paths]
    return [_spaced(stroke, step) for stroke in strokes]


def placed(strokes: list[Stroke], size: float, cx: float = 0.5, cy: float = 0.5, degrees: float = 0.0):
    """Strokes from ``traced_strokes`` on a canvas: their box side ``size`` of the canvas's, centred at (cx, cy),
    turned ``degrees`` clockwise about that centre."""
    turn = math.radians(degrees)
    cos, sin = math.cos(turn), math.sin(turn)
    return [
        [
            (cx + size * ((x - 0.5) * cos - (y - 0.5) * sin), cy + size * ((x - 0.5) * sin + (y - 0.5) * cos))
            for x, y in s
        ]
        for s in strokes
    ]


def rendered(strokes: list[Stroke], side: int, pen: float, supersample: int = 3) -> Image.Image:
    """The strokes drawn as the page draws them, black on white with round caps and joins, ``pen`` of the side
    wide: a ``side``×``side`` grayscale picture (drawn larger and reduced, for anti-aliased edges)."""
    big = side * supersample
    picture = Image.new("L", (big, big), 255)
    draw = ImageDraw.Draw(picture)
    width = pen * big
    for stroke in strokes:
        at = [(x * big, y * big) for x, y in stroke]
        for x, y in at:
            draw.ellipse((x - width / 2, y - width / 2, x + width / 2, y + width / 2), fill=0)
        if len(at) > 1:
            draw.line(at, fill=0, width=max(1, round(width)))
    return picture.resize((side, side), Image.Resampling.BOX)
