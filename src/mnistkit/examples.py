"""Example digits for the drawing page: the first test images of each class from the bundled MNIST."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .catalog import BUNDLED_DIR, IDX_FILES
from .idx import read_idx


@dataclass(frozen=True)
class Example:
    index: int  # position in the MNIST test set
    label: int
    image: np.ndarray  # uint8 (28, 28), white ink on black


@lru_cache(maxsize=4)
def test_examples(per_class: int = 2) -> tuple[Example, ...]:
    """The first ``per_class`` test digits of each class, in rounds of 0..9 (0, 1, …, 9, 0, 1, …)."""
    images, _ = read_idx(BUNDLED_DIR / IDX_FILES[("test", "images")])
    labels, _ = read_idx(BUNDLED_DIR / IDX_FILES[("test", "labels")])
    firsts = [np.flatnonzero(labels == digit)[:per_class] for digit in range(10)]
    return tuple(
        Example(int(found[round_]), digit, images[found[round_]])
        for round_ in range(per_class)
        for digit, found in enumerate(firsts)
        if round_ < len(found)
    )
