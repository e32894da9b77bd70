"""The inverses of gadgets.layout's conversions (core -> Gadgetron buffers, images -> core), which the
chain never needs: the layout tests use them to show that the forward mappings lose nothing."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from gadgets.layout import (
    _IMAGE_AXES,
    _KSPACE_AXES,
    _LINE_AXES,
    BufferLayout,
    ImageIndex,
    _check_7d,
    _check_frames_dim,
)


def layout_of_image_array(data: np.ndarray, frames_dim: str = "N") -> BufferLayout:
    """Layout of an image array ``data [X, Y, Z, CHA, N, S, LOC]`` (Z becomes n_e2)."""
    _check_7d("data", data, "[X, Y, Z, CHA, N, S, LOC]")
    _, _, z, _, n, s, loc = data.shape
    return BufferLayout(int(z), int(n), int(s), int(loc), frames_dim)


def kspace_to_buffer(kspace: np.ndarray, layout: BufferLayout) -> np.ndarray:
    """Core ``kspace (batch, coils, frames, ky, kx)`` -> ``data [E0, E1, E2, CHA, N, S, LOC]``.

    The inverse of :func:`buffer_to_kspace`; the result is Fortran-contiguous complex64, like
    the arrays gadgetron-python reads, and writable.
    """
    if not isinstance(kspace, np.ndarray) or kspace.ndim != 5:
        shape = getattr(kspace, "shape", None)
        raise ValueError(f"kspace must be a numpy array (batch, coils, frames, ky, kx), got shape {shape}")
    if not np.iscomplexobj(kspace):
        raise ValueError(f"kspace must be complex (complex64), got dtype {kspace.dtype}")
    batch, cha, frames, e1, e0 = kspace.shape
    if batch != layout.batch or frames != layout.frames:
        raise ValueError(
            f"kspace shape {kspace.shape} does not match the layout (batch {layout.batch}, frames {layout.frames})"
        )
    folded = kspace.reshape(layout.n_loc, layout.n_other, layout.n_e2, cha, frames, e1, e0)
    data = np.transpose(folded, np.argsort(_KSPACE_AXES[layout.frames_dim]))
    return np.asfortranarray(data, dtype=np.complex64)


def mask_to_lines(mask: np.ndarray, layout: BufferLayout) -> np.ndarray:
    """Core line mask ``(batch, 1, frames, ky, 1)`` -> ``[E1, E2, N, S, LOC]`` bool (inverse of :func:`sampling_mask`)."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 5 or mask.shape[1] != 1 or mask.shape[4] != 1:
        raise ValueError(f"mask must be a numpy array (batch, 1, frames, ky, 1), got shape {getattr(mask, 'shape', None)}")
    if mask.shape[0] != layout.batch or mask.shape[2] != layout.frames:
        raise ValueError(f"mask shape {mask.shape} does not match the layout {layout}")
    e1 = mask.shape[3]
    folded = mask[:, 0, :, :, 0].astype(bool).reshape(layout.n_loc, layout.n_other, layout.n_e2, layout.frames, e1)
    return np.ascontiguousarray(np.transpose(folded, np.argsort(_LINE_AXES[layout.frames_dim])))


def image_array_to_images(data: np.ndarray, frames_dim: str = "N") -> tuple[np.ndarray, BufferLayout]:
    """Image array ``[X, Y, Z, CHA=1, N, S, LOC]`` -> core ``images (batch, frames, y, x)`` and its layout."""
    _check_7d("data", data, "[X, Y, Z, CHA, N, S, LOC]")
    _check_frames_dim(frames_dim)
    if data.shape[3] != 1:
        raise ValueError(f"image array must have one channel (CHA = 1) for core images, got shape {data.shape}")
    layout = layout_of_image_array(data, frames_dim)
    x, y = data.shape[:2]
    moved = np.transpose(data[:, :, :, 0], np.argsort(_IMAGE_AXES[frames_dim]))
    images = np.ascontiguousarray(moved).reshape(layout.batch, layout.frames, y, x)
    return images, layout


def ismrmrd_data_to_images(items: Iterable[tuple[ImageIndex, np.ndarray]], layout: BufferLayout) -> np.ndarray:
    """Inverse of :func:`images_to_ismrmrd_data`: every (n, s, loc) exactly once -> ``images (batch, frames, y, x)``."""
    array: np.ndarray | None = None
    seen: set[ImageIndex] = set()
    for index, data in items:
        index = ImageIndex(*index)
        if not isinstance(data, np.ndarray) or data.ndim != 4 or data.shape[0] != 1 or data.shape[1] != layout.n_e2:
            raise ValueError(
                f"image data must be (1, Z={layout.n_e2}, y, x), got shape {getattr(data, 'shape', None)} at {index}"
            )
        if not (0 <= index.n < layout.n_n and 0 <= index.s < layout.n_s and 0 <= index.loc < layout.n_loc):
            raise ValueError(f"image index {index} is outside the layout {layout}")
        if index in seen:
            raise ValueError(f"image index {index} given twice")
        seen.add(index)
        if array is None:
            _, z, y, x = data.shape
            array = np.zeros((x, y, z, 1, layout.n_n, layout.n_s, layout.n_loc), dtype=np.complex64, order="F")
        if data.shape[2:] != (array.shape[1], array.shape[0]):
            raise ValueError(f"image at {index} has shape {data.shape}, others have y, x = {array.shape[1::-1]}")
        array[:, :, :, 0, index.n, index.s, index.loc] = data[0].transpose(2, 1, 0)
    expected = layout.n_n * layout.n_s * layout.n_loc
    if array is None or len(seen) != expected:
        raise ValueError(f"need {expected} images (every n, s, loc of {layout}), got {len(seen)}")
    images, _ = image_array_to_images(array, layout.frames_dim)
    return images
