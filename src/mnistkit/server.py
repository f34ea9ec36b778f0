"""The web page and HTTP API: draw a digit and see what the model thinks.

``create_app(classifier)`` builds the FastAPI app; ``serve`` runs it on uvicorn. Images are prepared by the same
``preprocess.to_mnist`` as ``mnistkit predict``, then classified together with those of concurrent requests
(``Batcher``). ``POST /api/feedback`` stores a correction ("that was a 4") in a
``feedback.FeedbackStore``, from a worker thread, at most as often as ``feedback_rate`` lets one client address
(``server_guards.RateLimit``). Every bad request gets a 4xx
with a JSON body ``{"error": "<one line: what is wrong and what to do>"}``; nothing a client sends can stop the
server. The page (``static/``) and the API docs' scripts are served from the package: nothing from a CDN.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import ctypes
import ctypes.util
import functools
import io
import math
import os
import signal
import socket
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import FrameType
from typing import Annotated, Any, NoReturn, TypeVar

import anyio
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.routing import Match, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__
from .catalog import DIGITS
from .errors import ConfigError, MnistkitError, short
from .examples import test_examples
from .explain import explain
from .feedback import FeedbackError, FeedbackFull, FeedbackStore
from .inference import Classifier
from .preprocess import MAX_PIXELS, WORK_SIDE, ImageError, has_ink, to_mnist
from .server_guards import (
    BODY_TIMEOUT,
    DEFAULT_FEEDBACK_RATE,
    HEADER_TIMEOUT,
    RateLimit,
    RequestDeadlines,
    allowed_host_names,
    client_address,
    guard,
    rate_limit,
)

STATIC_DIR = Path(__file__).parent / "static"
MAX_IMAGE_BYTES = 4 * 1024 * 1024
MAX_BODY_BYTES = MAX_IMAGE_BYTES + 64 * 1024  # room for the multipart envelope around a 4 MiB image
# 28×28 numbers take 6 KiB as the page sends them and 21 KiB at full float precision, pretty-printed: a JSON body
# is parsed on the event loop, so it is refused beyond what any real one needs.
MAX_JSON_BYTES = 64 * 1024
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP")  # what browsers and phones produce; Pillow's other decoders stay off
IMAGE_TYPES = ("image/png", "image/jpeg", "image/webp")
FORMAT_NAMES = "PNG, JPEG or WebP"
# Images of concurrent requests classified in one forward pass. On one CPU thread the bundled convnet takes 1.2 ms
# for one image alone and 0.44 ms an image in passes of 32; larger passes cost no less and only make requests wait.
MAX_BATCH = 32
# Images decoded and preprocessed at once, in threads beside the event loop: one per core of the 2-core target
# machine. More only adds thread switching under load, since much of that work holds the GIL.
PREPROCESS_THREADS = 2
# Explanations (a forward and a backward pass) one at a time, so that they never hold both cores.
EXPLAIN_THREADS = 1
# SQLite lets one writer at a time; more threads would only wait on its lock.
FEEDBACK_THREADS = 1
# The drawing sent with a correction, as PNG: 32 KiB, 43 KiB in base64, so that it and the 28×28 pixels (6 KiB as
# the page sends them) fit the JSON limit. A 280×280 drawing of a digit is a few KiB; the page scales a larger one
# down, or leaves it out.
MAX_DRAWING_PNG_BYTES = 32 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXAMPLES_PER_CLASS = 2

JsonBody = TypeVar("JsonBody", bound=BaseModel)
Pixel = Annotated[float, Field(ge=0, le=1, strict=True, allow_inf_nan=False)]
Row = Annotated[list[Pixel], Field(min_length=28, max_length=28)]


class PixelsRequest(BaseModel):
    """A 28×28 image as numbers in [0, 1]; white ink on black passes to the model as is, dark-on-light is inverted
    and centred."""

    pixels: Annotated[list[Row], Field(min_length=28, max_length=28, description="28 rows of 28 numbers in [0, 1]")]


Digit = Annotated[int, Field(ge=0, le=9, strict=True)]


class FeedbackRequest(BaseModel):
    """A correction: the image the model saw, what it really is, and what the model said."""

    pixels: Annotated[
        list[Row],
        Field(
            min_length=28,
            max_length=28,
            description="the 28×28 image the model saw, white ink on black, in [0, 1]: the `input` of "
            "/api/predict's answer; stored as 0..255",
        ),
    ]
    label: Digit = Field(description="the true digit, 0-9")
    predicted: Digit | None = Field(default=None, description="the model's answer, 0-9")
    confidence: Annotated[float, Field(ge=0, le=1, strict=True, allow_inf_nan=False)] | None = Field(
        default=None, description="the model's probability for its answer"
    )
    drawing_png: str | None = Field(
        default=None,
        description=f"the original drawing as a PNG file in base64 (no data: prefix), at most "
        f"{MAX_DRAWING_PNG_BYTES // 1024} KiB decoded; the same drawing sent again is stored once",
    )


class FeedbackResponse(BaseModel):
    id: int = Field(description="the correction's id in the database (`mnistkit feedback list` shows it)")
    new: bool = Field(
        description="false when this drawing was stored before: its label is now the one just sent, nothing added"
    )


class PredictResponse(BaseModel):
    digit: int = Field(description="index of the most likely class (the digit itself for MNIST)")
    label: str = Field(description="that class's name")
    not_a_digit: bool = Field(description="no class fits: the model's not-a-digit score is below its threshold")
    probabilities: list[float] = Field(description="every class's probability, in class order")
    input: list[list[float]] = Field(description="the 28×28 image the model saw, white ink on black, in [0, 1]")


class ExplainResponse(BaseModel):
    digit: int = Field(description="the class explained: the most likely one")
    label: str = Field(description="that class's name")
    saliency: list[list[float]] = Field(
        description="28×28 in [0, 1]: how much each input pixel moves that class's score before the softmax, its "
        "calibrated logit (|gradient|, scaled so the largest is 1)"
    )
    feature_maps: list[list[list[int]]] = Field(
        description="the first convolution's output maps (channels × height × width), each scaled to 0..255 on its "
        "own; empty for a model without convolutions"
    )


class Example(BaseModel):
    index: int = Field(description="position in the MNIST test set")
    label: str = Field(description="its true class")
    pixels: list[list[int]] = Field(description="28×28 in 0..255, white ink on black")


class ExamplesResponse(BaseModel):
    examples: list[Example]


class ModelInfo(BaseModel):
    model: str | None
    parameters: int
    test_accuracy: float | None
    classes: list[str]
    source: str
    tta: bool
    feedback: bool = Field(description="whether POST /api/feedback stores corrections on this server")


class ErrorBody(BaseModel):
    error: str


class RequestError(MnistkitError):
    """A request the API cannot serve; ``status`` is its HTTP status code, ``headers`` any the answer carries."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


PIXELS_HINT = "send 28 rows of 28 numbers in [0, 1]"
FEEDBACK_HINT = f"send the 28×28 pixels, the label and at most a {MAX_DRAWING_PNG_BYTES // 1024} KiB PNG of the drawing"
JSON_HINTS = {"/api/feedback": FEEDBACK_HINT}


class BodyTooLarge(RequestError):
    def __init__(self, json: bool = False, path: str = "") -> None:
        if json:
            hint = JSON_HINTS.get(path, PIXELS_HINT)
            message = f"JSON body too large (limit {MAX_JSON_BYTES // 1024} KiB): {hint}"
        else:
            message = f"request body too large: images up to {MAX_IMAGE_BYTES // 2**20} MiB; scale the image down"
        super().__init__(413, message)


class TooManyCorrections(RequestError):
    def __init__(self, client: str, limit: RateLimit, wait: float) -> None:
        seconds = math.ceil(wait)  # Retry-After takes whole seconds; sooner would be refused again
        super().__init__(
            429,
            f"too many corrections from {client} (at most {limit} from one address); try again in {seconds} s",
            headers={"Retry-After": str(seconds)},
        )


class TooManyPixels(RequestError):
    def __init__(self, what: str) -> None:
        super().__init__(413, f"{what} is too large (limit {MAX_PIXELS // 10**6} megapixels); scale it down")


class LimitBody:
    """ASGI middleware: refuse request bodies over ``MAX_JSON_BYTES`` (JSON) or ``MAX_BODY_BYTES`` (anything else),
    by Content-Length up front or while they stream in, so an endless or huge upload costs at most that much memory.
    (FastAPI's own ``max_body_size`` answers a too-large Content-Length in plain text, whatever the app's error
    handlers say; the API promises JSON.)"""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        # Read as the endpoints read them (the first of repeated headers), so that a second Content-Type cannot
        # pass a large JSON body under the larger limit.
        headers = Headers(scope=scope)
        json = media_type(headers.get("content-type", "")) == "application/json"
        limit = MAX_JSON_BYTES if json else MAX_BODY_BYTES
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return await error_response(BodyTooLarge(json, scope["path"]))(scope, receive, send)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(
                    json, scope["path"]
                )  # raised inside the endpoint's read; the app's handler answers 413
            return message

        await self.app(scope, limited_receive, send)


class TrailingSlash:
    """ASGI middleware: a path with a trailing slash (``/api/health/``) is served as the route without it, where there
    is one; a path that names no route either way is 404, as any other.

    Starlette's own answer is a 307 redirect: a client that does not follow redirects (curl without -L, many health
    checkers) gets no answer, one that does sends a POST body twice, and the Location names the Host the request
    came with, which behind a reverse proxy may be the proxy's upstream address, not the one the client used.
    """

    def __init__(self, app: ASGIApp, router: Router):
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/" and scope["path"].endswith("/"):
            scope = self._route_for(scope)
        await self.app(scope, receive, send)

    def _route_for(self, scope: Scope) -> Scope:
        """``scope`` for the path without its trailing slash if that names a route (whatever the method: a wrong one
        is 405 there), else ``scope`` itself."""
        trimmed = {**scope, "path": scope["path"][:-1]}
        if isinstance(scope.get("raw_path"), bytes) and scope["raw_path"].endswith(b"/"):
            trimmed["raw_path"] = scope["raw_path"][:-1]
        if any(route.matches(trimmed)[0] is not Match.NONE for route in self.router.routes):
            return trimmed
        return scope


class Batcher:
    """Classifies the images of concurrent requests together.

    While one forward pass runs (in a thread, so the event loop keeps serving), newly arrived images wait; the next
    pass takes all of them, up to ``max_batch``. Under load, many one-image passes become a few larger ones that
    cost little more each; a lone request goes straight through, with no added wait.
    """

    def __init__(self, classifier: Classifier, max_batch: int = MAX_BATCH):
        self.classifier = classifier
        self.max_batch = max_batch
        self.waiting: list[tuple[np.ndarray, asyncio.Future[tuple[np.ndarray, bool]]]] = []
        self.worker: asyncio.Task[None] | None = None

    async def probabilities(self, image: np.ndarray) -> tuple[np.ndarray, bool]:
        """Class probabilities for one uint8 (28, 28) image in MNIST form, and whether it is not a digit."""
        future: asyncio.Future[tuple[np.ndarray, bool]] = asyncio.get_running_loop().create_future()
        self.waiting.append((image, future))
        if self.worker is None:
            self.worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting[: self.max_batch], self.waiting[self.max_batch :]
                futures = [future for _, future in batch]
                try:
                    probabilities = await anyio.to_thread.run_sync(
                        self.classifier.probabilities_and_flags, np.stack([image for image, _ in batch])
                    )
                except Exception as exc:  # each request answers 500; the server goes on serving
                    for future in futures:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for future, result in zip(futures, zip(*probabilities)):
                    if not future.done():  # done: cancelled, its client went away
                        future.set_result(result)
        finally:
            self.worker = None


NOT_DIGITS = "the model's classes are not the digits 0-9"


def takes_corrections(classifier: Classifier) -> bool:
    """Whether corrections of ``classifier``'s answers can be stored: they are digits (the page's buttons, `feedback
    export`, `train --data`), so another model's classes would be stored as digits and mixed into them."""
    return classifier.classes == DIGITS


def error_response(exc: RequestError) -> JSONResponse:
    return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": why}
    for code, why in {
        400: "empty body, not an image, malformed JSON, malformed or cut-off multipart",
        413: f"image over {MAX_IMAGE_BYTES // 2**20} MiB or over {MAX_PIXELS // 10**6} megapixels",
        415: "a Content-Type other than JSON, multipart/form-data or an image",
        422: "wrong JSON shape, values outside [0, 1], a corrupt image, or one with no digit in it",
    }.items()
}

FEEDBACK_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": why}
    for code, why in {
        400: "empty body or malformed JSON",
        404: "corrections are turned off on this server",
        413: f"a body over {MAX_JSON_BYTES // 1024} KiB, or a drawing over {MAX_DRAWING_PNG_BYTES // 1024} KiB or "
        f"{MAX_PIXELS // 10**6} megapixels",
        415: "a Content-Type other than JSON",
        422: "wrong JSON shape, pixels outside [0, 1] or with no ink, a label outside 0-9, a drawing that is not a "
        "whole base64 PNG",
        429: "too many corrections from this client's address (the server's feedback_rate); the Retry-After header "
        "says how many seconds to wait",
        503: "the database cannot be written (read-only, locked by another program, damaged); nothing was stored",
        507: "the database is full (its size cap, or the disk); nothing is stored until corrections are exported and "
        "deleted, or the disk has room",
    }.items()
}

FEEDBACK_BODY = {"required": True, "content": {"application/json": {"schema": FeedbackRequest.model_json_schema()}}}

PREDICT_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    "image": {"type": "string", "format": "binary", "description": f"a {FORMAT_NAMES} image"}
                },
                "required": ["image"],
            }
        },
        "application/json": {"schema": PixelsRequest.model_json_schema()},
        **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in IMAGE_TYPES},
    },
}


def create_app(
    classifier: Classifier,
    allowed_hosts: str | Iterable[str] = (),
    feedback: FeedbackStore | None = None,
    feedback_rate: str | RateLimit | None = DEFAULT_FEEDBACK_RATE,
) -> FastAPI:
    """The FastAPI app serving ``classifier``: the drawing page at ``/``, the API under ``/api``, docs at ``/docs``.

    It answers requests for localhost, IP addresses and the host names in ``allowed_hosts`` (``server_guards``): a list
    of names, or one name as a str.
    Corrections sent to ``/api/feedback`` go to ``feedback``; None turns them off, as does a model whose classes are
    not the digits (``takes_corrections``). One client address may send ``feedback_rate`` of them (``"30/min"``: 30
    at once, then one every 2 s; ``"N/s"``, ``"N/min"``, ``"N/h"``, or a ``RateLimit``; None or ``"off"``: no limit);
    beyond it, 429.
    """
    if not isinstance(classifier, Classifier):
        raise ConfigError(
            f"create_app serves a Classifier (mnistkit.inference.Classifier.load()), got {short(classifier)}"
        )
    if feedback is not None and not isinstance(feedback, FeedbackStore):
        raise ConfigError(f"feedback must be a FeedbackStore or None, got {short(feedback)}")
    feedback_limit = rate_limit(feedback_rate)
    app = FastAPIOffline(
        title="mnistkit",
        version=__version__,
        description="Draw a digit and see what the model thinks: [the drawing page](/). "
        "The same docs as [ReDoc](/redoc).",
        redirect_slashes=False,  # TrailingSlash serves those paths instead
    )
    app.add_middleware(LimitBody)
    # server_guards.guard goes outside the middleware Starlette builds, so that it sees every response, those of
    # Starlette's outermost error handler (500) included; add_middleware would put it inside that handler.
    # TrailingSlash goes outside the guard, so that /docs/ gets the docs' security policy as /docs does.
    build_middleware_stack = app.build_middleware_stack
    hosts = allowed_host_names(allowed_hosts)  # checked now, not at the first request
    app.build_middleware_stack = lambda: TrailingSlash(  # type: ignore[method-assign]
        guard(build_middleware_stack(), hosts), app.router
    )
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    batcher = Batcher(classifier)
    preprocess_threads = anyio.CapacityLimiter(PREPROCESS_THREADS)
    explain_threads = anyio.CapacityLimiter(EXPLAIN_THREADS)
    feedback_threads = anyio.CapacityLimiter(FEEDBACK_THREADS)
    if not takes_corrections(classifier):
        feedback = None
    info = {**classifier.model_info(), "feedback": feedback is not None}

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette's own errors (404, 405, malformed multipart) in the same shape as ours, saying what to do.
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"nothing at {request.url.path}: the page is at /, the API under /api (see /docs)"
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            message = f"{request.method} is not allowed on {request.url.path}: use {allowed} (see /docs)"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=400)  # no one is there to read it: uvicorn drops it

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # Not the client's fault: say so in JSON (uvicorn logs the traceback) and keep serving. One of ours (a model
        # whose arithmetic overflows on this image) says what is wrong; anything else is a bug.
        if isinstance(exc, MnistkitError):
            return JSONResponse({"error": f"internal server error: {exc}"}, status_code=500)
        return JSONResponse(
            {"error": f"internal server error ({type(exc).__name__}); see the server's log"}, status_code=500
        )

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/api/health", summary="Is the server up")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/model", summary="The model being served", response_model=ModelInfo)
    def model() -> dict[str, Any]:
        return info

    @app.post(
        "/api/predict",
        summary="Classify an image or 28×28 pixels",
        description="Send an image upload (multipart field `image`, or the raw bytes with an image Content-Type) "
        'in any size, or JSON `{"pixels": 28×28 numbers in [0, 1]}`. Images are turned into MNIST form exactly as '
        "`mnistkit predict` does: white ink on black, the digit scaled to 20 px and centred by mass.",
        response_model=PredictResponse,
        responses=ERRORS,
        openapi_extra={"requestBody": PREDICT_BODY},
    )
    async def predict(request: Request) -> dict[str, Any]:
        image = await mnist_image(request)
        probabilities, not_a_digit = await batcher.probabilities(image)
        digit = int(np.argmax(probabilities))
        return {
            "digit": digit,
            "label": classifier.classes[digit],
            "not_a_digit": bool(not_a_digit),
            "probabilities": [round(float(p), 6) for p in probabilities],
            "input": (image / 255.0).round(4).tolist(),
        }

    @app.post(
        "/api/explain",
        summary="What the model looks at in an image",
        description="The same inputs as `/api/predict` (the drawing page sends the `input` that `/api/predict` "
        "answered, as JSON pixels). Answers a saliency map for the most likely class and the first convolution's "
        "feature maps, computed on the image in MNIST form.",
        response_model=ExplainResponse,
        responses=ERRORS,
        openapi_extra={"requestBody": PREDICT_BODY},
    )
    async def explain_image(request: Request) -> dict[str, Any]:
        image = await mnist_image(request)
        found = await anyio.to_thread.run_sync(explain, classifier, image, limiter=explain_threads)
        return {
            "digit": found.digit,
            "label": classifier.classes[found.digit],
            "saliency": found.saliency.astype(np.float64).round(3).tolist(),  # float32 would print 0.0509999990…
            "feature_maps": found.feature_maps.tolist(),
        }

    @app.post(
        "/api/feedback",
        summary="Store a correction: what a drawing really was",
        description="Send the 28×28 image the model saw (the `input` of /api/predict's answer), the true digit, "
        "and optionally the model's answer, its confidence and the original drawing as a base64 PNG. Stored with "
        "the served model's SHA-256 and a UTC timestamp in the server's corrections database (`mnistkit feedback` "
        "reads it); the same drawing sent again is stored once, with the latest label.",
        response_model=FeedbackResponse,
        responses=FEEDBACK_ERRORS,
        openapi_extra={"requestBody": FEEDBACK_BODY},
    )
    async def store_feedback(request: Request) -> dict[str, Any]:
        if feedback is None:
            why = "" if takes_corrections(classifier) else f" ({NOT_DIGITS})"
            raise RequestError(404, f"corrections are turned off on this server{why}; nothing was stored")
        if feedback_limit is not None:  # before the body is read: a client over its limit costs no parsing
            client = client_address(request.client)
            wait = feedback_limit.take(client)
            if wait:
                raise TooManyCorrections(client, feedback_limit, wait)
        kind = media_type(request.headers.get("content-type", ""))
        if kind != "application/json":
            raise RequestError(
                415, f"unsupported Content-Type {kind or '(none)'!r}: send application/json {FEEDBACK_JSON}"
            )
        correction = parse_json(await request.body(), FeedbackRequest, FEEDBACK_JSON)
        # Decoding the drawing (25 megapixels fit in 32 KiB of PNG: about 30 ms) runs beside the event loop.
        async with preprocess_threads:
            drawing = await anyio.to_thread.run_sync(decode_drawing, correction.drawing_png)
        pixels = np.rint(np.asarray(correction.pixels, dtype=np.float32) * 255).astype(np.uint8)
        if not has_ink(pixels):  # a blank image taught as a digit would only mislead a fine-tune
            raise RequestError(
                422, "body.pixels holds no ink (blank, or too faint): send the input of /api/predict's answer"
            )
        store = functools.partial(
            feedback.add,
            pixels,
            correction.label,
            predicted=correction.predicted,
            confidence=correction.confidence,
            model_sha256=classifier.meta.get("sha256"),
            drawing_png=drawing,
        )
        try:
            stored, new = await anyio.to_thread.run_sync(store, limiter=feedback_threads)
        except FeedbackFull as exc:  # not a passing outage, as 503 says: it lasts until someone makes room
            raise RequestError(507, f"the correction was not stored: {exc}") from None
        except FeedbackError as exc:
            raise RequestError(503, f"the correction was not stored: {exc}") from None
        return {"id": stored, "new": new}

    @app.get(
        "/api/examples",
        summary="Example digits from the MNIST test set",
        description=f"The first {EXAMPLES_PER_CLASS} test images of each digit from the bundled MNIST, for the "
        "drawing page's strip of examples.",
        response_model=ExamplesResponse,
    )
    def examples() -> dict[str, Any]:
        return {
            "examples": [
                {"index": example.index, "label": str(example.label), "pixels": example.image.tolist()}
                for example in test_examples(EXAMPLES_PER_CLASS)
            ]
        }

    async def mnist_image(request: Request) -> np.ndarray:
        """The request's image in MNIST form, by the same preprocessing as ``Classifier.predict``."""
        item = await read_input(request)
        try:
            if isinstance(item, np.ndarray):
                return to_mnist(item)  # 28×28: microseconds
            # An image's opening (Pillow reads every chunk before the pixels), decoding and scaling run beside the
            # event loop; and not at all for a client that left while it waited for a thread.
            async with preprocess_threads:
                if await request.is_disconnected():
                    raise ClientDisconnect()
                return await anyio.to_thread.run_sync(decode_to_mnist, item)
        except ImageError as exc:
            raise RequestError(422, str(exc)) from None

    return app


async def read_input(request: Request) -> bytes | np.ndarray:
    """The request's image file (not yet opened) or pixel array; RequestError for anything else."""
    kind = media_type(request.headers.get("content-type", ""))
    if kind == "application/json":
        return parse_pixels(await request.body())
    if kind == "multipart/form-data":
        return await read_upload(request)
    if kind in IMAGE_TYPES:
        return await request.body()
    raise RequestError(
        415,
        f"unsupported Content-Type {kind or '(none)'!r}: send multipart/form-data with an 'image' file, "
        'an image/png, image/jpeg or image/webp body, or application/json {"pixels": ...}',
    )


class WholeForm(MultiPartParser):
    """Starlette's multipart parser, telling also whether the form reached its closing boundary: python-multipart
    leaves out a part cut off before it without a word, so a cut-off upload would look like a form without a file."""

    ended = False

    def on_end(self) -> None:  # python-multipart's "end": called on the closing boundary
        self.ended = True


async def read_upload(request: Request) -> bytes:
    """The bytes of the file in a multipart form; RequestError for a malformed or cut-off form, or one without one."""
    async with contextlib.aclosing(request.stream()) as body:
        parser = WholeForm(request.headers, body, max_files=1, max_fields=10)
        try:
            form = await parser.parse()
        except MultiPartException as exc:
            raise RequestError(400, f"{multipart_problem(exc)}: {UPLOAD_HINT}") from None
    try:
        if not parser.ended:
            raise RequestError(400, f"the form ends before its closing boundary (cut off, or empty): {UPLOAD_HINT}")
        uploads = [value for value in form.values() if isinstance(value, UploadFile)]
        if not uploads:
            raise RequestError(400, f"no file in the form: {UPLOAD_HINT}")
        return await uploads[0].read()
    finally:
        await form.close()  # an upload over 1 MiB is spooled to a temporary file


UPLOAD_HINT = "upload one image as a file field named 'image'"


def multipart_problem(exc: MultiPartException) -> str:
    """What Starlette says is wrong with a form, with python-multipart's reason where it has one (Starlette keeps only
    "Invalid multipart data")."""
    problem = exc.message.rstrip(".")
    if exc.__cause__ is not None:
        problem += f" ({' '.join(str(exc.__cause__).split())})"
    return problem


def media_type(content_type: str) -> str:
    """``image/png`` from ``Image/PNG; charset=...``."""
    return content_type.split(";")[0].strip().lower()


PIXELS_JSON = '{"pixels": 28 rows of 28 numbers in [0, 1]}'
FEEDBACK_JSON = (
    '{"pixels": the 28×28 input that /api/predict answered, "label": the true digit 0-9, and optionally '
    '"predicted", "confidence", "drawing_png"}'
)


def parse_pixels(body: bytes) -> np.ndarray:
    return np.asarray(parse_json(body, PixelsRequest, PIXELS_JSON).pixels, dtype=np.float32)


def parse_json(body: bytes, schema: type[JsonBody], expected: str) -> JsonBody:
    """``body`` validated as ``schema``; a RequestError naming the first problem and what to send (``expected``)."""
    if not body.strip():
        raise RequestError(400, f"empty body: send JSON {expected}")
    try:
        return schema.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        if first["type"] == "json_invalid":
            raise RequestError(400, f"malformed JSON ({first['msg']}): send UTF-8 JSON {expected}") from None
        where = "body" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise RequestError(422, f"{where}: {first['msg']}{more}; send {expected}") from None


def decode_drawing(text: str | None) -> bytes | None:
    """The PNG file a correction's ``drawing_png`` holds in base64; RequestError for anything else."""
    if text is None:
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            422, "body.drawing_png is not base64: send the PNG file's bytes in base64, without a data: prefix"
        ) from None
    if len(data) > MAX_DRAWING_PNG_BYTES:
        raise RequestError(
            413,
            f"body.drawing_png is {len(data):,} bytes (limit {MAX_DRAWING_PNG_BYTES // 1024} KiB): scale the drawing "
            "down or leave it out",
        )
    if not data.startswith(PNG_SIGNATURE):
        raise RequestError(422, "body.drawing_png is not a PNG file: send the drawing as PNG, or leave it out")
    check_drawing(data)
    return data


def check_drawing(png: bytes) -> None:
    """Check a drawing as an uploaded image is checked, its size from the header, and also that the file is whole
    and decodes: it is stored as sent, so a pixel bomb, a cut-off file or image data that does not inflate would
    otherwise only fail whoever opens it later."""
    damaged = "body.drawing_png is a damaged or cut-off PNG file{}: send the whole drawing as PNG, or leave it out"
    try:
        image = open_image(png)
    except TooManyPixels as exc:
        raise RequestError(413, f"body.drawing_png: {exc}") from None
    except RequestError:
        raise RequestError(422, damaged.format("")) from None
    width, height = image.size
    try:
        image.verify()  # every chunk and its checksum up to the end
        with Image.open(io.BytesIO(png), formats=UPLOAD_FORMATS) as pixels:
            pixels.load()  # verify() decodes nothing: a stream that does not inflate, or no image data at all
    except Exception as exc:  # Pillow raises assorted types on a hostile file (IndexError: a PNG without IDAT)
        raise RequestError(422, damaged.format(f" ({exc})")) from None
    finally:
        image.close()
        if width * height >= TRIM_AFTER_PIXELS:
            return_free_memory()
    extra = len(png) - png_end(png)
    if extra:  # stored as sent: bytes after the end would be kept, and make one drawing look like many
        raise RequestError(
            422,
            f"body.drawing_png has {extra:,} bytes after the PNG file's end: send the PNG file alone, or leave it out",
        )


def png_end(png: bytes) -> int:
    """The offset just past a PNG file's IEND chunk, the end of the file proper (``len(png)`` if it has none)."""
    at = len(PNG_SIGNATURE)
    while at + 8 <= len(png):
        length, kind = int.from_bytes(png[at : at + 4], "big"), png[at + 4 : at + 8]
        at += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return at
    return len(png)


def open_image(data: bytes) -> Image.Image:
    """Open an uploaded image, checking its size from the header before any pixel is decoded."""
    if not data:
        raise RequestError(400, "empty upload: the image file has no bytes")
    if len(data) > MAX_IMAGE_BYTES:
        raise BodyTooLarge()
    try:
        image = Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS)
    except UnidentifiedImageError:
        raise RequestError(400, f"not an image in a supported format: upload a {FORMAT_NAMES} file") from None
    except Image.DecompressionBombError:  # Pillow's own limit, far above ours
        raise TooManyPixels("the image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise RequestError(400, f"cannot read the image ({exc})") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise TooManyPixels(f"image of {width}×{height} pixels")
    image.draft(None, (WORK_SIDE, WORK_SIDE))  # a JPEG decodes straight to a reduced size, as in `mnistkit predict`
    return image


# Decoding an image this large frees tens of MB that glibc keeps in its heaps (the arenas of the threads that decoded
# it) rather than handing back: after a few hundred such uploads the server would hold about 1 GB it does not use.
TRIM_AFTER_PIXELS = 4_000_000


def decode_to_mnist(data: bytes) -> np.ndarray:
    """``to_mnist`` of an uploaded image file (``open_image``), then its decoded pixels' memory returned to the
    system if they were many."""
    image = open_image(data)
    width, height = image.size
    try:
        return to_mnist(image)
    finally:
        image.close()
        if width * height >= TRIM_AFTER_PIXELS:
            return_free_memory()


def _malloc_trim() -> Any:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl): nothing to do
        return None


MALLOC_TRIM = _malloc_trim()


def return_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing)."""
    if MALLOC_TRIM is not None:
        MALLOC_TRIM(0)


def serve(
    model: str | Path | Sequence[str | Path] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    access_log: bool = True,
    allowed_hosts: str | Iterable[str] = (),
    header_timeout: float = HEADER_TIMEOUT,
    body_timeout: float = BODY_TIMEOUT,
    device: str = "cpu",
    feedback_db: str | Path | None = None,
    feedback_rate: str | RateLimit | None = DEFAULT_FEEDBACK_RATE,
) -> None:
    """Load ``model`` (None: the bundled pretrained convnet; a list: their ensemble) onto ``device`` and serve the
    page and API until interrupted (``StoppableServer``: a first Ctrl-C or SIGTERM stops gracefully, a second at once).

    Requests are answered for localhost, IP addresses, ``host`` and the names in ``allowed_hosts``; a request's headers
    must arrive within ``header_timeout`` seconds and its body within ``body_timeout`` more (``server_guards``).
    Corrections from the page are stored in the SQLite file ``feedback_db`` (created if missing); None turns them off.
    One client address may send ``feedback_rate`` of them (``create_app``).
    A file that is not a corrections database, or one from a newer mnistkit, raises ``FeedbackError`` before serving.
    """
    import torch

    allowed_hosts = allowed_host_names(allowed_hosts)  # a bad name fails before the model loads
    feedback_limit = rate_limit(feedback_rate)
    store = None if feedback_db is None else FeedbackStore(feedback_db)
    if store is not None and not store.writable():  # said now, not as a 503 to every correction sent
        store.close()
        raise FeedbackError(
            f"{store.path}: the database is read-only, so no correction could be stored; make the file and its "
            "folder writable, or choose another file"
        )
    classifier = Classifier.load(model, device)
    if store is not None and not takes_corrections(classifier):
        store.close()
        store = None
    # A first pass before listening: a model that answers NaN for a blank page fails here, in one line, not at
    # every request; and the first request does not pay for the kernels' first-call set-up.
    classifier.probabilities_and_flags(np.zeros((1, 28, 28), np.uint8))
    listener = listen(host, port)
    app = create_app(classifier, [*allowed_hosts, host], store, feedback_limit)
    config = uvicorn_config(app, access_log, header_timeout, body_timeout)
    shown = f"[{host}]" if ":" in host else host
    port = listener.getsockname()[1]  # the one the system chose for --port 0
    if store is not None:
        corrections = f"corrections stored in {store.path}"
        if feedback_limit is not None:
            corrections += f", at most {feedback_limit} from one address"
    else:
        corrections = "corrections off" if takes_corrections(classifier) else f"corrections off: {NOT_DIGITS}"
    print(
        f"serving {classifier.source} ({classifier.meta.get('model')}) at http://{shown}:{port}/  "
        f"(API docs: /docs; {corrections}; Ctrl-C stops)",
        flush=True,
    )
    threads = torch.get_num_threads()
    # One torch thread: the forward passes (batched) take one core, leaving the other to HTTP and preprocessing;
    # intra-op threads would only fight them for it. The caller's count comes back with the server's end.
    torch.set_num_threads(1)
    try:
        StoppableServer(config).run(sockets=[listener])
    finally:
        torch.set_num_threads(threads)
        if store is not None:
            store.close()


class StoppableServer(uvicorn.Server):
    """uvicorn's server, where a first SIGINT (Ctrl-C) or SIGTERM stops it gracefully, answering the requests in
    flight, and a second of either while it does ends the process at once (``exit_at_once``).

    uvicorn itself ignores a second SIGTERM, waiting on (for a request's body, up to its deadline); and a second
    Ctrl-C cancels the requests in flight, each logging a traceback, then still waits for any thread at work.
    """

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.should_exit:  # already stopping
            exit_at_once(sig)
        super().handle_exit(sig, frame)


def exit_at_once(sig: int) -> NoReturn:
    """End the process now, from a signal handler, with one line and the status a shell gives a command that ``sig``
    stopped (130 for Ctrl-C).

    os._exit, since a thread at work (a forward pass, an image's decoding) cannot be interrupted and the interpreter
    would wait for it. A correction being stored is lost or stored whole: SQLite commits are atomic.
    """
    name = signal.Signals(sig).name
    # Either stream may be a closed pipe: a traceback from a signal handler would be worse than a lost line.
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()  # the access log's last lines
    with contextlib.suppress(OSError, ValueError):
        print(f"mnistkit: {name} while shutting down: stopped at once, requests in flight dropped", file=sys.stderr)
        sys.stderr.flush()
    os._exit(128 + sig)


# python-multipart logs why it refuses a malformed form (the client's 400 says it too), with no handler of its own:
# Python printed it as a bare line among uvicorn's. It goes out as uvicorn's own warnings do, such as the one for an
# invalid HTTP request.
LOG_CONFIG = {
    **uvicorn.config.LOGGING_CONFIG,
    "loggers": {
        **uvicorn.config.LOGGING_CONFIG["loggers"],
        "python_multipart": {"handlers": ["default"], "level": "WARNING", "propagate": False},
    },
}


def uvicorn_config(
    app: ASGIApp, access_log: bool = True, header_timeout: float = HEADER_TIMEOUT, body_timeout: float = BODY_TIMEOUT
) -> Any:
    """uvicorn's settings for ``app``: HTTP/1.1 with request deadlines (``RequestDeadlines``)."""
    protocol = functools.partial(RequestDeadlines, header_timeout=header_timeout, body_timeout=body_timeout)
    return uvicorn.Config(
        app,
        http=protocol,  # type: ignore[arg-type]  # uvicorn calls it as a factory; its annotation asks for a class
        access_log=access_log,
        log_level="info" if access_log else "warning",
        log_config=LOG_CONFIG,
    )


def listen(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so that a busy port or a bad address is one clear error."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port must be in 0..65535, got {port}", options=("port",))
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        # IPPROTO_TCP spelled out: asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that say so, and
        # with it on, a kept-alive client waits 40 ms for the second half of each response (headers, then body).
        listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another port or host",
            options=("port", "host"),
        ) from None
    listener.listen(2048)
    return listener
