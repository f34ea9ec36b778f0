"""The web server: every endpoint, every kind of bad request, and `mnistkit serve` as a real process."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http.client
import inspect
import io
import json
import os
import re
import select
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from mnistkit import cli, feedback, server
from mnistkit.errors import ConfigError
from mnistkit.feedback import FeedbackError, FeedbackStore
from mnistkit.inference import Classifier
from mnistkit.preprocess import to_mnist
from mnistkit.server import (
    MAX_DRAWING_PNG_BYTES,
    MAX_IMAGE_BYTES,
    MAX_JSON_BYTES,
    STATIC_DIR,
    Batcher,
    create_app,
    listen,
    uvicorn_config,
)
from mnistkit.server_guards import DEFAULT_FEEDBACK_RATE, RateLimit, allowed_host, client_address, rate_limit


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return Classifier.load()


def local_client(app, **options) -> TestClient:
    """A test client whose requests name localhost as their Host (the server refuses names it was not given)."""
    return TestClient(app, base_url="http://localhost", **options)


@pytest.fixture(scope="module")
def client(classifier) -> Iterator[TestClient]:
    with local_client(create_app(classifier)) as test_client:
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


def png_header(width: int, height: int, image_data: bytes | None = zlib.compress(b"")) -> bytes:
    """A PNG that declares ``width``×``height`` pixels but holds none: what a decompression bomb looks like up front.
    ``image_data`` is its IDAT chunk's body, every chunk's checksum right (None: no IDAT chunk)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = chunk(b"IDAT", image_data) if image_data is not None else b""
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + body + chunk(b"IEND", b"")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def upload(client: TestClient, data: bytes, name: str = "digit.png", kind: str = "image/png") -> httpx.Response:
    return client.post("/api/predict", files={"image": (name, data, kind)})


def post_form(client: TestClient, data: bytes, cut: int = 0, after: bytes = b"") -> httpx.Response:
    """``upload`` of ``data`` with the form's last ``cut`` bytes left out and ``after`` added."""
    form = httpx.Request("POST", "http://localhost/", files={"image": ("digit.png", data, "image/png")})
    body = form.read()
    headers = {"Content-Type": form.headers["Content-Type"]}
    return client.post("/api/predict", content=body[: len(body) - cut] + after, headers=headers)


# --------------------------------------------------------------------------------------------------
# endpoints


def test_page_and_its_files_are_served_locally(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="pad"' in page.text and 'id="clear"' in page.text
    for name, kind in [("app.js", "javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg+xml")]:
        response = client.get(f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["content-type"]
    assert 'rel="icon" href="/static/favicon.svg"' in page.text
    # Nothing from a CDN: no absolute URL in the page or what it loads (SVG's namespace name is not fetched).
    for path in STATIC_DIR.iterdir():
        text = path.read_text().replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert not re.search(r"https?://", text), f"{path.name} refers to an outside URL"
    # No inline script or style: the page works under a Content-Security-Policy of 'self' only.
    assert "<style" not in page.text and "style=" not in page.text and "<script>" not in page.text


def test_health(client):
    assert client.get("/api/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    "method,path,status",
    [("GET", "/api/health/", 200), ("HEAD", "/api/health/", 200), ("GET", "/api/model/", 200), ("GET", "/docs/", 200)]
    + [("GET", "/api/predict/", 405)],
)
def test_a_trailing_slash_is_served_as_the_path_without_it(client, method, path, status):
    # Not a redirect: a health checker or curl without -L would get no answer from one.
    with_slash = client.request(method, path, follow_redirects=False)
    without = client.request(method, path[:-1], follow_redirects=False)
    assert with_slash.status_code == without.status_code == status
    assert with_slash.content == without.content
    assert with_slash.headers["content-security-policy"] == without.headers["content-security-policy"]


def test_a_post_with_a_trailing_slash_is_answered_not_redirected(client, digits):
    images, labels = digits
    response = client.post("/api/predict/", json=pixels_body(images[0]), follow_redirects=False)
    assert response.status_code == 200 and response.json()["digit"] == labels[0]


def test_model_describes_the_bundled_convnet(client, classifier):
    info = client.get("/api/model").json()
    assert info["model"] == "cnn"
    assert info["parameters"] == classifier.model_info()["parameters"] > 10_000
    assert 0.98 < info["test_accuracy"] <= 1
    assert info["classes"] == [str(d) for d in range(10)]


def test_a_model_of_other_classes_takes_no_corrections(classifier, tmp_path):
    # Corrections are stored as digits: a Fashion-MNIST model's "Trouser" would become a 1.
    meta = {**classifier.meta, "classes": ["T-shirt", "Trouser", *"abcdefgh"]}
    clothes = Classifier(classifier.inference.net, meta, "clothes")
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    with local_client(create_app(clothes, feedback=store)) as test_client:
        assert test_client.get("/api/model").json()["feedback"] is False
        response = test_client.post("/api/feedback", json={"pixels": STROKE, "label": 1})
    assert response.status_code == 404
    assert response.json()["error"] == (
        "corrections are turned off on this server (the model's classes are not the digits 0-9); nothing was stored"
    )
    assert store.count() == 0
    store.close()


def test_serves_a_trained_run_given_as_model(tiny_run, digits):
    served = Classifier.load(tiny_run)
    with local_client(create_app(served)) as test_client:
        info = test_client.get("/api/model").json()
        assert info["source"] == str(tiny_run) and info["parameters"] == served.model_info()["parameters"]
        answer = test_client.post("/api/predict", json=pixels_body(digits[0][0])).json()
        np.testing.assert_allclose(answer["probabilities"], served.predict_array(digits[0][0])[0], atol=1e-5)


def test_serves_a_run_whose_folder_name_is_not_utf8(tiny_run, tmp_path):
    run = shutil.copytree(tiny_run, tmp_path / os.fsdecode(b"caf\xe9"))  # the byte is kept as a lone surrogate
    with local_client(create_app(Classifier.load(run))) as test_client:
        response = test_client.get("/api/model")
    assert response.status_code == 200 and response.json()["source"] == f"{tmp_path}/caf\\xe9"


def test_serves_an_ensemble(tiny_run, second_tiny_run, digits):
    served = Classifier.load([tiny_run, second_tiny_run])
    with local_client(create_app(served)) as test_client:
        info = test_client.get("/api/model").json()
        assert info["model"] == "ensemble" and info["source"] == f"{tiny_run}, {second_tiny_run}"
        parameters = [Classifier.load(run).model_info()["parameters"] for run in (tiny_run, second_tiny_run)]
        assert info["parameters"] == sum(parameters)
        for image in digits[0][:3]:
            answer = test_client.post("/api/predict", json=pixels_body(image)).json()
            np.testing.assert_allclose(answer["probabilities"], served.predict_array(image)[0], atol=1e-5)
            assert answer["not_a_digit"] == bool(served.probabilities_and_flags(image)[1][0])
        explained = test_client.post("/api/explain", json=pixels_body(digits[0][0])).json()
        # The first member's first convolution (a cnn of width 4), the saliency of the members' mean class scores.
        assert np.array(explained["feature_maps"]).shape == (4, 28, 28)
        assert np.array(explained["saliency"]).shape == (28, 28)


def test_serve_takes_several_models_as_an_ensemble(tiny_run, second_tiny_run, monkeypatch, capsys):
    import uvicorn
    from fastapi import FastAPI

    from mnistkit import server

    served = []
    monkeypatch.setattr(server, "create_app", lambda classifier, *args: served.append(classifier) or FastAPI())
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets: None)
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", "--model", str(tiny_run), "--model", str(second_tiny_run), "--port", "0", "--no-feedback"])
    assert exit.value.code == 0
    assert [member.source for member in served[0].members] == [str(tiny_run), str(second_tiny_run)]
    assert capsys.readouterr().out.startswith(f"serving {tiny_run}, {second_tiny_run} (ensemble) at http://")


def test_serve_runs_on_one_torch_thread_and_gives_the_callers_count_back(tiny_run, monkeypatch, capsys):
    import uvicorn

    threads_while_serving = []
    monkeypatch.setattr(
        uvicorn.Server, "run", lambda self, sockets: threads_while_serving.append(torch.get_num_threads())
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(SystemExit) as exit:
            cli.main(["serve", "--model", str(tiny_run), "--port", "0", "--no-feedback"])
        assert exit.value.code == 0 and threads_while_serving == [1]
        assert torch.get_num_threads() == 2  # a program that serves and then trains keeps its threads
    finally:
        torch.set_num_threads(before)


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
    assert {"/api/health", "/api/model", "/api/explain", "/api/examples"} <= set(spec["paths"])
    explained = spec["components"]["schemas"]["ExplainResponse"]["properties"]
    assert {"digit", "label", "saliency", "feature_maps"} <= set(explained)
    for page in ["/docs", "/redoc"]:
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and all(url.startswith("/") for url in assets), assets
        for url in assets:
            assert client.get(url).status_code == 200, url


def test_explain_gives_saliency_and_first_convolution_maps(client, classifier, digits):
    images, labels = digits
    for image, label in zip(images[:4], labels[:4]):
        answer = client.post("/api/explain", json=pixels_body(image)).json()
        assert answer["digit"] == label and answer["label"] == str(label)
        saliency = np.array(answer["saliency"])
        assert saliency.shape == (28, 28) and saliency.min() >= 0 and saliency.max() == 1
        maps = np.array(answer["feature_maps"])
        first_conv = classifier.inference.net.features[0][0]
        assert maps.shape == (first_conv.out_channels, 28, 28) and maps.min() == 0 and maps.max() == 255
        assert client.post("/api/explain", json=pixels_body(image)).json() == answer  # the same map every time
    # An upload is explained on its MNIST form, as /api/predict saw it.
    upload_answer = client.post("/api/explain", files={"image": ("d.png", drawing(images[0]), "image/png")}).json()
    seen = upload(client, drawing(images[0])).json()["input"]
    assert upload_answer == client.post("/api/explain", json={"pixels": seen}).json()


def test_explained_gradient_is_largest_where_ink_matters(classifier, digits):
    from mnistkit.explain import explain

    images, _ = digits
    found = explain(classifier, images[0])
    near_ink = np.zeros((28, 28), bool)
    rows, cols = np.nonzero(images[0] > 0)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            near_ink[np.clip(rows + dy, 0, 27), np.clip(cols + dx, 0, 27)] = True
    # Well above the empty paper's, though not by far: a model trained to notice extra strokes (styles, several
    # digits, scribbles) also watches where ink could be added.
    assert found.saliency[near_ink].mean() > 1.4 * found.saliency[~near_ink].mean()


def test_explain_a_model_without_convolutions(digits):
    from mnistkit.explain import explain
    from mnistkit.models import create_model

    found = explain(Classifier(create_model("mlp"), {}, "untrained"), digits[0][0])
    assert found.feature_maps.shape == (0, 28, 28) and found.saliency.shape == (28, 28)


def test_explain_refuses_what_predict_refuses(client):
    assert client.post("/api/explain", content=b"", headers={"Content-Type": "application/json"}).status_code == 400
    response = client.post("/api/explain", json={"pixels": [[0.5] * 28] * 27})
    assert response.status_code == 422 and "pixels" in response.json()["error"]


def test_examples_are_the_first_test_digits_of_each_class(client, mnist):
    examples = client.get("/api/examples").json()["examples"]
    labels = mnist.test.labels.numpy()
    assert [example["label"] for example in examples] == [str(d) for d in range(10)] * 2
    for example in examples:
        index = example["index"]
        assert labels[index] == int(example["label"])
        np.testing.assert_array_equal(np.array(example["pixels"]), mnist.test.images[index].numpy())
    assert [example["index"] for example in examples[:10]] == [int(np.flatnonzero(labels == d)[0]) for d in range(10)]


# --------------------------------------------------------------------------------------------------
# corrections: POST /api/feedback


@contextmanager
def corrections_app(classifier, tmp_path, **options) -> Iterator[tuple[TestClient, FeedbackStore]]:
    """A client of an app (``create_app``'s ``options``) that stores corrections in a new database, and that
    database."""
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    app = create_app(classifier, feedback=store, **options)
    with local_client(app, raise_server_exceptions=False) as test_client:
        yield test_client, store
    store.close()


@pytest.fixture
def corrections(classifier, tmp_path) -> Iterator[tuple[TestClient, FeedbackStore]]:
    with corrections_app(classifier, tmp_path) as client_and_store:
        yield client_and_store


def correction(client: TestClient, image: np.ndarray, label: int) -> dict:
    """What the page sends after /api/predict answered about ``image`` drawn on the canvas: that answer's ``input``,
    the true label, the answer and its confidence, and the drawing as PNG."""
    data = drawing(image)
    answer = upload(client, data).json()
    return {
        "pixels": answer["input"],
        "label": label,
        "predicted": answer["digit"],
        "confidence": answer["probabilities"][answer["digit"]],
        "drawing_png": b64(data),
    }


def stored_rows(store: FeedbackStore) -> list[tuple]:
    with sqlite3.connect(store.path) as db:
        return db.execute(
            "SELECT id, created_utc, label, predicted, confidence, model_sha256, pixels, drawing_png FROM corrections"
        ).fetchall()


def test_feedback_stores_what_the_model_saw(corrections, classifier, digits):
    client, store = corrections
    images, labels = digits
    assert client.get("/api/model").json()["feedback"] is True
    body = correction(client, images[5], 3)  # whatever the model said, the person says it was a 3
    before = time.time()
    response = client.post("/api/feedback", json=body)
    assert response.status_code == 200 and response.json() == {"id": 1, "new": True}
    [(_, created, label, predicted, confidence, sha256, pixels, png)] = stored_rows(store)
    seen = np.frombuffer(pixels, np.uint8).reshape(28, 28)
    np.testing.assert_array_equal(seen, np.rint(np.array(body["pixels"]) * 255))  # exactly the model's input
    np.testing.assert_array_equal(seen, classifier_input(classifier, base64.b64decode(body["drawing_png"])))
    assert (label, predicted, confidence) == (3, labels[5], pytest.approx(body["confidence"]))
    assert sha256 == classifier.meta["sha256"] and len(sha256) == 64
    assert png == base64.b64decode(body["drawing_png"]) and png.startswith(b"\x89PNG")
    when = datetime.fromisoformat(created)
    assert when.utcoffset() == timedelta(0) and abs(when.timestamp() - before) < 60


def classifier_input(classifier: Classifier, png: bytes) -> np.ndarray:
    return classifier.predict(Image.open(io.BytesIO(png))).input


def test_the_same_drawing_is_stored_once_with_the_latest_label(corrections, digits):
    client, store = corrections
    body = correction(client, digits[0][0], 4)
    assert client.post("/api/feedback", json=body).json() == {"id": 1, "new": True}
    assert client.post("/api/feedback", json={**body, "label": 9}).json() == {"id": 1, "new": False}
    assert [row[2] for row in stored_rows(store)] == [9]
    other = correction(client, digits[0][1], 2)
    assert client.post("/api/feedback", json=other).json() == {"id": 2, "new": True}
    # Without a drawing, the same pixels are the same correction.
    bare = {"pixels": other["pixels"], "label": 2}
    assert client.post("/api/feedback", json=bare).json() == {"id": 3, "new": True}
    assert client.post("/api/feedback", json=bare).json() == {"id": 3, "new": False}
    assert store.count() == 3


def test_concurrent_corrections_are_each_stored(classifier, tmp_path):
    rng = np.random.default_rng(1)
    bodies = [{"pixels": rng.random((28, 28)).round(4).tolist(), "label": i % 10} for i in range(40)]
    # 40 from one client: more than the default feedback_rate takes at once.
    with corrections_app(classifier, tmp_path, feedback_rate="off") as (client, store):
        with ThreadPoolExecutor(max_workers=8) as pool:
            answers = list(pool.map(lambda body: client.post("/api/feedback", json=body).json(), bodies))
        assert sorted(answer["id"] for answer in answers) == list(range(1, 41))
        assert all(answer["new"] for answer in answers)
        labels = {answer["id"]: body["label"] for answer, body in zip(answers, bodies)}
        assert {row[0]: row[2] for row in stored_rows(store)} == labels


# A vertical stroke: pixels with ink, as every correction's are (a blank one is refused).
STROKE = [[1.0 if 12 <= column < 16 and 4 <= row < 24 else 0.0 for column in range(28)] for row in range(28)]
TINY_PNG = encode(Image.new("L", (8, 8), 255))
BAD_CORRECTIONS = {
    "label 10": (422, "body.label: Input should be less than or equal to 9", {"pixels": STROKE, "label": 10}),
    "label -1": (422, "body.label: Input should be greater than or equal to 0", {"pixels": STROKE, "label": -1}),
    "label as text": (422, "body.label: Input should be a valid integer", {"pixels": STROKE, "label": "4"}),
    "label 4.5": (422, "body.label", {"pixels": STROKE, "label": 4.5}),
    "label true": (422, "body.label", {"pixels": STROKE, "label": True}),
    "no label": (422, "body.label: Field required", {"pixels": STROKE}),
    "no drawing": (422, "body.pixels: Field required", {"label": 4, "drawing_png": b64(TINY_PNG)}),
    "27 rows": (422, "body.pixels: List should have at least 28 items", {"pixels": STROKE[:27], "label": 4}),
    "value above 1": (422, "body.pixels[0][0]", {"pixels": [[2.0] * 28] * 28, "label": 4}),
    "blank": (422, "body.pixels holds no ink (blank, or too faint)", {"pixels": [[0.0] * 28] * 28, "label": 4}),
    "too faint": (422, "body.pixels holds no ink", {"pixels": [[0.05] * 28] * 14 + [[0.1] * 28] * 14, "label": 4}),
    "predicted 12": (422, "body.predicted", {"pixels": STROKE, "label": 4, "predicted": 12}),
    "confidence 1.5": (422, "body.confidence", {"pixels": STROKE, "label": 4, "confidence": 1.5}),
    "drawing not base64": (422, "not base64", {"pixels": STROKE, "label": 4, "drawing_png": "data:image/png;base64,"}),
    "drawing not a PNG": (422, "not a PNG", {"pixels": STROKE, "label": 4, "drawing_png": b64(b"GIF89a" * 10)}),
    "drawing cut off": (
        422,
        "body.drawing_png is a damaged or cut-off PNG file",
        {"pixels": STROKE, "label": 4, "drawing_png": b64(TINY_PNG[: len(TINY_PNG) // 2])},
    ),
    "drawing of a PNG signature only": (
        422,
        "body.drawing_png is a damaged or cut-off PNG file",
        {"pixels": STROKE, "label": 4, "drawing_png": b64(TINY_PNG[:8])},
    ),
    "drawing without image data": (
        422,
        "body.drawing_png is a damaged or cut-off PNG file",
        {"pixels": STROKE, "label": 4, "drawing_png": b64(png_header(28, 28, image_data=None))},
    ),
    "drawing whose image data does not inflate": (
        422,
        "body.drawing_png is a damaged or cut-off PNG file (broken data stream",
        {"pixels": STROKE, "label": 4, "drawing_png": b64(png_header(28, 28, image_data=b"\x00garbage"))},
    ),
    "bytes after the drawing's end": (
        422,
        "body.drawing_png has 5 bytes after the PNG file's end: send the PNG file alone",
        {"pixels": STROKE, "label": 4, "drawing_png": b64(TINY_PNG + b"extra")},
    ),
    "drawing of 100000×100000 pixels": (
        413,
        "body.drawing_png: the image is too large (limit 25 megapixels)",
        {"pixels": STROKE, "label": 4, "drawing_png": b64(png_header(100_000, 100_000))},
    ),
    "drawing of 6000×5000 pixels": (
        413,
        "body.drawing_png: image of 6000×5000 pixels is too large (limit 25 megapixels)",
        {"pixels": STROKE, "label": 4, "drawing_png": b64(png_header(6000, 5000))},
    ),
    "drawing over 32 KiB": (
        413,
        "body.drawing_png is 33,000 bytes (limit 32 KiB)",
        {"pixels": STROKE, "label": 4, "drawing_png": b64(b"\x89PNG\r\n\x1a\n" + bytes(33_000 - 8))},
    ),
    "body over 64 KiB": (
        413,
        "JSON body too large (limit 64 KiB): send the 28×28 pixels, the label and at most a 32 KiB PNG",
        {"pixels": STROKE, "label": 4, "drawing_png": b64(bytes(60_000))},
    ),
    "malformed JSON": (400, "malformed JSON", b'{"pixels": [[0.0'),
    "empty body": (400, "empty body", b""),
    "not JSON": (415, "unsupported Content-Type 'text/plain'", "4"),
}


@pytest.mark.parametrize("case", list(BAD_CORRECTIONS))
def test_a_bad_correction_is_one_clear_4xx_and_nothing_is_stored(corrections, digits, case):
    client, store = corrections
    status, message, body = BAD_CORRECTIONS[case]
    if isinstance(body, dict):
        response = client.post("/api/feedback", json=body)
    else:
        kind = "text/plain" if isinstance(body, str) else "application/json"
        response = client.post("/api/feedback", content=body, headers={"Content-Type": kind})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert message in error and "\n" not in error
    assert store.count() == 0
    assert client.post("/api/feedback", json=correction(client, digits[0][2], 1)).status_code == 200


def padded_png(size: int) -> bytes:
    """A whole PNG of a blank 280×280 drawing, exactly ``size`` bytes long: a text chunk makes up the rest."""

    def with_comment(text: str) -> bytes:
        info = PngInfo()
        info.add_text("Comment", text)
        return encode(Image.new("L", (280, 280), 255), pnginfo=info)

    return with_comment("x" * (size - len(with_comment(""))))


def test_the_largest_real_correction_fits_the_json_limit(corrections):
    client, store = corrections
    # Every pixel as the predict answer gives it at worst (4 decimals), and a drawing at the PNG limit.
    png = padded_png(MAX_DRAWING_PNG_BYTES)
    assert len(png) == MAX_DRAWING_PNG_BYTES
    body = {
        "pixels": [[0.9876 if (row + column) % 2 else 0.1235 for column in range(28)] for row in range(28)],
        "label": 8,
        "predicted": 3,
        "confidence": 0.123456789,
        "drawing_png": b64(png),
    }
    assert len(json.dumps(body, indent=2)) < MAX_JSON_BYTES
    assert client.post("/api/feedback", json=body).status_code == 200 and store.count() == 1


@pytest.mark.parametrize(
    "problem",
    [
        "the database is read-only; make the file and its folder writable, or choose another file",
        "the database is locked by another program (database is locked); close it or try again",
        "not a valid corrections database (database disk image is malformed); move it aside to start a new one",
    ],
)
def test_a_correction_that_cannot_be_stored_is_503_and_predicting_goes_on(corrections, digits, monkeypatch, problem):
    client, store = corrections
    images, labels = digits

    def fail(*args, **kwargs):
        raise FeedbackError(f"{store.path}: {problem}")

    monkeypatch.setattr(store, "add", fail)
    response = client.post("/api/feedback", json=correction(client, images[0], 7))
    assert response.status_code == 503 and response.json() == {
        "error": f"the correction was not stored: {store.path}: {problem}"
    }
    assert client.post("/api/predict", json=pixels_body(images[1])).json()["digit"] == labels[1]


def test_a_really_locked_database_is_503(classifier, digits, tmp_path, monkeypatch):
    monkeypatch.setattr(feedback, "BUSY_TIMEOUT_MS", 100)  # wait a tenth of a second for the lock, not 5 s
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    holder = sqlite3.connect(store.path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another program in the middle of a write
    try:
        with local_client(create_app(classifier, feedback=store)) as test_client:
            response = test_client.post("/api/feedback", json=correction(test_client, digits[0][3], 0))
            assert response.status_code == 503 and "locked by another program" in response.json()["error"]
            holder.execute("ROLLBACK")
            response = test_client.post("/api/feedback", json=correction(test_client, digits[0][3], 0))
            assert response.json() == {"id": 1, "new": True}  # once the other program is done, it works again
    finally:
        holder.close()
        store.close()


def test_a_database_damaged_while_serving_is_503(classifier, digits, tmp_path):
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    with local_client(create_app(classifier, feedback=store)) as test_client:
        assert test_client.post("/api/feedback", json=correction(test_client, digits[0][4], 4)).status_code == 200
        store.close()  # no connection keeps the old pages cached
        store.path.write_bytes(b"\0" * 4096 * 4)
        response = test_client.post("/api/feedback", json=correction(test_client, digits[0][5], 1))
        assert response.status_code == 503 and "not stored" in response.json()["error"]
        assert test_client.post("/api/predict", json=pixels_body(digits[0][5])).json()["digit"] == digits[1][5]


@pytest.mark.parametrize("no_room", ["cap", "disk"])
def test_a_full_database_is_507_saying_how_to_make_room(classifier, tmp_path, monkeypatch, no_room):
    # It was 503, which says the service is down for a while; a full file stays full until someone makes room.
    store = FeedbackStore(tmp_path / "feedback.sqlite", max_bytes=0 if no_room == "cap" else 2**30)
    if no_room == "disk":
        store.close()  # its connections from now on are those of a full disk
        connect = FeedbackStore._connect

        def full_disk(self: FeedbackStore) -> sqlite3.Connection:
            db = connect(self)
            db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
            return db

        monkeypatch.setattr(FeedbackStore, "_connect", full_disk)
    body = {"pixels": STROKE, "label": 4, "drawing_png": b64(padded_png(20_000))}  # more than a page's room
    with local_client(create_app(classifier, feedback=store)) as test_client:
        response = test_client.post("/api/feedback", json=body)
    store.close()
    assert response.status_code == 507, response.text
    remedy = {
        "cap": r"full, its corrections take \d+ KiB of the 0 bytes it may hold; export them \(mnistkit feedback "
        r"export\), then delete some, or choose another file",
        "disk": r"the disk is full \(database or disk is full\); free some space on it, then try again",
    }[no_room]
    assert re.fullmatch(
        f"the correction was not stored: {re.escape(str(store.path))}: {remedy}", response.json()["error"]
    )


class Clock:
    """The time a RateLimit reads, moved by the test: nothing waits, and nothing depends on how fast it runs."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_client_over_its_correction_rate_gets_429_saying_when_to_try_again(classifier, digits, tmp_path):
    images, labels = digits
    clock = Clock()
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    app = create_app(classifier, feedback=store, feedback_rate=RateLimit(2, "min", clock=clock))
    bodies = [{"pixels": (images[i] / 255).tolist(), "label": int(labels[i])} for i in range(5)]
    with local_client(app) as client, local_client(app, client=("203.0.113.7", 5000)) as other:
        assert [client.post("/api/feedback", json=body).status_code for body in bodies[:2]] == [200, 200]
        refused = client.post("/api/feedback", json=bodies[2])
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "30"
        assert refused.json() == {
            "error": "too many corrections from testclient (at most 2 a minute from one address); try again in 30 s"
        }
        assert refused.headers["x-content-type-options"] == "nosniff"  # through the guards, as every answer
        assert client.post("/api/predict", json=pixels_body(images[2])).json()["digit"] == labels[2]  # not limited
        assert other.post("/api/feedback", json=bodies[3]).status_code == 200  # another address: its own count
        clock.now += 29.5
        refused = client.post("/api/feedback", json=bodies[2])
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"  # whole seconds, rounded up
        clock.now += 0.5
        assert client.post("/api/feedback", json=bodies[2]).status_code == 200  # the refused ones were not counted
    assert store.count() == 4
    store.close()


def test_corrections_are_counted_by_the_peer_not_by_a_header_it_sends(classifier, tmp_path, monkeypatch):
    # uvicorn takes the client's address from X-Forwarded-For only from a proxy it trusts (by default, one on this
    # machine): a client elsewhere cannot start afresh by naming other addresses in it.
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    store = FeedbackStore(tmp_path / "feedback.sqlite")
    app = create_app(classifier, feedback=store, feedback_rate=RateLimit(1, "h", clock=Clock()))
    config = uvicorn_config(app, access_log=False)
    config.load()  # the app as uvicorn serves it: behind its ProxyHeadersMiddleware

    def statuses(peer: str) -> list[int]:
        with local_client(config.loaded_app, client=(peer, 5000)) as client:
            return [
                client.post(
                    "/api/feedback", json={"pixels": STROKE, "label": 1}, headers={"X-Forwarded-For": f"198.51.100.{i}"}
                ).status_code
                for i in range(3)
            ]

    assert statuses("203.0.113.9") == [200, 429, 429]
    assert statuses("127.0.0.1") == [200, 200, 200]  # a proxy here: each client it names is counted apart
    store.close()


def test_a_rate_limit_takes_a_burst_then_one_request_a_refill():
    clock = Clock()
    limit = RateLimit(30, "min", clock=clock)
    assert [limit.take("a") for _ in range(30)] == [0.0] * 30
    assert limit.take("a") == 2.0
    clock.now += 1.5
    assert limit.take("a") == 0.5  # the refused one was not counted
    clock.now += 0.5
    assert limit.take("a") == 0.0 and limit.take("a") == 2.0
    assert limit.take("b") == 0.0  # a client of its own
    clock.now += 60
    assert [limit.take("a") for _ in range(30)] == [0.0] * 30  # idle for a minute: the whole burst again


def test_the_table_of_clients_stays_bounded_whatever_the_addresses():
    clock = Clock()
    limit = RateLimit(30, "min", clock=clock, max_clients=100)
    for i in range(10_000):
        assert limit.take(f"10.0.{i // 256}.{i % 256}") == 0.0
        assert len(limit.full_at) <= 100
    clock.now += 60  # every bucket full again: the same as none, so none is kept
    limit.take("192.0.2.1")
    assert list(limit.full_at) == ["192.0.2.1"]


def test_full_buckets_are_dropped_first_then_the_least_recently_seen():
    clock = Clock()
    limit = RateLimit(2, "min", clock=clock, max_clients=3)
    limit.take("a")  # full again 30 s on
    clock.now += 20
    limit.take("b")
    limit.take("c")
    clock.now += 15
    limit.take("d")
    assert list(limit.full_at) == ["b", "c", "d"]  # a's bucket had refilled
    limit.take("b")
    limit.take("e")
    assert list(limit.full_at) == ["d", "b", "e"]  # none full: c, seen longest ago, is forgotten


@pytest.mark.parametrize(
    "peer,counted_as",
    [
        (("203.0.113.7", 5000), "203.0.113.7"),
        (("2001:db8:1:2:aaaa:bbbb:cccc:dddd", 5000), "2001:db8:1:2::/64"),  # one subscriber's network
        (("2001:db8:1:2::1", 5000), "2001:db8:1:2::/64"),
        (("::ffff:203.0.113.7", 5000), "203.0.113.7"),  # IPv4 on a dual-stack socket
        (("testclient", 50000), "testclient"),
        (("x" * 1000, 0), "x" * 64),  # X-Forwarded-For from a trusted proxy is taken as sent
        (None, "an unknown address"),
    ],
)
def test_clients_are_counted_by_address_and_ipv6_by_network(peer, counted_as):
    assert client_address(peer) == counted_as


@pytest.mark.parametrize(
    "text,count,interval",
    [("30/min", 30, 2.0), ("5/s", 5, 0.2), ("600/h", 600, 6.0), (" 10 / MIN ", 10, 6.0), ("1/h", 1, 3600.0)],
)
def test_feedback_rates_read_as_a_burst_and_a_refill(text, count, interval):
    limit = rate_limit(text)
    assert (limit.count, limit.interval) == (count, interval)


@pytest.mark.parametrize("off", [None, "0", "off", "OFF"])
def test_a_feedback_rate_of_0_or_off_is_no_limit(off):
    assert rate_limit(off) is None


@pytest.mark.parametrize("bad", ["30", "30/day", "30/m", "-1/s", "0/min", "1.5/s", "thirty/min", "", 30])
def test_a_bad_feedback_rate_is_one_line_saying_what_to_give(bad):
    with pytest.raises(ConfigError) as error:
        rate_limit(bad)
    assert str(error.value) == (
        f"feedback_rate {bad!r} is not a rate: give how many corrections one address may send a second, minute or "
        "hour, such as 30/min (the default), 5/s or 600/h; 0 or off for no limit"
    )


def test_the_default_feedback_rate_is_a_burst_of_30_then_one_every_2_s(monkeypatch):
    limit = rate_limit(DEFAULT_FEEDBACK_RATE)
    assert (limit.count, limit.interval) == (30, 2.0)
    for function in (create_app, server.serve):
        assert inspect.signature(function).parameters["feedback_rate"].default == DEFAULT_FEEDBACK_RATE
    given = []
    monkeypatch.setattr(server, "serve", lambda *args, **options: given.append(options["feedback_rate"]))
    for argv in ([], ["--feedback-rate", "off"]):
        with pytest.raises(SystemExit) as exit:
            cli.main(["serve", *argv])
        assert exit.value.code == 0
    assert given == [DEFAULT_FEEDBACK_RATE, "off"]


def test_corrections_are_off_without_a_store(client, digits):
    assert client.get("/api/model").json()["feedback"] is False
    response = client.post("/api/feedback", json={"pixels": STROKE, "label": 1})
    assert response.status_code == 404 and response.json()["error"] == (
        "corrections are turned off on this server; nothing was stored"
    )


def test_feedback_is_in_the_api_docs(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/api/feedback"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert {"pixels", "label", "predicted", "confidence", "drawing_png"} <= set(schema["properties"])
    assert schema["required"] == ["pixels", "label"]
    assert {"200", "400", "404", "413", "415", "422", "429", "503", "507"} <= set(post["responses"])
    assert {"id", "new"} <= set(spec["components"]["schemas"]["FeedbackResponse"]["properties"])
    assert "feedback" in spec["components"]["schemas"]["ModelInfo"]["properties"]


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
    "JSON with a byte-order mark": (
        400,
        'send UTF-8 JSON {"pixels": 28 rows of 28 numbers in [0, 1]}',
        lambda c: c.post(
            "/api/predict",
            content=b"\xef\xbb\xbf" + json.dumps({"pixels": STROKE}).encode(),
            headers={"Content-Type": "application/json"},
        ),
    ),
    "form without a file": (
        400,
        "no file",
        lambda c: c.post("/api/predict", files={"note": (None, "a text field, no file")}),
    ),
    "two files in the form": (
        400,
        "Maximum number of files is 1: upload one image as a file field named 'image'",
        lambda c: c.post("/api/predict", files=[("image", ("a.png", b"a", "image/png")), ("b", ("b.png", b"b"))]),
    ),
    "multipart without a boundary": (
        400,
        "Missing boundary in multipart: upload one image",
        lambda c: c.post("/api/predict", content=b"x", headers={"Content-Type": "multipart/form-data"}),
    ),
    "multipart cut off in the file": (
        400,
        "the form ends before its closing boundary (cut off, or empty): upload one image",
        lambda c: post_form(c, encode(Image.new("L", (64, 64), 255)), cut=60),
    ),
    "multipart cut off in its closing boundary": (
        400,
        "the form ends before its closing boundary",
        lambda c: post_form(c, encode(Image.new("L", (64, 64), 255)), cut=4),
    ),
    "empty multipart body": (
        400,
        "the form ends before its closing boundary (cut off, or empty)",
        lambda c: c.post("/api/predict", content=b"", headers={"Content-Type": "multipart/form-data; boundary=b"}),
    ),
    "multipart body not in its boundary": (
        400,
        "Invalid multipart data (Expected boundary character",
        lambda c: c.post(
            "/api/predict", content=b"an image", headers={"Content-Type": "multipart/form-data; boundary=b"}
        ),
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
    "JSON over 64 KiB": (
        413,
        "JSON body too large (limit 64 KiB)",
        lambda c: c.post("/api/predict", json={"pixels": [[0.5] * 28] * 28, "padding": " " * MAX_JSON_BYTES}),
    ),
    "streamed JSON over 64 KiB": (
        413,
        "JSON body too large",
        lambda c: c.post(
            "/api/predict", content=iter([b"[" * 2**14] * 5), headers={"Content-Type": "application/json"}
        ),
    ),
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
    "unknown path": (404, "nothing at /api/nothing: the page is at /", lambda c: c.get("/api/nothing")),
    "unknown path with a trailing slash": (
        404,
        "nothing at /api/nothing/: the page is at /",
        lambda c: c.get("/api/nothing/", follow_redirects=False),
    ),
    "two trailing slashes": (404, "nothing at /api/health//", lambda c: c.get("/api/health//", follow_redirects=False)),
    "static folder without a slash": (404, "nothing at /static:", lambda c: c.get("/static", follow_redirects=False)),
    "wrong method": (405, "GET is not allowed on /api/predict: use POST", lambda c: c.get("/api/predict")),
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


def test_a_whole_form_is_read_whatever_follows_its_closing_boundary(client, digits):
    images, labels = digits
    response = post_form(client, drawing(images[1]), after=b"an epilogue, which RFC 2046 allows\r\n")
    assert response.status_code == 200 and response.json()["digit"] == labels[1]


def test_a_second_content_type_does_not_lift_the_json_limit(client):
    # The endpoint reads the first Content-Type: the size limit must read the same one.
    body = json.dumps({"pixels": [[0.0] * 28] * 28, "padding": "x" * MAX_JSON_BYTES}).encode()
    headers = [("content-type", "application/json"), ("content-type", "text/plain")]
    response = client.post("/api/predict", content=body, headers=headers)
    assert response.status_code == 413 and "JSON body too large" in response.json()["error"]


def test_an_image_whose_client_left_is_not_decoded(classifier, digits, monkeypatch):
    # Decoding a large image takes seconds: one queued for a client that hung up would hold up those still there.
    monkeypatch.setattr(server, "decode_to_mnist", lambda data: pytest.fail("decoded for a client that left"))
    app = create_app(classifier)
    messages = [
        {"type": "http.request", "body": drawing(digits[0][0]), "more_body": False},
        {"type": "http.disconnect"},
    ]
    sent = []

    async def receive():
        return messages.pop(0) if messages else await asyncio.Event().wait()

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/predict",
        "raw_path": b"/api/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"content-type", b"image/png")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400


def test_a_bug_answers_500_in_json_and_the_server_keeps_serving(classifier, digits, monkeypatch):
    images, labels = digits
    with local_client(create_app(classifier), raise_server_exceptions=False) as test_client:
        with monkeypatch.context() as patch:
            patch.setattr(classifier, "probabilities_and_flags", lambda batch: 1 / 0)
            response = test_client.post("/api/predict", json=pixels_body(images[0]))
        assert response.status_code == 500 and "ZeroDivisionError" in response.json()["error"]
        assert test_client.post("/api/predict", json=pixels_body(images[0])).json()["digit"] == labels[0]


def overflowing(folder: Path) -> Path:
    """A run folder whose weights are finite, and so accepted, but whose sums overflow float32."""
    from mnistkit.checkpoint import save_checkpoint
    from mnistkit.models import create_model

    net = create_model("cnn", width=4)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.fill_(1e38)
    folder.mkdir()
    save_checkpoint(folder, net, {"model": "cnn", "model_options": {"width": 4}})
    return folder


def test_a_model_that_overflows_answers_500_saying_so(tmp_path, digits):
    served = Classifier.load(overflowing(tmp_path / "run"))
    with local_client(create_app(served), raise_server_exceptions=False) as test_client:
        response = test_client.post("/api/predict", json=pixels_body(digits[0][0]))
    assert response.status_code == 500
    assert "the model answers NaN or infinite probabilities; its weights are damaged" in response.json()["error"]


def test_serve_refuses_a_model_that_overflows_before_listening(tmp_path, capsys):
    run = overflowing(tmp_path / "run")
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", "--model", str(run), "--port", "0", "--no-feedback"])
    assert exit.value.code == 2
    out, err = capsys.readouterr()
    assert "serving" not in out and err.count("\n") == 1 and "NaN or infinite probabilities" in err


# --------------------------------------------------------------------------------------------------
# mnistkit serve


@contextmanager
def server_process(feedback_db: Path | None = None, *options: str) -> Iterator[tuple[subprocess.Popen, str, str]]:
    """`mnistkit serve` in a subprocess on a free 127.0.0.1 port (the system picks it), storing corrections in
    ``feedback_db`` (None: none at all), with more ``options``; yields the process, its URL and its start-up line."""
    corrections = ["--no-feedback"] if feedback_db is None else ["--feedback-db", str(feedback_db)]
    command = [sys.executable, "-m", "mnistkit", "serve", "--port", "0", "--no-access-log", *corrections, *options]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # "serving ... at http://127.0.0.1:PORT/ ..." once it listens
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        assert found, f"no URL in {line!r}; stderr: {process.stderr.read() if process.poll() is not None else ''}"
        yield process, found.group(0), line
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


@contextmanager
def running_server(feedback_db: Path | None = None) -> Iterator[str]:
    """`mnistkit serve` as ``server_process`` starts it; yields its URL."""
    with server_process(feedback_db) as (_, url, _):
        yield url


def test_serve_runs_a_real_server(digits, tmp_path):
    images, labels = digits
    db = tmp_path / "corrections" / "feedback.sqlite"
    with server_process(db) as (_, url, line):
        assert f"corrections stored in {db}" in line
        assert httpx.get(f"{url}/api/health", timeout=30).json() == {"status": "ok"}
        answer = httpx.post(
            f"{url}/api/predict", files={"image": ("d.png", drawing(images[3]), "image/png")}, timeout=30
        ).json()
        assert answer["digit"] == labels[3]
        assert "<canvas" in httpx.get(f"{url}/", timeout=30).text
        assert httpx.get(f"{url}/api/model", timeout=30).json()["feedback"] is True
        body = {"pixels": answer["input"], "label": int(labels[3]), "drawing_png": b64(drawing(images[3]))}
        assert httpx.post(f"{url}/api/feedback", json=body, timeout=30).json() == {"id": 1, "new": True}
    stored, stored_labels, _ = FeedbackStore(db, create=False).images()
    np.testing.assert_array_equal(stored[0], np.rint(np.array(answer["input"]) * 255))
    assert stored_labels.tolist() == [labels[3]]


def test_a_real_server_limits_the_corrections_of_each_address(tmp_path):
    with server_process(tmp_path / "feedback.sqlite", "--feedback-rate", "2/h") as (_, url, line):
        assert "at most 2 an hour from one address" in line
        answers = [httpx.post(f"{url}/api/feedback", json={"pixels": STROKE, "label": i}, timeout=30) for i in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert 0 < int(answers[2].headers["Retry-After"]) <= 1800
    assert (
        answers[2]
        .json()["error"]
        .startswith("too many corrections from 127.0.0.1 (at most 2 an hour from one address); try again in ")
    )


def test_serve_without_feedback_says_so(digits):
    with server_process() as (_, url, line):
        assert "corrections off" in line
        assert httpx.get(f"{url}/api/model", timeout=30).json()["feedback"] is False
        body = {"pixels": (digits[0][0] / 255).tolist(), "label": 7}
        response = httpx.post(f"{url}/api/feedback", json=body, timeout=30)
        assert response.status_code == 404 and "corrections are turned off" in response.json()["error"]


def test_malformed_requests_leave_a_real_server_serving_and_its_log_in_order():
    with server_process() as (process, url, _):
        with socket.create_connection(address_of(url), timeout=30) as connection:
            connection.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            reply = read_until_closed(connection)
        assert reply.startswith(b"HTTP/1.1 400 ") and reply.endswith(b"Invalid HTTP request received.")  # uvicorn's
        headers = {"Content-Type": "multipart/form-data; boundary=b"}
        response = httpx.post(f"{url}/api/predict", content=b"not a form", headers=headers, timeout=30)
        assert response.status_code == 400 and "Invalid multipart data" in response.json()["error"]
        assert httpx.get(f"{url}/api/health", timeout=30).json() == {"status": "ok"}
        process.terminate()
        process.wait(timeout=30)
        log = process.stderr.read().splitlines()
    # One warning for each, as uvicorn writes them: python-multipart's reason used to be printed as a bare line.
    assert [line for line in log if line.startswith("WARNING:  ")] == log and len(log) == 2


def test_a_killed_server_loses_no_acknowledged_correction(tmp_path):
    # Corrections go in from 8 threads at once; the server is killed (SIGKILL: no clean-up at all) while they still
    # arrive. Every one it answered 200 must be in the file, with its label, and the file must be sound.
    db = tmp_path / "feedback.sqlite"
    rng = np.random.default_rng(0)
    bodies = [{"pixels": rng.random((28, 28)).round(4).tolist(), "label": i % 10} for i in range(400)]
    acknowledged: dict[int, int] = {}
    with server_process(db, "--feedback-rate", "off") as (process, url, _):

        def send(body: dict) -> None:
            try:
                response = httpx.post(f"{url}/api/feedback", json=body, timeout=30)
            except httpx.HTTPError:
                return  # the server is gone
            if response.status_code == 200:
                acknowledged[response.json()["id"]] = body["label"]

        with ThreadPoolExecutor(max_workers=8) as pool:
            for body in bodies:
                pool.submit(send, body)
            while len(acknowledged) < 40 and process.poll() is None:
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
    assert 40 <= len(acknowledged) < len(bodies)
    with sqlite3.connect(db) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = dict(check.execute("SELECT id, label FROM corrections").fetchall())
    assert {i: stored.get(i) for i in acknowledged} == acknowledged


def address_of(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


@contextmanager
def request_in_flight(url: str, length: int) -> Iterator[socket.socket]:
    """A connection to the server at ``url`` whose POST /api/predict of ``length`` bytes of JSON is in flight: the
    endpoint has asked for the body, none of which is sent yet. (Expect: 100-continue makes the server say when.)"""
    with socket.create_connection(address_of(url), timeout=30) as connection:
        head = (
            "POST /api/predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\nExpect: 100-continue\r\n\r\n"
        )
        connection.sendall(head.encode())
        reply = b""
        while not reply.endswith(b"\r\n\r\n"):
            reply += connection.recv(1)
        assert reply.startswith(b"HTTP/1.1 100 "), reply
        yield connection


def wait_until_not_listening(process: subprocess.Popen, url: str, within: float = 30) -> None:
    """Return once the server at ``url`` refuses connections: it has begun to shut down (it closes its listening
    socket first)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(address_of(url), timeout=5).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.02)
    pytest.fail(f"the server still listens {within} s after the signal (exit status {process.poll()})")


def test_the_first_stop_signal_answers_the_request_in_flight(digits):
    images, labels = digits
    body = json.dumps(pixels_body(images[0])).encode()
    with server_process() as (process, url, _), request_in_flight(url, len(body)) as connection:
        process.send_signal(signal.SIGTERM)
        wait_until_not_listening(process, url)
        assert process.poll() is None  # waiting for this request, whose body has until its deadline (60 s)
        connection.sendall(body)
        head, answer = read_until_closed(connection).split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 200 ") and json.loads(answer)["digit"] == labels[0]
        assert process.wait(timeout=30) == -signal.SIGTERM  # uvicorn ends by raising the signal it was stopped by


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_second_stop_signal_exits_at_once_in_one_line(stop):
    # uvicorn alone waits on after a second SIGTERM (here for the body, up to 60 s), and after a second Ctrl-C logs
    # a traceback for each request in flight.
    with server_process() as (process, url, _), request_in_flight(url, 1000):
        process.send_signal(stop)
        wait_until_not_listening(process, url)
        process.send_signal(stop)
        assert process.wait(timeout=10) == 128 + stop
        errors = process.stderr.read()
    assert errors.splitlines()[-1] == (
        f"mnistkit: {stop.name} while shutting down: stopped at once, requests in flight dropped"
    )
    assert "Traceback" not in errors


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--port", "70000"], "--port must be in 0..65535"),
        (["--model", "no/such/run"], "no/such/run"),
        (["--allow-host", "http://digits.example"], "allowed host 'http://digits.example' is not a host name"),
        (["--feedback-rate", "30/day"], "--feedback-rate '30/day' is not a rate"),
    ],
)
def test_serve_bad_options_are_one_line_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", *argv])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mnistkit: error:") and message in err and err.count("\n") == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA GPU")
def test_serve_on_a_missing_gpu_says_so(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", "--device", "cuda"])
    assert exit.value.code == 2
    assert "no CUDA GPU is available here" in capsys.readouterr().err


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
    for option in [
        "--model",
        "--host",
        "--port",
        "--allow-host",
        "--no-access-log",
        "--device",
        "--feedback-db",
        "--feedback-rate",
    ]:
        assert option in out
    assert "--no-feedback" in out


def corrupt_file(path: Path) -> Path:
    path.write_bytes(b"not a database at all" * 100)
    return path


def newer_schema_file(path: Path) -> Path:
    FeedbackStore(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {feedback.SCHEMA_VERSION + 1}")
    db.close()  # now, not when collected: closing the last connection writes the WAL into the file
    return path


def someone_elses_file(path: Path) -> Path:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
    db.close()
    return path


@pytest.mark.parametrize(
    "make,message",
    [
        (corrupt_file, "not a valid corrections database"),
        (newer_schema_file, "written by a newer mnistkit"),
        (someone_elses_file, "not an mnistkit corrections database (it holds the table 'accounts')"),
    ],
)
def test_serve_with_a_bad_corrections_database_is_one_line(tmp_path, capsys, make, message):
    path = make(tmp_path / "feedback.sqlite")
    before = path.read_bytes()
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", "--port", "0", "--feedback-db", str(path)])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mnistkit: error:") and message in err and err.count("\n") == 1
    assert str(path) in err and "--no-feedback" in err
    assert path.read_bytes() == before  # refused as it was: not migrated, not switched to WAL


def test_serve_on_a_read_only_corrections_database_says_so_before_listening(tmp_path, capsys, monkeypatch):
    path = tmp_path / "feedback.sqlite"
    FeedbackStore(path).close()
    monkeypatch.setattr(feedback, "_folder_writable", lambda path: False)  # as on a read-only mount, even for root
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", "--port", "0", "--feedback-db", str(path)])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1, err
    assert f"{path}: the database is read-only, so no correction could be stored" in err and "--no-feedback" in err


def test_serve_takes_either_a_feedback_db_or_none(capsys):
    with pytest.raises(SystemExit) as exit:
        cli.main(["serve", "--no-feedback", "--feedback-db", "x.sqlite"])
    assert exit.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# hardening: body sizes, security headers, allowed hosts, HEAD, request deadlines, memory


def test_the_largest_real_json_body_fits_the_json_limit(client, digits):
    images, labels = digits
    precise = (images[4] / 255.0 + 1e-9).clip(0, 1).tolist()  # full float precision: 17 significant digits
    body = json.dumps({"pixels": precise}, indent=4).encode()
    assert MAX_JSON_BYTES / 4 < len(body) < MAX_JSON_BYTES
    response = client.post("/api/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200 and response.json()["digit"] == labels[4]


SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


@pytest.mark.parametrize(
    "method,path,status",
    [
        ("GET", "/", 200),
        ("GET", "/static/app.js", 200),
        ("GET", "/api/health", 200),
        ("GET", "/api/model", 200),
        ("GET", "/openapi.json", 200),
        ("GET", "/api/nothing", 404),
        ("GET", "/api/predict", 405),
        ("POST", "/api/predict", 415),
        ("HEAD", "/api/health", 200),
    ],
)
def test_every_response_carries_the_security_headers(client, method, path, status):
    response = client.request(method, path)
    assert response.status_code == status
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    policy = response.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy


def test_a_crash_answer_carries_the_security_headers_too(classifier, digits, monkeypatch):
    with local_client(create_app(classifier), raise_server_exceptions=False) as test_client:
        monkeypatch.setattr(classifier, "probabilities_and_flags", lambda batch: 1 / 0)
        response = test_client.post("/api/predict", json=pixels_body(digits[0][0]))
    assert response.status_code == 500 and response.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_the_docs_pages_may_run_only_their_own_inline_script(client, path):
    response = client.get(path)
    policy = response.headers["content-security-policy"]
    scripts = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    hashes = re.findall(r"'sha256-([^']+)'", policy)
    assert sorted(hashes) == sorted(base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() for s in scripts)
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.parametrize(
    "host",
    ["localhost", "localhost:8000", "LOCALHOST.", "app.localhost:80", "127.0.0.1:8000", "[::1]:8000", "192.168.1.7"],
)
def test_localhost_names_and_ip_addresses_are_allowed(client, host):
    assert client.get("/api/health", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example", "testserver"])
def test_other_host_names_are_refused(client, host):
    response = client.get("/api/model", headers={"Host": host})
    assert response.status_code == 400 and response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert f"host {host!r} is not allowed" in error and "--allow-host" in error and "\n" not in error
    assert response.headers["x-content-type-options"] == "nosniff"


def test_allowed_host_names_are_answered(classifier):
    with local_client(create_app(classifier, ["digits.example", "Lab-PC"])) as test_client:
        for host in ["digits.example", "DIGITS.example:8080", "lab-pc"]:
            assert test_client.get("/api/health", headers={"Host": host}).status_code == 200, host
        assert test_client.get("/api/health", headers={"Host": "other.example"}).status_code == 400


@pytest.mark.parametrize("name", ["http://digits.example", "digits.example:8000", "digits.example/api", "a b", ""])
def test_an_allowed_host_must_be_a_plain_name(classifier, name):
    with pytest.raises(ConfigError, match="is not a host name"):
        allowed_host(name)
    with pytest.raises(ConfigError, match="is not a host name"):
        create_app(classifier, [name])


def test_one_allowed_host_as_a_str_is_one_name_not_its_letters(classifier):
    with local_client(create_app(classifier, allowed_hosts="Lab-PC")) as test_client:
        assert test_client.get("/api/health", headers={"Host": "lab-pc"}).status_code == 200
        for host in ["l", "b", "-"]:
            assert test_client.get("/api/health", headers={"Host": host}).status_code == 400, host


@pytest.mark.parametrize(
    "hosts,message",
    [
        (None, "allowed_hosts must be a host name or a list of host names, got None"),
        (5, "allowed_hosts must be a host name or a list of host names, got 5"),
        (b"lab-pc", "allowed_hosts must be a host name or a list of host names, got b'lab-pc'"),
        ([5], "allowed host 5 is not a host name: give each as a str"),
        (["lab-pc", None], "allowed host None is not a host name: give each as a str"),
    ],
)
def test_allowed_hosts_of_another_type_are_refused_in_one_line(classifier, hosts, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        create_app(classifier, hosts)
    with pytest.raises(ConfigError, match=re.escape(message)):  # before the model loads
        server.serve("no-such-model", allowed_hosts=hosts)


def test_create_app_refuses_what_is_not_a_classifier_or_a_feedback_store(classifier):
    with pytest.raises(ConfigError, match=r"create_app serves a Classifier \(.*\), got None"):
        create_app(None)
    with pytest.raises(ConfigError, match="feedback must be a FeedbackStore or None, got 'feedback.sqlite'"):
        create_app(classifier, feedback="feedback.sqlite")


@pytest.mark.parametrize("path,kind", [("/api/health", "json"), ("/", "text/html"), ("/static/app.js", "javascript")])
def test_head_answers_like_get_without_a_body(client, path, kind):
    head, get = client.head(path), client.get(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and kind in head.headers["content-type"]
    assert head.headers["content-length"] == get.headers["content-length"]


def test_head_where_get_is_not_allowed_is_not_allowed_either(client):
    assert client.head("/api/predict").status_code == 405


@contextmanager
def real_server(classifier: Classifier, **timeouts: float) -> Iterator[tuple[str, int]]:
    """The app on uvicorn with the protocol `mnistkit serve` uses, in a thread; yields its (host, port)."""
    import uvicorn

    server = uvicorn.Server(uvicorn_config(create_app(classifier), access_log=False, **timeouts))
    listener = listen("127.0.0.1", 0)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    try:
        yield listener.getsockname()
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def trickle(connection: socket.socket, data: bytes, every: float = 0.1) -> None:
    """Send ``data`` a byte at a time, one every ``every`` seconds, until the server answers or closes."""
    for byte in data:
        if select.select([connection], [], [], every)[0]:
            return
        connection.sendall(bytes([byte]))


def read_until_closed(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection; socket.timeout if it keeps it open."""
    received = b""
    while chunk := connection.recv(65536):
        received += chunk
    return received


@pytest.fixture(scope="module")
def deadlines(classifier) -> Iterator[tuple[str, int]]:
    with real_server(classifier, header_timeout=0.5, body_timeout=1.0) as address:
        yield address


def test_a_silent_connection_is_closed_with_408(deadlines):
    with socket.create_connection(deadlines, timeout=10) as connection:
        reply = read_until_closed(connection)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"nosniff" in reply
    assert json.loads(reply.split(b"\r\n\r\n", 1)[1]) == {
        "error": "request headers not received within 0.5 s: send the whole request without pausing"
    }


def test_trickled_headers_are_cut_off(deadlines):
    # Each byte resets uvicorn's own idle timeout: only a deadline for the whole head ends this.
    with socket.create_connection(deadlines, timeout=10) as connection:
        connection.sendall(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\n")
        trickle(connection, b"X-Padding: " + b"a" * 200)
        reply = read_until_closed(connection)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"headers not received within 0.5 s" in reply


def test_a_trickled_body_is_cut_off(deadlines):
    head = (
        b"POST /api/predict HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 900\r\n\r\n"
    )
    with socket.create_connection(deadlines, timeout=10) as connection:
        connection.sendall(head)
        trickle(connection, b'{"pixels": [' + b" " * 400)
        reply = read_until_closed(connection)
    assert reply.startswith(b"HTTP/1.1 408 ") and b"body not received within 1 s" in reply


def test_the_deadline_is_per_request_on_a_kept_alive_connection(deadlines):
    connection = http.client.HTTPConnection(*deadlines, timeout=10)
    sockets = []
    try:
        for _ in range(4):  # 4 × 0.3 s: longer than one header deadline in all, each request well within it
            time.sleep(0.3)
            connection.request("GET", "/api/health")
            response = connection.getresponse()
            assert response.status == 200 and json.loads(response.read()) == {"status": "ok"}
            sockets.append(connection.sock)
        assert all(sock is sockets[0] for sock in sockets)  # one connection throughout
    finally:
        connection.close()


def test_decoding_a_huge_upload_returns_its_memory(tmp_path):
    """25-megapixel PNGs decoded as the server does, two at a time: resident memory ends near where it began."""
    script = """
import io, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from PIL import Image, ImageDraw
from mnistkit.server import decode_to_mnist

image = Image.new("RGB", (5000, 5000), "white")
ImageDraw.Draw(image).line([(1500, 1200), (3600, 1200), (2200, 4000)], fill="black", width=380)
buffer = io.BytesIO()
image.save(buffer, format="PNG")
data = buffer.getvalue()
del image

def rss_mb():
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith("VmRSS"))
    return int(line.split()[1]) / 1024

before = rss_mb()
with ThreadPoolExecutor(2) as pool:
    digits = list(pool.map(lambda _: decode_to_mnist(data).sum() > 0, range(6)))
print(all(digits), round(rss_mb() - before))
"""
    if not Path("/proc/self/status").exists():
        pytest.skip("needs Linux /proc")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    decoded, growth_mb = result.stdout.split()
    assert decoded == "True"
    assert int(growth_mb) < 100, f"resident memory grew {growth_mb} MB after the decodes (each needs 75+ MB)"


def test_served_connections_send_without_nagle_delay():
    """asyncio turns Nagle's algorithm off only on sockets from a listener that says it is TCP: otherwise each
    response's body would wait for the client's delayed ACK of its headers (40 ms on a kept-alive connection)."""

    async def accepted_nodelay() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                accepted.set_result(
                    transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                )

        listener = listen("127.0.0.1", 0)
        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        with socket.create_connection(listener.getsockname()):
            result = await asyncio.wait_for(accepted, 10)
        server.close()
        return result

    assert asyncio.run(accepted_nodelay()) == 1
