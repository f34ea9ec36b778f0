"""Digits drawn as a person would: strokes through points given as fractions of the canvas, made with real mouse
or touch input in Chromium; and MNIST digits as pictures, with the pixels the page makes of them. Used by the
browser tests and by benchmarks/page_latency.py."""

from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image

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


def mouse_stroke(page, stroke: Stroke, release: bool = True) -> None:
    """Draw one stroke with the left mouse button held down; ``release=False`` keeps the pen down at its end."""
    at = on_screen(page, stroke)
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=3)
    if release:
        page.mouse.up()


def draw_with_mouse(page, strokes: list[Stroke], hold_last: bool = False) -> None:
    """Draw every stroke; with ``hold_last`` the mouse button stays down at the end (release it to lift the pen)."""
    for i, stroke in enumerate(strokes):
        mouse_stroke(page, stroke, release=not (hold_last and i == len(strokes) - 1))


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
