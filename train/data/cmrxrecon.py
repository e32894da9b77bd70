"""Readers of the CMRxRecon 2023, 2024 and 2025 challenge data (MATLAB v7.3 files, read with h5py).

The folder layouts, and what a path says (year, modality, view, scanner, undersampling):
``train.data.cmrxrecon_paths``.

Arrays: MATLAB stores k-space as ``(nx, ny, nc, nz, nt)`` (readout, phase, coils, slices, frames);
h5py sees the reversed order ``(nt, nz, nc, ny, nx)``; complex values are a compound dtype with
``real`` and ``imag`` fields (single or double). Data without a time axis (black blood, T1w/T2w in
2025) are ``(nz, nc, ny, nx)`` in h5py and get T = 1. A slice is read on its own (one hyperslab),
so multi-GB files are never loaded whole, and returned in the core layout ``(C, T, ky, kx)``
(ky = ny, the phase-encoding axis; kx = nx, the readout, which keeps the scanner's readout
oversampling in the challenge data). Masks read as ``(ny, nx)`` or ``(nt, ny, nx)`` and are
returned in the core layout ``(1, T, ky, kx|1)`` (kx = 1 when the mask is constant along kx).
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

from ._skipping import READ_ERRORS, SkipUnreadable, check_on_read_error
from .cmrxrecon_paths import (
    DEFAULT_LAX_VIEW,
    YEARS,
    PathInfo,
    PathLike,
    context_from_path,
    find_full_sample_files,
    parse_path,
    parse_undersampling,
)
from .sample import KspaceSample

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


def mask_to_core(mask: np.ndarray, n_frames: int, n_ky: int, n_kx: int, source: str = "mask") -> np.ndarray:
    """A challenge mask as h5py reads it -> core ``(1, T, ky, kx|1)`` float32 0/1.

    ``mask``: ``(ny, nx)`` (one mask for every frame) or ``(nt, ny, nx)``; the transposed
    orientation ``(nx, ny)`` / ``(nt, nx, ny)`` is accepted when the shape says so unambiguously.
    kx is reduced to 1 when the mask is constant along kx (line masks).
    """
    mask = np.asarray(mask)
    if mask.ndim not in (2, 3):
        raise ValueError(f"{source}: a mask must be (ny, nx) or (nt, ny, nx), got shape {mask.shape}")
    plane = mask.shape[-2:]
    if plane != (n_ky, n_kx):
        if plane == (n_kx, n_ky):
            mask = np.swapaxes(mask, -1, -2)
        else:
            raise ValueError(f"{source}: mask plane {plane} matches neither (ky, kx) = ({n_ky}, {n_kx}) "
                             "of the k-space nor its transpose")
    if mask.ndim == 2:
        mask = np.broadcast_to(mask, (n_frames, n_ky, n_kx))
    elif mask.shape[0] != n_frames:
        if mask.shape[0] == 1:
            mask = np.broadcast_to(mask, (n_frames, n_ky, n_kx))
        else:
            raise ValueError(f"{source}: mask has {mask.shape[0]} frames, the k-space {n_frames}")
    binary = (mask != 0).astype(np.float32)
    if np.all(binary == binary[..., :1]):
        binary = binary[..., :1]
    return np.ascontiguousarray(binary)[None]


# --------------------------------------------------------------------------- challenge undersampled data

@dataclass
class ChallengeUndersampled:
    """A challenge undersampled file with its mask.

    kspace        (S, C, T, ky, kx) complex64 tensor (the slices read)
    mask          (1, T, ky, kx|1) float32 tensor, core layout (the same for every slice)
    pattern       CMRxRecon mask family (Uniform, ktUniform, ktGaussian, ktRadial)
    acceleration  nominal acceleration from the file name
    context       ScanContext with that pattern and acceleration
    slices        indices of the slices in ``kspace``
    mask_path     the mask file read, or None when the mask was derived from the zeros of the k-space
    """

    path: Path
    kspace: torch.Tensor
    mask: torch.Tensor
    pattern: str
    acceleration: float
    context: ScanContext
    slices: tuple[int, ...]
    mask_path: Path | None


def find_mask_file(kus_path: PathLike) -> Path | None:
    """The mask file of a challenge undersampled file, or None when there is none.

    2024/2025: ``.../UnderSample_TaskX/.../<name>_kus_<P><R>.mat`` -> ``.../Mask_TaskX/.../<name>_mask_<P><R>.mat``;
    2023: ``.../AccFactorNN/P001/<name>.mat`` -> ``.../AccFactorNN/P001/<name>_mask.mat``.
    """
    kus_path = Path(kus_path)
    stem = kus_path.name[:-4]
    candidates = []
    if "_kus_" in stem:
        name = stem.replace("_kus_", "_mask_") + ".mat"
        parts = list(kus_path.parts[:-1])
        for i, part in enumerate(parts):
            if part.startswith("UnderSample"):
                parts[i] = "Mask" + part[len("UnderSample"):]
        candidates += [Path(*parts) / name, kus_path.parent / name]
    else:
        candidates.append(kus_path.parent / f"{stem}_mask.mat")
    return next((c for c in candidates if c.is_file()), None)


def read_challenge_undersampled(
    kus_path: PathLike,
    mask_path: PathLike | None = None,
    *,
    slices: int | Sequence[int] | None = None,
    lax_view: str = DEFAULT_LAX_VIEW,
) -> ChallengeUndersampled:
    """Read a challenge undersampled file (``kus``, ``kspace_subNN``) and its mask.

    ``mask_path`` defaults to :func:`find_mask_file`; without a mask file the mask is where the
    k-space is non-zero (over coils and slices). ``slices``: one index, several, or None for all.
    Pattern and acceleration come from the file name (:func:`parse_undersampling`).
    Returns a :class:`ChallengeUndersampled` with ``kspace (S, C, T, ky, kx)`` and ``mask (1, T, ky, kx|1)``.
    """
    kus_path = Path(kus_path)
    pattern, acceleration = parse_undersampling(kus_path)
    variables = ("kus", f"kspace_sub{int(acceleration):02d}", f"kspace_sub{int(acceleration)}", "kspace")
    with h5py.File(kus_path, "r") as handle:
        dataset = _kspace_dataset(handle, variables)
        n_slices = _core_shape(dataset.shape)[0]
        if slices is None:
            chosen = tuple(range(n_slices))
        elif isinstance(slices, (int, np.integer)) and not isinstance(slices, bool):
            chosen = (int(slices),)
        else:
            chosen = tuple(int(s) for s in slices)
        if not chosen:
            raise ValueError("slices must name at least one slice")
        kspace = np.stack([_read_slice(dataset, s, str(kus_path)) for s in chosen])
    _, n_frames, n_ky, n_kx = kspace.shape[1:]
    mask_file = Path(mask_path) if mask_path is not None else find_mask_file(kus_path)
    if mask_file is not None:
        mask_variables = ("mask", f"mask{int(acceleration):02d}", f"mask{int(acceleration)}")
        with h5py.File(mask_file, "r") as handle:
            raw = _variable(handle, mask_variables, "mask", (2, 3))[()]
        mask = mask_to_core(raw, n_frames, n_ky, n_kx, str(mask_file))
    else:
        logger.info("no mask file for %s; using the non-zero k-space locations as the mask", kus_path)
        sampled = np.any(kspace != 0, axis=(0, 1))                         # (T, ky, kx)
        mask = mask_to_core(sampled, n_frames, n_ky, n_kx, str(kus_path))
    context = context_from_path(kus_path, lax_view).with_sampling(acceleration, pattern)
    return ChallengeUndersampled(kus_path, torch.from_numpy(kspace), torch.from_numpy(mask), pattern,
                                 acceleration, context, chosen, mask_file)


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
