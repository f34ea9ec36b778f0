"""Fuzzing the readers of untrusted files (IDX, .npz, the tutorial's pickle) with hypothesis: any bytes give
data or mnistkit's own DataError, never another exception or a hang; a pickle that tries to call anything is
refused without running it. Bounded (a few hundred examples, a deadline each) so the suite stays fast;
fuzz/fuzz_readers.py runs the same targets open-ended under atheris."""

from __future__ import annotations

import builtins
import gzip
import io
import os
import pickle
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnistkit import data, idx
from mnistkit.errors import DataError

FUZZ = settings(
    max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def data_or_data_error(read, *args) -> object:
    """Call a reader: it may return anything or raise DataError; any other exception fails the test."""
    try:
        return read(*args)
    except DataError as exc:
        assert str(exc), "a DataError must say what is wrong"
        return exc


# --------------------------------------------------------------------------------------------------
# IDX


def idx_header(code: int, dims: list[int]) -> bytes:
    return struct.pack(">BBBB", 0, 0, code, len(dims)) + struct.pack(f">{len(dims)}I", *dims)


@FUZZ
@given(st.binary(max_size=4096))
def test_any_bytes_parse_as_idx_or_raise_data_error(raw):
    result = data_or_data_error(idx.parse_idx, raw)
    if isinstance(result, np.ndarray):
        assert raw[:2] == b"\x00\x00"


@FUZZ
@given(
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0x07, 0xFF]),
    dims=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 40), min_size=0, max_size=5),
    body=st.binary(max_size=2048),
)
def test_idx_headers_with_any_dimensions_never_crash_or_allocate_wildly(code, dims, body):
    """Well-formed headers claiming absurd sizes (up to 2**32 per dimension) must not try to allocate them."""
    result = data_or_data_error(idx.parse_idx, idx_header(code, dims) + body)
    if isinstance(result, np.ndarray):
        assert list(result.shape) == dims and result.nbytes == len(body)


@pytest.mark.parametrize("dims", [[65536] * 4, [2**31, 2**31, 4]])
def test_idx_dimensions_whose_product_wraps_around_int64_are_a_data_error(dims):
    """Found by fuzzing: sized with int64, these products wrapped to 0 and matched an empty body."""
    with pytest.raises(DataError, match="truncated IDX file"):
        idx.parse_idx(idx_header(0x08, dims))


@pytest.mark.parametrize("dims", [[0x11000000, 0, 0x05110000, 0, 0x4000], [0, 55056, 55108, 55111, 55161]])
def test_an_empty_idx_with_impossible_other_dimensions_is_a_data_error(dims):
    """Found by fuzzing (atheris the first, hypothesis the second)."""
    with pytest.raises(DataError):
        idx.parse_idx(idx_header(0x08, dims))


@FUZZ
@given(st.binary(max_size=2048), st.booleans())
def test_any_file_is_read_as_idx_or_data_error(tmp_path_factory, raw, gzipped):
    path = tmp_path_factory.mktemp("idx") / "train-images-idx3-ubyte.gz"
    path.write_bytes(b"\x1f\x8b" + raw if gzipped else raw)
    data_or_data_error(idx.read_idx, path)


@FUZZ
@given(st.binary(max_size=512))
def test_a_gzip_of_any_bytes_is_read_as_idx_or_data_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("idx") / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(raw))
    data_or_data_error(idx.read_idx, path)


@FUZZ
@given(
    dims=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 40), min_size=1, max_size=4),
    extra=st.integers(0, 1 << 16),
    cut=st.integers(0, 64),
)
def test_a_gzipped_idx_of_any_declared_size_inflates_no_further_than_declared(tmp_path_factory, dims, extra, cut):
    """Headers declaring any size, then a stream shorter or longer than declared: the data or one DataError,
    never a MemoryError (the reader inflates no further than the header declares, at most 1 GiB)."""
    declared = 4 + 4 * len(dims) + np.prod(dims, dtype=object)
    body = bytes(max(0, min(declared, 1 << 16) - 4 - 4 * len(dims) - cut) + extra)
    path = tmp_path_factory.mktemp("idx") / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header(0x08, dims) + body, compresslevel=1))
    data_or_data_error(idx.read_idx, path)


# --------------------------------------------------------------------------------------------------
# .npz


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


VALID_NPZ = npz_bytes(
    {
        "x_train": np.zeros((4, 28, 28), np.uint8),
        "y_train": np.arange(4),
        "x_test": np.zeros((2, 784), np.uint8),
        "y_test": np.arange(2),
    }
)


@FUZZ
@given(st.binary(max_size=4096))
def test_any_bytes_load_as_npz_or_raise_data_error(tmp_path_factory, raw):
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    path.write_bytes(raw)
    data_or_data_error(data.load_npz, path)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(VALID_NPZ) - 1), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, len(VALID_NPZ)),
)
def test_a_mutated_or_cut_npz_loads_or_raises_data_error(tmp_path_factory, flips, cut):
    raw = bytearray(VALID_NPZ)
    for offset, value in flips:
        raw[offset] = value
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    path.write_bytes(bytes(raw[: max(cut, 1)]))
    data_or_data_error(data.load_npz, path)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["x_train", "y_train", "x_test", "y_test", "other"]),
        st.sampled_from(
            [
                np.zeros((3, 28, 28), np.uint8),
                np.full((3, 28, 28), 300, np.int32),
                np.zeros((3, 5)),
                np.array([0, 1, 2]),
                np.array([1.5, 2, 3]),
                np.array([-1, 0, 99]),
                np.array(["a", "b", "c"]),
                np.zeros((0, 28, 28), np.float32),
                np.full((3, 784), np.nan),
                np.array([[1], [2], [3]]),
            ]
        ),
        max_size=5,
    )
)
def test_npz_with_any_arrays_loads_or_raises_data_error(tmp_path_factory, arrays):
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    path.write_bytes(npz_bytes(arrays))
    data_or_data_error(data.load_npz, path)


@FUZZ
@given(
    shape=st.lists(st.integers(0, 2**40) | st.integers(0, 30), max_size=4),
    dtype=st.sampled_from(["|u1", "<f4", "<f8", ">i8"]),
    stored=st.integers(0, 4096),
)
def test_npz_headers_claiming_any_shape_never_make_numpy_allocate_it(tmp_path_factory, shape, dtype, stored):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": dtype, "fortran_order": False, "shape": tuple(shape)})
    path = tmp_path_factory.mktemp("npz") / "d.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x_train.npy", header.getvalue() + bytes(stored))
        archive.writestr("y_train.npy", npz_member(np.arange(4)))
    data_or_data_error(data.load_npz, path)


def npz_member(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_an_npz_holding_a_pickled_object_array_is_refused_unopened(tmp_path):
    path = tmp_path / "d.npz"
    marker = tmp_path / "ran"
    with zipfile.ZipFile(path, "w") as archive:
        header = (
            b"\x93NUMPY\x01\x00" + b"v\x00{'descr': '|O', 'fortran_order': False, 'shape': (1,), }".ljust(118) + b"\n"
        )
        archive.writestr("x_train.npy", header + pickle.dumps([Payload(f"touch {marker}")]))
    with pytest.raises(DataError, match="not a readable .npz"):
        data.load_npz(path)
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------
# The tutorial's pickle


class Payload:
    """Pickles to a call of ``function(argument)`` when unpickled: the classic pickle exploit."""

    def __init__(self, argument: str, function=os.system):
        self.argument, self.function = argument, function

    def __reduce__(self):
        return (self.function, (self.argument,))


@FUZZ
@given(st.binary(max_size=2048))
def test_any_bytes_unpickle_safely_or_raise_data_error(raw):
    data_or_data_error(data.safe_unpickle, raw)


@FUZZ
@given(st.binary(max_size=1024), st.booleans())
def test_any_file_loads_as_the_tutorial_pickle_or_data_error(tmp_path_factory, raw, gzipped):
    path = tmp_path_factory.mktemp("pkl") / "mnist.pkl.gz"
    path.write_bytes(gzip.compress(raw) if gzipped else raw)
    data_or_data_error(data.load_pickle, path)


@FUZZ
@given(
    st.text("abcdefghijklmnopqrstuvwxyz_.", min_size=1, max_size=20),
    st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=20),
    st.integers(0, 5),
)
def test_a_pickle_naming_any_global_outside_the_allowlist_is_refused(module, name, protocol):
    raw = b"\x80" + bytes([max(protocol, 2)]) + b"c" + module.encode() + b"\n" + name.encode() + b"\n)R."
    if (module, name) in data.ArrayOnlyUnpickler.ALLOWED:
        return
    with pytest.raises(DataError):
        data.safe_unpickle(raw)


@pytest.mark.parametrize("raw", [b"]r\n1\n1\n\n", b"\x80\x02]r\xff\xff\xff\x7f."], ids=["13 GB", "32 GB"])
def test_a_tiny_pickle_cannot_make_the_reader_allocate_gigabytes(raw):
    """Run with the address space capped at 1 GiB, so a failure is a MemoryError here, not a machine out of memory."""
    import sys

    probe = (
        "import resource; resource.setrlimit(resource.RLIMIT_AS, (2**30, 2**30)); from mnistkit import data\n"
        f"try:\n    print('loaded', data.safe_unpickle({raw!r}))\nexcept data.DataError as exc:\n    print(exc)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip(), done.stderr
    assert "MemoryError" not in done.stdout, done.stdout


def attacks(marker: Path) -> dict[str, bytes]:
    command = f"touch {marker}"
    code = f"open({str(marker)!r}, 'w')"
    found = {}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        found[f"os.system, protocol {protocol}"] = pickle.dumps(Payload(command), protocol=protocol)
        found[f"eval, protocol {protocol}"] = pickle.dumps(Payload(code, builtins.eval), protocol=protocol)
    found["exec"] = pickle.dumps(Payload(code, builtins.exec))
    found["subprocess.call"] = pickle.dumps(Payload(command, subprocess.getoutput))
    found["INST opcode"] = f"(S'{command}'\nios\nsystem\n.".encode()
    found["OBJ opcode"] = b"(cos\nsystem\nS'" + command.encode() + b"'\no."
    found["STACK_GLOBAL"] = (
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c"
        + bytes([len(command)])
        + command.encode()
        + b"\x94\x85\x94R\x94."
    )
    # An attack hidden inside the tutorial's layout, next to real arrays.
    found["inside the dataset tuple"] = pickle.dumps(
        ((np.zeros((2, 784), np.float32), Payload(command)), (np.zeros(1), np.zeros(1)))
    )
    return found


def test_a_pickle_that_calls_anything_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    for name, raw in attacks(marker).items():
        with pytest.raises(DataError, match="refusing to load|unsafe or invalid pickle"):
            data.safe_unpickle(raw)
        path = tmp_path / "mnist.pkl.gz"
        path.write_bytes(gzip.compress(raw))
        with pytest.raises(DataError):
            data.load_pickle(path)
        assert not marker.exists(), f"the {name} payload ran"
    # The same payload through plain pickle does run: the test would notice.
    pickle.loads(attacks(marker)["os.system, protocol 4"])
    assert marker.exists()
