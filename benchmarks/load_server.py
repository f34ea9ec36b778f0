"""Load test of `mnistkit serve`: many concurrent clients posting real MNIST test digits to /api/predict.

Starts the server in a subprocess on a free 127.0.0.1 port (or targets --url, which must be a loopback
address), warms it up, then runs CLIENTS concurrent clients for SECONDS seconds. Without --rate each client sends
its next request as soon as the last is answered: the most the server can do (and with 50 clients always waiting,
latency is 50 / throughput). With --rate the clients together send RATE requests/s on a fixed schedule, and latency
is measured from each request's scheduled time, so a server falling behind shows it. Prints requests/s, latency
percentiles, errors, and the CPU time per request of the server and of this load generator; exits 1 on any error.

    .venv/bin/python benchmarks/load_server.py                   # 50 clients, 20 s, as fast as answered
    .venv/bin/python benchmarks/load_server.py --rate 300        # latency at 300 requests/s
    .venv/bin/python benchmarks/load_server.py --payload png     # 280×280 PNG drawings, as the page sends
    .venv/bin/python benchmarks/load_server.py --device cuda     # the server's model on the GPU

Bounded by design: at most 200 clients and 120 s, only to loopback addresses. The clients run on the same
machine as the server and take part of its CPU, so the client is aiohttp with bodies encoded once: about
0.3 ms of CPU per request, where httpx took 2.5 ms, more than the server itself.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import ipaddress
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import aiohttp
import numpy as np
from PIL import Image

from mnistkit.config import DEVICES
from mnistkit.data import load_bundled_mnist

MAX_CLIENTS = 200
MAX_SECONDS = 120.0
SAMPLES = 64  # distinct test digits cycled through

Body = tuple[bytes, str]  # encoded request body and its Content-Type


def drawing(image: np.ndarray) -> bytes:
    """An MNIST digit as the page sends a drawing: a 280×280 PNG, dark ink on a white canvas."""
    canvas = Image.fromarray(255 - image).resize((280, 280), Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG")
    return buffer.getvalue()


async def encode(payload: str, images: np.ndarray) -> list[Body]:
    """Each request's body, encoded once so that the clients spend their CPU on HTTP, not on encoding."""
    if payload == "json":
        return [
            (json.dumps({"pixels": (image / 255.0).round(4).tolist()}).encode(), "application/json") for image in images
        ]
    bodies = []
    for image in images:
        with aiohttp.MultipartWriter("form-data") as form:
            part = form.append(drawing(image), {"Content-Type": "image/png"})
            part.set_content_disposition("form-data", name="image", filename="digit.png")
        bodies.append((await form.as_bytes(), form.content_type))
    return bodies


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        sys.exit(
            f"load_server: refusing to load-test {url}: only loopback addresses (127.0.0.1, localhost, ::1) are allowed"
        )


def start_server(port: int, device: str = "cpu") -> subprocess.Popen:
    command = [sys.executable, "-m", "mnistkit", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    command += ["--device", device, "--no-feedback"]  # a benchmark stores no corrections
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def wait_until_up(
    session: aiohttp.ClientSession, url: str, server: subprocess.Popen | None, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            sys.exit(f"load_server: the server exited: {server.stderr.read().decode(errors='replace').strip()}")
        try:
            async with session.get(f"{url}/api/health") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    sys.exit(f"load_server: no answer from {url}/api/health within {timeout:.0f} s")


class Tally:
    def __init__(self, start: float, stop_at: float, rate: float | None):
        self.start, self.stop_at, self.rate = start, stop_at, rate
        self.sent = 0
        self.latencies: list[float] = []
        self.errors: dict[str, int] = {}
        self.wrong = 0

    def next_send_time(self) -> float | None:
        """When the next request is due (now, without a rate); None once the run is over."""
        due = self.start + self.sent / self.rate if self.rate else time.perf_counter()
        self.sent += 1
        return due if due < self.stop_at else None

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


async def client(
    session: aiohttp.ClientSession, url: str, bodies: list[Body], labels: np.ndarray, tally: Tally
) -> None:
    while (due := tally.next_send_time()) is not None:
        i = tally.sent % len(bodies)
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        body, kind = bodies[i]
        try:
            async with session.post(f"{url}/api/predict", data=body, headers={"Content-Type": kind}) as response:
                answer = await response.json()
            tally.latencies.append(time.perf_counter() - due)
            if response.status != 200:
                tally.error(f"HTTP {response.status}")
            elif answer["digit"] != labels[i]:
                tally.wrong += 1
        except (TimeoutError, aiohttp.ClientError) as exc:
            tally.error(type(exc).__name__)


async def load(
    url: str,
    payload: str,
    images: np.ndarray,
    labels: np.ndarray,
    clients: int,
    seconds: float,
    rate: float | None,
    server: subprocess.Popen | None,
) -> dict:
    bodies = await encode(payload, images)
    load_before = os.getloadavg()[0]  # other work on the machine, which the figures share the CPU with
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        await wait_until_up(session, url, server)
        # Warm-up: open the connections and let the server's first inferences allocate what they need.
        now = time.perf_counter()
        await asyncio.gather(
            *(client(session, url, bodies, labels, Tally(now, now + 1.0, None)) for _ in range(clients))
        )
        server_cpu, own_cpu = (cpu_seconds(server.pid) if server else 0.0), own_cpu_seconds()
        start = time.perf_counter()
        tally = Tally(start, start + seconds, rate)
        await asyncio.gather(*(client(session, url, bodies, labels, tally) for _ in range(clients)))
        elapsed = time.perf_counter() - start
        server_cpu, own_cpu = (cpu_seconds(server.pid) - server_cpu if server else None), own_cpu_seconds() - own_cpu
    answered = len(tally.latencies)
    ms = np.array(tally.latencies or [0.0]) * 1000
    return {
        "payload": payload,
        "clients": clients,
        "rate": rate,
        "seconds": round(elapsed, 2),
        "answered": answered,
        "requests_per_s": round(answered / elapsed, 1),
        "latency_ms": {
            name: round(float(np.percentile(ms, q)), 2)
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
        },
        "errors": tally.errors,
        "wrong_digits": tally.wrong,
        # CPU time per answered request: the server's (when this script started it) and this load generator's own.
        "server_cpu_ms_per_request": round(server_cpu * 1000 / max(answered, 1), 3) if server_cpu is not None else None,
        "client_cpu_ms_per_request": round(own_cpu * 1000 / max(answered, 1), 3),
        "cpu_cores": os.cpu_count(),
        "load_average_before": round(load_before, 2),
    }


def report(result: dict) -> str:
    lat = result["latency_ms"]
    errors = ", ".join(f"{kind}: {n}" for kind, n in result["errors"].items()) or "none"
    pace = f"{result['rate']:g} requests/s scheduled" if result["rate"] else "each as fast as answered"
    server_cpu = (
        f"server {result['server_cpu_ms_per_request']} ms, " if result["server_cpu_ms_per_request"] is not None else ""
    )
    return "\n".join(
        [
            f"{result['payload']} payload, {result['clients']} clients, {pace} for {result['seconds']} s: "
            f"{result['answered']} answered, {result['requests_per_s']} requests/s",
            f"latency p50 {lat['p50']} ms  p90 {lat['p90']} ms  p99 {lat['p99']} ms  max {lat['max']} ms",
            f"errors: {errors}; wrong digits: {result['wrong_digits']} (of {SAMPLES} MNIST test images, cycled)",
            f"CPU per request: {server_cpu}load generator {result['client_cpu_ms_per_request']} ms; "
            f"{result['cpu_cores']} cores, load average {result['load_average_before']} before the run",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--clients", type=int, default=50, help=f"concurrent clients, at most {MAX_CLIENTS} [default: 50]"
    )
    parser.add_argument(
        "--seconds", type=float, default=20.0, help=f"duration, at most {MAX_SECONDS:.0f} [default: 20]"
    )
    parser.add_argument(
        "--payload",
        choices=["json", "png"],
        default="json",
        help="json: 28×28 pixels; png: 280×280 drawings as the page sends them, preprocessed by the server "
        "[default: json]",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="send this many requests/s in all, on a schedule [default: as fast as answered]",
    )
    parser.add_argument(
        "--url", default=None, help="an already running server on a loopback address [default: start one]"
    )
    parser.add_argument(
        "--device",
        choices=DEVICES,
        default="cpu",
        help="where the server it starts runs the model (mnistkit serve --device) [default: cpu]",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()
    if (
        not 1 <= args.clients <= MAX_CLIENTS
        or not 0 < args.seconds <= MAX_SECONDS
        or (args.rate is not None and args.rate <= 0)
    ):
        sys.exit(
            f"load_server: --clients must be in 1..{MAX_CLIENTS}, --seconds in (0, {MAX_SECONDS:.0f}], --rate above 0"
        )
    if args.url:
        check_loopback(args.url)

    test = load_bundled_mnist().test
    images, labels = test.images[:SAMPLES].numpy(), test.labels[:SAMPLES].numpy()
    server = None
    url = args.url.rstrip("/") if args.url else None
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(port, args.device)
    try:
        result = asyncio.run(load(url, args.payload, images, labels, args.clients, args.seconds, args.rate, server))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
    result["server_device"] = args.device if server is not None else None
    print(json.dumps(result, indent=2) if args.json else report(result))
    sys.exit(1 if result["errors"] else 0)


if __name__ == "__main__":
    main()
