"""Montages of images as PNG files, for demos and quick looks (pillow, no matplotlib).

``montage_array(images)`` tiles ``images (n, y, x)`` (real or complex; magnitude is shown) into one
uint8 array ``(rows * y, n_cols * x)``, windowed at the 99.5th percentile of the magnitude (per
image or over all images). ``save_montage`` writes that array as an 8-bit greyscale PNG, with an
optional title strip above it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from . import PathLike

logger = logging.getLogger(__name__)


#: Upper window limit, as a percentile of the magnitude.
WINDOW_PERCENTILE = 99.5
_NORMALISE = ("per_image", "global")
_TITLE_HEIGHT = 14


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 2:
        images = images[None]
    if images.ndim != 3:
        raise ValueError(f"images must have 3 dimensions (n, y, x) (or 2: (y, x)), got shape {images.shape}")
    if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise ValueError(f"images must not be empty, got shape {images.shape}")
    if not (np.issubdtype(images.dtype, np.number) or images.dtype == np.bool_):
        raise ValueError(f"images must be numeric (real or complex), got dtype {images.dtype}")
    return images


def _window(magnitude: np.ndarray) -> float:
    finite = magnitude[np.isfinite(magnitude)]
    if finite.size == 0:
        return 1.0
    upper = float(np.percentile(finite, WINDOW_PERCENTILE))
    if upper <= 0:
        upper = float(finite.max())
    return upper if upper > 0 else 1.0


def montage_array(images: np.ndarray, *, n_cols: int | None = None, normalise: str = "per_image") -> np.ndarray:
    """Tile ``images (n, y, x)`` into a uint8 ``(rows * y, n_cols * x)`` montage, row by row.

    Magnitude of real or complex input, scaled so that the 99.5th percentile (of each image for
    ``normalise="per_image"``, of all images for ``"global"``) maps to 255, clipped; NaN shows as 0.
    ``n_cols`` defaults to ``ceil(sqrt(n))``; empty tiles at the end are black.
    """
    images = _check_images(images)
    if normalise not in _NORMALISE:
        raise ValueError(f"normalise must be one of {_NORMALISE}, got {normalise!r}")
    n, ny, nx = images.shape
    if n_cols is None:
        n_cols = max(1, math.ceil(math.sqrt(n)))
    if isinstance(n_cols, bool) or not isinstance(n_cols, (int, np.integer)) or n_cols < 1:
        raise ValueError(f"n_cols must be a positive int or None, got {n_cols!r}")
    n_cols = min(int(n_cols), n)
    n_rows = math.ceil(n / n_cols)

    magnitude = np.abs(images).astype(np.float64)
    if normalise == "global":
        windows = np.full(n, _window(magnitude))
    else:
        windows = np.array([_window(m) for m in magnitude])
    scaled = magnitude / windows[:, None, None] * 255.0
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    tiles = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

    canvas = np.zeros((n_rows * ny, n_cols * nx), dtype=np.uint8)
    for i in range(n):
        row, col = divmod(i, n_cols)
        canvas[row * ny:(row + 1) * ny, col * nx:(col + 1) * nx] = tiles[i]
    return canvas


def save_montage(images: np.ndarray, path: PathLike, *, n_cols: int | None = None, title: str | None = None,
                 normalise: str = "per_image") -> Path:
    """Write ``images (n, y, x)`` as a greyscale PNG montage (see ``montage_array``); return the path.

    With ``title`` a strip of text is added above the montage. The parent folder is created.
    """
    from PIL import Image, ImageDraw

    canvas = montage_array(images, n_cols=n_cols, normalise=normalise)
    if title is not None:
        if not isinstance(title, str):
            raise ValueError(f"title must be a str or None, got {type(title).__name__}")
        strip = np.zeros((_TITLE_HEIGHT, canvas.shape[1]), dtype=np.uint8)
        canvas = np.concatenate([strip, canvas], axis=0)
    picture = Image.fromarray(canvas)  # a 2D uint8 array is an 8-bit greyscale ("L") image
    if title is not None:
        ImageDraw.Draw(picture).text((2, 1), title, fill=255)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, format="PNG")
    logger.info("wrote montage %s (%d x %d)", path, picture.width, picture.height)
    return path



#: Error maps are shown at this many times the images' brightness (|x - ref| x ERROR_GAIN).
ERROR_GAIN = 5.0
_LABEL_WIDTH = 150


def _text_tile(width: int, height: int, lines: list[str]) -> np.ndarray:
    from PIL import Image, ImageDraw

    tile = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(tile)
    for number, line in enumerate(lines):
        draw.text((3, 2 + 12 * number), line, fill=255)
    return np.asarray(tile)


def scale_to_reference(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``images`` times the least-squares factor that best matches their magnitude to ``reference``'s.

    The scores of the demo and the evaluation are blind to a global intensity scale (CMRxRecon's
    per-image normalisation), so a picture beside them should be too: a zero-filled RSS, about 1/R
    of the reference's intensity, is then shown with its aliasing rather than as a dark image.
    """
    values = np.abs(images).astype(np.float64)
    target = np.abs(reference).astype(np.float64)
    finite = np.isfinite(values) & np.isfinite(target)
    energy = float(np.sum(values[finite] ** 2))
    if energy == 0.0:
        return values
    return values * (float(np.sum(values[finite] * target[finite])) / energy)


def comparison_array(reference: np.ndarray, rows: list[tuple[str, np.ndarray]], *, frame_names: list[str],
                     error_gain: float = ERROR_GAIN, match_intensity: bool = True) -> np.ndarray:
    """uint8 montage comparing methods with a reference, labelled in the image.

    ``reference (n, y, x)`` and each row's ``images (n, y, x)`` (magnitudes of the same n frames).
    Layout: a header strip naming the columns (the frames, then their error maps); then the
    reference row, then one row per method: its frames and ``|images - reference|`` at
    ``error_gain`` times the images' window (a fixed scale, the same for every method), with the
    row's label (several lines allowed, separated by newlines) at the left. All images share one
    window: the reference's 99.5th percentile. With ``match_intensity`` (default) each row is first
    scaled to the reference (``scale_to_reference``), as the scale-free scores see it.
    """
    reference = np.abs(_check_images(reference)).astype(np.float64)
    n, ny, nx = reference.shape
    if len(frame_names) != n:
        raise ValueError(f"frame_names must name the {n} frames, got {len(frame_names)}")
    window = _window(reference)

    def to_uint8(values: np.ndarray) -> np.ndarray:
        scaled = np.nan_to_num(values / window * 255.0, nan=0.0, posinf=255.0, neginf=0.0)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

    width = _LABEL_WIDTH + 2 * n * nx
    header = np.zeros((14, width), dtype=np.uint8)
    names = list(frame_names) + [f"|err| x{error_gain:g} {name}" for name in frame_names]
    for column, name in enumerate(names):
        header[:, _LABEL_WIDTH + column * nx:_LABEL_WIDTH + (column + 1) * nx] = _text_tile(nx, 14, [name])
    blocks = [header]
    for label, images in [("reference", reference)] + list(rows):
        images = np.abs(_check_images(images)).astype(np.float64)
        if images.shape != reference.shape:
            raise ValueError(f"row {label!r} has shape {images.shape}, the reference {reference.shape}")
        if match_intensity:
            images = scale_to_reference(images, reference)
        block = np.zeros((ny, width), dtype=np.uint8)
        block[:, :_LABEL_WIDTH] = _text_tile(_LABEL_WIDTH, ny, label.split("\n"))
        for i in range(n):
            block[:, _LABEL_WIDTH + i * nx:_LABEL_WIDTH + (i + 1) * nx] = to_uint8(images[i])
            if images is not reference and label != "reference":
                error = np.abs(images[i] - reference[i]) * error_gain
                start = _LABEL_WIDTH + (n + i) * nx
                block[:, start:start + nx] = to_uint8(error)
        blocks.append(block)
    return np.concatenate(blocks, axis=0)


def save_comparison(reference: np.ndarray, rows: list[tuple[str, np.ndarray]], path: PathLike, *,
                    frame_names: list[str], title: str, error_gain: float = ERROR_GAIN) -> Path:
    """Write :func:`comparison_array` with a title strip as a greyscale PNG; return the path."""
    from PIL import Image

    canvas = comparison_array(reference, rows, frame_names=frame_names, error_gain=error_gain)
    canvas = np.concatenate([_text_tile(canvas.shape[1], 14, [title]), canvas], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path, format="PNG")
    logger.info("wrote comparison %s (%d x %d)", path, canvas.shape[1], canvas.shape[0])
    return path
