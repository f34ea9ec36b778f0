"""The drawing page in a real browser: Debian's Chromium driven by Playwright against `mnistkit serve`.

Skipped, with the reason, where Chromium (`apt-get install chromium`) or Playwright is missing. Screenshots are
saved under test-artifacts/.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_server import running_server

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

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)
if not Path(CHROMIUM).exists():
    pytest.skip("Debian's Chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with running_server() as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server_url):
    """The page, loaded, with a record of every URL it asked for."""
    context = browser.new_context(viewport={"width": 1000, "height": 800})
    page = context.new_page()
    page.requested = []
    page.on("request", lambda request: page.requested.append(request.url))
    page.blocked = []  # what the Content-Security-Policy stopped: Chromium reports it on the console
    page.on(
        "console",
        lambda message: "Content Security Policy" in message.text and page.blocked.append(message.text),
    )
    page.goto(server_url)
    sync_api.expect(page.locator("#model-info")).to_contain_text("parameters")
    yield page
    context.close()


def stroke(page, points: list[tuple[float, float]]) -> None:
    """Draw through ``points`` (fractions of the canvas) with the mouse button held down."""
    box = page.locator("#pad").bounding_box()
    at = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in points]
    page.mouse.move(*at[0])
    page.mouse.down()
    for x, y in at[1:]:
        page.mouse.move(x, y, steps=4)
    page.mouse.up()


def one() -> list[tuple[float, float]]:
    return [(0.5, 0.15 + 0.7 * i / 10) for i in range(11)]


def zero() -> list[tuple[float, float]]:
    return [
        (0.5 + 0.25 * math.sin(2 * math.pi * i / 24), 0.5 - 0.33 * math.cos(2 * math.pi * i / 24)) for i in range(25)
    ]


def shown_probabilities(page) -> list[float]:
    return [float(text.rstrip("%")) for text in page.locator("#bars .pct").all_inner_texts()]


def canvas_is_blank(page) -> bool:
    return page.evaluate("""() => {
        const pad = document.getElementById('pad');
        const data = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
        return data.every((value) => value === 255);
    }""")


def test_draw_one_then_clear_then_zero(page, server_url):
    digit = page.locator("#digit")
    assert digit.inner_text() == "–" and canvas_is_blank(page)

    stroke(page, one())
    sync_api.expect(digit).to_have_text("1")
    bars = page.locator("#bars .bar-row")
    assert bars.count() == 10
    assert bars.locator(".label").all_inner_texts() == [str(d) for d in range(10)]
    probabilities = shown_probabilities(page)
    assert max(probabilities) == probabilities[1] > 50 and sum(probabilities) == pytest.approx(100, abs=1)
    sync_api.expect(bars.nth(1)).to_have_class("bar-row best")
    assert "sure" in page.locator("#confidence").inner_text()
    seen_ink = page.evaluate("""() => {
        const data = document.getElementById('seen').getContext('2d').getImageData(0, 0, 28, 28).data;
        return data.filter((value, i) => i % 4 === 0 && value > 128).length;
    }""")
    assert 20 < seen_ink < 200  # the 28×28 picture shows a stroke, not a blank or a filled square
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "serve-drew-1.png", full_page=True)

    page.locator("#clear").click()
    sync_api.expect(digit).to_have_text("–")
    assert canvas_is_blank(page) and page.locator("#confidence").inner_text() == ""
    assert page.locator("#bars .pct").all_inner_texts() == ["–"] * 10

    stroke(page, zero())
    sync_api.expect(digit).to_have_text("0")
    assert shown_probabilities(page)[0] > 50
    page.screenshot(path=ARTIFACTS / "serve-drew-0.png", full_page=True)

    # Everything came from this server: no CDN, no outside request; and nothing the page does breaks its CSP.
    assert page.requested and all(url.startswith(server_url) for url in page.requested), page.requested
    assert page.blocked == []


def test_prediction_updates_while_still_drawing(page):
    box = page.locator("#pad").bounding_box()
    x = box["x"] + box["width"] / 2
    page.mouse.move(x, box["y"] + 0.15 * box["height"])
    page.mouse.down()
    shown = []
    for i in range(1, 31):  # a slow stroke, over a second with no pause as long as the 150 ms debounce
        page.mouse.move(x, box["y"] + (0.15 + 0.024 * i) * box["height"])
        page.wait_for_timeout(30)
        shown.append(page.locator("#digit").inner_text())
    assert any(text != "–" for text in shown), shown  # answered mid-stroke (at most every 400 ms)
    page.mouse.up()
    sync_api.expect(page.locator("#digit")).to_have_text("1")


def test_phone_sized_screen(browser, server_url):
    context = browser.new_context(
        viewport={"width": 390, "height": 844}, device_scale_factor=2, is_mobile=True, has_touch=True
    )
    page = context.new_page()
    page.goto(server_url)
    sync_api.expect(page.locator("#model-info")).to_contain_text("parameters")
    box = page.locator("#pad").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390 and box["width"] > 300  # nearly the full width
    assert abs(box["width"] - box["height"]) < 1  # square
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # nothing sticks out sideways
    stroke(page, one())
    sync_api.expect(page.locator("#digit")).to_have_text("1")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "serve-phone.png", full_page=True)
    context.close()


def test_api_docs_render_offline(page, server_url):
    page.goto(f"{server_url}/docs")
    sync_api.expect(page.locator(".swagger-ui .opblock-summary-path").first).to_be_visible()
    assert "/api/predict" in page.locator(".swagger-ui").inner_text()
    assert all(url.startswith(server_url) for url in page.requested), page.requested
    assert page.blocked == []  # Swagger UI works under its Content-Security-Policy
    page.goto(f"{server_url}/redoc")
    sync_api.expect(page.get_by_text("Classify an image or 28×28 pixels").first).to_be_visible()
    # ReDoc's bundle shows its maker's logo from their CDN: the policy stops it, and nothing else.
    outside = [url for url in page.requested if not url.startswith((server_url, f"blob:{server_url}"))]
    assert len(page.blocked) == len(outside) and all(url in message for url, message in zip(outside, page.blocked))


def test_the_page_cannot_be_framed_by_another_site(browser, server_url):
    context = browser.new_context()
    page = context.new_page()
    page.set_content(f'<iframe id="frame" src="{server_url}/"></iframe>')  # a page of another origin
    page.wait_for_timeout(1000)
    framed = page.frames[1] if len(page.frames) > 1 else None
    assert framed is None or 'id="pad"' not in framed.content()  # Chromium shows its error page instead
    context.close()
