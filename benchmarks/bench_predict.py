"""Prediction speed of the bundled pretrained convnet on this machine's CPU.

Prints, after the model is loaded:
  - single-image latency: one 28×28 MNIST test digit (a uint8 array) through ``Classifier.predict``, which
    includes preprocessing (the pass-through check), the forward pass and building the result
    (goal: ≤ 3 ms); also one 200×200 black-on-white PNG file, decoded and fully preprocessed, for context;
  - batch throughput: the 10,000 MNIST test images through ``Classifier.predict_array`` (goal: ≥ 5,000
    images/s), and through ``Classifier.predict`` with preprocessing, for context.

Usage: .venv/bin/python benchmarks/bench_predict.py [--repeats N] [--json]
Other programs sharing the CPU slow every figure down; the load average is printed with them.
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
from mnistkit.inference import Classifier

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


def best_rate(call, n: int, repeats: int) -> float:
    """Images per second of the fastest of ``repeats`` runs over n images (after one warm-up run)."""
    call()
    best = min(_timed(call) for _ in range(repeats))
    return n / best


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of the batch figures; the best counts [default: 3]")
    parser.add_argument("--singles", type=int, default=500, help="single images timed [default: 500]")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    load_start = time.perf_counter()
    classifier = Classifier.load()
    load_ms = (time.perf_counter() - load_start) * 1000
    test = data.load_bundled_mnist().test
    images = test.images.numpy()
    labels = test.labels.numpy()

    singles = list(images[: args.singles])
    single = latencies_ms(classifier.predict, singles)
    with tempfile.TemporaryDirectory() as folder:
        pngs = []
        for i, digit in enumerate(images[:100]):
            pngs.append(Path(folder) / f"{i}.png")
            Image.fromarray(255 - digit).resize((200, 200), Image.Resampling.BILINEAR).save(pngs[-1])
        png = latencies_ms(classifier.predict, pngs)

    batch_rate = best_rate(lambda: classifier.predict_array(images), len(images), args.repeats)
    with_preprocessing = best_rate(lambda: classifier.predict(images), len(images), args.repeats)
    accuracy = float((classifier.predict_array(images).argmax(1) == labels).mean())

    figures = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "model_load_ms": round(load_ms, 1),
        "single_28x28_ms_median": round(statistics.median(single), 3),
        "single_28x28_ms_p90": round(float(np.percentile(single, 90)), 3),
        "single_200x200_png_ms_median": round(statistics.median(png), 3),
        "batch_images_per_s": round(batch_rate),
        "batch_with_preprocessing_images_per_s": round(with_preprocessing),
        "test_accuracy": accuracy,
    }
    if args.json:
        print(json.dumps(figures))
        return
    mark = lambda ok: "meets the goal" if ok else "MISSES the goal"
    print(f"pretrained {classifier.meta['model']} {classifier.meta['model_options']}, test accuracy {accuracy:.2%}, "
          f"loaded in {load_ms:.0f} ms")
    print(f"CPU: {figures['cpu_count']} cores, torch threads {figures['torch_threads']}, "
          f"load average {', '.join(map(str, figures['load_average']))} (other work on the machine slows every figure)")
    print(f"single 28×28 image, preprocessing included: median {figures['single_28x28_ms_median']:.2f} ms, "
          f"p90 {figures['single_28x28_ms_p90']:.2f} ms over {len(single)} images  "
          f"(goal ≤ {LATENCY_GOAL_MS:g} ms: {mark(statistics.median(single) <= LATENCY_GOAL_MS)})")
    print(f"single 200×200 PNG file, decoded and preprocessed: median {figures['single_200x200_png_ms_median']:.2f} ms")
    print(f"batch of {len(images):,} test images (predict_array): {batch_rate:,.0f} images/s  "
          f"(goal ≥ {THROUGHPUT_GOAL:,.0f}: {mark(batch_rate >= THROUGHPUT_GOAL)})")
    print(f"the same through predict (preprocessing and results per image): {with_preprocessing:,.0f} images/s")


if __name__ == "__main__":
    main()
