"""Turning a real photo or drawing into what MNIST looks like, the way MNIST itself was made.

MNIST digits are white ink on black, the ink's bounding box scaled (anti-aliased, aspect kept) so its
longest side is 20 pixels, then pasted into 28×28 so that the ink's centre of mass sits at the centre.
``to_mnist`` does the same to any image: EXIF orientation applied, alpha composited on white, grayscale,
dark-on-light detected and inverted, paper texture and noise suppressed with an Otsu threshold, crop,
scale, centre. A 28×28 image that already looks like MNIST (dark background) passes through unchanged.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import fileio
from .errors import MnistkitError

MAX_PIXELS = 25_000_000  # refuse larger images before decoding them (decompression bombs)
MIN_SIDE = 8  # smaller images hold too little to be a digit
WORK_SIDE = 512  # larger images are reduced to this first: 20 px of output need no more detail
DIGIT_BOX = 20
CANVAS = 28
MIN_CONTRAST = 24  # gray levels between paper and ink below which an image is taken as blank
HIGH_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # 16-bit and float grayscale

ImageInput = str | Path | Image.Image | np.ndarray


class ImageError(MnistkitError):
    """An image cannot be used: unreadable, not an image, too small or large, or holding no ink."""


def to_mnist(item: ImageInput) -> np.ndarray:
    """Any image (path, PIL image or array) -> uint8 (28, 28), white ink on black, centred by mass.

    Raises ``ImageError`` whose message starts with the file (or "image", "array") it is about.
    """
    gray = _grayscale(item)
    try:
        if gray.shape == (CANVAS, CANVAS) and _border_level(gray) < 128:
            if int(gray.max()) - np.median(gray) < MIN_CONTRAST:
                raise ImageError("no ink found: the image is blank or has too little contrast")
            return gray  # already MNIST-like: the model sees exactly what it was given
        return center_digit(_ink(gray))
    except ImageError as exc:
        raise ImageError(f"{_where(item)}: {exc}") from None


def load_image(path: str | Path) -> Image.Image:
    """Open and decode an image file with Pillow, refusing non-images, corrupt files and decompression bombs.

    Close the image when done (``with load_image(path) as image:``): a multi-frame file stays open.
    """
    path = Path(path).expanduser()
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own (larger) pixel limit, whereas ours is checked below with a clearer
            # message, and about malformed metadata (EXIF), which is skipped: nothing a user can act on.
            warnings.simplefilter("ignore")
            image = Image.open(path)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{path}: is a folder, expected an image file") from None
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP, …)") from None
    except Image.DecompressionBombError:
        raise ImageError(
            f"{path}: image is too large (limit {MAX_PIXELS / 1e6:.0f} megapixels); scale it down"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{path}: cannot read the image ({exc})") from None
    try:
        _check_size(image.size, str(path))  # from the header, before the pixels are decoded
        # A JPEG can decode straight to a reduced size: a phone photo then costs a fraction of the time and memory.
        image.draft(None, (WORK_SIDE, WORK_SIDE))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        image.close()
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from None
    except ImageError:
        image.close()
        raise
    return image


def _check_size(size: tuple[int, int], where: str) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{where}: image of {width}×{height} pixels is too large (limit {MAX_PIXELS / 1e6:.0f} megapixels); "
            "scale it down"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageError(
            f"{where}: image of {width}×{height} pixels is too small to hold a digit (at least {MIN_SIDE}×{MIN_SIDE})"
        )


def _where(item: ImageInput) -> str:
    """How error messages name an input."""
    if isinstance(item, (str, Path)):
        return str(Path(item).expanduser())
    return "array" if isinstance(item, np.ndarray) else "image"


def _grayscale(item: ImageInput) -> np.ndarray:
    """Any input -> uint8 (H, W) grayscale with the EXIF orientation applied and alpha resolved."""
    where = _where(item)
    if isinstance(item, (str, Path)):
        with load_image(item) as image:
            return _upright_gray(image, where)
    if isinstance(item, Image.Image):
        _check_size(item.size, where)
        return _upright_gray(item, where)
    if isinstance(item, np.ndarray):
        return _upright_gray(_array_to_image(item), where)
    raise ImageError(f"cannot read a {type(item).__name__} as an image; pass a file path, a PIL image or a NumPy array")


def _upright_gray(image: Image.Image, where: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # malformed EXIF is skipped, with a warning no one can act on
            image = ImageOps.exif_transpose(image) or image
        if image.mode in HIGH_DEPTH_MODES:  # to 8 bits first: Pillow's reduce step refuses 16-bit and float modes
            image = Image.fromarray(_eight_bit(image))
        if max(image.size) > WORK_SIDE:
            image = image.copy()
            image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
        return _flatten_alpha(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ImageError(f"{where}: cannot convert the image ({exc})") from None


def _array_to_image(a: np.ndarray) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255  # a mask: True is ink (or paper; the polarity is detected later)
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))):
        raise ImageError(f"array: expected (H, W) grayscale or (H, W, 3|4) colour, got shape {a.shape}")
    if a.dtype.kind == "f":
        if a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 1):
            raise ImageError("array: float pixels must lie in [0, 1]")
        a = np.round(a * 255)
    elif a.dtype.kind not in "iub" or (a.size and (a.min() < 0 or a.max() > 255)):
        raise ImageError("array: pixels must be integers in 0..255 or floats in [0, 1]")
    _check_size((a.shape[1], a.shape[0]), "array")
    return Image.fromarray(a.astype(np.uint8))


def _flatten_alpha(image: Image.Image) -> np.ndarray:
    """Composite transparency on white; where that leaves nothing to see (light ink on a transparent
    canvas), the alpha channel itself is the ink."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"))
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        gray = np.asarray(Image.alpha_composite(white, rgba).convert("L"))
        if np.ptp(gray) < MIN_CONTRAST and np.ptp(alpha) >= MIN_CONTRAST:
            return 255 - alpha  # dark-on-light, as a drawing on paper would be
        return gray
    return np.asarray(image.convert("L"))


def _eight_bit(image: Image.Image) -> np.ndarray:
    """16-bit or float grayscale -> uint8, scaled (Pillow's own conversion clips everything above 255 to white)."""
    a = np.asarray(image, dtype=np.float64)
    if image.mode == "F" and a.size and a.max() <= 1.0:
        full = 1.0  # float pixels in [0, 1]
    elif image.mode.startswith("I;16") or (a.size and a.max() > 255):
        full = 65535.0
    else:
        full = 255.0
    return np.clip(np.round(np.nan_to_num(a) * (255.0 / full)), 0, 255).astype(np.uint8)


def _border_level(gray: np.ndarray) -> float:
    """The median gray level of the outermost pixels: the paper (or screen) the digit is on."""
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    return float(np.median(border))


def otsu_threshold(gray: np.ndarray) -> int:
    """The gray level that best splits uint8 ``gray`` into two classes (Otsu's method): ``gray > t`` is one."""
    return _otsu(np.bincount(gray.ravel(), minlength=256))


def _otsu(hist: np.ndarray) -> int:
    hist = hist.astype(np.float64)
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * np.arange(256))
    mean0 = sum0 / np.maximum(weight0, 1)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1)
    return int(np.argmax(weight0 * weight1 * (mean0 - mean1) ** 2))


def _quantile(hist: np.ndarray, q: float) -> int:
    """The q-quantile of the gray levels counted in ``hist`` (its index)."""
    return int(np.searchsorted(np.cumsum(hist), q * hist.sum()))


def _ink(gray: np.ndarray) -> np.ndarray:
    """uint8 (H, W) with ink bright on a zero background: inverted if dark-on-light, noise and texture removed.

    Otsu's threshold splits ink from paper. Paper (texture, shadows, JPEG noise) becomes zero; the ink mask,
    grown by one pixel to keep the anti-aliased edge of each stroke, keeps its gray levels above the paper's,
    stretched so that solid strokes are white as in MNIST. Raises ``ImageError`` when the two classes' medians
    differ by less than ``MIN_CONTRAST`` gray levels: a blank page, or only noise.
    """
    if _border_level(gray) >= 128:
        gray = 255 - gray
    hist = np.bincount(gray.ravel(), minlength=256)
    threshold = _otsu(hist)
    paper_hist, ink_hist = hist[: threshold + 1], hist[threshold + 1 :]
    if not paper_hist.any() or not ink_hist.any():
        raise ImageError("no ink found: the image is blank")
    paper = _quantile(paper_hist, 0.5)
    if threshold + 1 + _quantile(ink_hist, 0.5) - paper < MIN_CONTRAST:
        raise ImageError("no ink found: the image is blank or has too little contrast")
    solid = threshold + 1 + _quantile(ink_hist, 0.99)  # not the maximum: one hot pixel must not dim every stroke
    mask = _grow(gray > threshold)
    ink = np.where(mask, (gray - np.float32(paper)) * np.float32(255.0 / max(1, solid - paper)), np.float32(0))
    return np.clip(np.round(ink), 0, 255).astype(np.uint8)


def _grow(mask: np.ndarray) -> np.ndarray:
    """The mask dilated by one pixel in every direction (a 3×3 square)."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    grown = rows.copy()
    grown[:, 1:] |= rows[:, :-1]
    grown[:, :-1] |= rows[:, 1:]
    return grown


def center_digit(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, scale the longest side to 20 px (aspect kept, anti-aliased), and paste into 28×28
    with the centre of mass at the centre."""
    rows = np.flatnonzero(ink.any(axis=1))
    cols = np.flatnonzero(ink.any(axis=0))
    if len(rows) == 0:
        raise ImageError("no ink found: the image is blank")
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    scale = DIGIT_BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    digit = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS), dtype=np.float64)
    if digit.sum() == 0:
        raise ImageError("no ink found: the marks are too faint or too small")
    ys, xs = np.indices(digit.shape)
    total = digit.sum()
    cy, cx = (ys * digit).sum() / total, (xs * digit).sum() / total
    dh, dw = digit.shape
    # Place the centre of mass at (14, 14) in pixel indices, where MNIST's own digits have it (their mean
    # over the test set is 13.99, 14.01), keeping the whole digit inside the canvas.
    top = int(np.clip(round(CANVAS / 2 - cy), 0, CANVAS - dh))
    left = int(np.clip(round(CANVAS / 2 - cx), 0, CANVAS - dw))
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
    canvas[top : top + dh, left : left + dw] = np.clip(np.round(digit), 0, 255).astype(np.uint8)
    return canvas


def save_input(array: np.ndarray, path: str | Path, scale: int = 10) -> Path:
    """Save the 28×28 image a model saw as a PNG enlarged ``scale`` times (sharp pixels), atomically."""
    path = Path(path)
    image = Image.fromarray(np.asarray(array, dtype=np.uint8)).resize(
        (CANVAS * scale, CANVAS * scale), Image.Resampling.NEAREST
    )
    with fileio.atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
