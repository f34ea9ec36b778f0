"""benchmarks/realworld.py runs end to end: every condition and source, scored by the bundled model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")  # the UCI digits come from scikit-learn (the dev extra)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import realworld  # noqa: E402


def test_every_condition_and_source_is_scored_and_formatted():
    report = realworld.run(argparse.Namespace(model=None, n=20, reject="on", seed=0))
    digits, nondigits = report["digits"], report["nondigits"]
    assert set(realworld.CONDITIONS) | {
        "UCI digits, 8x8 arrays",
        "ruled or squared paper",
        "in a box or on a line",
        "dark band along an edge",
    } <= set(digits)
    assert all(row["images"] == 20 for row in digits.values())
    assert digits["clean, 100-300 px pages"]["accuracy"] >= 0.9
    assert report["mnist_test"]["images"] == 10_000 and report["mnist_test"]["accuracy"] > 0.99
    blank = nondigits["blank pages, shadow across"]
    assert blank["refused"] + blank["not_a_digit"] * blank["images"] >= 18  # blank or flagged, not a digit
    assert "blank pages, shadow across" in realworld.format_report(report)


def test_box_filled_16_is_black_and_white_16_px_filling_its_box(mnist):
    scan = realworld.box_filled_16(mnist.test.images[0].numpy(), np.random.default_rng(0))
    assert scan.shape == (16, 16) and set(np.unique(scan)) == {0, 255}
    ink = scan == 0
    assert ink.any(0)[[0, -1]].all() and ink.any(1)[[0, -1]].all()  # ink reaches every edge
