"""How quickly `mnistkit serve` answers GET /api/health while clients send it the largest bodies they can.

Starts the server in a subprocess on a free 127.0.0.1 port. For each kind of body, CLIENTS clients (threads of a
separate process, so that they do not share this one's interpreter lock) send it again and again on kept-alive
connections while this process asks for /api/health every 10 ms and times each answer. Prints the health latency
percentiles, idle and under each load, and what the loading clients got back.

    .venv/bin/python benchmarks/health_latency.py                  # 4 clients, 10 s per kind of body
    .venv/bin/python benchmarks/health_latency.py --seconds 20

Bodies: ``json-4mib``: 3.8 MiB of JSON pixels (refused from its Content-Length); ``json-max``: the largest JSON
the server takes, 28×28 numbers written with 80 digits each (just under 64 KiB, classified); ``png-max``: a
noise PNG just under the 4 MiB upload limit (decoded and classified).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import multiprocessing
import os
import sys
import threading
import time
from collections import Counter
from urllib.parse import urlparse

import numpy as np
from load_server import free_port, start_server
from memory_server import wait_until_up
from PIL import Image

PROBE_EVERY = 0.01  # seconds between health requests
MAX_SECONDS = 120.0


def bodies() -> dict[str, tuple[bytes, str]]:
    """Each kind of body and its Content-Type."""
    rng = np.random.default_rng(0)
    huge = json.dumps({"pixels": rng.random((600, 600)).round(8).tolist()}).encode()  # 3.8 MiB
    digits = "".join(str(d) for d in rng.integers(0, 10, 77))
    rows = [[f"0.{9 if 11 <= col <= 16 and 4 <= row <= 23 else 0}{digits}" for col in range(28)] for row in range(28)]
    largest = ('{"pixels": [' + ", ".join("[" + ", ".join(row) + "]" for row in rows) + "]}").encode()  # a "1"
    noise = Image.fromarray(rng.integers(0, 256, (1180, 1180, 3), dtype=np.uint8))
    png = io.BytesIO()
    noise.save(png, format="PNG", compress_level=1)
    return {
        "json-4mib": (huge, "application/json"),
        "json-max": (largest, "application/json"),
        "png-max": (png.getvalue(), "image/png"),
    }


def hammer(url: str, body: bytes, kind: str, clients: int, seconds: float, results: multiprocessing.Queue) -> None:
    """``clients`` threads posting ``body`` to /api/predict until ``seconds`` pass; puts the status counts."""
    where = urlparse(url)
    statuses: Counter[str] = Counter()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        while time.monotonic() < stop_at:
            try:
                connection.request("POST", "/api/predict", body=body, headers={"Content-Type": kind})
                response = connection.getresponse()
                response.read()
                statuses[str(response.status)] += 1
            except (OSError, http.client.HTTPException) as exc:
                statuses[type(exc).__name__] += 1
                connection.close()
                connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(dict(statuses))


def probe(url: str, seconds: float) -> np.ndarray:
    """Milliseconds each GET /api/health took, one every PROBE_EVERY seconds for ``seconds``."""
    where = urlparse(url)
    connection = http.client.HTTPConnection(where.hostname, where.port, timeout=30)
    latencies = []
    stop_at = time.monotonic() + seconds
    while time.monotonic() < stop_at:
        start = time.perf_counter()
        connection.request("GET", "/api/health")
        connection.getresponse().read()
        latencies.append((time.perf_counter() - start) * 1000)
        time.sleep(PROBE_EVERY)
    connection.close()
    return np.array(latencies)


def percentiles(ms: np.ndarray) -> str:
    p50, p99 = np.percentile(ms, [50, 99])
    return f"p50 {p50:.1f} ms  p99 {p99:.1f} ms  max {ms.max():.1f} ms  ({len(ms)} requests)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="loading clients [default: 4]")
    parser.add_argument("--seconds", type=float, default=10.0, help="per kind of body [default: 10]")
    args = parser.parse_args()
    if not 1 <= args.clients <= 32 or not 0 < args.seconds <= MAX_SECONDS:
        sys.exit(f"health_latency: --clients must be in 1..32, --seconds in (0, {MAX_SECONDS:.0f}]")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port)
    spawn = multiprocessing.get_context("spawn")
    try:
        wait_until_up(url, server)
        print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; {args.clients} loading clients")
        print(f"{'idle':>10}: health {percentiles(probe(url, args.seconds))}")
        for name, (body, kind) in bodies().items():
            results = spawn.Queue()
            loader = spawn.Process(target=hammer, args=(url, body, kind, args.clients, args.seconds + 1, results))
            loader.start()
            time.sleep(1.0)  # the clients connect and start sending
            latencies = probe(url, args.seconds)
            statuses = results.get(timeout=args.seconds + 120)
            loader.join()
            answers = ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()))
            print(f"{name:>10}: health {percentiles(latencies)}; {len(body) / 1024:.0f} KiB bodies answered {answers}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
