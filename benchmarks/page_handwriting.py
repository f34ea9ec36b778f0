"""How well the drawing page reads real handwriting drawn in a real browser, condition by condition.

The first N MNIST test digits are thinned to a skeleton and traced into pen strokes (tests/drawn_digits.py:
``traced_strokes``), then drawn on the page of `mnistkit serve` in headless Chromium with real input events (the
mouse, or touch on a phone viewport), as a person would draw them: at a usual size, small, tiny, huge, off-centre,
in a corner, with a thin or a thick pen, in fast strokes, turned ±15°, on a phone, on a large screen, in dark mode.
The answer is read from the page as a person sees it: the digit shown once the answer after the last pen-up is
final, or "not a digit".

As the reference, the same strokes (same place, size and pen) are drawn into a picture of the canvas's size by
Pillow and classified by ``Classifier.predict``, the path of `mnistkit predict`: a condition whose page accuracy
falls below its reference has a problem in the page or its request, not in the model.

    .venv/bin/python benchmarks/page_handwriting.py                 # 50 digits a condition: 6 minutes on 2 cores
    .venv/bin/python benchmarks/page_handwriting.py --n 300 --only plain small thick
    .venv/bin/python benchmarks/page_handwriting.py --n 20 --save /tmp/misses   # pictures of the page's misses
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import platform
import random
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from drawn_digits import Stroke, placed, rendered, traced_strokes  # noqa: E402
from test_server import running_server  # noqa: E402

from mnistkit import Classifier, data  # noqa: E402
from mnistkit.inference import Prediction  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"viewport": {"width": 1000, "height": 800}}
PHONE = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
LARGE = {"viewport": {"width": 1920, "height": 1080}}
PEN_WIDTHS = [1 / 28, 1 / 20, 1 / 14, 1 / 10, 1 / 7]  # the page's, of the canvas side (static/app.js)
STEP = 0.03  # of the digit's side between input events: a hand at 60-120 events a second
FAST_STEP = 0.12  # a quick flick: few events, the stroke a polyline with sharp corners
# Installed before the page's script: the last pen-up's time, and each final answer as it is shown.
PROBE = """
window.penUp = -1;
window.finals = [];
document.addEventListener('pointerup', () => { window.penUp = performance.now(); }, true);
document.addEventListener('DOMContentLoaded', () => {
    const result = document.querySelector('.result');
    new MutationObserver(() => {
        if (result.dataset.state !== 'final') return;
        window.finals.push({
            t: performance.now(),
            digit: document.getElementById('digit').textContent,
            notDigit: document.getElementById('confidence').textContent === 'This does not look like a digit.',
        });
    }).observe(result, { attributes: true, attributeFilter: ['data-state'] });
});
"""
ANSWER_AFTER_PEN_UP = "() => window.finals.some((f) => f.t >= window.penUp)"
LAST_ANSWER = "() => window.finals.filter((f) => f.t >= window.penUp).pop()"


@dataclass(frozen=True)
class Condition:
    name: str
    what: str
    context: dict = field(default_factory=lambda: DESKTOP)
    pen: int = 3  # the page's pen-width slider, 1 to 5
    step: float = STEP
    touch: bool = False
    # (digit's index, random) -> (size of the canvas side, centre x, centre y, degrees turned)
    place: Callable[[int, random.Random], tuple[float, float, float, float]] = lambda i, r: (0.7, 0.5, 0.5, 0.0)


def off_centre(i: int, r: random.Random) -> tuple[float, float, float, float]:
    return 0.5, 0.5 + r.choice((-1, 1)) * r.uniform(0.12, 0.2), 0.5 + r.choice((-1, 1)) * r.uniform(0.12, 0.2), 0.0


def in_a_corner(i: int, r: random.Random) -> tuple[float, float, float, float]:
    return 0.4, (0.23, 0.77)[i % 2], (0.23, 0.77)[i // 2 % 2], 0.0


CONDITIONS = [
    Condition("plain", "desktop 1000×800, mouse, pen 3, 70% of the canvas, centred"),
    Condition("small", "a third of the canvas", place=lambda i, r: (1 / 3, 0.5, 0.5, 0.0)),
    Condition("tiny", "a fifth of the canvas: a small digit on a large pad", place=lambda i, r: (0.2, 0.5, 0.5, 0.0)),
    Condition("huge", "97%: the ink runs to the edges", place=lambda i, r: (0.97, 0.5, 0.5, 0.0)),
    Condition("off-centre", "half the canvas, centre 12-20% off both ways", place=off_centre),
    Condition("corner", "40% of the canvas in one of the corners", place=in_a_corner),
    Condition("thin pen", "pen 1 (1/28 of the side)", pen=1),
    Condition("thick pen", "pen 5 (1/7 of the side)", pen=5),
    Condition("small thick", "a third of the canvas, pen 5", pen=5, place=lambda i, r: (1 / 3, 0.5, 0.5, 0.0)),
    Condition("fast", f"events {FAST_STEP:.0%} of the digit apart: sharp corners", step=FAST_STEP),
    Condition("rotated", "turned 15° one way or the other", place=lambda i, r: (0.7, 0.5, 0.5, (-15, 15)[i % 2])),
    Condition("phone", "390×844 at 2×, touch", context=PHONE, touch=True),
    Condition("large", "1920×1080 desktop", context=LARGE),
    Condition("dark", "dark mode", context={**DESKTOP, "color_scheme": "dark"}),
]


async def draw(page, strokes: list[Stroke], touch: bool, cdp) -> None:
    """The strokes with the mouse (one event a point) or one finger: real input, as a person makes it. Chromium
    takes each event at a frame, 60 a second, as a real mouse's are."""
    box = await page.locator("#pad").bounding_box()
    for stroke in strokes:
        at = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in stroke]
        if touch:
            touch_at = [{"x": at[0][0], "y": at[0][1]}]
            await cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": touch_at})
            for x, y in at[1:]:
                await cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
            await cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
        else:
            await page.mouse.move(*at[0])
            await page.mouse.down()
            for x, y in at[1:]:
                await page.mouse.move(x, y)
            await page.mouse.up()


def sparser(stroke: Stroke, every: int) -> Stroke:
    """Every ``every``-th point of the stroke, its last one kept."""
    kept = stroke[::every]
    return kept if kept[-1] == stroke[-1] else [*kept, stroke[-1]]


async def drawn_answer(page, strokes: list[Stroke], touch: bool, cdp) -> dict:
    """What the page shows once the answer to the finished drawing is in: {digit, notDigit}."""
    await page.keyboard.press("Escape")
    await draw(page, strokes, touch, cdp)
    await page.wait_for_function(ANSWER_AFTER_PEN_UP, timeout=30_000)
    return await page.evaluate(LAST_ANSWER)


async def save_miss(folder: Path, name: str, index: int, page) -> None:
    """The canvas and what the page's model saw, as PNGs."""
    folder.mkdir(parents=True, exist_ok=True)
    for what, canvas in (("canvas", "pad"), ("seen", "seen")):
        url = await page.evaluate(f"document.getElementById('{canvas}').toDataURL('image/png')")
        (folder / f"{name}-{index}-{what}.png").write_bytes(base64.b64decode(url.split(",")[1]))


@dataclass
class Drawn:
    """One digit drawn in one condition: what the page showed, and the picture the reference classifies."""

    label: int
    shown: dict
    picture: np.ndarray


async def draw_condition(browser, url: str, condition: Condition, digits, save: Path | None) -> list[Drawn]:
    """Every digit drawn on a page of its own in one condition."""
    context = await browser.new_context(**condition.context)
    page = await context.new_page()
    await page.add_init_script(PROBE)
    await page.goto(url)
    await page.wait_for_selector(".example")
    await page.locator("#pen").fill(str(condition.pen))
    cdp = await context.new_cdp_session(page) if condition.touch else None
    side = await page.evaluate("document.getElementById('pad').width")
    rng = random.Random(condition.name)
    drawn = []
    for index, (strokes, label) in enumerate(digits):
        size, cx, cy, degrees = condition.place(index, rng)
        every = round(condition.step / STEP)
        on_canvas = placed([sparser(stroke, every) for stroke in strokes], size, cx, cy, degrees)
        shown = await drawn_answer(page, on_canvas, condition.touch, cdp)
        picture = np.asarray(rendered(on_canvas, side, PEN_WIDTHS[condition.pen - 1]))
        drawn.append(Drawn(label, shown, picture))
        if save and (shown["notDigit"] or shown["digit"] != str(label)):
            await save_miss(save, condition.name.replace(" ", "-"), index, page)
    await context.close()
    return drawn


def scored(drawn: list[Drawn], classifier: Classifier) -> dict:
    """Counts for the page's answers and for the reference's, classified here all at once."""
    references = classifier.predict([d.picture for d in drawn])
    counts = dict.fromkeys(("n", "page_right", "page_flagged", "ref_right", "ref_flagged", "agree"), 0)
    for d, reference in zip(drawn, references):
        assert isinstance(reference, Prediction), reference
        page_right = not d.shown["notDigit"] and d.shown["digit"] == str(d.label)
        ref_right = not reference.not_a_digit and reference.digit == d.label
        counts["n"] += 1
        counts["page_right"] += page_right
        counts["page_flagged"] += d.shown["notDigit"]
        counts["ref_right"] += ref_right
        counts["ref_flagged"] += reference.not_a_digit
        counts["agree"] += page_right == ref_right
    return counts


def percent(part: int, whole: int) -> str:
    return f"{100 * part / max(whole, 1):.1f}%"


def print_table(rows: list[tuple[Condition, dict]]) -> None:
    print("| condition | page right | page: not a digit | reference right | reference: not a digit | same outcome |")
    print("|---|---|---|---|---|---|")
    for condition, c in rows:
        n = c["n"]
        print(
            f"| {condition.name} ({condition.what}) | {percent(c['page_right'], n)} | "
            f"{percent(c['page_flagged'], n)} | {percent(c['ref_right'], n)} | {percent(c['ref_flagged'], n)} | "
            f"{percent(c['agree'], n)} |"
        )


def traced_test_digits(n: int) -> list[tuple[list[Stroke], int]]:
    """The first ``n`` MNIST test digits as strokes, with their labels (a digit whose skeleton is empty is left
    out: none of the first thousand)."""
    test = data.load_bundled_mnist().test
    assert test is not None
    pairs = [
        (traced_strokes(image, STEP), int(label)) for image, label in zip(test.images[:n].numpy(), test.labels[:n])
    ]
    return [(strokes, label) for strokes, label in pairs if strokes]


async def draw_all(conditions: list[Condition], digits, parallel: int, save: Path | None) -> list[list[Drawn]]:
    """Every condition drawn, ``parallel`` pages at a time: each mostly waits for frames, not for the CPU."""
    from playwright.async_api import async_playwright

    slots = asyncio.Semaphore(parallel)
    with running_server() as url:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])

            async def one(condition: Condition) -> list[Drawn]:
                async with slots:
                    started = time.monotonic()
                    drawn = await draw_condition(browser, url, condition, digits, save)
                    print(f"  {condition.name}: drawn in {time.monotonic() - started:.0f} s", flush=True)
                    return drawn

            results = await asyncio.gather(*(one(condition) for condition in conditions))
            await browser.close()
    return list(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50, help="MNIST test digits drawn in each condition")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="only these conditions (names as in the table)")
    parser.add_argument("--parallel", type=int, default=4, help="conditions drawn at once, each on its own page")
    parser.add_argument("--save", type=Path, help="write the canvas and the model's input of each page miss here")
    args = parser.parse_args()
    conditions = [c for c in CONDITIONS if not args.only or c.name in args.only]

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.machine()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.2f}, commit {commit}; Chromium headless; first {args.n} MNIST test digits traced"
    )
    started = time.monotonic()
    digits = traced_test_digits(args.n)
    drawn = asyncio.run(draw_all(conditions, digits, args.parallel, args.save))
    classifier = Classifier.load()
    print_table([(condition, scored(d, classifier)) for condition, d in zip(conditions, drawn)])
    print(
        f"{sum(len(d) for d in drawn)} drawings in {time.monotonic() - started:.0f} s; "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
