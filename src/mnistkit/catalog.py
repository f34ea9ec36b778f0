"""The datasets mnistkit knows: their names, IDX file names, checksums, class names and mirrors.

Both the readers (``data.py``) and the downloader (``download.py``) look datasets up here; this module
reads and fetches nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DataError, did_you_mean

BUNDLED_DIR = Path(__file__).parent / "bundled"

IDX_FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}

# Published MD5s of the uncompressed official MNIST files; the bundled copies are checked against them.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

# And their lengths: an IDX header (4 bytes, and 4 a dimension), then a byte a label or pixel. Verifying a copy by
# its uncompressed MD5 decompresses it no further than this, so a gzip bomb costs no more than the real file.
MNIST_SIZES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}

DIGITS = [str(d) for d in range(10)]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    description: str
    mirrors: tuple[str, ...]  # base URLs; a file's URL is base + file name
    files: dict[str, str] = field(hash=False)  # file name -> MD5 of the .gz file as the mirrors serve it
    classes: tuple[str, ...]
    citation: str  # licence and how to cite
    md5_uncompressed: dict[str, str] = field(default_factory=dict, hash=False)  # stem -> MD5 of the IDX bytes
    size_uncompressed: dict[str, int] = field(default_factory=dict, hash=False)  # stem -> length of the IDX bytes


def _gz_files(*md5s: str) -> dict[str, str]:
    """Pair the .gz MD5s, given in the order of ``IDX_FILES`` (train images, train labels, test ...),
    with the names."""
    return dict(zip(IDX_FILES.values(), md5s, strict=True))


CATALOG: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            name="mnist",
            description="handwritten digits 0-9, 60,000 training and 10,000 test images",
            mirrors=(
                "https://ossci-datasets.s3.amazonaws.com/mnist/",
                "https://storage.googleapis.com/cvdf-datasets/mnist/",
            ),
            files=_gz_files(
                "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                "d53e105ee54ea40749a09fcbcd1e9432",
                "9fb629c4189551a2d022fa330f9573f3",
                "ec29112dd5afa0611ce80d1b7f02629c",
            ),
            md5_uncompressed=dict(MNIST_MD5),
            size_uncompressed=dict(MNIST_SIZES),
            classes=tuple(DIGITS),
            citation="Y. LeCun, L. Bottou, Y. Bengio, P. Haffner: Gradient-based learning applied to document "
            "recognition, Proc. IEEE 86(11), 1998; http://yann.lecun.com/exdb/mnist/",
        ),
        DatasetSpec(
            name="fashion-mnist",
            description="Zalando article images in 10 clothing classes, 60,000 training and 10,000 test images",
            mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
            files=_gz_files(
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "25c81989df183df01b3e8a0aad5dffbe",
                "bef4ecab320f06d8554ea6380940ec79",
                "bb300cfdad3c16e7a12a480ee83cd310",
            ),
            classes=(
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ),
            citation="MIT License; H. Xiao, K. Rasul, R. Vollgraf: Fashion-MNIST: a Novel Image Dataset for "
            "Benchmarking Machine Learning Algorithms, arXiv:1708.07747, 2017",
        ),
        DatasetSpec(
            name="kmnist",
            description="Kuzushiji-MNIST: 10 cursive Japanese hiragana, 60,000 training and 10,000 test images",
            mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
            files=_gz_files(
                "bdb82020997e1d708af4cf47b453dcf7",
                "e144d726b3acfaa3e44228e80efcd344",
                "5c965bf0a639b31b8f53240b1b52f4d7",
                "7320c461ea6c1c855c0b718fb2a4b134",
            ),
            classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
            citation="CC BY-SA 4.0; T. Clanuwat et al.: Deep Learning for Classical Japanese Literature, "
            "arXiv:1812.01718, 2018 (KMNIST, ROIS-DS Center for Open Data in the Humanities)",
        ),
    )
}


def _key(name: str) -> str:
    return re.sub(r"[-_ ]", "", name.strip().lower())


def get_spec(name: str) -> DatasetSpec:
    """The catalog entry for ``name``, ignoring case and ``-`` / ``_`` (``Fashion_MNIST`` is ``fashion-mnist``)."""
    for spec in CATALOG.values():
        if _key(spec.name) == _key(name):
            return spec
    raise DataError(f"unknown dataset '{name}';{did_you_mean(name, CATALOG)} known datasets: {', '.join(CATALOG)}")
