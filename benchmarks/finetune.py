"""Teach mnistkit one person's handwriting: the whole correction loop, measured.

A simulated user writes four digits in ways MNIST lacks: a slashed zero, a 1 like a capital I, a 2 like a Z
with a crossbar, a 5 like an S. Several "writers" draw them as pen strokes (slant, size, pen width and wobble
vary); the drawings go through the same preprocessing as the page's. 50 of them are stored as corrections
in a feedback database, and 200 fresh ones are held out. Then

    mnistkit train --preset finetune --init pretrained --data feedback.sqlite --mix-mnist F --epochs E ...

fine-tunes the bundled model (the preset's learning rate and batch size; F and E default to the preset's too).
Printed: the held-out accuracy of that style before and after, the MNIST test accuracy before and after, and
the fine-tuning's training seconds.

    .venv/bin/python benchmarks/finetune.py [--corrections 50] [--held-out 200] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from mnistkit import Classifier, data
from mnistkit.config import PRESETS
from mnistkit.feedback import FeedbackStore
from mnistkit.preprocess import to_mnist

CANVAS = 280  # the page's drawing size


def arc(cx: float, cy: float, rx: float, ry: float, start: float, end: float, n: int = 24) -> list[tuple]:
    """Points on an ellipse from angle ``start`` to ``end`` (degrees, 0 = right, 90 = down)."""
    return [
        (cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a))) for a in np.linspace(start, end, n)
    ]


# Strokes in a unit box (x right, y down), in the simulated user's style.
STYLE: dict[int, list[list[tuple]]] = {
    0: [arc(0.5, 0.5, 0.3, 0.45, 0, 360, 40), [(0.75, 0.12), (0.25, 0.88)]],
    1: [[(0.3, 0.05), (0.7, 0.05)], [(0.5, 0.05), (0.5, 0.95)], [(0.3, 0.95), (0.7, 0.95)]],
    2: [[(0.2, 0.08), (0.8, 0.08), (0.2, 0.92), (0.8, 0.92)], [(0.3, 0.5), (0.7, 0.5)]],
    5: [arc(0.5, 0.3, 0.25, 0.22, 330, 180, 16) + arc(0.5, 0.7, 0.28, 0.22, -90, 150, 16)],
}


def draw(digit: int, writer: np.random.Generator, rng: np.random.Generator) -> np.ndarray:
    """One drawing of ``digit`` by a writer (whose habits ``writer`` fixes) with this drawing's own wobble."""
    slant, width, height = writer.uniform(-0.3, 0.25), writer.uniform(0.6, 1.0), writer.uniform(0.8, 1.0)
    pen = float(writer.uniform(10, 26)) + rng.uniform(-2, 2)
    angle = math.radians(rng.uniform(-8, 8))
    image = Image.new("L", (CANVAS, CANVAS), 255)
    pencil = ImageDraw.Draw(image)
    for stroke in STYLE[digit]:
        points = np.array(stroke) + rng.normal(0, 0.015, (len(stroke), 2))
        x, y = (points[:, 0] - 0.5) * width, (points[:, 1] - 0.5) * height
        x = x - slant * y
        x, y = x * math.cos(angle) - y * math.sin(angle), x * math.sin(angle) + y * math.cos(angle)
        scale = CANVAS * rng.uniform(0.55, 0.75)
        xy = list(zip(CANVAS / 2 + x * scale, CANVAS / 2 + y * scale))
        pencil.line(xy, fill=0, width=round(pen), joint="curve")
        for px, py in (xy[0], xy[-1]):  # round pen ends
            pencil.ellipse((px - pen / 2, py - pen / 2, px + pen / 2, py + pen / 2), fill=0)
    return to_mnist(image)


def user_drawings(n: int, seed: int, writers: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    habits = [np.random.default_rng(seed * 1000 + w) for w in range(writers)]
    digits = sorted(STYLE)
    labels = np.array([digits[i % len(digits)] for i in range(n)], dtype=np.uint8)
    rng.shuffle(labels)
    images = []
    for label in labels:
        w = habits[int(rng.integers(writers))]
        images.append(draw(int(label), np.random.default_rng(w.integers(1 << 30)), rng))
    return np.stack(images), labels


def accuracy(model: Classifier, images: np.ndarray, labels: np.ndarray) -> float:
    return float((model.predict_array(images).argmax(1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corrections", type=int, default=50)
    parser.add_argument("--held-out", type=int, default=200)
    finetune = PRESETS["finetune"]
    parser.add_argument("--epochs", type=int, default=finetune["epochs"])
    parser.add_argument("--mix-mnist", type=float, default=finetune["mix_mnist"])
    parser.add_argument("--seed", type=int, default=0, help="the fine-tuning run's seed (its MNIST draw, its batches)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    train_x, train_y = user_drawings(args.corrections, seed=1)
    held_x, held_y = user_drawings(args.held_out, seed=2)
    mnist_test = data.load_bundled_mnist().test
    before = Classifier.load()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "feedback.sqlite"
        store = FeedbackStore(db)
        for image, label in zip(train_x, train_y):
            store.add(image, int(label))
        store.close()
        run = Path(tmp) / "run"
        command = [
            sys.executable, "-m", "mnistkit", "train", "--preset", "finetune", "--init", "pretrained",
            "--data", str(db), "--mix-mnist", str(args.mix_mnist), "--epochs", str(args.epochs),
            "--seed", str(args.seed), "--out", str(run), "--quiet",
        ]  # fmt: skip
        subprocess.run(command, check=True)
        after = Classifier.load(run)
        seconds = sum(float(row["seconds"]) for row in _rows(run / "metrics.csv"))
        result = {
            "corrections": args.corrections,
            "held_out": args.held_out,
            "style_accuracy_before": accuracy(before, held_x, held_y),
            "style_accuracy_after": accuracy(after, held_x, held_y),
            "mnist_test_before": accuracy(before, mnist_test.images.numpy(), mnist_test.labels.numpy()),
            "mnist_test_after": accuracy(after, mnist_test.images.numpy(), mnist_test.labels.numpy()),
            "training_seconds": seconds,
            "seed": args.seed,
            "command": " ".join(command[2:]),
        }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"held-out drawings of the user's style: {result['style_accuracy_before']:.1%} -> "
        f"{result['style_accuracy_after']:.1%} ({args.corrections} corrections, {args.held_out} held out)"
    )
    print(f"MNIST test: {result['mnist_test_before']:.2%} -> {result['mnist_test_after']:.2%}")
    print(f"fine-tuning: {seconds:.1f} s of training")


def _rows(path: Path) -> list[dict[str, str]]:
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


if __name__ == "__main__":
    main()
