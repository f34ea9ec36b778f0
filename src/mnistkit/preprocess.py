"""Turning a real photo or drawing into what MNIST looks like, the way MNIST itself was made.

MNIST digits are white ink on black, the ink's bounding box scaled (anti-aliased, aspect kept) so its
longest side is 20 pixels, then pasted into 28×28 so that the ink's centre of mass sits at the centre.
``to_mnist`` does the same to any image: EXIF orientation applied, alpha composited on white, grayscale,
a darker desk around the page made paper, dark-on-light detected and inverted, a small scan or crop framed
with paper (and given a digit's proportions back where it was stretched to fill a square), the paper's light
(shadows, gradients) and a notebook's lines taken off, paper texture and noise suppressed with an Otsu
threshold, crop, the pen's width brought to MNIST's, scale, centre. A 28×28 image that already looks like
MNIST (a dark border) passes through unchanged. docs/handwriting.md walks through each step.
"""

from __future__ import annotations

import io
import math
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps, PngImagePlugin, UnidentifiedImageError

from . import fileio
from .errors import MnistkitError

MAX_PIXELS = 25_000_000  # refuse larger images before decoding them (decompression bombs)
# Pillow reads EPS by running Ghostscript on it: PostScript is a program, and an image from elsewhere must run none.
UNSAFE_FORMATS = frozenset({"EPS"})
MAX_PIPE_BYTES = 256 << 20  # read from a pipe, whole: more than a 25-megapixel image takes in any format
MIN_SIDE = 8  # images shorter than this on their longer side hold too little to be a digit
MIN_THICKNESS = 2  # on their shorter side: a 1 cropped to its ink may be a few pixels wide
WORK_SIDE = 512  # larger images are reduced to this first: 20 px of output need no more detail
DIGIT_BOX = 20
CANVAS = 28
FLAT_SIZE = CANVAS * CANVAS  # one 28×28 image as a row, as MNIST's CSV and OpenML copies hold it
MIN_CONTRAST = 24  # gray levels between paper and ink below which an image is taken as blank
NOISE_MARGIN = 4  # ink must also stand this many of the paper's noise standard deviations above it
EXTREME_PIXELS = 10  # the darkest and brightest pixels but this many: the ink's extremes, past a stray one
ISLAND_GAP = 0.05  # marks this far (of the image's side) from the rest of the ink, and
ISLAND_MASS = 0.1  # holding less than this share of it, are specks, not part of the digit
EDGE_PART = 0.75  # a neighbour's part cut by the image's edge is at most this share of the digit's width
SHADOW_BORDER = 0.02  # ink measured against flat paper on more of the border than this is a shadow
BOLD_GROWTH = 4  # times the ink found without a frame, at most, that the frame may find
BOLD_FOUND = 0.8  # of the marks a bold crop's ink must hold, found with paper around it: less, and not strokes
BACKGROUND_WINDOW = 0.26  # of the image's side: wider than any stroke, narrower than most shadows
BORDER_STEP = 3  # pixels of the reduced image within which a level change along the border is sharp
BACKGROUND_SIDE = 48  # the paper's light is estimated on the image reduced to about this many pixels a side
# Below Otsu's threshold, pixels at least this share of the way from the paper to it are ink where they join the ink
# (within this share of the image's longer side): a blurred stroke's faint side, the thin end of a loop.
FAINT_INK = 0.3
FAINT_REACH = 0.1
RULE_STEP = 4  # a notebook's lines are sampled at every this many pixels along them
# A band of lines across the whole image, wider than this share of their length, with a line whose median is at
# least this share of the ink's level, is a stroke of a digit cropped tight (a 1's upright, a 7's bar: a tenth of
# the digit's height or more), not a notebook's line (under 1% of the page) nor the faint rest of a shadow.
RULE_MAX_WIDTH = 0.025
STROKE_LEVEL = 0.6
# A box printed or drawn around the digit (a form's field, a grid's cell): each side a straight line, at least
# this share of its pixels ink (a rounded box's corners leave the rest), at most this share of the box's side thick.
BOX_LINE = 0.7
BOX_MAX_THICKNESS = 0.15
BOX_CONTENT = 0.03  # a box holds a digit: what is left once its lines are cleared is at least this share of the ink
BOX_EDGE = 0.02  # an image cropped at a box: the line lies within this share of its side from each edge
# A line under the digit drawn by hand or photographed askew: its lowest edge may rise or fall this much a pixel
# (about 8.5°), and stray from a straight line by this share of its length (2 px at least).
UNDERLINE_TILT = 0.15
UNDERLINE_WOBBLE = 0.02
# A band along an edge of the image (a scanner's lid, the table past the page), cut off by ``_without_edge_bands``:
# each of its lines far from the paper on this share of it or more, at most BAND_DEPTH of the side deep, its soft
# edge at most BAND_EDGE further; the outermost BAND_GAP of every other edge must be paper.
BAND_DARK = 0.8
BAND_DEPTH = 0.25
BAND_EDGE = 0.04
BAND_GAP = 0.02
# A page (a note) lying on a darker desk, the desk made paper by ``_without_desk``: the page's light pixels, holes
# filled, are at least PAGE_AREA of the image and PAGE_CONVEX of their convex hull; what they enclose (the ink) is
# at most PAGE_MARKS of the page, and thin beside it (PAGE_STROKES); the desk is at least 2 * MIN_CONTRAST darker.
# PAGE_SEAM of the side (at least 2 px) along the page's edge is made paper too: the edge is soft, and a dark seam
# left there would be ink.
PAGE_AREA = 0.15
PAGE_BORDER = 0.9  # of the border as light as the page, at most: the desk shows along the rest
PAGE_CONVEX = 0.9
PAGE_MARKS = 0.35
PAGE_MARKS_MIN = 0.001  # a page holding fewer marks holds no digit: the dark around it may be the ink
PAGE_SEAM = 0.01
PAGE_DESK_MARKS = 0.002  # of the desk's pixels far from its level: more, and it holds something not to lose
PAGE_STROKES = 3  # the page is at least this many times as thick as the thickest of its marks
# A pattern printed on the paper (a dot grid), taken off by ``_without_pattern``: the ink's box is at least
# PATTERN_SPREAD of the image and at most PATTERN_SPARSE ink; at least PATTERN_MARKS marks are each smaller than
# PATTERN_MARK of the largest.
PATTERN_SPREAD = 0.5
PATTERN_SPARSE = 0.3
PATTERN_MARKS = 20
PATTERN_MARK = 0.02
SMALL_SIDE = 64  # images no larger are scans or crops, not photos: no light to even out, ink may touch the edge
SMALL_WORK = 32  # a small image is enlarged to at least this many pixels a side, and framed with paper
DOT_RADIUS = 2  # a 1-bit scan larger than SMALL_SIDE is averaged over squares this far each way: dithering's grey
SMALL_FRAME = 0.25  # of its side on every edge
# A digit stretched to fill a square box (as Semeion's scans are) is given back this width over its height:
# nearer a 1's 0.4 than the 0.8 of most of MNIST's digits: a narrowed 0 still reads as a 0, a widened 1 as a 4 or a 7.
STRETCHED_ASPECT = 0.5
STROKE_BOX = 80  # pen widths are measured and changed with the digit's longest side at this many pixels
# MNIST's pen widths at the 20-px scale (``stroke_width``): the 20th and 80th percentiles of its training digits.
MNIST_STROKE = (1.97, 2.88)
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
        if _in_mnist_form(gray):
            if not has_ink(gray):
                raise ImageError("no ink found: the image is blank or has too little contrast")
            return gray  # already MNIST-like: the model sees exactly what it was given
        page = _paper_around_box(_without_edge_bands(_without_desk(gray)))
        return center_digit(normalize_stroke(_without_underline(_without_box(_ink(page)))))
    except ImageError as exc:
        raise ImageError(f"{_where(item)}: {exc}") from None


def has_ink(gray: np.ndarray) -> bool:
    """Whether an image in MNIST's form (white ink on black, 28×28) holds ink: a pixel ``MIN_CONTRAST`` gray levels
    above the median, which is the background."""
    return bool(int(gray.max()) - np.median(gray) >= MIN_CONTRAST)


def _without_desk(gray: np.ndarray) -> np.ndarray:
    """``gray`` with the desk around a page made paper: a photo of a note or a sheet lying on a darker desk, the
    page not filling the frame. Left on, the desk is the border, which then tells the ink's polarity wrong, and the
    page's edges are strokes. The page is the largest connected region above Otsu's threshold, its holes (the ink)
    filled; it must be large, nearly convex (a sheet, seen at an angle too) and mostly paper, and what lies around
    it far darker (``PAGE_*``). Each pixel around it takes the level of the nearest paper, so the light's gradient
    across the page runs on and no step is left at its edge. Small images (crops, scans of one digit) are kept."""
    if max(gray.shape) <= SMALL_SIDE:
        return gray
    light = gray > otsu_threshold(gray)
    if _border(light).mean() > PAGE_BORDER:
        return gray  # most of the border is as light as the paper: there is no desk around the page
    # Imported here, past the test most images stop at: SciPy takes about half a second to import, which every
    # predict of a plain page would otherwise pay.
    from scipy import ndimage
    from scipy.spatial import ConvexHull

    regions, count = ndimage.label(light)
    if count == 0:
        return gray
    sizes = np.bincount(regions.ravel())[1:]
    if sizes.max() < (1 - PAGE_MARKS) * PAGE_AREA * gray.size:
        return gray  # as on most images of light ink on a dark ground: no light region is large enough
    paper = regions == 1 + int(np.argmax(sizes))
    page = ndimage.binary_fill_holes(paper)
    marks = page & ~light
    area = int(page.sum())
    if area < PAGE_AREA * gray.size or not PAGE_MARKS_MIN * area <= marks.sum() <= PAGE_MARKS * area:
        return gray
    if np.median(gray[paper]) - np.median(gray[~page]) < 2 * MIN_CONTRAST:
        return gray
    outline = np.argwhere(page & ~ndimage.binary_erosion(page))
    convex = ConvexHull(outline)
    if area < PAGE_CONVEX * convex.volume:
        return gray
    # The page's box, one pixel wider: every distance inside the page is measured there, at a fraction of the cost.
    (top, left), (bottom, right) = outline.min(0), outline.max(0) + 2
    box = (slice(max(0, top - 1), bottom), slice(max(0, left - 1), right))
    depth = ndimage.distance_transform_edt(page[box])
    # Pen strokes are thin beside the page; a light digit on a dark ground (its strokes taken for the page, the
    # inside of a 0 for its marks) is not.
    if ndimage.distance_transform_edt(marks[box]).max() * PAGE_STROKES > depth.max():
        return gray
    seam = max(2, round(PAGE_SEAM * max(gray.shape)))
    # Nothing is lost: no stroke runs from the page into the dark (a notch in the page's outline, as where a
    # shadow, not a desk, lies across the digit), and the dark holds no marks of its own.
    hull = Image.new("1", (gray.shape[1], gray.shape[0]))
    ImageDraw.Draw(hull).polygon([(int(x), int(y)) for y, x in outline[convex.vertices]], fill=1)
    notches = ndimage.distance_transform_edt(np.asarray(hull)[box])[~page[box]]
    if notches.size and notches.max() > 2 * seam:
        return gray
    desk = gray[~ndimage.binary_dilation(page, iterations=seam)]
    if desk.size == 0 or (np.abs(desk - np.median(desk)) > 2 * MIN_CONTRAST).mean() > PAGE_DESK_MARKS:
        return gray
    inner = np.zeros_like(page)
    inner[box] = depth > seam
    _, (rows, cols) = ndimage.distance_transform_edt(~(inner & paper), return_indices=True)
    out = gray.copy()
    around = ~inner
    out[around] = gray[rows[around], cols[around]]
    return out


def _without_edge_bands(gray: np.ndarray) -> np.ndarray:
    """``gray`` less the bands along its edges that are not the page: a scan's dark margin past the page, a dark
    desk along a photo's side. Left on, a band is ink to every later step, and on two sides it makes the border tell
    the ink's polarity wrong. A band is ``BAND_DARK`` of each of its rows far darker (or lighter) than the paper, at
    most ``BAND_DEPTH`` of the side, and it is cut with its soft edge. Only where every other edge is plain paper
    (between the bands): a digit's stroke cropped at the edge (a 7's bar) is a band too, but the rest of such a
    digit runs to another edge. Small images (crops, scans of one digit) are kept whole."""
    if max(gray.shape) <= SMALL_SIDE:
        return gray
    paper = float(_quantile(np.bincount(gray.ravel(), minlength=256), 0.5))  # the median, without sorting
    # Each side as the first rows of a view: top, bottom, left, right.
    views = (gray, gray[::-1], gray.T, gray.T[::-1])
    cut = [_band_depth(view, paper) for view in views]
    if not any(cut) or all(cut):
        return gray  # a line along every edge is a box the digit was cropped at: ``_paper_around_box``'s
    far = 2 * MIN_CONTRAST
    for view, depth, across in zip(views, cut, ((2, 3), (2, 3), (0, 1), (0, 1))):
        if depth:
            continue
        # Along this edge, only what lies between the bands of the two sides next to it.
        edge = view[: max(2, round(BAND_GAP * view.shape[0])), cut[across[0]] : view.shape[1] - cut[across[1]]]
        if edge.size == 0 or np.abs(np.quantile(edge, [0.02, 0.98]) - paper).max() > far:
            return gray
    return gray[cut[0] : gray.shape[0] - cut[1], cut[2] : gray.shape[1] - cut[3]]


def _band_depth(view: np.ndarray, paper: float) -> int:
    """How many of ``view``'s first rows are a band and its soft edge: the band's rows each ``BAND_DARK`` far from
    the paper, then rows until the paper's level is back (on ``BAND_DARK`` of a row), at most ``BAND_EDGE`` of the
    side further; 0 where there is no band, or it fills ``BAND_DEPTH`` of the side (a page that dark is no band)."""
    far = 2 * MIN_CONTRAST
    first = np.sort(view[0]).astype(np.float32)  # np.quantile's own overhead is many times a short line's sort
    first_low, first_high = first[round((1 - BAND_DARK) * (len(first) - 1))], first[round(BAND_DARK * (len(first) - 1))]
    if first_low - far < paper < first_high + far:
        return 0  # the edge is paper, as on most images: nothing more to measure
    rows = view[: round((BAND_DEPTH + BAND_EDGE) * view.shape[0])]
    low, high = np.quantile(rows, [1 - BAND_DARK, BAND_DARK], axis=1)
    if first_high <= paper - far:
        band, back = high <= paper - far, high >= paper - MIN_CONTRAST
    else:
        band, back = low >= paper + far, low <= paper + MIN_CONTRAST
    solid = int(np.argmin(band)) if not band.all() else len(band)
    if solid > BAND_DEPTH * view.shape[0]:
        return 0
    edge = back[solid : solid + round(BAND_EDGE * view.shape[0]) + 1]
    return solid + int(np.argmax(edge)) + 1 if edge.any() else 0


def _paper_around_box(gray: np.ndarray) -> np.ndarray:
    """``gray`` with a frame of paper around it where it is cropped at a box around the digit: where along every
    edge (its outermost ``BOX_EDGE`` of the side: a crop may cut the line or keep its soft edge) runs a line at
    one level, all of them on the same side of the image's median (the paper inside) and far from it, the
    border is the box, not the paper, and would tell the ink's polarity wrong. The frame takes the median's
    level; ``_without_box`` then takes the box off with the ink."""
    paper = float(np.median(gray))
    depth = max(1, round(BOX_EDGE * max(gray.shape)))
    sides = set()
    for edge in (gray[:depth], gray[::-1][:depth], gray.T[:depth], gray.T[::-1][:depth]):
        low, high = np.quantile(edge, [0.1, 0.9], axis=1)
        level = (low + high) / 2 - paper
        line = (high - low < MIN_CONTRAST) & (np.abs(level) >= 2 * MIN_CONTRAST)
        if not line.any():
            return gray
        sides.add(bool(level[line][0] > 0))
    if len(sides) > 1:
        return gray
    return np.pad(gray, max(2, round(SMALL_FRAME * max(gray.shape) / 5)), constant_values=round(paper))


def _without_box(ink: np.ndarray) -> np.ndarray:
    """``ink`` less a box around the digit: when near each side of the ink's bounding box (within
    ``BOX_MAX_THICKNESS`` of it) lie rows or columns that are lines of ink (``BOX_LINE`` of their pixels), those
    are cleared, with a rounded box's corners (``_round_corner``). A digit's own strokes seldom run straight along
    all four sides of its box."""
    bounds = _ink_box(ink)
    if bounds is None:
        return ink
    inside = ink[bounds] > 0
    box = np.zeros_like(inside)
    # Each side as the first rows of a view: top, bottom, left, right.
    sides = [(inside, box), (inside[::-1], box[::-1]), (inside.T, box.T), (inside.T[::-1], box.T[::-1])]
    lines: list[tuple[int, int]] = []
    for view, _ in sides:
        line = _edge_line(view)
        if line is None:
            return ink
        lines.append(line)
    for (_, box_view), (_, cleared) in zip(sides, lines):
        box_view[:cleared] = True
    for across, down in ((0, 2), (0, 3), (1, 2), (1, 3)):  # the corners: top-left, top-right, ...
        (view, box_view), (row, row_end), (col, col_end) = sides[across], lines[across], lines[down]
        flip = slice(None, None, 1 if down == 2 else -1)
        _round_corner(view[row:, flip][:, col:], box_view[row:, flip][:, col:], max(row_end - row, col_end - col))
    unboxed = ink.copy()
    unboxed[bounds][box] = 0
    if np.count_nonzero(unboxed) < BOX_CONTENT * np.count_nonzero(ink):
        return ink  # a digit of straight lines (a square 0), or an empty box: either way, the ink is the lines
    return unboxed


def _round_corner(inside: np.ndarray, box: np.ndarray, thickness: int) -> None:
    """Mark in ``box`` a rounded corner of the box whose lines run along ``inside``'s first row and column: its
    radius is where they begin, and all that lies outside the arc's inner edge is the box's (the digit is inside
    it)."""
    radius = max(int(np.argmax(inside[0])), int(np.argmax(inside[:, 0])))
    if radius <= thickness:
        return  # a square corner, already cleared with the lines
    inner = max(0, radius - 2 * thickness)  # the arc's inner edge, with a line's width to spare: its soft edge
    ys, xs = np.ogrid[: min(radius, box.shape[0]), : min(radius, box.shape[1])]
    box[:radius, :radius] |= (radius - ys) ** 2 + (radius - xs) ** 2 >= inner**2


def _without_underline(ink: np.ndarray) -> np.ndarray:
    """``ink`` less a line the digit is written on (``_without_level_underline``), also where the line is tilted:
    where no level line is found and the ink's lowest edge runs straight (within ``UNDERLINE_WOBBLE``) at a slope
    of at most ``UNDERLINE_TILT`` along most of its width (``BOX_LINE``), each column is moved up or down to make
    it level, the level line is looked for, and the columns are moved back."""
    level = _without_level_underline(ink)
    shifts = _levelling_shifts(ink > 0) if level is ink else None
    if shifts is None:
        return level
    rows = np.arange(ink.shape[0])[:, None] + shifts
    cols = np.arange(ink.shape[1])
    levelled = np.zeros((ink.shape[0] + int(shifts.max()), ink.shape[1]), ink.dtype)
    levelled[rows, cols] = ink
    # Moved by whole pixels, the line's soft upper edge keeps a pixel's steps: a row more of it is the line's.
    cleared = _without_level_underline(levelled, soft_rows=3)
    return ink if cleared is levelled else cleared[rows, cols]


def _levelling_shifts(mask: np.ndarray) -> np.ndarray | None:
    """How far down to move each column of ``mask`` so that the ink's lowest edge becomes level, where it is a
    straight, gently sloping line; None where it is not, or is level already."""
    cols = np.flatnonzero(mask.any(axis=0))
    if len(cols) < 2:
        return None
    lowest = mask.shape[0] - 1 - np.argmax(mask[::-1, cols], axis=0)
    span = int(cols[-1] - cols[0])
    on_line = np.ones(len(cols), dtype=bool)
    for _ in range(2):  # the line fitted again without what strays from it (a stroke that runs below it)
        if np.count_nonzero(on_line) < 2:
            return None
        slope, offset = np.polyfit(cols[on_line], lowest[on_line], 1)
        on_line = np.abs(lowest - (slope * cols + offset)) <= max(2.0, UNDERLINE_WOBBLE * span)
    if on_line.mean() < BOX_LINE or abs(slope) > UNDERLINE_TILT or abs(slope) * span < 1:
        return None
    rise = np.rint(slope * np.arange(mask.shape[1])).astype(int)
    return rise.max() - rise


def _without_level_underline(ink: np.ndarray, soft_rows: int = 2) -> np.ndarray:
    """``ink`` less a level line the digit is written on (a form's field, a line of a page that is not ruled across
    it): a band of rows along the bottom of the ink, each ink for ``BOX_LINE`` of its width, at most
    ``BOX_MAX_THICKNESS`` of the ink's height thick, running past the rest of the ink on both sides by more than its
    own thickness. A digit's own base (a 2's) starts where its stroke comes down, not before it: at most a pen's
    width before it, where the pen's round end lies (a drawing of 28×28 pixels leaves a pixel or two)."""
    mask = ink > 0
    bounds = _ink_box(mask)
    if bounds is None:
        return ink
    top, bottom = bounds[0].start, bounds[0].stop
    line = _edge_line(mask[bounds][::-1], soft_rows)
    if line is None:
        return ink
    start = bottom - line[1]  # the line's first row, its soft upper edge included
    line_cols = np.flatnonzero(mask[start:bottom].any(axis=0))
    rest_cols = np.flatnonzero(mask[top:start].any(axis=0))
    if len(rest_cols) == 0:
        return ink
    margin = max(BOX_MAX_THICKNESS / 3 * (line_cols[-1] - line_cols[0]), line[1] - line[0])
    if rest_cols[0] - line_cols[0] < margin or line_cols[-1] - rest_cols[-1] < margin:
        return ink
    underlined = ink.copy()
    underlined[start:bottom] = 0
    return underlined


def _edge_line(inside: np.ndarray, soft_rows: int = 2) -> tuple[int, int] | None:
    """Where a line of ink runs along the first row of ``inside`` (the ink's bounding box, turned so that the side
    looked at comes first): the first and past the last of its rows, each ink for ``BOX_LINE`` of its length,
    within ``BOX_MAX_THICKNESS`` of the box's side, ``soft_rows - 1`` rows more for the line's soft inner edge.
    None where there is no line at the edge, or solid ink (a bar, a blot) rather than a line along paper."""
    most = max(1, round(BOX_MAX_THICKNESS * inside.shape[0]))
    zone = inside[: most + 1].mean(axis=1) >= BOX_LINE
    found = np.flatnonzero(zone)
    if not len(found) or zone.all() or found[0] > max(2, round(BOX_EDGE * inside.shape[0])):
        return None  # a line starts at the edge; a round stroke (a 0's top) only some way in
    return int(found[0]), min(int(found[-1]) + soft_rows, most + 1)


def _in_mnist_form(gray: np.ndarray) -> bool:
    """Whether a grayscale image is already in MNIST's form: 28×28, light ink on a dark border, the ink's box at
    most 20 px (a pixel more each way for a soft edge). MNIST keeps its digits to a 20-px box in the middle, so
    nine tenths of the border at least is dark; a digit filling the square (stretched or cropped to its box)
    covers more of it, or at least more of the square, and goes through the steps like any image."""
    if gray.shape != (CANVAS, CANVAS):
        return False
    border = _border(gray)
    if float(np.quantile(border, 0.9)) >= 128:
        return False
    ink = gray > np.median(border) + MIN_CONTRAST
    return not ink.any() or max(_crop(ink).shape) <= DIGIT_BOX + 2  # a blank one is refused as such below


def load_image(path: str | Path) -> Image.Image:
    """Open and decode an image file with Pillow, refusing non-images, corrupt files and decompression bombs.

    Close the image when done (``with load_image(path) as image:``): a multi-frame file stays open.
    """
    path = fileio.expanded(path)
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own (larger) pixel limit, whereas ours is checked below with a clearer
            # message, and about malformed metadata (EXIF), which is skipped: nothing a user can act on.
            warnings.simplefilter("ignore")
            image = Image.open(_openable(path), formats=image_formats())
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
    except Exception as exc:  # Pillow's format plugins raise what they like (DDS a NotImplementedError, BLP its own)
        raise ImageError(f"{path}: cannot read the image ({exc})") from None
    try:
        _check_size(image.size, str(path))  # from the header, before the pixels are decoded
        # A JPEG can decode straight to a reduced size: a phone photo then costs a fraction of the time and memory.
        image.draft(None, (WORK_SIDE, WORK_SIDE))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image.load()
    except ImageError:
        image.close()
        raise
    except Exception as exc:  # as above: AVIF's decoder raises a RuntimeError
        image.close()
        raise ImageError(f"{path}: corrupt or truncated image ({exc})") from None
    return image


def image_formats() -> list[str]:
    """The Pillow formats an image to classify may be in: every one it reads, less ``UNSAFE_FORMATS``."""
    Image.init()
    return [name for name in Image.OPEN if name not in UNSAFE_FORMATS]


def _openable(path: Path) -> Path | io.BytesIO:
    """What Pillow opens: the path of a regular file (or folder, refused as such), or the bytes of a pipe read
    here, since opening a FIFO waits for a writer (forever, if none comes) and Pillow reads an unseekable file
    whole, however much it holds. A device (``/dev/zero``, a terminal) or socket is refused without reading it."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return path  # missing, unreadable, a symlink loop: Image.open says which
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return path
    if not stat.S_ISFIFO(mode):
        raise ImageError(f"{path}: not a regular file but {fileio.file_kind(mode)}; pass an image file")
    try:
        data = fileio.read_pipe(path, MAX_PIPE_BYTES)
    except OSError as exc:
        raise ImageError(f"{path}: cannot read the image from this pipe ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(f"{path}: a FIFO that nothing was written to; pass an image file")
    return io.BytesIO(data)


def _check_size(size: tuple[int, int], where: str) -> None:
    width, height = size
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"{where}: image of {width}×{height} pixels is too large (limit {MAX_PIXELS / 1e6:.0f} megapixels); "
            "scale it down"
        )
    if max(width, height) < MIN_SIDE or min(width, height) < MIN_THICKNESS:
        raise ImageError(
            f"{where}: image of {width}×{height} pixels is too small to hold a digit (at least {MIN_SIDE} pixels on "
            f"its longer side and {MIN_THICKNESS} on its shorter)"
        )


def _where(item: ImageInput) -> str:
    """How error messages name an input."""
    if isinstance(item, (str, Path)):
        return str(fileio.expanded(item))
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
            image = Image.fromarray(_eight_bit(image, where))
        # A 1-bit scan to grey first: Pillow reduces 1-bit images by the nearest pixel, which keeps their dots.
        dotted = image.mode == "1" and max(image.size) > SMALL_SIDE
        if dotted:
            image = image.convert("L")
        if max(image.size) > WORK_SIDE:
            image = image.copy()
            image.thumbnail((WORK_SIDE, WORK_SIDE), Image.Resampling.BOX)
        if dotted:  # a dithered one's grey paper is black dots on white, each of them ink to every later step
            image = image.filter(ImageFilter.BoxBlur(DOT_RADIUS))
        return _flatten_alpha(image)
    except ImageError:
        raise
    except Exception as exc:  # a PIL image opened lazily decodes here, with its format's own errors
        raise ImageError(f"{where}: cannot convert the image ({exc})") from None


def _array_to_image(a: np.ndarray) -> Image.Image:
    a = plain_array(a, "array")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    elif a.ndim == 3 and a.shape[0] == 1 and a.shape[2] > 4:  # an item of a (N, 1, H, W) batch: PyTorch's layout
        a = a[0]
    if a.ndim == 1 and a.shape[0] == FLAT_SIZE:
        a = a.reshape(CANVAS, CANVAS)
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255  # a mask: True is ink (or paper; the polarity is detected later)
    if a.dtype.kind in "iu" and a.size and a.min() >= 0 and a.max() > 255:
        if a.max() > 65535:
            raise ImageError(
                f"array: integer pixels must lie in 0..255, or 0..65535 for a 16-bit image; found {a.min()}..{a.max()}"
            )
        a = _depth_scaled(a)  # a 16-bit scan (as OpenCV or tifffile read it), scaled as a 16-bit image file is
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (2, 3, 4))):
        raise ImageError(
            f"array: expected (H, W) grayscale, (H, W, 2) grayscale and alpha, (H, W, 3|4) colour or a flattened "
            f"28×28 image ({FLAT_SIZE},), got shape {a.shape}"
        )
    check_pixels(a, "array")
    if a.dtype.kind == "f":
        a = np.round(a * 255)
    _check_size((a.shape[1], a.shape[0]), "array")
    return Image.fromarray(a.astype(np.uint8))


def check_pixels(a: np.ndarray, where: str, error: type[MnistkitError] = ImageError, float_max: float = 1.0) -> None:
    """The one rule for arrays of pixels, wherever they come from: integers in 0..255, or finite floats in
    [0, ``float_max``] (1, or 255 for data files that store bytes as floats). Raises ``error`` naming ``where``."""
    if a.dtype.kind == "f":
        if a.size and not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= float_max):
            ranges = "[0, 1]" if float_max == 1 else f"[0, 1] or [0, {float_max:g}]"
            raise error(f"{where}: float pixels must lie in {ranges}; pass uint8 for values in 0..255")
    elif a.dtype.kind in "iu":
        if a.size and (a.min() < 0 or a.max() > 255):
            raise error(f"{where}: integer pixels must lie in 0..255, found {a.min()}..{a.max()}")
    else:
        raise error(f"{where}: pixels must be numbers (integers in 0..255 or floats in [0, 1]), got dtype {a.dtype}")


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


def _eight_bit(image: Image.Image, where: str) -> np.ndarray:
    """16-bit or float grayscale -> uint8, scaled (Pillow's own conversion clips everything above 255 to white)."""
    a = np.asarray(image, dtype=np.float64)
    if not np.isfinite(a).all():  # one NaN or infinity would scale every other pixel to black: a "blank" image
        raise ImageError(f"{where}: pixels must be finite numbers; this image holds NaN or infinity")
    if a.size and a.min() < 0:  # as for arrays: where black is cannot be told (clipped, the image could go blank)
        raise ImageError(f"{where}: pixels must not be negative; this image holds values down to {a.min():g}")
    if image.mode == "F" and a.size and a.max() <= 1.0:
        return np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)  # float pixels in [0, 1]
    return _depth_scaled(a)


def _depth_scaled(a: np.ndarray) -> np.ndarray:
    """Pixels from 0 up to at most 65535 -> uint8, white at the top of the bit depth in use: a 12-bit scanner's
    0..4095 in a 16-bit file is white at 4095, not at 65535; values up to 255 stay as they are."""
    top = float(a.max()) if a.size else 0.0
    full = float(2 ** math.ceil(math.log2(top + 1)) - 1) if top > 255 else 255.0
    return np.clip(np.round(a * (255.0 / full)), 0, 255).astype(np.uint8)


def plain_array(a: np.ndarray, where: str) -> np.ndarray:
    """``a`` without its mask where it is a masked array with none of its pixels masked; ``ImageError`` where some
    are: what a masked pixel shows (ink or paper) cannot be told, and NumPy would hand over whatever lies under it."""
    if not isinstance(a, np.ma.MaskedArray):
        return a
    masked = int(np.ma.count_masked(a))
    if masked:
        raise ImageError(
            f"{where}: a masked array with {masked:,} masked pixels; fill them with the paper's value first "
            "(array.filled(0) where the paper is black)"
        )
    return np.ma.getdata(a)


def _border(a: np.ndarray) -> np.ndarray:
    """The outermost pixels of ``a``, in one row."""
    return np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])


def _border_level(gray: np.ndarray) -> float:
    """The median gray level of the outermost pixels: the paper (or screen) the digit is on."""
    return float(np.median(_border(gray)))


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
    """uint8 (H, W) with ink bright on a zero background: polarity decided, paper's light removed, noise dropped.

    The paper's brightness is estimated and divided out first (``estimate_background``), so that a shadow or a
    gradient across the page is paper, not ink; then Otsu's threshold splits ink from what remains of the paper.
    Paper (texture, JPEG noise) becomes zero; the ink mask, grown by one pixel to keep the anti-aliased edge of
    each stroke, keeps its gray levels, stretched so that solid strokes are white as in MNIST. Raises
    ``ImageError`` when no ink stands ``MIN_CONTRAST`` gray levels above the paper around it: a blank page, or
    only noise.
    """
    bright = (255 - gray if _dark_ink(gray) else gray).astype(np.float32)  # single precision: half the memory traffic
    if max(bright.shape) <= SMALL_SIDE:
        if _stretched_to_square(bright):
            bright = _unstretched(bright)
        bright = _framed(bright)
    try:
        ink = _ink_above(bright, estimate_background(bright), rules=True)
    except ImageError:
        # Solid ink wider than the background window (a fat blob, a filled shape) is taken for paper by the
        # opening; against the paper at the border it still stands out, and visible ink is never a blank page.
        # A shadow stands out too, but it comes in from the edge, where ink seldom lies.
        ink = _ink_above(bright, np.full_like(bright, _border_level(bright)))
        if (_border(ink) > 0).mean() > SHADOW_BORDER:
            cropped = _bold_crop(bright, ink > 0, np.zeros(ink.shape, dtype=bool))
            if cropped is not None:
                return cropped
            raise ImageError(
                "no ink found: the only marks are large areas that run off the image's edges (a shadow, or the "
                "page's edge); crop the image to the digit"
            ) from None
        return ink
    if max(bright.shape) <= SMALL_SIDE:  # framed above
        return ink
    # No frame: a crop's strokes along its edges may have been taken for paper.
    level = _border_level(bright)
    if not _on_opposite_edges(bright > level + MIN_CONTRAST):
        return ink
    try:
        marks = _ink_above(bright, np.full_like(bright, level)) > 0
    except ImageError:
        return ink
    if np.count_nonzero(ink) < BOLD_FOUND * np.count_nonzero(marks):
        cropped = _bold_crop(bright, marks, ink > 0)
        if cropped is not None:
            return cropped
    return ink


def _on_opposite_edges(mask: np.ndarray) -> bool:
    """Whether ``mask`` reaches two opposite edges of the image."""
    return bool(mask[0].any() and mask[-1].any() or mask[:, 0].any() and mask[:, -1].any())


def _bold_crop(bright: np.ndarray, marks: np.ndarray, found: np.ndarray) -> np.ndarray | None:
    """The ink of a digit cropped to its ink whose strokes are broad for the image (a marker's, a coarse scan's
    enlarged), or None where the ``marks`` that stand above the border's level are not one; ``found``: the ink
    found without a frame.

    Its strokes meet two opposite edges at least, in separate places; mirrored there by the background's estimate
    they double in width, and the opening keeps them, wholly or in part, as paper. A shadow across the page meets
    the edges along one unbroken stretch; where nothing was found, dark strips along two whole edges are likelier
    than a digit, and a stretch as long as the image's shorter side is taken for one. With the background
    estimated with paper around the image instead, as a small crop is framed (``_framed``), each stroke is
    narrower than the opening's window and the ink is found again: nearly all of the ``marks``. Something wider
    than the window stays paper, and little is found. The ink is looked for in the image itself, where a
    notebook's lines still cross it whole; it must keep nearly all of the ink ``found`` without the frame, and add
    to it no more than a digit's strokes along the edges do: dark strips along two edges of a photo would
    outweigh the digit found between them."""
    stretches = _stretches(_ring(marks))
    if not _on_opposite_edges(marks) or len(stretches) < 2:
        return None
    if not found.any() and max(stretches) >= min(marks.shape):
        return None
    framed = _framed(bright)
    frame = (framed.shape[0] - bright.shape[0]) // 2
    try:
        ink = _ink_above(bright, estimate_background(framed)[frame:-frame, frame:-frame], rules=True)
    except ImageError:
        return None
    if np.count_nonzero(ink) < BOLD_FOUND * np.count_nonzero(marks):
        return None
    if found.any():  # the strokes along the edges add to the strokes found; strips along two edges outweigh them
        kept, grown = np.count_nonzero(ink[found]), np.count_nonzero(ink)
        if kept < BOLD_FOUND * np.count_nonzero(found) or grown > BOLD_GROWTH * np.count_nonzero(found):
            return None
    return ink


def _stretched_to_square(bright: np.ndarray) -> bool:
    """Whether a small image is a digit stretched to fill a square box: square, its ink (Otsu's threshold, no
    light to even out on a scan) touching all four edges. Cropped to its ink with the shape kept, a digit is
    seldom as wide as it is tall; stretched, a 1 is as wide as a 0, and its width no longer tells the two apart."""
    h, w = bright.shape
    if h != w:
        return False
    ink = bright > otsu_threshold(np.round(bright).astype(np.uint8))
    return bool(ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any())


def _unstretched(bright: np.ndarray) -> np.ndarray:
    """A digit stretched to fill a square box with a digit's usual proportions again (``STRETCHED_ASPECT``): the
    true ones are lost, and this guess reads most digits right. Heightened rather than narrowed, so that no
    column of a 16-px scan is merged with another."""
    h, w = bright.shape
    taller = Image.fromarray(bright).resize((w, round(h / STRETCHED_ASPECT)), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(taller), 0, 255)  # bicubic overshoots at sharp edges


def _framed(bright: np.ndarray) -> np.ndarray:
    """A small image (a scan, or a digit cropped to its ink) enlarged to ``SMALL_WORK`` px and framed with paper.

    Cropped tight, the ink touches the edge; mirrored there by the background's estimate, a stroke doubles in
    width and is taken for paper, and the border is no longer all paper. A frame of the paper's level (the
    border's darker quartile: ink on it is brighter) puts paper around the ink. Photographs are larger, so a
    shadow, whose edge the frame would cut, never meets it."""
    factor = -(-SMALL_WORK // max(bright.shape))  # a whole factor: every pixel becomes a block of equal size
    if factor > 1:
        h, w = bright.shape
        enlarged = Image.fromarray(bright).resize((w * factor, h * factor), Image.Resampling.BICUBIC)
        bright = np.clip(np.asarray(enlarged), 0, 255)  # bicubic overshoots at sharp edges
    frame = round(SMALL_FRAME * max(bright.shape))
    paper = float(np.quantile(_border(bright), 0.25))
    return np.pad(bright, frame, constant_values=paper)  # still float32


def _ink_above(bright: np.ndarray, background: np.ndarray, rules: bool = False) -> np.ndarray:
    """``_ink`` for ink bright on darker paper, ``background`` the paper's brightness under every pixel; ``rules``:
    a notebook's ruled lines are taken off (``_without_rules``), where they are not yet part of the background."""
    lift = bright - background  # how far each pixel stands above the paper around it, in gray levels
    share = np.clip(lift / np.maximum(255.0 - background, 1.0), 0, 1)  # the share of the way to full ink
    levels = np.round(share * 255).astype(np.uint8)
    if rules:
        levels = _without_rules(levels)
    hist = np.bincount(levels.ravel(), minlength=256)
    threshold = _otsu(hist)
    ink_mask = levels > threshold
    if not ink_mask.any() or ink_mask.all():
        raise ImageError("no ink found: the image is blank")
    # Medians from histograms of the lift in whole gray levels (-255..255): sorting every pixel would cost more.
    lift_levels = np.round(lift).astype(np.intp).ravel() + 255
    counts = np.bincount(lift_levels + 511 * ink_mask.ravel(), minlength=2 * 511)
    paper_counts, ink_counts = counts[:511], counts[511:]
    paper_lift, ink_lift = _quantile(paper_counts, 0.5) - 255, _quantile(ink_counts, 0.5) - 255
    spread = _spread(paper_counts, np.arange(511) - 255, paper_lift)  # the paper's noise
    if ink_lift - paper_lift < max(MIN_CONTRAST, NOISE_MARGIN * spread):
        raise ImageError("no ink found: the image is blank or has too little contrast")
    ink_mask = _drop_islands(_without_pattern(ink_mask))
    paper = _quantile(hist[: threshold + 1], 0.5)
    solid = (
        threshold + 1 + _quantile(hist[threshold + 1 :], 0.99)
    )  # not the maximum: one hot pixel must not dim every stroke
    noise = _spread(hist[: threshold + 1], np.arange(threshold + 1), paper)
    faint = levels > paper + max(FAINT_INK * (threshold - paper), NOISE_MARGIN * noise)
    mask = _grow(_joined(ink_mask, faint, max(1, round(FAINT_REACH * max(levels.shape)))))
    ink = np.where(mask, (levels - np.float32(paper)) * np.float32(255.0 / max(1, solid - paper)), np.float32(0))
    return np.clip(np.round(ink), 0, 255).astype(np.uint8)


def _spread(counts: np.ndarray, values: np.ndarray, centre: int) -> float:
    """The standard deviation of the whole ``values`` counted ``counts`` times about their median ``centre``,
    estimated robustly: 1.4826 times the median absolute deviation."""
    return 1.4826 * _quantile(np.bincount(np.abs(values - centre), weights=counts), 0.5)


def _without_rules(levels: np.ndarray) -> np.ndarray:
    """``levels`` less the ruled or squared lines of a notebook page: a row (or column) whose pixels nearly all
    stand above the paper is a line across the page. Its level there is the row's 5% quantile, which ink
    crossing the line cannot raise and a digit's stroke never reaches (it spans less of the page); that level
    is taken off the whole row. Lines run unbroken, so every ``RULE_STEP``-th pixel along them tells it. A
    digit cropped to its ink does span the image, but its strokes are much wider than a printed line and, along
    most of their length, as bright as the rest of its ink: those are kept (``_rules_only``)."""
    ink_level = np.partition(levels.ravel(), -EXTREME_PIXELS)[-EXTREME_PIXELS]
    rows = _rules_only(*_low_and_median(levels[:, ::RULE_STEP], axis=1), levels.shape[1], ink_level)
    cols = _rules_only(*_low_and_median(levels[::RULE_STEP], axis=0), levels.shape[0], ink_level)
    if not rows.any() and not cols.any():
        return levels
    lowered = levels.astype(np.int16) - rows[:, None] - cols[None, :]
    return np.clip(lowered, 0, 255).astype(np.uint8)


def _low_and_median(a: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The 5% quantile and the median of ``a`` along ``axis``."""
    low, mid = a.shape[axis] // 20, a.shape[axis] // 2
    parted = np.partition(a, (low, mid), axis=axis)
    return np.take(parted, low, axis=axis), np.take(parted, mid, axis=axis)


def _rules_only(low: np.ndarray, median: np.ndarray, length: int, ink_level: int) -> np.ndarray:
    """``low``, the lines' 5% quantiles (one per row or column, ``length`` pixels long), with each band of adjacent
    lines above the paper set to zero where it is a stroke: wider than ``RULE_MAX_WIDTH`` of ``length``, counted
    where it stands at least half its peak (a blurred line's faint edges do not widen it), and with a line whose
    ``median`` is at least ``STROKE_LEVEL`` of ``ink_level``."""
    above = low > 0
    starts = above & ~np.r_[False, above[:-1]]
    band = np.cumsum(starts) * above  # 1, 2, ... for each band; 0 for the paper between them
    if not band.any():
        return low
    peaks, brightest = np.zeros((2, band.max() + 1), dtype=low.dtype)
    np.maximum.at(peaks, band, low)
    np.maximum.at(brightest, band, median)
    widths = np.bincount(band, weights=2 * low.astype(np.int16) >= peaks[band])
    stroke = (widths > RULE_MAX_WIDTH * length) & (brightest >= STROKE_LEVEL * ink_level)
    stroke[0] = False  # the paper between bands
    return np.where(stroke[band], 0, low).astype(low.dtype)


def _without_pattern(mask: np.ndarray) -> np.ndarray:
    """The mask without a pattern printed on the paper: many tiny marks spread over the page (a dot grid), each
    less than ``PATTERN_MARK`` of the largest mark, at least ``PATTERN_MARKS`` of them. Only where the ink is
    sparse over most of the image, as such a pattern makes it: a digit's ink fills a good part of its own box."""
    bounds = _ink_box(mask)
    if bounds is None:
        return mask
    box = mask[bounds]
    if box.size < PATTERN_SPREAD * mask.size or box.mean() > PATTERN_SPARSE:
        return mask
    from scipy import ndimage  # here, not for every image: see _without_desk

    marks, _ = ndimage.label(mask)
    sizes = np.bincount(marks.ravel())
    sizes[0] = 0
    tiny = sizes < PATTERN_MARK * sizes.max()
    tiny[0] = False
    if tiny.sum() < PATTERN_MARKS:
        return mask
    return mask & ~tiny[marks]


def _drop_islands(mask: np.ndarray) -> np.ndarray:
    """The mask without small marks set apart from the rest (a speck of dirt, a shadow's corner): along each axis,
    a run of marks separated from the others by a gap of ``ISLAND_GAP`` of the image's side and holding less than
    ``ISLAND_MASS`` of the ink is cleared, so that it cannot stretch the crop. So is a larger run that the image's
    edge cuts, narrower than ``EDGE_PART`` of the largest run, where that lies clear of both edges: a crop from a
    row of digits, the neighbour's part at its edge."""
    gap = max(2, round(ISLAND_GAP * max(mask.shape)))
    for axis in (1, 0, 1):
        profile = mask.sum(axis=axis)
        occupied = np.flatnonzero(profile)
        breaks = np.flatnonzero(np.diff(occupied) > gap)
        if not len(breaks):
            continue
        runs = np.split(occupied, breaks + 1)
        masses = [profile[run].sum() for run in runs]
        largest = runs[int(np.argmax(masses))]
        inside = largest[0] > 0 and largest[-1] < len(profile) - 1
        for run, mass in zip(runs, masses):
            # Cut: at the edge, and narrower than the digit (a whole neighbour that touches the edge is a digit too).
            cut = (run[0] == 0 or run[-1] == len(profile) - 1) and len(run) < EDGE_PART * len(largest)
            if mass < ISLAND_MASS * profile.sum() or (inside and cut):
                index = [slice(None), slice(None)]
                index[1 - axis] = slice(run[0], run[-1] + 1)
                mask = mask.copy()
                mask[tuple(index)] = False
    return mask


def _dark_ink(gray: np.ndarray) -> bool:
    """Whether the ink is darker than the paper.

    The border is paper, however the light falls on it (dim, shadowed, a gradient): the ink is what lies beyond
    the border's range of gray levels, darker than its darkest or brighter than its brightest. Where neither
    stands out (ink running off the page, a digit cropped or stretched to its box), the ink is the extreme that
    less of the border and fewer of the four corners lie near, the two shares added: the paper runs along the
    border, the ink only crosses it, and a digit's strokes seldom fill its box's corners, even where a bold 0
    covers most of the box's edges. (Not the extreme further from the image's median: where a shadow covers
    most of the page, the median is the shadow, and the lit paper lies further from it than the ink does.) The
    median only overturns a verdict of light ink: where vignetting darkens the border and a flash's glare on the
    page is brighter still, the glare stands further above the border than the ink below it, but the median (the
    paper) lies far nearer the glare than the ink; light ink on a dark ground lies far from the median, the
    ground.
    """
    border = _border(gray)
    border_low, border_high = np.quantile(border, [0.01, 0.99])
    n = gray.size
    cumulative = np.cumsum(np.bincount(gray.ravel(), minlength=256))  # order statistics without sorting

    def nth_smallest(i: int) -> int:
        return int(np.searchsorted(cumulative, i + 1))

    # A small dot on a large page still has EXTREME_PIXELS pixels; on a small image (a page's 28×28) fewer.
    k = max(1, min(EXTREME_PIXELS, n // 200, n - 1))
    low, high = nth_smallest(k), nth_smallest(n - 1 - k)
    darker, brighter = border_low - low, high - border_high
    if max(darker, brighter) >= MIN_CONTRAST:
        median = nth_smallest(n // 2)
        return bool(darker > brighter or median - low > high - median + MIN_CONTRAST / 2)
    corners = gray[[0, 0, -1, -1], [0, -1, 0, -1]]
    dark = (border <= low + MIN_CONTRAST).mean() + (corners <= low + MIN_CONTRAST).mean()
    light = (border >= high - MIN_CONTRAST).mean() + (corners >= high - MIN_CONTRAST).mean()
    return bool(dark < light)


def estimate_background(bright: np.ndarray) -> np.ndarray:
    """The paper's brightness under every pixel of ``bright`` (ink bright on darker paper), float (H, W).

    A grey-level opening (minimum, then maximum filter) with a square a quarter of the image wide removes every
    bright mark narrower than that, strokes included, and keeps the rest: gradients, and shadows with their
    edges, sharp or soft; a shadow's narrow corners are then grown back from the rest of it. The paper's light
    varies slowly, so this is done on the image reduced to about ``BACKGROUND_SIDE`` pixels a side by the
    minimum of each block (the first step of the opening, so no stroke survives the reduction) and enlarged
    again, bilinearly; along a shadow's sharp edge, where a block holds both lights, paper takes its own level.
    The reduced image is extended past its borders first, so that a shadow's corner cut by the border stays wide
    enough to be kept as paper. Where the border changes slowly all round (paper under light that varies: a
    vignetted photo's dark corners), each edge pixel is repeated outwards; mirrored, a corner became a peak the
    opening cut down, and the corners read as ink. Where something crosses the border sharply (``_crosses``: ink
    cropped at the edge, a shadow's edge), it is mirrored: repeated, a stroke in a corner filled the padding's
    corner and was taken for paper.
    """
    h, w = bright.shape
    block = max(1, max(h, w) // BACKGROUND_SIDE)
    small = _block_min(bright.astype(np.float32, copy=False), block)
    k = max(3, round(max(h, w) * BACKGROUND_WINDOW / block)) | 1
    half = k // 2
    extended = np.pad(small, half, mode="symmetric" if _crosses(small) else "edge")
    background = _running(_running(extended, k, np.minimum), k, np.maximum)[half:-half, half:-half]
    # The opening also removes a shadow's corners, narrower than the window, and they would read as ink: the
    # shadow is grown back into them (a reconstruction by dilation, never above the image), as far as a window.
    # A shadow reaches the border; the growth stops at the border's brightest paper, so that a thick stroke kept
    # by the opening (a blot, a loop filled in) cannot spread along the strokes it touches.
    ring = _border(background)
    ceiling = np.minimum(small, ring.max())
    for _ in range(k):
        grown = np.maximum(background, np.minimum(_max3(background, square=True), ceiling))
        if np.array_equal(grown, background):
            break
        background = grown
    if block == 1:
        return background
    enlarged = _enlarged(background, block, (h, w))
    # A block holding a shadow's edge takes the lit paper's level (its minimum), and enlarging blends that level
    # a block or more into the shadow, where the paper would stand out as a line of ink. Grown by two blocks (up
    # to the border's brightest paper, as above), the shadow covers that line; where it stands well above the
    # enlarged level (an edge, not a gradient's slope), a pixel no brighter than it is paper at its own level,
    # while ink beside the edge, brighter than either, keeps the lit level.
    grown = np.maximum(background, np.minimum(_max3(_max3(background, square=True), square=True), ring.max()))
    if not (grown > background + MIN_CONTRAST).any():  # no edge: even paper, or only gradients
        return enlarged
    grown = _enlarged(grown, block, (h, w))
    shadowed = (bright <= grown + MIN_CONTRAST) & (grown > enlarged + MIN_CONTRAST)
    return np.where(shadowed, np.maximum(enlarged, np.minimum(bright, grown)), enlarged)


def _crosses(small: np.ndarray) -> bool:
    """Whether something crosses the border of ``small`` sharply: going round it, the level changes by more than
    three times ``MIN_CONTRAST`` within ``BORDER_STEP`` pixels (ink's soft edge takes two or three; light across
    the paper, even a strong vignette's, changes a few gray levels a pixel)."""
    ring = _ring(small)
    if ring.size <= BORDER_STEP:
        return False
    return float(np.abs(ring[BORDER_STEP:] - ring[:-BORDER_STEP]).max()) > 3 * MIN_CONTRAST


def _ring(a: np.ndarray) -> np.ndarray:
    """The outermost pixels of ``a`` in order round it, clockwise from the top left corner."""
    return np.concatenate([a[0], a[1:, -1], a[-1, -2::-1], a[-2:0:-1, 0]])


def _stretches(ring: np.ndarray) -> list[int]:
    """The lengths of the unbroken stretches of True round the boolean ``ring`` (its ends meet)."""
    if ring.all():
        return [ring.size]
    start = int(np.argmin(ring))  # begin on a False, so that no stretch is cut in two at the ends
    edges = np.flatnonzero(np.diff(np.concatenate([[0], np.roll(ring, -start), [0]]).astype(np.int8)))
    return (edges[1::2] - edges[::2]).tolist()


def _enlarged(small: np.ndarray, block: int, shape: tuple[int, int]) -> np.ndarray:
    """``small`` enlarged bilinearly by ``block`` and cut to ``shape``."""
    size = (small.shape[1] * block, small.shape[0] * block)
    return np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BILINEAR))[: shape[0], : shape[1]]


def _block_min(a: np.ndarray, block: int) -> np.ndarray:
    """The minimum of every ``block``×``block`` tile of ``a`` (edge tiles padded with their edge values)."""
    h, w = a.shape
    padded = np.pad(a, ((0, -h % block), (0, -w % block)), mode="edge")
    rows = padded[::block].copy()  # strided slices: much faster than a reduction over a reshaped axis
    for i in range(1, block):
        np.minimum(rows, padded[i::block], out=rows)
    tiles = rows[:, ::block].copy()
    for i in range(1, block):
        np.minimum(tiles, rows[:, i::block], out=tiles)
    return tiles


def _running(a: np.ndarray, k: int, reduce: np.ufunc) -> np.ndarray:
    """``reduce`` (minimum or maximum) over the k×k window centred on every pixel; the edges take what the window
    holds there. Per axis, windows of doubling length (1, 2, 4, …) from log2(k) whole-array steps, then the two
    overlapping ones that cover k."""
    fill = np.inf if reduce is np.minimum else -np.inf
    for axis in (0, 1):
        x = np.moveaxis(a, axis, 0)  # the reductions go along the first axis, a whole row at a time
        n = x.shape[0]
        window = np.pad(x, [(k // 2, k // 2), (0, 0)], constant_values=fill)
        span = 1  # window[i] holds the reduction of the padded rows i .. i + span - 1
        while 2 * span <= k:
            window = reduce(window[:-span], window[span:])
            span *= 2
        a = np.moveaxis(reduce(window[:n], window[k - span : k - span + n]), 0, axis)
    return a


def _joined(mask: np.ndarray, faint: np.ndarray, steps: int) -> np.ndarray:
    """``mask`` and the ``faint`` pixels joined to it, up to ``steps`` pixels away: grown a pixel at a time within
    ``faint`` (a reconstruction by dilation, as hysteresis thresholding does), so that a stroke fading along its
    length keeps its faint part while faint marks apart from the ink stay paper. Only the ink's box widened by
    ``steps`` is searched: the ink seldom covers much of a page."""
    bounds = _ink_box(mask)
    if bounds is None:
        return mask
    box = tuple(slice(max(0, span.start - steps), span.stop + steps) for span in bounds)
    near, faint = mask[box], faint[box]
    for _ in range(steps):
        grown = _grow(near) & faint | near
        if np.array_equal(grown, near):
            break
        near = grown
    joined = mask.copy()
    joined[box] = near
    return joined


def _grow(mask: np.ndarray) -> np.ndarray:
    """The mask dilated by one pixel in every direction (a 3×3 square)."""
    rows = mask.copy()
    rows[1:] |= mask[:-1]
    rows[:-1] |= mask[1:]
    grown = rows.copy()
    grown[:, 1:] |= rows[:, :-1]
    grown[:, :-1] |= rows[:, 1:]
    return grown


def _crop(ink: np.ndarray) -> np.ndarray:
    bounds = _ink_box(ink)
    if bounds is None:
        raise ImageError("no ink found: the image is blank")
    return ink[bounds]


def _ink_box(ink: np.ndarray) -> tuple[slice, slice] | None:
    """The rows and columns of the smallest box that holds every nonzero pixel of ``ink``; None if there is none."""
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    if len(rows) == 0:
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def stroke_width(ink: np.ndarray) -> float:
    """The mean width of the strokes in ``ink`` (bright on zero), in pixels: twice the ink's area over its outline's
    length, both measured on the gray levels (the outline as the total gradient), so that blur and soft edges
    leave it unchanged."""
    a = ink.astype(np.float64) / 255.0
    gy, gx = np.gradient(a)
    outline = np.sqrt(gx * gx + gy * gy).sum()
    return float(2 * a.sum() / max(outline, 1e-9))


def normalize_stroke(ink: np.ndarray) -> np.ndarray:
    """The ink cropped and scaled so its longest side is ``STROKE_BOX`` px, its pen width brought into the range
    MNIST's digits have at the 20-px scale (``MNIST_STROKE``): fine pens thickened, markers thinned."""
    crop = _crop(ink)
    h, w = crop.shape
    scale = STROKE_BOX / max(h, w)
    margin = STROKE_BOX // 8  # room for the strokes to grow
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    big = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    big = np.pad(big, margin)
    per_box = STROKE_BOX / DIGIT_BOX  # pixels here per pixel of the 20-px box
    width = stroke_width(big) / per_box
    target = float(np.clip(width, *MNIST_STROKE))
    radius = (target - width) / 2 * per_box  # a dilation by r widens every stroke by 2r
    if abs(radius) >= 0.5:
        big = _dilate(big, radius) if radius > 0 else 255 - _dilate(255 - big, -radius)
    return np.clip(np.round(big), 0, 255).astype(np.uint8)


def _dilate(a: np.ndarray, radius: float) -> np.ndarray:
    """Gray-level dilation by a disc of ``radius`` pixels (approximated by alternating 3×3 crosses and squares;
    a fractional radius blends the two nearest whole ones)."""
    steps = [a]
    for i in range(int(np.ceil(radius))):
        steps.append(_max3(steps[-1], square=i % 2 == 1))
    low = int(np.floor(radius))
    if low == len(steps) - 1:
        return steps[low]
    frac = radius - low
    return steps[low] * (1 - frac) + steps[low + 1] * frac


def _max3(a: np.ndarray, square: bool) -> np.ndarray:
    p = np.pad(a, 1, mode="edge")
    out = np.maximum.reduce([a, p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]])
    if square:
        out = np.maximum.reduce([out, p[:-2, :-2], p[:-2, 2:], p[2:, :-2], p[2:, 2:]])
    return out


def center_digit(ink: np.ndarray) -> np.ndarray:
    """Crop to the ink, scale the longest side to 20 px (aspect kept, anti-aliased), and paste into 28×28
    with the centre of mass at the centre."""
    crop = _crop(ink)
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
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", fileio.FIGURE_SOFTWARE)
    with fileio.atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)
    return path
