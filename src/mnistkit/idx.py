"""The IDX file format MNIST ships in: reading (raw or gzipped, size-capped), writing, and finding the files.

A data file, and what it decompresses to, is capped at ``MAX_FILE_BYTES``, so a forged header or a gzip bomb
costs no more memory than real data would.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from . import fileio
from .errors import DataError

MAX_FILE_BYTES = 1 << 30  # a data file, and what it decompresses to: 1.3 million 28×28 images as uint8
GUNZIP_CHUNK = 1 << 22
MAX_DIMENSIONS = 4  # images have 3, labels 1; NumPy takes no more than 64, and the message would list them all
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_data_file(path: Path, idx: bool = True) -> bytes:
    """The bytes of a data file (an IDX file unless ``idx`` is False), gunzipped if it is gzipped.

    Only a regular file of at most ``MAX_FILE_BYTES`` is read. Decompression stops one byte past the size an IDX
    header declares (``MAX_FILE_BYTES`` for other files), so a gzip bomb costs no more than the file it claims to be.
    """
    try:
        raw = fileio.read_regular(path, MAX_FILE_BYTES)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, expected a file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return _gunzip(raw, str(path), idx) if raw[:2] == b"\x1f\x8b" else raw


def encode_idx(array: np.ndarray) -> bytes:
    """A uint8 array as an IDX file (the inverse of ``parse_idx``)."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _gunzip(raw: bytes, name: str, idx: bool) -> bytes:
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            head = f.read(4 + 4 * 255) if idx else b""  # the longest IDX header: 255 dimensions
            limit = sum(_idx_header(head, name)[2:]) if idx else MAX_FILE_BYTES
            if limit > MAX_FILE_BYTES:
                raise DataError(
                    f"{name}: its IDX header declares {limit:,} bytes, "
                    f"more than the {MAX_FILE_BYTES:,} a data file may hold"
                )
            # In chunks, so memory follows the data rather than the declaration; one byte past the limit
            # tells a longer stream.
            chunks, size = [head], len(head)
            while size <= limit and (chunk := f.read(min(GUNZIP_CHUNK, limit + 1 - size))):
                chunks.append(chunk)
                size += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: corrupt gzip file ({exc}); download it again") from None
    data = b"".join(chunks)
    if len(data) > limit:
        declared = "its IDX header declares" if idx else "a data file may hold"
        raise DataError(f"{name}: decompresses to more than the {limit:,} bytes {declared}")
    return data


def _idx_header(raw: bytes, name: str) -> tuple[tuple[int, ...], np.dtype, int, int]:
    """The dimensions, element type, header length and data length of IDX bytes, as their header declares."""
    if len(raw) < 4:
        raise DataError(f"{name}: truncated IDX file ({len(raw)} bytes, no header)")
    zero1, zero2, code, ndim = raw[0], raw[1], raw[2], raw[3]
    if zero1 != 0 or zero2 != 0 or code not in IDX_DTYPES or ndim == 0:
        raise DataError(
            f"{name}: not an IDX file (magic number 0x{raw[:4].hex()}; expected 0x00000801 for labels "
            "or 0x00000803 for images)"
        )
    if ndim > MAX_DIMENSIONS:
        raise DataError(
            f"{name}: an IDX header declaring {ndim} dimensions; images have 3 (count, height, width) and labels 1"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{name}: truncated IDX file (header cut short)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    return dims, dtype, header, math.prod(dims) * dtype.itemsize  # Python ints: huge dimensions must not wrap around


def parse_idx(raw: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode the bytes of one IDX file, checking its magic number, dimensions and length."""
    dims, dtype, header, expected = _idx_header(raw, name)
    body = len(raw) - header
    if body < expected:
        raise DataError(f"{name}: truncated IDX file ({body} data bytes, dimensions {dims} need {expected})")
    if body > expected:
        raise DataError(f"{name}: IDX file has {body - expected} bytes beyond its dimensions {dims}")
    try:
        return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    except ValueError:  # an empty body beside dimensions too large for NumPy to describe
        raise DataError(f"{name}: IDX dimensions {dims} are too large to be real data") from None


def read_idx(path: str | Path) -> tuple[np.ndarray, str]:
    """Read an IDX file (raw or gzipped). Returns the array and the MD5 of its uncompressed bytes."""
    path = Path(path)
    raw = read_data_file(path)
    return parse_idx(raw, str(path)), hashlib.md5(raw).hexdigest()


def idx_role(name: str) -> tuple[str, str] | None:
    """(train|test, images|labels) as a file's name tells it, such as t10k-labels-idx1-ubyte; None if it does not."""
    lower = name.lower()
    part = "train" if "train" in lower else "test" if ("t10k" in lower or "test" in lower) else None
    kind = (
        "images"
        if ("images" in lower or "idx3" in lower)
        else "labels"
        if ("labels" in lower or "idx1" in lower)
        else None
    )
    return (part, kind) if part and kind else None


def find_idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """Map (train|test, images|labels) to the IDX files in ``folder``; raw files win over gzipped twins."""
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.iterdir(), key=lambda p: (p.name.endswith(".gz"), p.name)):
        role = idx_role(path.name)
        # Hidden files are skipped: an interrupted atomic write can leave a ".name.tmp" behind.
        if (
            role
            and not path.name.startswith(".")
            and path.is_file()
            and "ubyte" in path.name.lower()
            and role not in found
        ):
            found[role] = path
    return found


def md5_of(path: str | Path) -> str:
    """The MD5 of a data file's uncompressed bytes (the same whether it is stored raw or gzipped)."""
    return hashlib.md5(read_data_file(Path(path))).hexdigest()
