"""The drawing page as a person uses it: how soon after pen-up the final answer is on screen, and whether it is right.

Starts `mnistkit serve` on a free 127.0.0.1 port, opens the page in Debian's Chromium (headless, Playwright) and
draws digits of every class with real mouse strokes (tests/drawn_digits.py: 10 digits × 3 sizes/slants per round).
For each drawing it reads the digit on screen 150 ms after the mouse button is released, then again once every
answer has arrived, and takes from the page's own clock the time from the last pointerup to the result being marked
final. Prints p50/p95/max of that latency and how many drawings showed the right, final answer at 150 ms.

With --parity N it also sends N MNIST test digits (as 280×280 drawings) both ways, as the page's 28×28 pixels and
as a PNG upload, and prints the accuracy of each: the page's own downsampling must not cost accuracy.

    .venv/bin/python benchmarks/page_latency.py                  # 30 drawings, parity on 500 digits
    .venv/bin/python benchmarks/page_latency.py --rounds 3 --parity 0
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from drawn_digits import DIGITS, VARIANTS, draw_with_mouse, mnist_drawing, page_pixels, variant  # noqa: E402
from test_server import running_server  # noqa: E402

from mnistkit.catalog import BUNDLED_DIR, IDX_FILES  # noqa: E402
from mnistkit.idx import read_idx  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
AT_MS = 150
# Installed before the page's own script: pen-up and final-answer times on the page's clock.
PROBE = """
window.penUps = [];
window.finals = [];
document.addEventListener('pointerup', () => window.penUps.push(performance.now()), true);
document.addEventListener('DOMContentLoaded', () => {
    const result = document.querySelector('.result');
    new MutationObserver(() => {
        if (result.dataset.state === 'final') {
            window.finals.push({ t: performance.now(), digit: document.getElementById('digit').textContent });
        }
    }).observe(result, { attributes: true, attributeFilter: ['data-state'] });
});
"""


def measure_drawings(page, rounds: int) -> list[dict]:
    results = []
    for _ in range(rounds):
        for digit, strokes in DIGITS.items():
            for options in VARIANTS:
                page.keyboard.press("Escape")
                page.wait_for_timeout(250)
                page.evaluate("window.penUps = []; window.finals = []")
                draw_with_mouse(page, variant(strokes, **options))
                page.wait_for_timeout(AT_MS)
                at = (page.locator("#digit").inner_text(), page.locator(".result").get_attribute("data-state"))
                page.wait_for_timeout(600)
                settled = (page.locator("#digit").inner_text(), page.locator(".result").get_attribute("data-state"))
                pen_up = page.evaluate("window.penUps[window.penUps.length - 1]")
                finals = [f for f in page.evaluate("window.finals") if f["t"] >= pen_up]
                results.append(
                    {
                        "digit": str(digit),
                        "at": at,
                        "settled": settled,
                        "latency_ms": finals[-1]["t"] - pen_up if finals else float("inf"),
                    }
                )
    return results


def parity(page, url: str, count: int) -> tuple[int, int, int]:
    """(right as page pixels, right as PNG uploads, answers that agree) over the first ``count`` test digits."""
    images, _ = read_idx(BUNDLED_DIR / IDX_FILES[("test", "images")])
    labels, _ = read_idx(BUNDLED_DIR / IDX_FILES[("test", "labels")])
    by_page = by_png = agree = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for image, label in zip(images[:count], labels[:count]):
            picture = mnist_drawing(image)
            png = client.post("/api/predict", files={"image": ("d.png", picture, "image/png")}).json()
            drawn = client.post("/api/predict", json={"pixels": page_pixels(page, picture)}).json()
            by_page += drawn["digit"] == label
            by_png += png["digit"] == label
            agree += drawn["digit"] == png["digit"]
    return by_page, by_png, agree


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q, method="higher"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=1, help="rounds of 30 drawings (10 digits × 3 variants)")
    parser.add_argument("--parity", type=int, default=500, help="MNIST test digits sent both ways (0: skip)")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    print(
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f}; Chromium headless, 1000×800"
    )
    with running_server() as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1000, "height": 800})
        page.add_init_script(PROBE)
        page.goto(url)
        page.wait_for_selector(".example")
        draw_with_mouse(page, DIGITS[1])  # warm-up: the first answer loads the server's lazy parts
        page.wait_for_timeout(500)

        results = measure_drawings(page, args.rounds)
        latencies = [r["latency_ms"] for r in results]
        final_right = sum(r["at"] == (r["digit"], "final") and r["settled"] == r["at"] for r in results)
        settled_right = sum(r["settled"] == (r["digit"], "final") for r in results)
        print(
            f"{len(results)} drawings: pen-up -> final answer p50 {percentile(latencies, 50):.0f} ms, "
            f"p95 {percentile(latencies, 95):.0f} ms, max {max(latencies):.0f} ms "
            f"(mean {statistics.mean(latencies):.0f} ms)"
        )
        print(
            f"right and final {AT_MS} ms after pen-up: {final_right}/{len(results)}; "
            f"right once settled: {settled_right}/{len(results)}"
        )
        for r in results:
            if r["at"] != (r["digit"], "final"):
                print(f"  drew {r['digit']}: at {AT_MS} ms {r['at']}, settled {r['settled']}")
        if args.parity:
            by_page, by_png, agree = parity(page, url, args.parity)
            n = args.parity
            print(
                f"first {n} MNIST test digits as 280×280 drawings: right as page pixels {by_page}/{n}, "
                f"as PNG uploads {by_png}/{n}; same answer {agree}/{n}"
            )
        browser.close()


if __name__ == "__main__":
    main()
