"""Readers of the CMRxRecon 2023, 2024 and 2025 challenge data (MATLAB v7.3 files, read with h5py).

The folder layouts, and what a path says (year, modality, view, scanner, undersampling):
``train.data.cmrxrecon_paths``.

Arrays: MATLAB stores k-space as ``(nx, ny, nc, nz, nt)`` (readout, phase, coils, slices, frames);
h5py sees the reversed order ``(nt, nz, nc, ny, nx)``; complex values are a compound dtype with
``real`` and ``imag`` fields (single or double). Data without a time axis (black blood, T1w/T2w in
2025) are ``(nz, nc, ny, nx)`` in h5py and get T = 1. A slice is read on its own (one hyperslab),
so multi-GB files are never loaded whole, and returned in the core layout ``(C, T, ky, kx)``
(ky = ny, the phase-encoding axis; kx = nx, the readout, which keeps the scanner's readout
oversampling in the challenge data).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from cardiomm_core.context import ScanContext

from .cmrxrecon_paths import (
    DEFAULT_LAX_VIEW,
    YEARS,
    PathInfo,
    PathLike,
    context_from_path,
    find_full_sample_files,
    parse_path,
)
from .sample import KspaceSample
from .skipping import READ_ERRORS, SkipUnreadable, check_on_read_error

logger = logging.getLogger(__name__)

#: Variable names of fully sampled k-space, in the order they are tried.
FULL_VARIABLES = ("kspace_full", "kspace")


# --------------------------------------------------------------------------- arrays

def _variable(handle: h5py.File, names: Sequence[str], what: str, ndims: tuple[int, ...]) -> h5py.Dataset:
    for name in names:
        if name in handle and isinstance(handle[name], h5py.Dataset):
            return handle[name]
    candidates = [k for k, v in handle.items()
                  if isinstance(v, h5py.Dataset) and not k.startswith("#") and v.ndim in ndims]
    if len(candidates) == 1:
        return handle[candidates[0]]
    raise KeyError(f"{handle.filename!r} has no {what} variable (tried {list(names)}; datasets with "
                   f"{ndims} dimensions: {candidates})")


def _to_complex(array: np.ndarray, source: str) -> np.ndarray:
    """MATLAB complex (compound real/imag) or a complex/real dtype -> complex64."""
    if array.dtype.names is not None:
        names = set(array.dtype.names)
        if not {"real", "imag"} <= names:
            raise ValueError(f"{source}: compound dtype with fields {sorted(names)}, expected 'real' and 'imag'")
        out = np.empty(array.shape, dtype=np.complex64)
        out.real = array["real"]
        out.imag = array["imag"]
        return out
    if np.iscomplexobj(array):
        return array.astype(np.complex64, copy=False)
    raise ValueError(f"{source}: k-space must be complex (a MATLAB complex array), got dtype {array.dtype}")


def _kspace_dataset(handle: h5py.File, variables: Sequence[str]) -> h5py.Dataset:
    dataset = _variable(handle, variables, "k-space", (4, 5))
    if dataset.ndim not in (4, 5):
        raise ValueError(f"{handle.filename!r}: k-space variable {dataset.name!r} must have 5 dimensions "
                         f"(nt, nz, nc, ny, nx) or 4 (nz, nc, ny, nx) in h5py order, got shape {dataset.shape}")
    if dataset.dtype.names is None and not np.issubdtype(dataset.dtype, np.complexfloating):
        raise ValueError(f"{handle.filename!r}: k-space variable {dataset.name!r} is not complex "
                         f"(dtype {dataset.dtype})")
    return dataset


def _core_shape(h5_shape: tuple[int, ...]) -> tuple[int, int, int, int, int]:
    """h5py shape (nt, nz, nc, ny, nx) or (nz, nc, ny, nx) -> (n_slices, C, T, ky, kx)."""
    if len(h5_shape) == 5:
        nt, nz, nc, ny, nx = h5_shape
    else:
        (nz, nc, ny, nx), nt = h5_shape, 1
    return int(nz), int(nc), int(nt), int(ny), int(nx)


def kspace_shape(path: PathLike, variables: Sequence[str] = FULL_VARIABLES) -> tuple[int, int, int, int, int]:
    """``(n_slices, C, T, ky, kx)`` of a challenge k-space file, from its metadata only."""
    with h5py.File(path, "r") as handle:
        return _core_shape(_kspace_dataset(handle, variables).shape)


def _read_slice(dataset: h5py.Dataset, slice_index: int, source: str) -> np.ndarray:
    n_slices = _core_shape(dataset.shape)[0]
    if isinstance(slice_index, bool) or not isinstance(slice_index, (int, np.integer)) \
            or not 0 <= slice_index < n_slices:
        raise ValueError(f"slice_index must be an integer in [0, {n_slices}) for {source}, got {slice_index!r}")
    if dataset.ndim == 5:
        block = _to_complex(dataset[:, int(slice_index)], source)      # (nt, nc, ny, nx)
        return np.ascontiguousarray(block.transpose(1, 0, 2, 3))       # (nc, nt, ny, nx)
    block = _to_complex(dataset[int(slice_index)], source)             # (nc, ny, nx)
    return np.ascontiguousarray(block[:, None])                        # (nc, 1, ny, nx)


def read_kspace_slice(path: PathLike, slice_index: int, variables: Sequence[str] = FULL_VARIABLES) -> np.ndarray:
    """One slice of a challenge k-space file: ``(C, T, ky, kx)`` complex64 (T = 1 for 4D data).

    Reads only that slice. ``variables`` are the names tried in order (then the file's only
    4D/5D dataset).
    """
    with h5py.File(path, "r") as handle:
        return _read_slice(_kspace_dataset(handle, variables), slice_index, str(path))


# --------------------------------------------------------------------------- the data set

@dataclass(frozen=True)
class CMRxReconFile:
    """One indexed fully sampled file: path, parsed folders, k-space shape ``(S, C, T, ky, kx)`` and context."""

    path: Path
    relative: str
    info: PathInfo
    shape: tuple[int, int, int, int, int]
    context: ScanContext

    @property
    def n_slices(self) -> int:
        return self.shape[0]


class CMRxReconDataset(SkipUnreadable, Dataset):
    """Fully sampled CMRxRecon slices as :class:`KspaceSample` (one item per file and slice).

    ``root``: a folder with the challenge data (the ``MultiCoil`` folder or above it).
    ``year``: 2023, 2024 or 2025; None detects it from the folders (:func:`parse_path`).
    ``modalities``: None for all, else names matched case-insensitively against the modality
    folder ("Cine", "Mapping"), the file name ("cine_sax", "T1map") or the context modality
    ("T1 mapping"). ``split``: "train", "val", "test" or None (see :func:`find_full_sample_files`).
    ``lax_view``: the view of plain ``cine_lax`` files ("long-axis" unless told, e.g. "four-chamber").
    ``readout_oversampling``: when > 1, ``KspaceSample.recon_nx = kx // readout_oversampling`` so
    targets are cropped to the central part of the readout.

    Unreadable files. At index time every file's metadata is opened (cheap: no k-space is read);
    a file that is not HDF5, lacks a k-space variable or has the wrong shape is skipped, logged
    as a warning naming it and recorded in ``skipped`` as ``(path, reason)``. At read time
    (``on_read_error="next"``, the default) a slice that cannot be read is logged and recorded the
    same way, its file is marked bad, and the next readable item (index + 1, wrapping) is returned
    instead, so a long run never stops for one bad file; a RuntimeError is raised only when no
    item is readable. ``on_read_error="raise"`` raises a RuntimeError naming the file instead.
    With DataLoader workers, read-time skips are recorded in the worker's copy of the data set.
    """

    def __init__(
        self,
        root: PathLike,
        year: int | None = None,
        modalities: Iterable[str] | None = None,
        split: str | None = "train",
        *,
        lax_view: str = DEFAULT_LAX_VIEW,
        readout_oversampling: int = 1,
        on_read_error: str = "next",
    ) -> None:
        if year is not None and year not in YEARS:
            raise ValueError(f"year must be one of {YEARS} or None, got {year!r}")
        check_on_read_error(on_read_error)
        if isinstance(readout_oversampling, bool) or not isinstance(readout_oversampling, int) \
                or readout_oversampling < 1:
            raise ValueError(f"readout_oversampling must be an integer >= 1, got {readout_oversampling!r}")
        if not isinstance(lax_view, str) or not lax_view.strip():
            raise ValueError(f"lax_view must be a non-empty string, got {lax_view!r}")
        if isinstance(modalities, str):
            modalities = [modalities]
        self.root = Path(root)
        self.modalities = None if modalities is None else frozenset(m.lower() for m in modalities)
        self.split = split
        self.lax_view = lax_view
        self.readout_oversampling = readout_oversampling
        self.on_read_error = on_read_error
        self.skipped: list[tuple[str, str]] = []
        self._bad: set[int] = set()

        paths = find_full_sample_files(self.root, split)
        years = {parse_path(p).year for p in paths}
        # a 2025 folder anywhere means 2025; else any AccFactor folder means 2023; else 2024
        detected = next((y for y in (2025, 2023, 2024) if y in years), None)
        self.year = year if year is not None else detected
        if year is not None and years - {None, year}:
            logger.warning("CMRxReconDataset: year=%d given, but the folders under %s look like %s",
                           year, self.root, sorted(y for y in years if y is not None))
        variables = ("kspace", "kspace_full") if self.year == 2025 else FULL_VARIABLES
        self.files: list[CMRxReconFile] = []
        self.items: list[tuple[int, int]] = []
        for path in paths:
            context = context_from_path(path, lax_view)
            info = parse_path(path)
            if self.modalities is not None and not {
                (info.modality_folder or "").lower(), info.name.lower(), context.modality.lower()
            } & self.modalities:
                continue
            try:
                shape = kspace_shape(path, variables)
            except READ_ERRORS as error:
                self._skip(path, f"{type(error).__name__}: {error}")
                continue
            file_index = len(self.files)
            self.files.append(CMRxReconFile(path, path.relative_to(self.root).as_posix(), info, shape, context))
            self.items.extend((file_index, s) for s in range(shape[0]))
        self._variables = variables
        logger.info("CMRxReconDataset: %d slices in %d files under %s (year %s, split %s); %d files skipped",
                    len(self.items), len(self.files), self.root, self.year, split, len(self.skipped))

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, index: int) -> KspaceSample:
        file_index, slice_index = self.items[index]
        entry = self.files[file_index]
        kspace = read_kspace_slice(entry.path, slice_index, self._variables)
        if kspace.shape != entry.shape[1:]:
            raise ValueError(f"slice {slice_index} has shape {kspace.shape}, the index says {entry.shape[1:]}")
        recon_nx = kspace.shape[-1] // self.readout_oversampling if self.readout_oversampling > 1 else None
        return KspaceSample(torch.from_numpy(kspace), entry.context, f"{entry.relative}@slice{slice_index}",
                            None, recon_nx)

    def _location(self) -> str:
        return f" under {self.root}"
