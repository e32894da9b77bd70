"""The one place that converts between Gadgetron's array layouts and the core layout, both ways.

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

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import ismrmrd
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

    @classmethod
    def from_image_array(cls, data: np.ndarray, frames_dim: str = "N") -> BufferLayout:
        """Layout of an image array ``data [X, Y, Z, CHA, N, S, LOC]`` (Z becomes n_e2)."""
        _check_7d("data", data, "[X, Y, Z, CHA, N, S, LOC]")
        _, _, z, _, n, s, loc = data.shape
        return cls(int(z), int(n), int(s), int(loc), frames_dim)


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

    Returns a new C-contiguous complex64 array and the :class:`BufferLayout` that inverts it
    (:func:`kspace_to_buffer`). Any memory order of ``data`` is accepted.
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


def mask_to_lines(mask: np.ndarray, layout: BufferLayout) -> np.ndarray:
    """Core line mask ``(batch, 1, frames, ky, 1)`` -> ``[E1, E2, N, S, LOC]`` bool (inverse of :func:`sampling_mask`)."""
    if not isinstance(mask, np.ndarray) or mask.ndim != 5 or mask.shape[1] != 1 or mask.shape[4] != 1:
        raise ValueError(f"mask must be a numpy array (batch, 1, frames, ky, 1), got shape {getattr(mask, 'shape', None)}")
    if mask.shape[0] != layout.batch or mask.shape[2] != layout.frames:
        raise ValueError(f"mask shape {mask.shape} does not match the layout {layout}")
    e1 = mask.shape[3]
    folded = mask[:, 0, :, :, 0].astype(bool).reshape(layout.n_loc, layout.n_other, layout.n_e2, layout.frames, e1)
    return np.ascontiguousarray(np.transpose(folded, np.argsort(_LINE_AXES[layout.frames_dim])))


# --------------------------------------------------------------------------- images


def images_to_image_array(images: np.ndarray, layout: BufferLayout) -> np.ndarray:
    """Core ``images (batch, frames, y, x)`` -> image array ``[X, Y, Z, 1, N, S, LOC]`` complex64 (Fortran order)."""
    _check_images(images, layout)
    batch, frames, y, x = images.shape
    folded = images.reshape(layout.n_loc, layout.n_other, layout.n_e2, frames, y, x)
    moved = np.transpose(folded, _IMAGE_AXES[layout.frames_dim])[:, :, :, None]
    return np.asfortranarray(moved, dtype=np.complex64)


def image_array_to_images(data: np.ndarray, frames_dim: str = "N") -> tuple[np.ndarray, BufferLayout]:
    """Image array ``[X, Y, Z, CHA=1, N, S, LOC]`` -> core ``images (batch, frames, y, x)`` and its layout."""
    _check_7d("data", data, "[X, Y, Z, CHA, N, S, LOC]")
    _check_frames_dim(frames_dim)
    if data.shape[3] != 1:
        raise ValueError(f"image array must have one channel (CHA = 1) for core images, got shape {data.shape}")
    layout = BufferLayout.from_image_array(data, frames_dim)
    x, y = data.shape[:2]
    moved = np.transpose(data[:, :, :, 0], np.argsort(_IMAGE_AXES[frames_dim]))
    images = np.ascontiguousarray(moved).reshape(layout.batch, layout.frames, y, x)
    return images, layout


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


#: ISMRMRD image-header fields that hold the N, S and LOC indices by default.
DEFAULT_INDEX_FIELDS = ("phase", "set", "slice")


def to_ismrmrd_images(
    images: np.ndarray,
    layout: BufferLayout,
    *,
    magnitude: bool = True,
    acq_headers: np.ndarray | None = None,
    field_of_view: Sequence[float] | None = None,
    image_series_index: int = 1,
    index_fields: Sequence[str] = DEFAULT_INDEX_FIELDS,
) -> list[ismrmrd.Image]:
    """Core ``images (batch, frames, y, x)`` -> ``ismrmrd.Image`` list, one per (N, S, LOC).

    Data is float32 magnitude (``magnitude=True``, image type MAGNITUDE) or complex64 (type
    COMPLEX), shaped ``(1, Z, y, x)``. Header indices: ``index_fields`` name the fields for N, S,
    LOC (phase, set, slice by default); ``image_index`` counts from 1. With ``acq_headers``
    (the ReconBuffer's ``[E1, E2, N, S, LOC]`` object array) the first filled acquisition header
    of each (N, S, LOC) supplies position, orientation, time stamps and counters, as
    ``ImageHeader.from_acquisition`` does.
    """
    n_field, s_field, loc_field = index_fields
    result = []
    for number, (index, data) in enumerate(images_to_ismrmrd_data(images, layout), start=1):
        pixels = np.abs(data).astype(np.float32) if magnitude else data.astype(np.complex64)
        reference = _reference_header(acq_headers, index)
        if reference is not None:
            head = ismrmrd.ImageHeader.from_acquisition(reference)
        else:
            head = ismrmrd.ImageHeader()
        head.version = 1
        head.image_type = ismrmrd.IMTYPE_MAGNITUDE if magnitude else ismrmrd.IMTYPE_COMPLEX
        head.image_index = number
        head.image_series_index = image_series_index
        setattr(head, n_field, index.n)
        setattr(head, s_field, index.s)
        setattr(head, loc_field, index.loc)
        if field_of_view is not None:
            head.field_of_view[:] = [float(v) for v in field_of_view]
        image = ismrmrd.Image(head=head, data=pixels)
        result.append(image)
    return result


def from_ismrmrd_images(
    images: Sequence[ismrmrd.Image],
    layout: BufferLayout,
    index_fields: Sequence[str] = DEFAULT_INDEX_FIELDS,
) -> np.ndarray:
    """``ismrmrd.Image`` list (one per N, S, LOC; indices in ``index_fields``) -> ``images (batch, frames, y, x)`` complex64."""
    n_field, s_field, loc_field = index_fields
    items = []
    for image in images:
        head = image.getHead()
        index = ImageIndex(int(getattr(head, n_field)), int(getattr(head, s_field)), int(getattr(head, loc_field)))
        items.append((index, np.asarray(image.data)))
    return ismrmrd_data_to_images(items, layout)


def _reference_header(acq_headers: np.ndarray | None, index: ImageIndex) -> ismrmrd.AcquisitionHeader | None:
    if acq_headers is None:
        return None
    block = np.asarray(acq_headers, dtype=object)[:, :, index.n, index.s, index.loc]
    for header in block.ravel(order="F"):
        if header is not None and int(header.number_of_samples) > 0:
            return _copy_header(header)
    return None


def _copy_header(header: ismrmrd.AcquisitionHeader) -> ismrmrd.AcquisitionHeader:
    return ismrmrd.AcquisitionHeader.from_buffer_copy(bytes(memoryview(header)))


def _check_images(images: np.ndarray, layout: BufferLayout) -> None:
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ValueError(f"images must be a numpy array (batch, frames, y, x), got shape {getattr(images, 'shape', None)}")
    if images.shape[0] != layout.batch or images.shape[1] != layout.frames:
        raise ValueError(
            f"images shape {images.shape} does not match the layout (batch {layout.batch}, frames {layout.frames})"
        )
