"""Loaders for every format a user can point at, their error cases, splits and on-device batches."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import idx_bytes, make_digits, write_idx_folder

from mnistkit import catalog, data, idx
from mnistkit.errors import DataError, WriteError

SHARED_PICKLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist.pkl.gz"


# --------------------------------------------------------------------------------------------------
# IDX


def test_parse_idx_round_trips_images_and_labels():
    x, y = make_digits(7)
    assert np.array_equal(idx.parse_idx(idx_bytes(x)), x)
    assert np.array_equal(idx.parse_idx(idx_bytes(y)), y)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads_raw_or_gzipped(tmp_path, gz):
    folder = write_idx_folder(tmp_path / "d", n_train=50, n_test=20, gz=gz)
    ds = data.load_idx_folder(folder)
    assert ds.train.images.dtype == torch.uint8 and ds.train.images.shape == (50, 28, 28)
    assert ds.train.labels.dtype == torch.int64 and ds.test is not None and len(ds.test) == 20
    x, y = make_digits(50, 0)
    assert np.array_equal(ds.train.images.numpy(), x) and np.array_equal(ds.train.labels.numpy(), y)
    # checksums are of the uncompressed bytes, whichever way the file was stored
    assert ds.checksums["train-labels-idx1-ubyte"] == hashlib.md5(idx_bytes(y)).hexdigest()


def test_test_pair_is_optional(tmp_path):
    folder = write_idx_folder(tmp_path / "d", n_train=30, n_test=10)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (folder / name).unlink()
    assert data.load_idx_folder(folder).test is None


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\x00\x00", "truncated IDX file"),
        (b"\x12\x34\x08\x03" + b"\x00" * 12, "not an IDX file"),
        (b"\x00\x00\x07\x01" + b"\x00" * 4, "not an IDX file"),
        (b"\x00\x00\x08\x03\x00\x00", "header cut short"),
        (struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 28, 28) + b"\x00" * 100, "truncated IDX file"),
        (struct.pack(">BBBBI", 0, 0, 8, 1, 3) + b"\x01\x02\x03\x04", "beyond its dimensions"),
        (b"\x00\x00\x08\xff" + b"\x00" * 1020, "f: an IDX header declaring 255 dimensions; images have 3"),
    ],
)
def test_malformed_idx_is_refused_with_one_line(raw, message):
    with pytest.raises(DataError, match=message):
        idx.parse_idx(raw, "f")


def test_corrupt_gzip_is_reported(tmp_path):
    folder = write_idx_folder(tmp_path / "d", n_train=20, n_test=5)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match="corrupt gzip"):
        data.load_idx_folder(folder)


def test_image_and_label_counts_must_match(tmp_path):
    folder = write_idx_folder(tmp_path / "d", n_train=20, n_test=5)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(19, np.uint8))))
    with pytest.raises(DataError, match="20 images but 19 labels"):
        data.load_idx_folder(folder)


def test_a_part_without_images_is_refused(tmp_path):
    folder = write_idx_folder(tmp_path / "d", n_train=20, n_test=5)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((0, 28, 28), np.uint8))))
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(0, np.uint8))))
    with pytest.raises(DataError, match=r"d \(train\): holds no images; every part of a dataset needs at least one"):
        data.load_idx_folder(folder)
    x, y = make_digits(20)
    np.savez(tmp_path / "no-test-images.npz", x_train=x, y_train=y, x_test=x[:0], y_test=y[:0])
    with pytest.raises(DataError, match=r"no-test-images.npz \(test\): holds no images"):
        data.load_path(tmp_path / "no-test-images.npz")


def test_checksum_mismatch_names_the_file(tmp_path):
    folder = write_idx_folder(tmp_path / "d", n_train=20, n_test=5)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: checksum mismatch"):
        data.load_idx_folder(folder, verify={"train-images-idx3-ubyte": "0" * 32})


def test_labels_out_of_range_and_wrong_image_size_are_refused(tmp_path):
    folder = write_idx_folder(tmp_path / "d", n_train=20, n_test=5)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.full(20, 12, np.uint8))))
    with pytest.raises(DataError, match="labels must lie in 0..9"):
        data.load_idx_folder(folder)
    folder = write_idx_folder(tmp_path / "e", n_train=20, n_test=5)
    (folder / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros((20, 32, 32), np.uint8))))
    with pytest.raises(DataError, match="28×28"):
        data.load_idx_folder(folder)


def test_missing_files_and_folders_say_what_to_pass(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        data.load_path(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="found no IDX files"):
        data.load_path(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="unknown data format"):
        data.load_path(tmp_path / "notes.txt")


def test_a_half_written_temp_file_is_not_taken_for_data(tmp_path):
    folder = write_idx_folder(tmp_path / "d", n_train=20, n_test=5)
    (folder / ".train-images-idx3-ubyte.gz.abc.tmp").write_bytes(b"garbage")
    assert len(data.load_idx_folder(folder).train) == 20


def test_a_failed_export_leaves_no_folder_it_made(tmp_path, monkeypatch):
    images, labels = make_digits(12)
    encode_idx = data.encode_idx

    def full_disk_at_the_labels(array):
        if array.ndim == 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return encode_idx(array)

    monkeypatch.setattr(data, "encode_idx", full_disk_at_the_labels)
    with pytest.raises(WriteError, match="No space left on device"):
        data.save_training_set(tmp_path / "new", images, labels, "idx")
    assert list(tmp_path.iterdir()) == []  # nor the images file written before the labels failed
    (tmp_path / "kept").mkdir()
    with pytest.raises(WriteError, match="No space left on device"):
        data.save_training_set(tmp_path / "kept", images, labels, "idx")
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []
    monkeypatch.undo()
    with pytest.raises(WriteError, match="No such file or directory; check the folder exists"):
        data.save_training_set(tmp_path / "missing" / "new", images, labels, "idx")  # as the .npz, no parents made
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


_KILLED_AT_THE_LABELS = """
import os, sys
import numpy as np
from mnistkit import data
encode_idx = data.encode_idx
def killed_at_the_labels(array):
    if array.ndim == 1:
        os._exit(9)
    return encode_idx(array)
data.encode_idx = killed_at_the_labels
data.save_training_set(sys.argv[1], np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.int64), "idx")
"""


def test_an_export_killed_half_way_leaves_nothing_under_its_name_and_the_next_one_writes_it(tmp_path):
    import subprocess
    import sys

    killed = subprocess.run([sys.executable, "-c", _KILLED_AT_THE_LABELS, str(tmp_path / "set")], check=False)
    assert killed.returncode == 9 and not (tmp_path / "set").exists()
    images, labels = make_digits(12)
    data.save_training_set(tmp_path / "set", images, labels, "idx")
    assert len(data.load_idx_folder(tmp_path / "set").train) == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # the killed export's temporary folder is gone


# --------------------------------------------------------------------------------------------------
# The tutorial's pickle and Keras-style npz


def _pickle_gz(obj, path: Path, protocol: int = 2) -> Path:
    path.write_bytes(gzip.compress(pickle.dumps(obj, protocol=protocol)))
    return path


def _tutorial_layout(n: int = 40):
    x, y = make_digits(n)
    flat = x.reshape(n, 784).astype(np.float32) / 256.0
    labels = y.astype(np.int64)
    return (flat[:30], labels[:30]), (flat[30:], labels[30:]), (flat[:10], labels[:10])


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_tutorial_pickle_loads_exactly(tmp_path, protocol):
    layout = _tutorial_layout()
    ds = data.load_path(_pickle_gz(layout, tmp_path / "mnist.pkl.gz", protocol))
    x, y = make_digits(40)
    # train + valid are the official training set in order: joined back, the pixels are the original uint8
    assert np.array_equal(ds.train.images.numpy(), x) and np.array_equal(ds.train.labels.numpy(), y)
    assert len(ds.test) == 10
    splits = data.split_dataset(ds, 10)
    assert np.array_equal(splits.val.labels.numpy(), layout[1][1])


def test_pickle_of_another_layout_is_refused(tmp_path):
    with pytest.raises(DataError, match="not the tutorial's layout"):
        data.load_path(_pickle_gz({"x": np.zeros(3)}, tmp_path / "a.pkl.gz"))
    with pytest.raises(DataError, match="part 0 is not an .images, labels. pair"):
        data.load_path(_pickle_gz(((1, 2), (3, 4), (5, 6)), tmp_path / "b.pkl.gz"))


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/mnistkit-pwned",))


def test_pickle_that_calls_code_is_refused_without_running_it(tmp_path):
    marker = Path("/tmp/mnistkit-pwned")
    marker.unlink(missing_ok=True)
    with pytest.raises(DataError, match="refusing to load"):
        data.load_path(_pickle_gz(((_Exploit(), np.zeros(1)),), tmp_path / "evil.pkl.gz"))
    assert not marker.exists()


def test_npz_loads_and_checks_its_keys(tmp_path):
    x, y = make_digits(30)
    np.savez(tmp_path / "ok.npz", x_train=x[:20], y_train=y[:20], x_test=x[20:], y_test=y[20:])
    ds = data.load_path(tmp_path / "ok.npz")
    assert len(ds.train) == 20 and len(ds.test) == 10
    assert np.array_equal(ds.test.images.numpy(), x[20:])
    np.savez(tmp_path / "nolabels.npz", x_train=x)
    with pytest.raises(DataError, match="missing array 'y_train'"):
        data.load_path(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "half.npz", x_train=x, y_train=y, x_test=x)
    with pytest.raises(DataError, match="only one of x_test / y_test"):
        data.load_path(tmp_path / "half.npz")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        data.load_path(tmp_path / "bad.npz")


def test_float_images_in_0_1_become_the_original_bytes(tmp_path):
    x, y = make_digits(12)
    np.savez(tmp_path / "f.npz", x_train=x.astype(np.float32) / 255.0, y_train=y)
    assert np.array_equal(data.load_path(tmp_path / "f.npz").train.images.numpy(), x)


# --------------------------------------------------------------------------------------------------
# The bundled MNIST, splits and batches


def test_bundled_mnist_is_the_official_set(mnist):
    assert (len(mnist.train), len(mnist.test)) == (60_000, 10_000)
    assert mnist.checksums == {stem.removesuffix(".gz"): md5 for stem, md5 in catalog.MNIST_MD5.items()}
    assert mnist.train.labels[:8].tolist() == [5, 0, 4, 1, 9, 2, 1, 3]


def test_default_split_is_the_tutorials(mnist):
    splits = data.split_dataset(mnist)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50_000, 10_000, 10_000)
    assert torch.equal(splits.val.images, mnist.train.images[50_000:])
    no_val = data.split_dataset(mnist, 0)
    assert no_val.val is None and len(no_val.train) == 60_000
    with pytest.raises(DataError, match="val_size must be from 0 to 59999"):
        data.split_dataset(mnist, 60_000)


@pytest.mark.skipif(not SHARED_PICKLE.exists(), reason="the shared tutorial pickle is not beside this checkout")
def test_bundled_mnist_equals_the_tutorials_pickle(mnist):
    from mnistkit.tutorial import load_pickle_layout

    ours = load_pickle_layout()
    with gzip.open(SHARED_PICKLE, "rb") as f:
        theirs = data.safe_unpickle(f.read())
    for (x1, y1), (x2, y2) in zip(ours, theirs):
        assert np.array_equal(x1, x2) and np.array_equal(y1, y2)


def test_batches_cover_a_permutation_by_index():
    images = torch.arange(10, dtype=torch.uint8).reshape(10, 1, 1).expand(10, 28, 28).contiguous()
    split = data.Split(images, torch.arange(10))
    norm = data.Normalization(0.0, 1.0, 1.0)
    plain = [y.tolist() for _, y in data.batches(split, 4, norm)]
    assert plain == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    gen = torch.Generator().manual_seed(0)
    shuffled = [y for _, y in data.batches(split, 4, norm, shuffle=True, generator=gen)]
    order = torch.cat(shuffled)
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    for x, y in data.batches(split, 4, norm, shuffle=True, generator=gen):
        assert x.shape == (len(y), 1, 28, 28) and x.dtype == torch.float32
        assert torch.equal(x[:, 0, 0, 0], y.float())  # each image travels with its own label


def test_ranks_take_disjoint_shards_of_the_same_permutation():
    split = data.Split(torch.zeros(10, 28, 28, dtype=torch.uint8), torch.arange(10))
    norm = data.Normalization()
    shards = [
        torch.cat(
            [y for _, y in data.batches(split, 4, norm, True, torch.Generator().manual_seed(3), rank, 2)]
        ).tolist()
        for rank in (0, 1)
    ]
    assert not set(shards[0]) & set(shards[1]) and len(shards[0]) == len(shards[1]) == 5


def test_normalization_matches_its_formula():
    pixels = torch.tensor([[0, 128, 255]], dtype=torch.uint8).expand(28, 3).reshape(1, 28, 3)
    pixels = torch.nn.functional.pad(pixels, (0, 25)).contiguous()
    norm = data.Normalization(0.1307, 0.3081, 255.0)
    expected = (pixels.float() / 255.0 - 0.1307) / 0.3081
    assert torch.allclose(norm.apply(pixels)[:, 0], expected, atol=1e-6)
    tutorial = data.Normalization(0.0, 1.0, 256.0)
    assert torch.allclose(tutorial.apply(pixels)[:, 0], pixels.float() / 256.0)


def test_named_dataset_that_is_unknown_lists_the_known_ones():
    with pytest.raises(DataError, match="fashion-mnist"):
        data.load_dataset(None, "cifar10")


@pytest.mark.parametrize("name", ["MNIST", " mnist", "m_nist"])
def test_mnist_as_the_catalog_spells_it_is_the_bundled_set_not_a_download(monkeypatch, name):
    from mnistkit import download

    def no_download(*args, **kwargs):
        raise AssertionError("MNIST ships with mnistkit: nothing is downloaded")

    monkeypatch.setattr(download, "ensure_dataset", no_download)
    assert len(data.load_dataset(None, name).train) == 60_000


def test_an_empty_data_path_is_refused_not_read_as_this_folder():
    with pytest.raises(DataError, match="^data is empty: give a path"):
        data.load_dataset("")


def test_loading_from_a_folder_holding_one_npz(tmp_path):
    x, y = make_digits(10)
    np.savez(tmp_path / "only.npz", x_train=x, y_train=y)
    assert len(data.load_path(tmp_path).train) == 10


def test_a_copy_of_the_bundled_folder_loads_through_load_path(tmp_path):
    shutil.copytree(catalog.BUNDLED_DIR, tmp_path / "m")
    ds = data.load_path(tmp_path / "m" / "train-images-idx3-ubyte.gz")
    assert (
        len(ds.train) == 60_000
        and ds.checksums["t10k-labels-idx1-ubyte"] == catalog.MNIST_MD5["t10k-labels-idx1-ubyte"]
    )


# --------------------------------------------------------------------------------------------------
# torchvision's folders: root/MNIST/raw, root/FashionMNIST/raw, root/KMNIST/raw


def torchvision_root(root: Path, *folders: str) -> Path:
    """torchvision's layout after a download: each raw folder holds the .gz files and their extracted copies."""
    for i, folder in enumerate(folders):
        raw = write_idx_folder(root / folder / "raw", n_train=30, n_test=10, gz=False, seed=i)
        write_idx_folder(raw, n_train=30, n_test=10, gz=True, seed=i)
    return root


FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
KMNIST = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]


@pytest.mark.parametrize(
    "folder, name, classes",
    [
        ("MNIST", "mnist", [str(d) for d in range(10)]),
        ("FashionMNIST", "fashion-mnist", FASHION),
        ("KMNIST", "kmnist", KMNIST),
    ],
)
def test_torchvision_root_loads_with_the_datasets_class_names(tmp_path, folder, name, classes):
    root = torchvision_root(tmp_path / "root", folder)
    raw = root / folder / "raw"
    for given in (root, root / folder, raw, raw / "train-images-idx3-ubyte"):
        ds = data.load_path(given)
        assert (ds.name, ds.classes, len(ds.train), len(ds.test)) == (name, classes, 30, 10), given
        assert ds.source == str(raw)
    assert data.load_dataset(str(root)).classes == classes  # what --data ROOT reaches


def test_a_root_with_several_torchvision_datasets_asks_for_one(tmp_path):
    root = torchvision_root(tmp_path / "root", "MNIST", "FashionMNIST")
    with pytest.raises(
        DataError, match=r"holds several torchvision datasets; pass one of them: .*MNIST/raw or .*"
    ) as info:
        data.load_path(root)
    assert "\n" not in str(info.value)
    assert data.load_path(root / "FashionMNIST" / "raw").classes == FASHION


def test_a_folder_with_idx_files_of_its_own_is_not_taken_for_a_torchvision_root(tmp_path):
    folder = write_idx_folder(tmp_path / "mine", n_train=20, n_test=5)
    torchvision_root(folder, "FashionMNIST")
    ds = data.load_path(folder)
    assert len(ds.train) == 20 and ds.classes == [str(d) for d in range(10)]


def test_training_on_a_torchvision_fashion_folder_records_the_clothing_names(tmp_path):
    import json

    from mnistkit import runs
    from mnistkit.config import make_config
    from mnistkit.train import train_run

    root = torchvision_root(tmp_path / "root", "FashionMNIST")
    cfg = make_config(model="logreg", epochs=1, val_size=10, data=str(root / "FashionMNIST" / "raw"), batch_size=10)
    run = runs.create_run_dir(tmp_path / "run", cfg.model)
    train_run(cfg, run)
    meta = json.loads((run / "model.json").read_text())
    assert meta["classes"] == FASHION and meta["dataset"]["name"] == "fashion-mnist"


# Sizes declared before memory is allocated; data with nothing to learn


def test_constant_images_are_one_data_error_not_a_division_by_zero():
    split = data.Split(torch.full((5, 28, 28), 9, dtype=torch.uint8), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(DataError, match="pixel standard deviation 0"):
        data.standardization(split)


def test_a_gzip_bomb_is_inflated_only_as_far_as_its_idx_header_declares(tmp_path, monkeypatch):
    import zlib

    images = np.zeros((20, 28, 28), np.uint8)
    declared = len(idx_bytes(images))
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    stream = packer.compress(idx_bytes(images)) + packer.compress(bytes(32 << 20)) + packer.flush()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(stream)
    inflated = []
    read = gzip.GzipFile.read

    def counting_read(self, size=-1):
        chunk = read(self, size)
        inflated.append(len(chunk))
        return chunk

    monkeypatch.setattr(gzip.GzipFile, "read", counting_read)
    with pytest.raises(DataError, match=f"decompresses to more than the {declared:,} bytes its IDX header declares"):
        idx.read_idx(tmp_path / "train-images-idx3-ubyte.gz")
    assert 0 < sum(inflated) <= declared + 1  # not the 32 MiB that follow


def test_a_gzipped_idx_header_declaring_more_than_the_limit_is_refused_before_inflating(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, 60000, 28 * 1000, 28)))
    with pytest.raises(DataError, match="its IDX header declares 47,040,000,016 bytes, more than the 1,073,741,824"):
        idx.read_idx(path)


def test_an_npz_array_claiming_more_than_its_entry_holds_is_refused_before_numpy_allocates(tmp_path, monkeypatch):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**9, 784)})
    with zipfile.ZipFile(tmp_path / "d.npz", "w") as archive:
        archive.writestr("x_train.npy", header.getvalue() + bytes(64))
        archive.writestr("y_train.npy", header.getvalue() + bytes(64))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail("np.load must not be reached"))
    with pytest.raises(DataError, match=r"array 'x_train' claims shape \(1000000000, 784\)"):
        data.load_npz(tmp_path / "d.npz")


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_data_path_that_is_not_a_regular_file_is_refused_without_reading(tmp_path, kind):
    path = tmp_path / "d.npz"
    if kind == "fifo":
        os.mkfifo(path)  # nothing writes to it: a blocking read would hang here
    else:
        path.symlink_to("/dev/zero")  # endless: reading it would exhaust memory
    with pytest.raises(DataError, match="not a regular file"):
        data.load_path(path)


def test_load_data_names_arguments_of_the_wrong_type():
    wrong = [((None,), {}, "dataset must be"), ((5,), {}, "dataset must be")]
    wrong.append((("mnist",), {"data": b"x.npz"}, "data must be a path"))
    for args, kwargs, said in wrong:
        with pytest.raises(DataError, match=said):
            data.load_data(*args, **kwargs)
