"""Prediction speed of the bundled pretrained convnet on this machine's CPU (or GPU, with --device).

Prints, after the model is loaded:
  - single-image latency: one 28×28 MNIST test digit (a uint8 array) through ``Classifier.predict``, which
    includes preprocessing (the pass-through check), the forward pass and building the result
    (goal: ≤ 3 ms); also one 200×200 black-on-white PNG file, decoded and fully preprocessed, for context;
  - batch throughput: the 10,000 MNIST test images through ``Classifier.predict_array`` (goal: ≥ 5,000
    images/s), and through ``Classifier.predict`` with preprocessing, for context; and, where onnxruntime
    is installed and the device is the CPU, the same model exported to ONNX (``mnistkit export``) run by
    onnxruntime.

Each figure is taken with every PyTorch thread count given by --threads (default: 1 and all cores).
Usage: .venv/bin/python benchmarks/bench_predict.py [--threads 1 2] [--repeats N] [--device cuda] [--json]
Other programs sharing the CPU slow every figure down (several threads suffer most, as they wait for each
other); the load average is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mnistkit import data
from mnistkit.config import DEVICES
from mnistkit.inference import BATCH_SIZE, Classifier
from mnistkit.train import resolve_device

LATENCY_GOAL_MS = 3.0
THROUGHPUT_GOAL = 5000.0


def latencies_ms(call, items: list, warmup: int = 20) -> list[float]:
    for item in items[:warmup]:
        call(item)
    times = []
    for item in items:
        start = time.perf_counter()
        call(item)
        times.append((time.perf_counter() - start) * 1000)
    return times


def best_rate(call, n: int, repeats: int) -> tuple[float, float]:
    """Images per second of wall-clock time and per second of this process's CPU time, the best of
    ``repeats`` runs over n images (after one warm-up run). On a busy machine the CPU-time rate is what the
    process achieved while it actually ran."""
    call()
    wall, cpu = zip(*(_timed(call) for _ in range(repeats)))
    return n / min(wall), n / min(cpu)


def _timed(call) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs of the batch figures; the best counts [default: 3]"
    )
    parser.add_argument("--singles", type=int, default=500, help="single images timed [default: 500]")
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=sorted({1, torch.get_num_threads()}),
        help="PyTorch thread counts to measure with [default: 1 and all cores]",
    )
    parser.add_argument("--device", choices=DEVICES, default="cpu", help="where the model runs [default: cpu]")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()
    device = resolve_device(args.device)

    load_start = time.perf_counter()
    classifier = Classifier.load(device=device)
    load_ms = (time.perf_counter() - load_start) * 1000
    test = data.load_bundled_mnist().test
    images = test.images.numpy()
    accuracy = float((classifier.predict_array(images).argmax(1) == test.labels.numpy()).mean())
    figures = {
        "model": f"{classifier.meta['model']} {classifier.meta['model_options']}",
        "test_accuracy": accuracy,
        "cpu_count": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else device.type,
        "load_average_before": [round(x, 2) for x in os.getloadavg()],
        "model_load_ms": round(load_ms, 1),
        "batch_size": classifier.batch_size,
        "by_threads": {},
    }
    with tempfile.TemporaryDirectory() as folder:
        pngs = []
        for i, digit in enumerate(images[:100]):
            pngs.append(Path(folder) / f"{i}.png")
            Image.fromarray(255 - digit).resize((200, 200), Image.Resampling.BILINEAR).save(pngs[-1])
        for threads in args.threads:
            torch.set_num_threads(threads)
            single = latencies_ms(classifier.predict, list(images[: args.singles]))
            png = latencies_ms(classifier.predict, pngs)
            figures["by_threads"][threads] = {
                "single_28x28_ms_median": round(statistics.median(single), 3),
                "single_28x28_ms_p90": round(float(np.percentile(single, 90)), 3),
                "single_200x200_png_ms_median": round(statistics.median(png), 3),
            }
            wall, cpu = best_rate(lambda: classifier.predict_array(images), len(images), args.repeats)
            figures["by_threads"][threads].update(batch_images_per_s=round(wall), batch_images_per_cpu_s=round(cpu))
            wall, _ = best_rate(lambda: classifier.predict(images), len(images), args.repeats)
            figures["by_threads"][threads]["batch_with_preprocessing_images_per_s"] = round(wall)
            figures["by_threads"][threads]["onnxruntime_images_per_s"] = (
                onnx_rate(images, threads, args.repeats, folder) if device.type == "cpu" else None
            )
    figures["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(figures) if args.json else report(figures))


def onnx_rate(images: np.ndarray, threads: int, repeats: int, folder: str) -> int | None:
    """Images/s of the pretrained model exported to ONNX and run by onnxruntime, or None without it."""
    try:
        import onnxruntime
    except ImportError:
        return None
    from mnistkit.export import export_checkpoint

    path = Path(folder) / "pretrained.onnx"
    if not path.exists():
        export_checkpoint(None, "onnx", path)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = images.astype(np.float32)[:, None] / 255

    def run() -> list:
        return [session.run(None, {"pixels": x[i : i + BATCH_SIZE]}) for i in range(0, len(x), BATCH_SIZE)]

    return round(best_rate(run, len(x), repeats)[0])


def report(figures: dict) -> str:
    def mark(ok: bool) -> str:
        return "meets the goal" if ok else "MISSES the goal"

    lines = [
        f"pretrained {figures['model']}: test accuracy {figures['test_accuracy']:.2%}, "
        f"loaded in {figures['model_load_ms']:.0f} ms, running on {figures['device']}",
        f"CPU: {figures['cpu_count']} cores; load average {figures['load_average_before'][0]} before, "
        f"{figures['load_average_after'][0]} after (other work on the machine slows every figure)",
    ]
    for threads, f in figures["by_threads"].items():
        lines += [
            f"with {threads} PyTorch thread{'s' if threads > 1 else ''}:",
            f"  single 28×28 image, preprocessing included: median {f['single_28x28_ms_median']:.2f} ms, p90 "
            f"{f['single_28x28_ms_p90']:.2f} ms  "
            f"(goal ≤ {LATENCY_GOAL_MS:g} ms: {mark(f['single_28x28_ms_median'] <= LATENCY_GOAL_MS)})",
            f"  single 200×200 PNG file, decoded and preprocessed: median {f['single_200x200_png_ms_median']:.2f} ms",
            f"  batch throughput, 10,000 test images in batches of {figures['batch_size']}: "
            f"{f['batch_images_per_s']:,} images/s  "
            f"(goal ≥ {THROUGHPUT_GOAL:,.0f}: {mark(f['batch_images_per_s'] >= THROUGHPUT_GOAL)}); "
            f"{f['batch_images_per_cpu_s']:,} images per second of CPU time",
            "  the same through predict (preprocessing and a result per image): "
            f"{f['batch_with_preprocessing_images_per_s']:,} images/s",
        ]
        if f["onnxruntime_images_per_s"] is not None:
            lines.append(
                f"  the model exported to ONNX, run by onnxruntime: {f['onnxruntime_images_per_s']:,} images/s"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
