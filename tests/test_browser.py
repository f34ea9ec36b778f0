"""The drawing page in a real browser: Debian's Chromium driven by Playwright against `mnistkit serve`.

Digits are drawn with real mouse strokes (and touch on phone viewports). Every page runs under a Content-Security-
Policy of 'self' only, so inline code or an outside resource shows up as a console error, and every test ends by
checking that there was none and that nothing was asked of another host. Skipped, with the reason, where Chromium
(`apt-get install chromium`), Playwright or axe-playwright-python is missing. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import io
import re
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from drawn_digits import (
    DIGITS,
    draw_with_mouse,
    draw_with_touch,
    line,
    mnist_drawing,
    mouse_stroke,
    on_screen,
    page_pixels,
    placed,
    traced_strokes,
)
from PIL import Image
from test_server import running_server

from mnistkit import Classifier

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Headless, and nothing that reaches out of the machine (updates, sync, first-run pages).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"viewport": {"width": 1000, "height": 800}}
PORTRAIT = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
TABLET = {"viewport": {"width": 800, "height": 1280}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}
LANDSCAPE = {"viewport": {"width": 844, "height": 390}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True}

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)
axe_playwright = pytest.importorskip(
    "axe_playwright_python.sync_playwright", reason="axe-playwright-python is not installed (pip install -e .[dev])"
)
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's Chromium is not installed (apt-get install chromium)", allow_module_level=True)
expect = sync_api.expect


@pytest.fixture(scope="module")
def feedback_db(tmp_path_factory) -> Path:
    """Where the module's server stores corrections."""
    return tmp_path_factory.mktemp("corrections") / "feedback.sqlite"


@pytest.fixture(scope="module")
def server_url(feedback_db) -> Iterator[str]:
    with running_server(feedback_db) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def open_page(browser, server_url):
    """open_page(**context options) -> the page, loaded under the server's own Content-Security-Policy, recording
    requests and console errors (a policy violation is one).
    At the end: no console error, nothing asked of another host."""
    opened = []

    def open_(**options):
        context = browser.new_context(**{**DESKTOP, **options})
        page = context.new_page()
        page.requested, page.errors = [], []
        page.on("request", lambda request: page.requested.append(request.url))
        page.on("console", lambda message: page.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.goto(server_url)
        expect(page.locator("#model-info")).to_contain_text("parameters")
        expect(page.locator(".example")).to_have_count(20)
        opened.append(page)
        return page

    yield open_
    for page in opened:
        page.unroute_all(behavior="ignoreErrors")  # a test's route handlers may still run for cancelled requests
        assert page.errors == [], page.errors
        assert page.requested and all(url.startswith(server_url) for url in page.requested), page.requested
        page.context.close()


@pytest.fixture
def page(open_page):
    return open_page()


def state(page) -> str:
    return page.locator(".result").get_attribute("data-state")


def settled(page) -> tuple[str, str]:
    """(digit, state) once the page has had time for every answer still on its way."""
    page.wait_for_timeout(600)
    return page.locator("#digit").inner_text(), state(page)


def assert_final_at_pen_up(page, expected: str) -> None:
    """After the pen is lifted the page shows a final answer, it is right, and nothing later replaces it.

    How soon it comes is a figure of benchmarks/page_latency.py, not an assertion: a loaded machine is slow.
    """
    expect(page.locator(".result")).to_have_attribute("data-state", "final", timeout=10_000)
    shown = page.locator("#digit").inner_text(), state(page)
    assert shown == (expected, "final")
    assert settled(page) == shown


def count_ink(page) -> int:
    return page.evaluate("""() => {
        const pad = document.getElementById('pad');
        const data = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
        return data.filter((value, i) => i % 4 === 0 && value < 128).length;
    }""")


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def predictions(page) -> list[str]:
    return [url for url in page.requested if url.endswith("/api/predict")]


# --------------------------------------------------------------------------------------------------
# drawing and answers


def test_answer_at_pen_up_is_final_and_right(page):
    assert page.locator("#digit").inner_text() == "?" and state(page) == "empty" and count_ink(page) == 0
    for digit in (1, 0, 7, 3):
        page.keyboard.press("Escape")
        draw_with_mouse(page, DIGITS[digit])
        assert_final_at_pen_up(page, str(digit))
        expect(page.locator("#announce")).to_have_text(re.compile(rf"^Prediction: {digit}, \d+\.\d% sure\.$"))
        assert page.locator("#top3").inner_text().startswith(f"Most likely {digit} (")
        bars = page.locator("#bars .bar-row")
        assert bars.locator(".label").all_inner_texts() == [str(d) for d in range(10)]
        shown = [float(text.rstrip("%").lstrip("<")) for text in bars.locator(".pct").all_inner_texts()]
        assert max(shown) == shown[digit] > 50 and sum(shown) == pytest.approx(100, abs=1)
        expect(bars.nth(digit)).to_have_class("bar-row best")
    seen_ink = page.evaluate("""() => {
        const data = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
        return data.filter((value, i) => i % 4 === 0 && value > 128).length;
    }""")
    assert 20 < seen_ink < 300  # the 28×28 picture shows a digit, not a blank or a filled square
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "serve-drew-3.png", full_page=True)

    page.locator("#clear").click()
    assert page.locator("#digit").inner_text() == "?" and state(page) == "empty" and count_ink(page) == 0
    assert page.locator("#bars .pct").all_inner_texts() == [""] * 10


def test_prediction_updates_while_still_drawing(page):
    mouse_stroke(page, [(0.5, 0.15)], release=False)
    shown = []
    for i in range(1, 31):  # a slow stroke, over a second
        page.mouse.move(*on_screen(page, [(0.5, 0.15 + 0.024 * i)])[0])
        page.wait_for_timeout(30)
        shown.append((page.locator("#digit").inner_text(), state(page)))
    assert ("1", "live") in shown, shown  # answered mid-stroke, as live (not final) answers
    assert page.locator("#announce").inner_text() == ""  # live answers are not announced
    page.mouse.up()
    assert_final_at_pen_up(page, "1")


def test_a_late_answer_about_a_stale_drawing_is_never_shown(page):
    # The first answer the page gets (to a live request about a partial stroke) is held back 800 ms by the network;
    # by then the pen is up and the final answer shown. The late one must not replace it.
    page.evaluate("""() => {
        const real = window.fetch;
        let first = true;
        window.shownDigits = [];
        new MutationObserver(() => window.shownDigits.push(document.getElementById('digit').textContent))
            .observe(document.getElementById('digit'), { childList: true, characterData: true, subtree: true });
        window.fetch = async (url, options) => {
            const response = await real(url, options);
            if (url === '/api/predict' && first) {
                first = false;
                await new Promise((resolve) => setTimeout(resolve, 800));
            }
            return response;
        };
    }""")
    mouse_stroke(page, line((0.28, 0.18), (0.72, 0.18)), release=False)  # the top bar of a 7, pen still down
    page.wait_for_timeout(300)  # a live request about the bar goes out, and its answer is held
    for point in on_screen(page, line((0.72, 0.18), (0.42, 0.86)))[1:]:
        page.mouse.move(*point)
    page.mouse.up()
    page.wait_for_timeout(1200)  # the held answer arrives
    assert state(page) == "final" and page.locator("#digit").inner_text() == "7"
    assert page.evaluate("window.shownDigits") in ([], ["7"]), page.evaluate("window.shownDigits")


SLOW_PREDICT = """(delay) => {
    const real = window.fetch;
    window.fetch = async (url, options) => {
        if (url === '/api/predict') await new Promise((resolve) => setTimeout(resolve, delay));
        return real(url, options);
    };
}"""


def test_an_answer_about_the_drawing_before_a_new_stroke_is_not_shown_as_final(page):
    # A slow server answers the pen-up after the first stroke of a 4 while its second stroke is being drawn: that
    # answer is about a drawing that no longer is, so it is neither final, nor announced, nor offered for correction.
    page.evaluate(SLOW_PREDICT, 1500)
    first, second = DIGITS[4]
    mouse_stroke(page, first)
    page.wait_for_timeout(300)
    mouse_stroke(page, second[:1], release=False)
    states = set()
    for point in on_screen(page, second)[1:]:
        page.mouse.move(*point)
        page.wait_for_timeout(150)
        states.add(state(page))
    page.wait_for_timeout(1500)  # the first stroke's answer would have come by now
    states.add(state(page))
    assert "final" not in states and page.locator("#announce").inner_text() == "", states
    assert page.locator("#feedback").is_hidden()
    page.mouse.up()
    expect(page.locator(".result")).to_have_attribute("data-state", "final", timeout=10_000)
    assert page.locator("#digit").inner_text() == "4"


def test_an_answer_on_its_way_is_shown_as_coming(page):
    page.evaluate(SLOW_PREDICT, 3000)
    page.locator(".example").first.click()  # no live answers before it: the page asks once
    expect(page.locator("#top3")).to_have_text("Asking the model…")
    assert page.locator("#digit").inner_text() == "?" and state(page) == "pending"
    expect(page.locator(".result")).to_have_attribute("data-state", "final", timeout=10_000)
    assert page.locator("#top3").inner_text().startswith("Most likely ")


def test_a_new_stroke_drops_the_answer_on_its_way_and_says_nothing_of_it(page):
    page.evaluate(SLOW_PREDICT, 3000)
    page.locator(".example").first.click()
    expect(page.locator("#top3")).to_have_text("Asking the model…")
    mouse_stroke(page, [(0.5, 0.5), (0.52, 0.52)], release=False)  # too short to be asked about while drawing
    assert state(page) == "live" and page.locator("#top3").inner_text() == ""
    page.mouse.up()


@pytest.mark.parametrize("pen", ["1", "3"])
def test_the_same_strokes_give_the_same_pixels_at_any_pixel_ratio(open_page, pen):
    # The model's pixels come from a canvas of one size, not the pad's device pixels: a 2 drawn with the thinnest
    # pen read 7 at a ratio of 1 and 2 at 2 and 3, when they did.
    sent = {}
    for ratio in (1, 2, 3):
        page = open_page(device_scale_factor=ratio)
        bodies = []
        page.on(
            "request", lambda request, bodies=bodies: request.url.endswith("/api/predict") and bodies.append(request)
        )
        page.locator("#pen").fill(pen)
        draw_with_mouse(page, DIGITS[2])
        assert_final_at_pen_up(page, "2")
        sent[ratio] = bodies[-1].post_data_json["pixels"]
    assert sent[1] == sent[2] == sent[3]


def test_a_stroke_run_off_the_canvas_is_sent_as_the_part_on_it(page):
    # What lies past the canvas's edge is not drawn, so it must not set the drawing's size either: the model's pen
    # widths scale with the size, and a stroke flung off the canvas made a small digit's strokes thin.
    sent = page.evaluate("""() => {
        const pixels = (end) => {
            const points = [{ x: 0.8, y: 0.5 }, { x: 0.8, y: 0.7 }, { x: end, y: 0.7 }];
            items = [{ kind: 'stroke', width: 1 / 7, points }];
            redraw();
            return padPixels();
        };
        return [pixels(1), pixels(3)];
    }""")
    assert sent[0] == sent[1]


def test_the_pad_follows_a_pixel_ratio_change_its_size_does_not_show(open_page):
    # At its largest (60 rem) the pad keeps its CSS size when the window moves to a screen of another scale.
    page = open_page(viewport={"width": 2560, "height": 1440}, device_scale_factor=1)
    css = page.evaluate("document.getElementById('pad').getBoundingClientRect().width")
    cdp = page.context.new_cdp_session(page)
    metrics = {"width": 2560, "height": 1440, "deviceScaleFactor": 2, "mobile": False}
    cdp.send("Emulation.setDeviceMetricsOverride", metrics)
    draw_with_mouse(page, DIGITS[1])
    assert_final_at_pen_up(page, "1")
    assert page.evaluate("document.getElementById('pad').width") == round(2 * css)


def test_undo_with_button_and_ctrl_z(page):
    undo = page.locator("#undo")
    assert undo.is_disabled()
    draw_with_mouse(page, [line((0.55, 0.18), (0.45, 0.85), n=10)])
    assert_final_at_pen_up(page, "1")
    mouse_stroke(page, line((0.28, 0.2), (0.56, 0.18), n=6))  # a top bar turns the 1 into a 7
    assert_final_at_pen_up(page, "7")
    page.keyboard.press("Control+z")
    assert_final_at_pen_up(page, "1")
    undo.click()
    expect(page.locator("#digit")).to_have_text("?")
    assert state(page) == "empty" and count_ink(page) == 0 and undo.is_disabled()


def test_ctrl_z_undoes_on_a_layout_without_latin_letters(page):
    draw_with_mouse(page, DIGITS[4])
    assert_final_at_pen_up(page, "4")
    cdp = page.context.new_cdp_session(page)
    for kind in ("rawKeyDown", "keyUp"):  # Ctrl+Z on a Russian layout: the key types "я"
        cdp.send("Input.dispatchKeyEvent", {"type": kind, "key": "я", "code": "KeyZ", "modifiers": 2})
    expect(page.locator(".result")).to_have_attribute("data-state", "final", timeout=10_000)
    assert page.evaluate("items.length") == 1


def test_a_resting_palm_does_not_keep_the_pen_or_finger_from_drawing(open_page):
    page = open_page(**TABLET)
    cdp = page.context.new_cdp_session(page)
    palm = {"x": on_screen(page, [(0.9, 0.95)])[0][0], "y": on_screen(page, [(0.9, 0.95)])[0][1], "id": 7}
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [palm]})
    at = on_screen(page, DIGITS[1][0])
    for kind, (x, y) in [("mousePressed", at[0])] + [("mouseMoved", xy) for xy in at[1:]] + [("mouseReleased", at[-1])]:
        cdp.send(
            "Input.dispatchMouseEvent",
            {
                "type": kind,
                "x": x,
                "y": y,
                "pointerType": "pen",
                "button": "left",
                "buttons": int(kind != "mouseReleased"),
                "clickCount": 1,
                "force": 0.5,
            },
        )
    assert_final_at_pen_up(page, "1")
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    assert settled(page) == ("1", "final") and page.evaluate("items.length") == 1

    page.keyboard.press("Escape")
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [palm]})
    at = on_screen(page, DIGITS[7][0])
    finger = [{"x": x, "y": y, "id": 8} for x, y in at]
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [palm, finger[0]]})
    for point in finger[1:]:
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [palm, point]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})  # both lifted, the palm first
    assert_final_at_pen_up(page, "7")
    assert page.evaluate("items.length") == 1


def test_pen_width_changes_the_stroke(page):
    inks = []
    for width in ("1", "5"):
        page.keyboard.press("Escape")
        page.locator("#pen").fill(width)
        draw_with_mouse(page, DIGITS[1])
        assert_final_at_pen_up(page, "1")
        inks.append(count_ink(page))
    assert inks[1] > 3 * inks[0] > 0


def seen_pixels(page) -> np.ndarray:
    """The 28×28 picture the model saw, as the page shows it, in [0, 1]."""
    values = page.evaluate("""() => Array.from(document.getElementById('seen').getContext('2d')
        .getImageData(0, 0, 28, 28).data.filter((v, i) => i % 4 === 0))""")
    return np.array(values, dtype=float).reshape(28, 28) / 255


# MNIST test digits (index, label) that the page read wrong when drawn a fifth of the canvas high with the thickest
# pen: its strokes, seven tenths of the digit's size wide, filled its loops before the pixels reached the server.
TINY_THICK_DIGITS = [(63, 3), (64, 7), (66, 6)]


def test_a_tiny_digit_drawn_with_a_thick_pen_reads_as_a_large_one(page, mnist):
    # Real handwriting (MNIST digits traced into strokes), each drawn large with the usual pen and tiny with the
    # thickest: the model is sent the strokes no wider than MNIST's pens for their size, so it sees nearly the same
    # picture both times, and reads it right.
    for index, label in TINY_THICK_DIGITS:
        strokes = traced_strokes(mnist.test.images[index].numpy(), step=0.06)
        seen = []
        for pen, size in (("3", 0.7), ("5", 0.2)):
            page.keyboard.press("Escape")
            page.locator("#pen").fill(pen)
            draw_with_mouse(page, placed(strokes, size), steps=1)
            assert_final_at_pen_up(page, str(label))
            seen.append(seen_pixels(page))
        assert np.abs(seen[0] - seen[1]).mean() < 0.07, (index, np.abs(seen[0] - seen[1]).mean())


def test_dark_mode_follows_the_system_and_the_toggle(open_page):
    page = open_page(color_scheme="dark")
    toggle = page.locator("#theme")
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    expect(toggle).to_have_attribute("aria-pressed", "true")
    dark_background = page.evaluate("getComputedStyle(document.documentElement).backgroundColor")
    draw_with_mouse(page, DIGITS[4])
    assert_final_at_pen_up(page, "4")  # the canvas shows light ink on dark, but sends what it always sends
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "serve-dark.png", full_page=True)
    toggle.click()
    assert page.evaluate("document.documentElement.dataset.theme") == "light"
    expect(toggle).to_have_attribute("aria-pressed", "false")
    assert page.evaluate("getComputedStyle(document.documentElement).backgroundColor") != dark_background
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "light"  # the choice is remembered


# --------------------------------------------------------------------------------------------------
# examples, files, explanations


def test_example_strip(page, mnist):
    examples = page.locator(".example")
    for i in range(10):
        label = str(i)  # the strip starts with the first test digit of each class, 0 to 9
        expect(examples.nth(i)).to_have_attribute(
            "aria-label", re.compile(f"^Example: a {label} from the MNIST test set")
        )
        examples.nth(i).click()
        expect(page.locator(".result")).to_have_attribute("data-state", "final")
        assert page.locator("#digit").inner_text() == label
    index = int(examples.nth(9).get_attribute("aria-label").split("image ")[1].rstrip(")"))
    seen = page.evaluate("""() => Array.from(document.getElementById('seen').getContext('2d')
        .getImageData(0, 0, 28, 28).data.filter((v, i) => i % 4 === 0))""")
    # What the model saw is the test image itself.
    np.testing.assert_allclose(np.array(seen).reshape(28, 28), mnist.test.images[index].numpy(), atol=1)


def test_choose_and_drop_image_files(page, mnist):
    images, labels = mnist.test.images[:2].numpy(), mnist.test.labels[:2].numpy()
    page.locator("#file").set_input_files(
        files=[{"name": "seven.png", "mimeType": "image/png", "buffer": mnist_drawing(images[0])}]
    )
    expect(page.locator(".result")).to_have_attribute("data-state", "final")
    assert page.locator("#digit").inner_text() == str(labels[0])

    drop_file(page, "two.png", "image/png", list(mnist_drawing(images[1])))
    expect(page.locator("#announce")).to_have_text(re.compile(rf"^Prediction: {labels[1]}, \d+\.\d% sure\.$"))
    assert state(page) == "final" and page.locator("#digit").inner_text() == str(labels[1])
    assert len(predictions(page)) == 2


@pytest.mark.parametrize(
    "name,kind,size,message,sent",
    [
        ("notes.txt", "text/plain", 100, "notes.txt is not a PNG, JPEG or WebP image", 0),
        ("huge.png", "image/png", 5 * 2**20, "huge.png is 5.0 MiB: images up to 4 MiB are accepted", 0),
        ("empty.png", "image/png", 0, "empty.png is empty", 0),
        ("blank.png", "image/png", None, "blank.png: image: no ink found", 1),
        ("broken.png", "image/png", 300, "broken.png cannot be read as an image", 0),
    ],
)
def test_a_bad_file_gets_one_clear_message_and_the_page_keeps_working(page, name, kind, size, message, sent):
    content = list(png(np.full((64, 64), 255, np.uint8))) if size is None else size
    drop_file(page, name, kind, content)
    expect(page.locator("#message")).to_contain_text(message)
    assert page.locator("#message").inner_text().count("\n") == 0 and state(page) == "error"
    expect(page.locator("#announce")).to_contain_text(message)
    page.wait_for_timeout(300)
    assert len(predictions(page)) == sent  # nothing sent twice, and nothing at all the page could tell was bad
    # Chromium itself logs the server's 4xx answer to a file it had to send; the page logs nothing.
    assert all("status of 422" in error for error in page.errors), page.errors
    page.errors.clear()
    draw_with_mouse(page, DIGITS[2])
    assert_final_at_pen_up(page, "2")
    assert page.locator("#message").is_hidden()


def drop_file(page, name: str, kind: str, content: list[int] | int) -> None:
    """Drop a file on the canvas as a person dragging it from their files would; ``content``: its bytes, or a size
    (that many bytes of junk)."""
    transfer = page.evaluate_handle(
        """([name, kind, content]) => {
            const transfer = new DataTransfer();
            const bytes = typeof content === 'number' ? new Uint8Array(content).fill(7) : new Uint8Array(content);
            transfer.items.add(new File([bytes], name, { type: kind }));
            return transfer;
        }""",
        [name, kind, content],
    )
    page.dispatch_event("#drop", "dragover", {"dataTransfer": transfer})
    page.dispatch_event("#drop", "drop", {"dataTransfer": transfer})


def test_saliency_and_feature_maps(page):
    draw_with_mouse(page, DIGITS[9])
    assert_final_at_pen_up(page, "9")
    saliency = page.locator("#saliency")
    expect(saliency).to_have_attribute(
        "aria-label",
        "Saliency map for 9: " + "the image the model saw, with the pixels that move its answer most in yellow",
    )
    pixels = page.evaluate("""() => Array.from(document.getElementById('saliency').getContext('2d')
        .getImageData(0, 0, 28, 28).data.filter((v, i) => i % 4 === 0))""")
    assert max(pixels) > 200 and min(pixels) < 60  # hot spots and cool ones
    page.locator("#maps-box summary").click()
    maps = page.locator("#maps")
    expect(maps).to_be_visible()
    convolution = next(m for m in Classifier.load().inference.net.modules() if isinstance(m, torch.nn.Conv2d))
    n = convolution.out_channels  # the served (bundled) model's first convolution
    expect(maps).to_have_attribute("aria-label", f"The {n} feature maps of the first convolution, one tile each")
    assert page.evaluate("[document.getElementById('maps').width, document.getElementById('maps').height]") == [
        8 * 29 - 1,  # 8 tiles of 28 px a row, 1 px apart
        -(-n // 8) * 29 - 1,
    ]
    page.locator("#pad").scroll_into_view_if_needed()  # opening the maps scrolled the page down
    mouse_stroke(page, [(0.2, 0.2), (0.25, 0.25)], release=False)
    assert "stale" in saliency.get_attribute("class")  # dimmed while the drawing changes (the pen is still down)
    page.mouse.up()


def answer_not_a_digit(page) -> None:
    """The server's real answers from now on, each marked as not a digit."""

    def add_not_a_digit(route):
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "not_a_digit": True})

    page.route("**/api/predict", add_not_a_digit)


def test_not_a_digit_is_said_plainly(page):
    answer_not_a_digit(page)
    draw_with_mouse(page, DIGITS[8])
    expect(page.locator("#confidence")).to_have_text("This does not look like a digit.")
    expect(page.locator("#announce")).to_have_text("Not a digit: this does not look like a digit.")


def test_server_gone_is_one_clear_message(page):
    page.route("**/api/predict", lambda route: route.abort())
    draw_with_mouse(page, DIGITS[5])
    expect(page.locator("#message")).to_contain_text("No answer from the server")
    expect(page.locator("#message")).to_be_visible()
    assert all("ERR_FAILED" in error for error in page.errors), page.errors  # Chromium logs the refused requests
    page.errors.clear()


# --------------------------------------------------------------------------------------------------
# corrections


def stored(feedback_db: Path) -> list[tuple]:
    with sqlite3.connect(feedback_db) as db:
        return db.execute("SELECT id, label, predicted, confidence, pixels, drawing_png FROM corrections").fetchall()


def test_correct_a_drawing_with_the_buttons(page, feedback_db):
    before = len(stored(feedback_db))
    box = page.locator("#feedback")
    assert box.is_hidden()  # nothing to correct yet
    draw_with_mouse(page, DIGITS[1])
    assert_final_at_pen_up(page, "1")
    expect(box).to_be_visible()
    seen = page.evaluate("""() => Array.from(document.getElementById('seen').getContext('2d')
        .getImageData(0, 0, 28, 28).data.filter((v, i) => i % 4 === 0))""")
    page.get_by_role("button", name="It was 7").click()  # the person says it was a 7
    expect(page.locator("#feedback-status")).to_have_text("Saved: it was 7. Thank you.")
    expect(page.locator("#announce")).to_have_text("Saved: it was 7. Thank you.")
    rows = stored(feedback_db)
    assert len(rows) == before + 1
    _, label, predicted, confidence, pixels, png = rows[-1]
    assert (label, predicted) == (7, 1) and 0.5 < confidence <= 1
    np.testing.assert_allclose(np.frombuffer(pixels, np.uint8), seen, atol=1)  # the pixels the model saw
    assert len(png) <= 32 * 1024 and Image.open(io.BytesIO(png)).size == (280, 280)

    # "Right" corrects the correction: the same drawing is stored once, with the latest label.
    page.locator("#right").click()
    expect(page.locator("#feedback-status")).to_have_text("Updated: the model was right, it was 1.")
    assert len(stored(feedback_db)) == before + 1 and stored(feedback_db)[-1][1] == 1

    # By keyboard: focus a digit's button, Enter.
    page.get_by_role("button", name="It was 4").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#feedback-status")).to_have_text("Updated: it was 4.")
    assert stored(feedback_db)[-1][1] == 4

    page.locator("#pad").scroll_into_view_if_needed()  # opening the maps scrolled the page down
    mouse_stroke(page, [(0.2, 0.2), (0.25, 0.25)], release=False)
    expect(box).to_be_hidden()  # the drawing changed: the buttons wait for the next answer
    page.mouse.up()


def test_two_quick_corrections_are_stored_in_the_order_chosen(page, feedback_db):
    # The first request is held back by the network: sent at once, the second would be stored before it.
    page.evaluate("""() => {
        const real = window.fetch;
        let first = true;
        window.fetch = async (url, options) => {
            if (url === '/api/feedback' && first) {
                first = false;
                await new Promise((resolve) => setTimeout(resolve, 400));
            }
            return real(url, options);
        };
    }""")
    draw_with_mouse(page, DIGITS[4])
    assert_final_at_pen_up(page, "4")
    page.get_by_role("button", name="It was 9").click()
    page.get_by_role("button", name="It was 1").click()
    expect(page.locator("#feedback-status")).to_have_text(re.compile(r"^(Saved|Updated): it was 1\."))
    page.wait_for_timeout(800)  # the held request has been answered by now, wherever it went
    assert stored(feedback_db)[-1][1] == 1
    assert page.locator("#feedback-status").inner_text().endswith("it was 1.")


def test_focus_stays_on_the_controls_when_its_button_goes(page):
    draw_with_mouse(page, [DIGITS[1][0]])
    assert_final_at_pen_up(page, "1")
    page.locator("#undo").focus()
    page.keyboard.press("Enter")  # the last stroke undone: Undo is disabled under the focus
    expect(page.locator("#undo")).to_be_disabled()
    assert page.evaluate("document.activeElement.id") == "clear"
    draw_with_mouse(page, DIGITS[7])
    assert_final_at_pen_up(page, "7")
    page.get_by_role("button", name="It was 1").focus()
    page.keyboard.press("Control+z")  # the drawing changes: the correction buttons go
    expect(page.locator("#feedback")).to_be_hidden()
    assert page.evaluate("document.activeElement.id") == "clear"


def test_a_correction_the_server_cannot_store_says_so_and_predicting_goes_on(page):
    error = "the correction was not stored: feedback.sqlite: the database is read-only; make the file writable"
    page.route("**/api/feedback", lambda route: route.fulfill(status=503, json={"error": error}))
    draw_with_mouse(page, DIGITS[2])
    assert_final_at_pen_up(page, "2")
    page.get_by_role("button", name="It was 3").click()
    expect(page.locator("#feedback-status")).to_have_text(f"Not saved: {error}")
    expect(page.locator("#announce")).to_have_text(f"Not saved: {error}")
    assert page.locator("#digit").inner_text() == "2" and state(page) == "final"  # the answer stays
    assert all("status of 503" in e for e in page.errors), page.errors  # Chromium logs the refused request
    page.errors.clear()
    page.keyboard.press("Escape")
    draw_with_mouse(page, DIGITS[5])
    assert_final_at_pen_up(page, "5")


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (502, "<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),  # a proxy's page
        (500, '{"detail": "Internal Server Error"}', "application/json"),  # JSON without the API's "error"
    ],
)
def test_an_answer_not_from_the_api_is_named_by_its_status(page, status, body, content_type):
    page.route("**/api/feedback", lambda route: route.fulfill(status=status, body=body, content_type=content_type))
    draw_with_mouse(page, DIGITS[2])
    assert_final_at_pen_up(page, "2")
    page.get_by_role("button", name="It was 3").click()
    why = f"the answer was not mnistkit serve's (HTTP {status} "
    expect(page.locator("#feedback-status")).to_contain_text(f"Not saved: {why}")
    assert "undefined" not in page.locator("#feedback-status").inner_text()
    page.errors.clear()  # Chromium logs the refused request

    page.route("**/api/predict", lambda route: route.fulfill(status=status, body=body, content_type=content_type))
    page.keyboard.press("Escape")
    draw_with_mouse(page, DIGITS[5])
    expect(page.locator("#message")).to_contain_text(f"The server could not use this drawing: {why}")
    page.errors.clear()


def test_no_correction_buttons_when_the_server_stores_none(page):
    def feedback_off(route):
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "feedback": False})

    page.route("**/api/model", feedback_off)
    page.reload()
    expect(page.locator("#model-info")).to_contain_text("parameters")
    expect(page.locator(".example")).to_have_count(20)
    draw_with_mouse(page, DIGITS[0])
    assert_final_at_pen_up(page, "0")
    assert page.locator("#feedback").is_hidden()


def test_not_a_digit_offers_only_the_digits(page):
    answer_not_a_digit(page)
    draw_with_mouse(page, DIGITS[1])
    expect(page.locator("#confidence")).to_have_text("This does not look like a digit.")
    expect(page.locator("#feedback")).to_be_visible()
    assert page.locator("#right").is_hidden() and page.locator("#feedback-digits button").count() == 10


# --------------------------------------------------------------------------------------------------
# screens


def test_phone_portrait_with_touch(open_page):
    page = open_page(**PORTRAIT)
    box = page.locator("#pad").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["width"] > 300  # nearly the full width
    assert abs(box["width"] - box["height"]) < 1 and box["y"] + box["height"] <= 844
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    draw_with_touch(page, page.context.new_cdp_session(page), DIGITS[6])
    assert_final_at_pen_up(page, "6")
    digit = page.locator("#digit").bounding_box()
    assert digit["y"] + digit["height"] <= 844  # the answer is visible without scrolling
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "serve-phone.png")


def test_phone_landscape_with_touch(open_page):
    page = open_page(**LANDSCAPE)
    box = page.locator("#pad").bounding_box()
    assert box["y"] >= 0 and box["y"] + box["height"] <= 390 and box["width"] > 300  # the whole canvas fits
    draw_with_touch(page, page.context.new_cdp_session(page), DIGITS[2])
    assert_final_at_pen_up(page, "2")
    digit = page.locator("#digit").bounding_box()
    assert digit["x"] > box["x"] + box["width"] and digit["y"] + digit["height"] <= 390  # beside the canvas
    assert page.evaluate("document.documentElement.scrollWidth") <= 844
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "serve-phone-landscape.png")


@pytest.mark.parametrize("size", [(1280, 600), (667, 533)])
def test_a_short_window_with_a_mouse_keeps_the_answer_beside_the_canvas(open_page, size):
    width, height = size  # a laptop at 150% scaling; the key help shows, as a mouse has a keyboard
    page = open_page(viewport={"width": width, "height": height})
    draw_with_mouse(page, DIGITS[3])
    assert_final_at_pen_up(page, "3")
    pad, digit = page.locator("#pad").bounding_box(), page.locator("#digit").bounding_box()
    assert pad["y"] + pad["height"] <= height and digit["x"] > pad["x"] + pad["width"]
    assert digit["x"] + digit["width"] <= width and page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.locator(".keys").is_visible()


def test_canvas_grows_on_a_large_screen(open_page):
    page = open_page(viewport={"width": 1920, "height": 1080})
    box = page.locator("#pad").bounding_box()
    assert box["width"] > 800 and box["y"] + box["height"] <= 1080
    draw_with_mouse(page, DIGITS[8])
    assert_final_at_pen_up(page, "8")


# --------------------------------------------------------------------------------------------------
# accessibility


@pytest.mark.parametrize("screen", ["desktop", "phone"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_axe_finds_no_serious_violations(open_page, screen, scheme):
    page = open_page(color_scheme=scheme, **(DESKTOP if screen == "desktop" else PORTRAIT))
    if screen == "desktop":
        draw_with_mouse(page, DIGITS[3])
    else:
        draw_with_touch(page, page.context.new_cdp_session(page), DIGITS[3])
    assert_final_at_pen_up(page, "3")
    expect(page.locator("#saliency")).to_have_attribute(
        "aria-label",
        "Saliency map for 3: " + "the image the model saw, with the pixels that move its answer most in yellow",
    )
    page.locator("#maps-box summary").click()
    results = axe_playwright.Axe().run(page)
    serious = [
        (violation["id"], [node["target"] for node in violation["nodes"]])
        for violation in results.response["violations"]
        if violation["impact"] in ("serious", "critical")
    ]
    assert serious == [], serious


def test_screen_reader_structure_and_keyboard_help(page):
    for canvas in ("#pad", "#seen", "#saliency", "#maps"):
        assert page.locator(canvas).get_attribute("role") == "img" and page.locator(canvas).get_attribute("aria-label")
    # One live region, polite; nothing else that announces by itself.
    assert page.locator("[aria-live]").count() == 1 and page.locator("#announce").get_attribute("aria-live") == "polite"
    assert page.locator("output, [role=status], [role=alert], [role=log]").count() == 0
    keys = page.locator(".keys")
    expect(keys).to_be_visible()
    assert "Esc clears" in keys.inner_text() and "Ctrl+Z (⌘+Z on a Mac) undoes" in keys.inner_text()
    # The pen slider says its width in words, not "3"; arrow keys move it and the words follow.
    pen = page.locator("#pen")
    assert pen.get_attribute("aria-valuetext") == "medium"
    pen.focus()
    page.keyboard.press("ArrowRight")
    assert pen.input_value() == "4" and pen.get_attribute("aria-valuetext") == "bold"
    page.keyboard.press("Home")
    assert pen.input_value() == "1" and pen.get_attribute("aria-valuetext") == "finest"


@pytest.mark.parametrize("scheme", ["light", "dark", "forced colours"])
def test_bars_and_outlines_contrast_at_least_3_to_1(open_page, scheme):
    forced = scheme == "forced colours"  # a high-contrast mode, which paints every box in the system's colours
    page = open_page(**({"forced_colors": "active"} if forced else {"color_scheme": scheme}))
    draw_with_mouse(page, DIGITS[1])
    assert_final_at_pen_up(page, "1")
    ratios = page.evaluate("""() => {
        const rgb = (css) => css.match(/[\\d.]+/g).slice(0, 3).map(Number);
        const luminance = (css) => {
            const linear = (v) => (v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
            const [r, g, b] = rgb(css).map((v) => linear(v / 255));
            return 0.2126 * r + 0.7152 * g + 0.0722 * b;
        };
        const contrast = (a, b) => {
            const [high, low] = [luminance(a), luminance(b)].sort((x, y) => y - x);
            return (high + 0.05) / (low + 0.05);
        };
        const style = (selector) => getComputedStyle(document.querySelector(selector));
        const page = getComputedStyle(document.documentElement).backgroundColor;
        return {
            bar: contrast(style('.bar-row:not(.best) .bar').backgroundColor, style('.track').backgroundColor),
            best: contrast(style('.bar-row.best .bar').backgroundColor, style('.track').backgroundColor),
            outline: contrast(style('.track').borderTopColor, page),
            outlineInside: contrast(style('.track').borderTopColor, style('.track').backgroundColor),
            canvas: contrast(style('#drop').borderTopColor, page),
        };
    }""")
    assert all(ratio >= 3 for ratio in ratios.values()), ratios


def test_page_pixels_classify_like_a_png_upload(page, mnist, server_url):
    # The page sends the ink's square area-averaged to 28×28; the server then preprocesses it like an upload.
    # The same 100 test digits as 280×280 drawings, both ways: the answers must agree.
    images, labels = mnist.test.images[:100].numpy(), mnist.test.labels[:100].numpy()
    right = {"png": 0, "page": 0}
    agree = 0
    for image, label in zip(images, labels):
        data = mnist_drawing(image)
        by_png = httpx.post(f"{server_url}/api/predict", files={"image": ("d.png", data, "image/png")}).json()
        by_page = httpx.post(f"{server_url}/api/predict", json={"pixels": page_pixels(page, data)}).json()
        right["png"] += by_png["digit"] == label
        right["page"] += by_page["digit"] == label
        agree += by_png["digit"] == by_page["digit"]
    assert agree >= 98 and right["page"] >= right["png"] - 1, (agree, right)


def test_api_docs_render_offline(page, server_url):
    page.goto(f"{server_url}/docs")
    expect(page.locator(".swagger-ui .opblock-summary-path").first).to_be_visible()
    text = page.locator(".swagger-ui").inner_text()
    assert "/api/predict" in text and "/api/explain" in text and "/api/examples" in text and "/api/feedback" in text


def test_redoc_renders_and_the_policy_blocks_only_its_outside_logo(browser, server_url):
    context = browser.new_context()
    page = context.new_page()
    requested, blocked = [], []  # Chromium reports what the Content-Security-Policy stopped on the console
    page.on("request", lambda request: requested.append(request.url))
    page.on("console", lambda message: "Content Security Policy" in message.text and blocked.append(message.text))
    page.goto(f"{server_url}/redoc")
    expect(page.get_by_text("Classify an image or 28×28 pixels").first).to_be_visible()
    # ReDoc's bundle shows its maker's logo from their CDN: the policy stops it, and nothing else.
    outside = [url for url in requested if not url.startswith((server_url, f"blob:{server_url}"))]
    assert len(blocked) == len(outside) and all(url in message for url, message in zip(outside, blocked))
    context.close()


def test_the_page_cannot_be_framed_by_another_site(browser, server_url):
    context = browser.new_context()
    page = context.new_page()
    page.set_content(f'<iframe id="frame" src="{server_url}/"></iframe>')  # a page of another origin
    page.wait_for_timeout(1000)
    framed = page.frames[1] if len(page.frames) > 1 else None
    assert framed is None or 'id="pad"' not in framed.content()  # Chromium shows its error page instead
    context.close()
