"""Memory of `mnistkit serve` under big uploads: its RSS before, at its peak and after N 25-megapixel images.

Starts the server in a subprocess on a free 127.0.0.1 port, sends one small drawing (the baseline: model loaded,
first inference done), then UPLOADS images of 5000×5000 pixels (a digit drawn on white, RGB, a few hundred KB
once compressed) from CLIENTS concurrent clients, waits a second, and reads the server's resident memory
(VmRSS) and its peak (VmHWM) from /proc. Exits 1 if any upload is not classified.

    .venv/bin/python benchmarks/memory_server.py                   # 100 PNG uploads, 4 at a time
    .venv/bin/python benchmarks/memory_server.py --format jpeg     # JPEG, which decodes at a reduced size

Linux only (/proc); at most 500 uploads.
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from load_server import free_port, start_server
from PIL import Image, ImageDraw

SIDE = 5000  # 25 megapixels: the largest image the server accepts
MAX_UPLOADS = 500


def big_digit(format: str) -> bytes:
    """A 5000×5000 RGB image of a thick black "7" on white, encoded as ``format``."""
    image = Image.new("RGB", (SIDE, SIDE), "white")
    ImageDraw.Draw(image).line([(1500, 1200), (3600, 1200), (2200, 4000)], fill="black", width=380)
    buffer = io.BytesIO()
    image.save(buffer, format=format)
    return buffer.getvalue()


def memory_mb(pid: int) -> dict[str, float]:
    """The process's resident memory now (VmRSS) and at its peak (VmHWM), in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {name: int(fields[name].split()[0]) / 1024 for name in ("VmRSS", "VmHWM")}


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"memory_server: the server exited: {server.stderr.read().decode(errors='replace').strip()}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit(f"memory_server: no answer from {url}/api/health within {timeout:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=100, help=f"at most {MAX_UPLOADS} [default: 100]")
    parser.add_argument("--clients", type=int, default=4, help="concurrent uploads [default: 4]")
    parser.add_argument("--format", choices=["png", "jpeg"], default="png", help="[default: png]")
    args = parser.parse_args()
    if not 1 <= args.uploads <= MAX_UPLOADS or not 1 <= args.clients <= 16:
        sys.exit(f"memory_server: --uploads must be in 1..{MAX_UPLOADS}, --clients in 1..16")

    data = big_digit(args.format.upper())
    small = io.BytesIO()
    canvas = Image.new("L", (280, 280), 255)
    canvas.paste(0, (130, 40, 150, 240))
    canvas.save(small, format="PNG")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(port)
    try:
        wait_until_up(url, server)

        def send(body: bytes, name: str) -> int:
            files = {"image": (name, body, f"image/{args.format}")}
            response = httpx.post(f"{url}/api/predict", files=files, timeout=120)
            return response.json().get("digit", -1) if response.status_code == 200 else -1

        send(small.getvalue(), "small.png")
        baseline = memory_mb(server.pid)["VmRSS"]
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            digits = list(pool.map(lambda _: send(data, f"big.{args.format}"), range(args.uploads)))
        elapsed = time.perf_counter() - start
        time.sleep(1.0)
        after = memory_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    failed = sum(digit < 0 for digit in digits)
    print(
        f"{args.uploads} uploads of {SIDE}×{SIDE} RGB {args.format.upper()} ({len(data) / 1e3:.0f} KB each), "
        f"{args.clients} at a time, in {elapsed:.1f} s ({elapsed / args.uploads * 1000:.0f} ms each)"
    )
    print(
        f"server RSS: {baseline:.0f} MB before, peak {after['VmHWM']:.0f} MB, {after['VmRSS']:.0f} MB after; "
        f"failed uploads: {failed}; digits read as 7: {digits.count(7)}"
    )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
