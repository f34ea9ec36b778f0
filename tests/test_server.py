"""The web server: every endpoint, every kind of bad request, and `mnistkit serve` as a real process."""

from __future__ import annotations

import asyncio
import io
import json
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from mnistkit import cli
from mnistkit.inference import Classifier
from mnistkit.preprocess import to_mnist
from mnistkit.server import MAX_IMAGE_BYTES, STATIC_DIR, Batcher, create_app


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load()


@pytest.fixture(scope="module")
def client(classifier) -> Iterator[TestClient]:
    with TestClient(create_app(classifier)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def digits(mnist) -> tuple[np.ndarray, np.ndarray]:
    """Twelve real MNIST test digits (uint8, white on black) and their labels."""
    return mnist.test.images[:12].numpy(), mnist.test.labels[:12].numpy()


def encode(image: Image.Image, format: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def drawing(digit: np.ndarray, format: str = "PNG") -> bytes:
    """A digit as the page sends it: 280×280, dark ink on a white canvas."""
    return encode(Image.fromarray(255 - digit).resize((280, 280), Image.Resampling.BILINEAR), format)


def pixels_body(digit: np.ndarray) -> dict:
    return {"pixels": (digit / 255.0).tolist()}


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width``×``height`` pixels but holds none: what a decompression bomb looks like up front."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def upload(client: TestClient, data: bytes, name: str = "digit.png", kind: str = "image/png") -> httpx.Response:
    return client.post("/api/predict", files={"image": (name, data, kind)})


# --------------------------------------------------------------------------------------------------
# endpoints


def test_page_and_its_files_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text and 'id="clear"' in page.text
    for name, kind in [("app.js", "javascript"), ("style.css", "text/css")]:
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    # Nothing from a CDN: no absolute URL in the page or what it loads.
    for path in STATIC_DIR.iterdir():
        assert not re.search(r"https?://", path.read_text()), f"{path.name} refers to an outside URL"


def test_health(client):
    assert client.get("/api/health").json() == {"status": "ok"}


def test_model_describes_the_bundled_convnet(client, classifier):
    info = client.get("/api/model").json()
    assert info["model"] == "cnn"
    assert info["parameters"] == classifier.describe()["parameters"] > 10_000
    assert 0.98 < info["test_accuracy"] <= 1
    assert info["classes"] == [str(d) for d in range(10)]


def test_serves_a_trained_run_given_as_model(tiny_run, digits):
    served = Classifier.load(tiny_run)
    with TestClient(create_app(served)) as test_client:
        info = test_client.get("/api/model").json()
        assert info["source"] == str(tiny_run) and info["parameters"] == served.describe()["parameters"]
        answer = test_client.post("/api/predict", json=pixels_body(digits[0][0])).json()
        np.testing.assert_allclose(answer["probabilities"], served.predict_array(digits[0][0])[0], atol=1e-5)


def test_predict_drawing_upload_matches_mnistkit_predict(client, classifier, digits):
    images, labels = digits
    for image, label in zip(images, labels):
        data = drawing(image)
        answer = upload(client, data).json()
        expected = classifier.predict(Image.open(io.BytesIO(data)))  # what `mnistkit predict` computes
        assert answer["digit"] == expected.digit == label
        assert answer["label"] == str(label)
        assert answer["not_a_digit"] is expected.not_a_digit is False
        assert len(answer["probabilities"]) == 10 and sum(answer["probabilities"]) == pytest.approx(1, abs=1e-4)
        np.testing.assert_allclose(answer["probabilities"], expected.probabilities, atol=1e-5)
        np.testing.assert_allclose(np.array(answer["input"]) * 255, expected.input, atol=0.02)


def test_predict_says_when_it_sees_no_digit(client):
    dot = Image.new("L", (280, 280), 255)
    ImageDraw.Draw(dot).ellipse((110, 110, 160, 160), fill=0)
    answer = upload(client, encode(dot, "PNG")).json()
    assert answer["not_a_digit"] is True and 0 <= answer["digit"] <= 9  # the best guess is still there


@pytest.mark.parametrize("format,kind", [("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_predict_jpeg_and_webp(client, digits, format, kind):
    images, labels = digits
    assert upload(client, drawing(images[0], format), f"digit.{format.lower()}", kind).json()["digit"] == labels[0]


def test_predict_raw_image_body(client, digits):
    images, labels = digits
    response = client.post("/api/predict", content=drawing(images[1]), headers={"Content-Type": "image/png"})
    assert response.json()["digit"] == labels[1]


def test_predict_json_pixels_gives_the_model_exactly_those_pixels(client, classifier, digits):
    images, labels = digits
    for image, label in zip(images, labels):
        answer = client.post("/api/predict", json=pixels_body(image)).json()
        assert answer["digit"] == label
        np.testing.assert_allclose(np.array(answer["input"]), image / 255.0, atol=1e-4)
        np.testing.assert_allclose(answer["probabilities"], classifier.predict_array(image)[0], atol=1e-5)


def test_dark_on_light_pixels_are_preprocessed_like_an_image(client, digits):
    images, labels = digits
    answer = client.post("/api/predict", json=pixels_body(255 - images[2])).json()
    assert answer["digit"] == labels[2]
    np.testing.assert_array_equal(np.round(np.array(answer["input"]) * 255), to_mnist((255 - images[2]) / 255.0))


def test_concurrent_requests_each_get_their_own_answer(client, classifier, digits):
    images, labels = digits
    bodies = [pixels_body(images[i % len(images)]) for i in range(48)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(lambda body: client.post("/api/predict", json=body).json(), bodies))
    for i, answer in enumerate(answers):
        assert answer["digit"] == labels[i % len(images)]
        np.testing.assert_allclose(np.array(answer["input"]), images[i % len(images)] / 255.0, atol=1e-4)


def test_batcher_classifies_waiting_images_in_one_pass(classifier, digits):
    images, _ = digits
    passes = []

    class Counting:
        def probabilities_and_flags(self, batch):
            passes.append(len(batch))
            return classifier.probabilities_and_flags(batch)

    async def many():
        batcher = Batcher(Counting())
        return await asyncio.gather(*(batcher.probabilities(image) for image in images))

    results = asyncio.run(many())
    assert sum(passes) == len(images) and len(passes) < len(images)  # the first alone, the rest together
    np.testing.assert_allclose(np.stack([p for p, _ in results]), classifier.predict_array(images), atol=1e-5)
    assert [flag for _, flag in results] == list(classifier.probabilities_and_flags(images)[1])


def test_docs_work_offline(client):
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json", "image/png"} <= set(body)
    assert {"/api/health", "/api/model"} <= set(spec["paths"])
    for page in ["/docs", "/redoc"]:
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(url.startswith("/") for url in assets), assets
        for url in assets:
            assert client.get(url).status_code == 200, url


# --------------------------------------------------------------------------------------------------
# bad requests: a 4xx with a JSON error, and the server keeps serving


def noise_png_over_limit() -> bytes:
    side = 1200  # 1200×1200 RGB noise does not compress: a real PNG just over 4 MiB
    data = encode(
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)), compress_level=1
    )
    assert len(data) > MAX_IMAGE_BYTES
    return data


BAD_REQUESTS = {
    "not an image": (400, "not an image", lambda c: upload(c, b"this is plain text, not a picture")),
    "image format not accepted": (
        400,
        "PNG, JPEG or WebP",
        lambda c: upload(c, encode(Image.new("L", (64, 64)), "GIF"), "d.gif", "image/gif"),
    ),
    "truncated image": (422, "truncated", lambda c: upload(c, encode(Image.new("L", (64, 64), 255))[:60])),
    "empty upload": (400, "empty upload", lambda c: upload(c, b"")),
    "empty raw body": (
        400,
        "empty upload",
        lambda c: c.post("/api/predict", content=b"", headers={"Content-Type": "image/png"}),
    ),
    "empty JSON body": (
        400,
        "empty body",
        lambda c: c.post("/api/predict", content=b"", headers={"Content-Type": "application/json"}),
    ),
    "form without a file": (
        400,
        "no file",
        lambda c: c.post("/api/predict", files={"note": (None, "a text field, no file")}),
    ),
    "malformed JSON": (
        400,
        "malformed JSON",
        lambda c: c.post("/api/predict", content=b'{"pixels": [', headers={"Content-Type": "application/json"}),
    ),
    "no pixels key": (422, "body.pixels: Field required", lambda c: c.post("/api/predict", json={"pixel": []})),
    "JSON not an object": (
        422,
        "body: Input should be an object",
        lambda c: c.post("/api/predict", json=[[0.0] * 28] * 28),
    ),
    "pixels not a list": (422, "body.pixels", lambda c: c.post("/api/predict", json={"pixels": 0.5})),
    "27 rows": (422, "at least 28 items", lambda c: c.post("/api/predict", json={"pixels": [[0.0] * 28] * 27})),
    "29 columns": (422, "body.pixels[0]", lambda c: c.post("/api/predict", json={"pixels": [[0.0] * 29] * 28})),
    "flat list of 784": (
        422,
        "body.pixels: List should have at most 28 items",
        lambda c: c.post("/api/predict", json={"pixels": [0.0] * 784}),
    ),
    "value above 1": (
        422,
        "body.pixels[3][4]: Input should be less than or equal to 1",
        lambda c: c.post(
            "/api/predict", json={"pixels": [[0.0] * 28] * 3 + [[0.0] * 4 + [1.5] + [0.0] * 23] + [[0.0] * 28] * 24}
        ),
    ),
    "negative value": (
        422,
        "greater than or equal to 0",
        lambda c: c.post("/api/predict", json={"pixels": [[-0.1] * 28] * 28}),
    ),
    "NaN": (
        422,
        "finite number",
        lambda c: c.post(
            "/api/predict",
            content=json.dumps({"pixels": [[float("nan")] * 28] * 28}),
            headers={"Content-Type": "application/json"},
        ),
    ),
    "strings": (422, "valid number", lambda c: c.post("/api/predict", json={"pixels": [["0.5"] * 28] * 28})),
    "booleans": (422, "valid number", lambda c: c.post("/api/predict", json={"pixels": [[True] * 28] * 28})),
    "blank drawing": (422, "no ink", lambda c: upload(c, encode(Image.new("L", (280, 280), 255)))),
    "image over 4 MB": (413, "too large: images up to 4 MiB", lambda c: upload(c, noise_png_over_limit())),
    "streamed body over 4 MB": (
        413,
        "too large",
        lambda c: c.post("/api/predict", content=iter([b"\0" * 2**20] * 6), headers={"Content-Type": "image/png"}),
    ),
    "over 25 megapixels": (
        413,
        "6000×5000 pixels is too large",
        lambda c: upload(c, encode(Image.new("1", (6000, 5000), 1))),
    ),
    "decompression bomb": (413, "too large", lambda c: upload(c, png_header(40_000, 40_000))),
    "text content type": (
        415,
        "unsupported Content-Type 'text/plain'",
        lambda c: c.post("/api/predict", content=b"7", headers={"Content-Type": "text/plain"}),
    ),
    "no content type": (415, "(none)", lambda c: c.post("/api/predict", content=b"7")),
    "unknown path": (404, "Not Found", lambda c: c.get("/api/nothing")),
    "wrong method": (405, "Method Not Allowed", lambda c: c.get("/api/predict")),
}


@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_gets_a_json_error_and_the_server_keeps_serving(client, digits, case):
    status, message, send = BAD_REQUESTS[case]
    response = send(client)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert message in error and "\n" not in error
    images, labels = digits
    assert client.post("/api/predict", json=pixels_body(images[0])).json()["digit"] == labels[0]


def test_a_bug_answers_500_in_json_and_the_server_keeps_serving(classifier, digits, monkeypatch):
    images, labels = digits
    with TestClient(create_app(classifier), raise_server_exceptions=False) as test_client:
        with monkeypatch.context() as patch:
            patch.setattr(classifier, "probabilities_and_flags", lambda batch: 1 / 0)
            response = test_client.post("/api/predict", json=pixels_body(images[0]))
        assert response.status_code == 500 and "ZeroDivisionError" in response.json()["error"]
        assert test_client.post("/api/predict", json=pixels_body(images[0])).json()["digit"] == labels[0]


# --------------------------------------------------------------------------------------------------
# mnistkit serve


@contextmanager
def running_server() -> Iterator[str]:
    """`mnistkit serve` in a subprocess on a free 127.0.0.1 port (the system picks it); yields its URL."""
    command = [sys.executable, "-m", "mnistkit", "serve", "--port", "0", "--no-access-log"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # "serving ... at http://127.0.0.1:PORT/ ..." once it listens
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found, f"no URL in {line!r}; stderr: {process.stderr.read() if process.poll() is not None else ''}"
        yield found.group(0)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_runs_a_real_server(digits):
    images, labels = digits
    with running_server() as url:
        assert httpx.get(f"{url}/api/health", timeout=30).json() == {"status": "ok"}
        answer = httpx.post(
            f"{url}/api/predict", files={"image": ("d.png", drawing(images[3]), "image/png")}, timeout=30
        ).json()
        assert answer["digit"] == labels[3]
        assert "<canvas" in httpx.get(f"{url}/", timeout=30).text


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--port", "70000"], "--port must be in 0..65535"),
        (["--model", "no/such/run"], "no/such/run"),
    ],
)
def test_serve_bad_options_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", *argv])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mnistkit: error:") and message in err and err.count("\n") == 1


def test_serve_on_a_busy_port_says_so(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(SystemExit) as exit:
            cli.main(["serve", "--port", str(busy.getsockname()[1])])
    assert exit.value.code == 2
    assert "cannot listen on 127.0.0.1" in capsys.readouterr().err


def test_serve_help_lists_its_options(capsys):
    with pytest.raises(SystemExit):
        cli.main(["serve", "--help"])
    out = capsys.readouterr().out
    for option in ["--model", "--host", "--port", "--no-access-log"]:
        assert option in out
