"""The one place that converts between Gadgetron's array layouts and the core layout: buffers in, images out.

Gadgetron side (as gadgetron-python 1.4.1 hands them to a Python gadget):

* ReconData buffer ``data [E0, E1, E2, CHA, N, S, LOC]`` complex64. gadgetron-python reads the
  hoNDArray with ``numpy.reshape(..., order="F")``, so the array has that shape, is
  Fortran-contiguous and read-only (a view of the received bytes). ``headers [E1, E2, N, S, LOC]``
  is an object array of ``ismrmrd.AcquisitionHeader``; a line that received no acquisition keeps
  a default header (``number_of_samples == 0``) and zero data.
* Image array ``data [X, Y, Z, CHA, N, S, LOC]`` complex64 (same Fortran reading).
* ``ismrmrd.Image`` data ``(CHA, Z, Y, X)`` C-order (ismrmrd-python's own convention).

Core side (DESIGN.md): ``kspace (batch, coils, frames, ky, kx)``, ``mask (batch, 1, frames, ky, 1)``,
``images (batch, frames, y, x)``; ky = E1 (phase encoding), kx = E0 (readout).

Folding (:class:`BufferLayout`):

* ``frames`` is the N dimension (cine phases, BucketToBuffer's ``N_dimension``) by default, or
  S (sets/contrasts, ``S_dimension``) with ``frames_dim="S"``;
* ``batch`` folds, slowest first, ``LOC`` x (the other of N/S) x ``E2``:
  ``batch = (loc * n_other + other) * n_e2 + e2``. For 2D multi-slice scans E2 = 1; for a 3D
  scan each batch entry is one kz line of k-space as received (inverse-FFT along E2 first if a
  per-partition reconstruction is wanted).
* images go back to ``[X, Y, Z, 1, N, S, LOC]`` with Z = E2 (one image per batch entry and
  frame), and to one ``ismrmrd.Image`` of data ``(1, Z, Y, X)`` per (N, S, LOC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

#: Names of the Gadgetron dimensions that can become the core ``frames`` axis.
FRAME_DIMS = ("N", "S")

# Axis permutations of data [E0, E1, E2, CHA, N, S, LOC] into (LOC, OTHER, E2, CHA, FRAMES, E1, E0).
_KSPACE_AXES = {"N": (6, 5, 2, 3, 4, 1, 0), "S": (6, 4, 2, 3, 5, 1, 0)}
# Axis permutations of headers/lines [E1, E2, N, S, LOC] into (LOC, OTHER, E2, FRAMES, E1).
_LINE_AXES = {"N": (4, 3, 1, 2, 0), "S": (4, 2, 1, 3, 0)}
# (LOC, OTHER, E2, FRAMES, Y, X) -> image array order (X, Y, E2, N, S, LOC) (CHA inserted after).
_IMAGE_AXES = {"N": (5, 4, 2, 3, 1, 0), "S": (5, 4, 2, 1, 3, 0)}


class ImageIndex(NamedTuple):
    """Position of one image in Gadgetron's ``[N, S, LOC]`` image grid."""

    n: int
    s: int
    loc: int


@dataclass(frozen=True)
class BufferLayout:
    """Sizes of the Gadgetron dimensions that fold into core ``batch`` and ``frames``.

    ``frames_dim`` is ``"N"`` (default) or ``"S"``. ``batch = n_loc * n_other * n_e2``.
    """

    n_e2: int
    n_n: int
    n_s: int
    n_loc: int
    frames_dim: str = "N"

    def __post_init__(self) -> None:
        if self.frames_dim not in FRAME_DIMS:
            raise ValueError(f"frames_dim must be one of {FRAME_DIMS}, got {self.frames_dim!r}")
        for name in ("n_e2", "n_n", "n_s", "n_loc"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @property
    def frames(self) -> int:
        """Size of the core frames axis (N or S)."""
        return self.n_n if self.frames_dim == "N" else self.n_s

    @property
    def n_other(self) -> int:
        """Size of whichever of N/S is folded into batch."""
        return self.n_s if self.frames_dim == "N" else self.n_n

    @property
    def batch(self) -> int:
        """Size of the core batch axis: LOC x other x E2."""
        return self.n_loc * self.n_other * self.n_e2

    def batch_index(self, e2: int, n: int, s: int, loc: int) -> int:
        """Core batch index of Gadgetron indices (e2, n, s, loc)."""
        other = s if self.frames_dim == "N" else n
        return (loc * self.n_other + other) * self.n_e2 + e2

    def frame_index(self, n: int, s: int) -> int:
        """Core frame index of Gadgetron indices (n, s)."""
        return n if self.frames_dim == "N" else s

    @classmethod
    def from_buffer(cls, data: np.ndarray, frames_dim: str = "N") -> BufferLayout:
        """Layout of a buffer ``data [E0, E1, E2, CHA, N, S, LOC]``."""
        _check_7d("data", data, "[E0, E1, E2, CHA, N, S, LOC]")
        _, _, e2, _, n, s, loc = data.shape
        return cls(int(e2), int(n), int(s), int(loc), frames_dim)



def _check_7d(name: str, array: object, layout: str) -> None:
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} must be a numpy array {layout}, got {type(array).__name__}")
    if array.ndim != 7:
        raise ValueError(f"{name} must have 7 dimensions {layout}, got shape {array.shape}")


def _check_frames_dim(frames_dim: str) -> None:
    if frames_dim not in FRAME_DIMS:
        raise ValueError(f"frames_dim must be one of {FRAME_DIMS}, got {frames_dim!r}")


# --------------------------------------------------------------------------- k-space


def buffer_to_kspace(data: np.ndarray, frames_dim: str = "N") -> tuple[np.ndarray, BufferLayout]:
    """ReconData ``data [E0, E1, E2, CHA, N, S, LOC]`` -> core ``kspace (batch, coils, frames, ky, kx)``.

    Returns a new C-contiguous complex64 array and its :class:`BufferLayout` (which folds the core's
    images back, :func:`images_to_image_array`). Any memory order of ``data`` is accepted.
    """
    _check_7d("data", data, "[E0, E1, E2, CHA, N, S, LOC]")
    _check_frames_dim(frames_dim)
    if not np.iscomplexobj(data):
        raise ValueError(f"data must be complex (complex64), got dtype {data.dtype}")
    layout = BufferLayout.from_buffer(data, frames_dim)
    e0, e1, _, cha = data.shape[:4]
    moved = np.transpose(data, _KSPACE_AXES[frames_dim])
    kspace = np.ascontiguousarray(moved, dtype=np.complex64).reshape(layout.batch, cha, layout.frames, e1, e0)
    return kspace, layout


def line_sampled(data: np.ndarray, headers: np.ndarray | None = None) -> np.ndarray:
    """Which lines of a buffer carry data: ``[E1, E2, N, S, LOC]`` bool.

    A line counts as sampled when its header was filled by an acquisition
    (``number_of_samples > 0``; BucketToBuffer leaves default headers elsewhere) or when any of
    its samples is non-zero. ``headers`` (object array ``[E1, E2, N, S, LOC]``) may be None.
    """
    _check_7d("data", data, "[E0, E1, E2, CHA, N, S, LOC]")
    sampled = np.any(data != 0, axis=(0, 3))
    if headers is not None:
        headers = np.asarray(headers, dtype=object)
        if headers.shape != sampled.shape:
            raise ValueError(
                f"headers must have shape [E1, E2, N, S, LOC] = {sampled.shape}, got {headers.shape}"
            )
        filled = np.frompyfunc(lambda h: int(getattr(h, "number_of_samples", 0)) > 0, 1, 1)(headers)
        sampled = sampled | filled.astype(bool)
    return sampled


def sampling_mask(data: np.ndarray, headers: np.ndarray | None, layout: BufferLayout) -> np.ndarray:
    """Core line mask ``(batch, 1, frames, ky, 1)`` bool of a buffer ``data [E0, E1, E2, CHA, N, S, LOC]``.

    See :func:`line_sampled` for what counts as sampled.
    """
    lines = line_sampled(data, headers)
    if lines.shape[1:] != (layout.n_e2, layout.n_n, layout.n_s, layout.n_loc):
        raise ValueError(f"buffer of shape {data.shape} does not match layout {layout}")
    moved = np.transpose(lines, _LINE_AXES[layout.frames_dim])
    mask = np.ascontiguousarray(moved).reshape(layout.batch, layout.frames, lines.shape[0])
    return mask[:, None, :, :, None]


# --------------------------------------------------------------------------- images


def images_to_image_array(images: np.ndarray, layout: BufferLayout) -> np.ndarray:
    """Core ``images (batch, frames, y, x)`` -> image array ``[X, Y, Z, 1, N, S, LOC]`` complex64 (Fortran order)."""
    _check_images(images, layout)
    batch, frames, y, x = images.shape
    folded = images.reshape(layout.n_loc, layout.n_other, layout.n_e2, frames, y, x)
    moved = np.transpose(folded, _IMAGE_AXES[layout.frames_dim])[:, :, :, None]
    return np.asfortranarray(moved, dtype=np.complex64)


def images_to_ismrmrd_data(images: np.ndarray, layout: BufferLayout) -> list[tuple[ImageIndex, np.ndarray]]:
    """Core ``images (batch, frames, y, x)`` -> one ``(ImageIndex(n, s, loc), data (1, Z, y, x))`` per image.

    ``data`` is C-ordered, the layout ``ismrmrd.Image`` holds; Z = E2. Ordered by LOC, then S,
    then N (the Fortran order of Gadgetron's ``[N, S, LOC]`` image headers, reversed: N fastest).
    """
    array = images_to_image_array(images, layout)
    result = []
    for loc in range(layout.n_loc):
        for s in range(layout.n_s):
            for n in range(layout.n_n):
                volume = array[:, :, :, 0, n, s, loc]  # (X, Y, Z)
                result.append((ImageIndex(n, s, loc), np.ascontiguousarray(volume.transpose(2, 1, 0)[None])))
    return result


def _check_images(images: np.ndarray, layout: BufferLayout) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ValueError(f"images must be a numpy array (batch, frames, y, x), got shape {getattr(images, 'shape', None)}")
    if images.shape[0] != layout.batch or images.shape[1] != layout.frames:
        raise ValueError(
            f"images shape {images.shape} does not match the layout (batch {layout.batch}, frames {layout.frames})"
        )
