"""Readers of the CMRxRecon 2023, 2024 and 2025 challenge data (MATLAB v7.3 files, read with h5py).

Folder layouts (as the challenges distribute them; ``<root>`` may be the ``MultiCoil`` folder or
any folder above it, and only ``MultiCoil`` data are read, ``SingleCoil`` is ignored):

2023  ``MultiCoil/{Cine,Mapping}/{TrainingSet,ValidationSet,TestSet}/FullSample/P001/{cine_sax,cine_lax,T1map,T2map}.mat``
      (variable ``kspace_full``); undersampled ``AccFactor{04,08,10}/P001/cine_sax.mat``
      (``kspace_sub04`` ...) with ``cine_sax_mask.mat`` (``mask04`` ..., 2D Uniform masks).
2024  ``MultiCoil/{Cine,Mapping,Aorta,Tagging,BlackBlood,Flow2d}/TrainingSet/FullSample/P001/<name>.mat``
      (``kspace_full``; names cine_sax, cine_lax, cine_lvot, T1map, T2map, aorta_sag, aorta_tra,
      tagging, blackblood, flow2d); undersampled
      ``UnderSample_Task{1,2}/P001/<name>_kus_<Pattern><R>.mat`` (``kus``) with
      ``Mask_Task{1,2}/P001/<name>_mask_<Pattern><R>.mat`` (``mask``: 2D for Uniform, 3D per frame
      for the kt patterns).
2025  ``MultiCoil/<Modality>/TrainingSet/FullSample/<Center>/<Vendor>_<Field>T_<Model>/<Patient>/<name>.mat``
      (variable ``kspace``; e.g. ``Center006/Siemens_30T_Prisma/P002/blackblood.mat``; modalities
      BlackBlood, Cine, Flow2d, LGE, Mapping, Perfusion, T1rho, T1w, T2w; names such as
      cine_lax_3ch, lge_sax, T1w); undersampled ``UnderSample_TaskR1/<Center>/<Vendor>/<Patient>/<name>_kus_<Pattern><R>.mat``
      with masks in ``Mask_TaskR1/...``.

Arrays: MATLAB stores k-space as ``(nx, ny, nc, nz, nt)`` (readout, phase, coils, slices, frames);
h5py sees the reversed order ``(nt, nz, nc, ny, nx)``; complex values are a compound dtype with
``real`` and ``imag`` fields (single or double). Data without a time axis (black blood, T1w/T2w in
2025) are ``(nz, nc, ny, nx)`` in h5py and get T = 1. A slice is read on its own (one hyperslab),
so multi-GB files are never loaded whole, and returned in the core layout ``(C, T, ky, kx)``
(ky = ny, the phase-encoding axis; kx = nx, the readout, which keeps the scanner's readout
oversampling in the challenge data). Masks read as ``(ny, nx)`` or ``(nt, ny, nx)`` and are
returned in the core layout ``(1, T, ky, kx|1)`` (kx = 1 when the mask is constant along kx).

Scan context: modality and view from the file name (``cine_sax`` -> Cine, short-axis;
``cine_lax_2ch`` -> two-chamber; plain ``cine_lax`` -> the dataset's ``lax_view``, "long-axis" by
default; ``T1map`` -> T1 mapping ...; see :func:`parse_modality_view`). Field strength, vendor and
model come from 2025's scanner folder (``Siemens_30T_Prisma`` -> 3.0 T, Siemens, Prisma); 2023 and
2024 data were all acquired on 3 T Siemens MAGNETOM Vida scanners, which is the default
(``DEFAULT_SCANNER``).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from cardiomm_core.context import ScanContext
from cardiomm_core.masks import MASK_PATTERNS

from ._skipping import READ_ERRORS, SkipUnreadable, check_on_read_error
from .sample import KspaceSample

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Challenge years this module reads.
YEARS = (2023, 2024, 2025)
#: (field strength T, vendor, model) of the 2023 and 2024 data (3 T Siemens MAGNETOM Vida).
DEFAULT_SCANNER = (3.0, "Siemens", "Vida")
#: Variable names of fully sampled k-space, in the order they are tried.
FULL_VARIABLES = ("kspace_full", "kspace")
#: Split names -> set folder names.
SPLITS = {"train": "TrainingSet", "training": "TrainingSet", "val": "ValidationSet",
          "validation": "ValidationSet", "test": "TestSet"}
#: View of a plain ``cine_lax`` file unless the dataset is told the chamber view.
DEFAULT_LAX_VIEW = "long-axis"

_SAMPLING_FOLDER = re.compile(r"^(FullSample|UnderSample|AccFactor|Mask)")
_SCANNER_FOLDER = re.compile(r"^(?P<vendor>[A-Za-z]+)_(?P<field>\d+(?:\.\d+)?)T_(?P<model>.+)$")
_KUS_NAME = re.compile(r"_(?:kus|mask)_(?P<pattern>ktUniform|ktGaussian|ktRadial|Uniform)(?P<acc>\d+(?:\.\d+)?)$")
_ACC_FOLDER = re.compile(r"^AccFactor(?P<acc>\d+)$")

#: File-name stem (lower case, without chamber suffix) -> (modality, default view).
_NAME_TABLE: dict[str, tuple[str, str]] = {
    "cine_sax": ("Cine", "short-axis"),
    "cine_lax": ("Cine", DEFAULT_LAX_VIEW),
    "cine_lvot": ("Cine", "LVOT"),
    "cine_rvot": ("Cine", "RVOT"),
    "t1map": ("T1 mapping", "short-axis"),
    "t2map": ("T2 mapping", "short-axis"),
    "t2smap": ("T2* mapping", "short-axis"),
    "t1mappost": ("T1 mapping", "short-axis"),
    "t1rho": ("T1rho mapping", "short-axis"),
    "t1w": ("T1-weighted", "short-axis"),
    "t2w": ("T2-weighted", "short-axis"),
    "aorta_sag": ("Cine", "aorta, sagittal"),
    "aorta_tra": ("Cine", "aorta, transversal"),
    "tagging": ("Tagging", "short-axis"),
    "blackblood": ("Black blood", "short-axis"),
    "flow2d": ("Flow", "aorta"),
    "lge_sax": ("LGE", "short-axis"),
    "lge_lax": ("LGE", DEFAULT_LAX_VIEW),
    "perfusion": ("Perfusion", "short-axis"),
}
_CHAMBERS = {"2ch": "two-chamber", "3ch": "three-chamber", "4ch": "four-chamber"}
#: Modality folder (lower case) -> modality, for names the table does not know.
_FOLDER_MODALITY = {
    "cine": "Cine", "mapping": "T1 mapping", "aorta": "Cine", "tagging": "Tagging", "blackblood": "Black blood",
    "flow2d": "Flow", "lge": "LGE", "perfusion": "Perfusion", "t1rho": "T1rho mapping", "t1w": "T1-weighted",
    "t2w": "T2-weighted",
}


# --------------------------------------------------------------------------- names

def parse_modality_view(name: str, folder: str | None = None, lax_view: str = DEFAULT_LAX_VIEW) -> tuple[str, str]:
    """(modality, view) for a CMRxRecon file name such as ``cine_sax`` or ``cine_lax_4ch``.

    ``name`` may carry a ``.mat`` suffix and a ``_kus_...``/``_mask...`` tail. A ``_2ch``/``_3ch``/
    ``_4ch`` suffix gives the two-/three-/four-chamber view; a plain long-axis name (``cine_lax``,
    ``lge_lax``) gets ``lax_view``. Unknown names fall back to the modality folder
    (``folder``, e.g. "Cine") and view "short-axis"; with neither known, modality is the name itself.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    stem = Path(name).name
    if stem.lower().endswith(".mat"):
        stem = stem[:-4]
    stem = re.split(r"_(?:kus|mask)(?:_|$)", stem)[0].lower()
    chamber = None
    match = re.search(r"_(2ch|3ch|4ch)$", stem)
    if match:
        chamber = _CHAMBERS[match.group(1)]
        stem = stem[:match.start()]
    if stem in _NAME_TABLE:
        modality, view = _NAME_TABLE[stem]
    elif folder is not None and folder.lower() in _FOLDER_MODALITY:
        modality, view = _FOLDER_MODALITY[folder.lower()], "short-axis"
        logger.debug("unknown CMRxRecon file name %r: modality %s from folder %r", name, modality, folder)
    else:
        modality, view = stem, "short-axis"
        logger.debug("unknown CMRxRecon file name %r and folder %r: modality %r", name, folder, stem)
    if chamber is not None:
        view = chamber
    elif view == DEFAULT_LAX_VIEW:
        view = lax_view
    return modality, view


def parse_scanner_folder(name: str) -> tuple[float, str, str] | None:
    """``Siemens_30T_Prisma`` -> ``(3.0, "Siemens", "Prisma")``; ``UIH_15T_umr680`` -> ``(1.5, "UIH", "umr680")``.

    The field is written in tenths of a tesla (``30T`` = 3.0 T; ``3T`` or ``3.0T`` are read as
    tesla). Returns None for a name that is not a scanner folder.
    """
    match = _SCANNER_FOLDER.match(name)
    if match is None:
        return None
    text = match.group("field")
    value = float(text)
    field = value if "." in text or value < 10 else value / 10.0
    if not 0.1 <= field <= 15:
        return None
    return field, match.group("vendor"), match.group("model")


def parse_undersampling(path: PathLike) -> tuple[str, float]:
    """(pattern, nominal acceleration) from a challenge file name.

    ``cine_sax_kus_ktGaussian16.mat`` or ``cine_sax_mask_ktGaussian16.mat`` -> ("ktGaussian", 16.0)
    (2024/2025); ``.../AccFactor08/P001/cine_sax.mat`` -> ("Uniform", 8.0) (2023, whose masks are
    uniform). Raises ValueError when the name says neither.
    """
    path = Path(path)
    stem = path.name[:-4] if path.name.lower().endswith(".mat") else path.name
    match = _KUS_NAME.search(stem)
    if match is not None:
        return match.group("pattern"), float(match.group("acc"))
    for part in reversed(path.parts[:-1]):
        folder = _ACC_FOLDER.match(part)
        if folder is not None:
            return "Uniform", float(folder.group("acc"))
    raise ValueError(f"cannot tell the undersampling of {str(path)!r}: expected '<name>_kus_<Pattern><R>.mat' "
                     f"(patterns {MASK_PATTERNS}) or an 'AccFactorNN' folder")


@dataclass(frozen=True)
class PathInfo:
    """What a challenge path says: year (2023/2024/2025 or None), modality folder, set, sampling folder, scanner, patient."""

    year: int | None
    modality_folder: str | None
    set_name: str | None
    sampling_folder: str | None
    center: str | None
    scanner_folder: str | None
    patient: str | None
    name: str


@functools.lru_cache(maxsize=256)
def _has_acc_factor_folder(set_folder: str) -> bool:
    """Whether a set folder holds 2023-style ``AccFactorNN`` folders."""
    folder = Path(set_folder)
    return folder.is_dir() and any(_ACC_FOLDER.match(p.name) for p in folder.iterdir())


def parse_path(path: PathLike) -> PathInfo:
    """Read the CMRxRecon folder structure around a ``.mat`` file (see the module docstring).

    The year is 2025 when centre/scanner folders sit between the sampling folder and the patient,
    2023 for an ``AccFactorNN`` sampling folder or a FullSample folder with AccFactor siblings,
    else 2024 (None when the path has no sampling folder).
    """
    path = Path(path)
    parts = path.parts
    stem = path.name[:-4] if path.name.lower().endswith(".mat") else path.name
    index = next((i for i in range(len(parts) - 2, -1, -1) if _SAMPLING_FOLDER.match(parts[i])), None)
    if index is None:
        return PathInfo(None, None, None, None, None, None, path.parent.name or None, stem)
    between = parts[index + 1:-1]
    modality = parts[index - 2] if index >= 2 else None
    set_name = parts[index - 1] if index >= 1 else None
    center = scanner = None
    patient = between[-1] if between else None
    if len(between) >= 3:
        center, scanner = between[-3], between[-2]
        year: int | None = 2025
    elif parts[index].startswith("AccFactor"):
        year = 2023
    else:
        year = 2024
        if len(path.parents) > len(between) + 1 and _has_acc_factor_folder(str(path.parents[len(between) + 1])):
            year = 2023
    return PathInfo(year, modality, set_name, parts[index], center, scanner, patient, stem)


def context_from_path(path: PathLike, lax_view: str = DEFAULT_LAX_VIEW) -> ScanContext:
    """Fully sampled ScanContext of a challenge file from its name and folders (see the module docstring)."""
    info = parse_path(path)
    modality, view = parse_modality_view(info.name, info.modality_folder, lax_view)
    field, vendor, model = DEFAULT_SCANNER
    if info.scanner_folder is not None:
        scanner = parse_scanner_folder(info.scanner_folder)
        if scanner is not None:
            field, vendor, model = scanner
        else:
            logger.debug("scanner folder %r not understood; using the default %s", info.scanner_folder, DEFAULT_SCANNER)
    return ScanContext(field_strength_t=field, vendor=vendor, scanner_model=model, modality=modality, view=view)


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


def ranking_crop(images: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """The CMRxRecon evaluation crop of ``images (..., y, x)``: the central round(nx/3) x round(ny/2).

    As the challenge's ``run4Ranking``/``crop_submission``: MATLAB's ``crop(img, [round(sx/3),
    round(sy/2)])`` with sx the readout (our x) and sy the phase encoding (our y), indices
    ``floor(n/2) + ceil(-m/2) .. floor(n/2) + ceil(m/2)``.
    """
    if images.ndim < 2:
        raise ValueError(f"images must have at least 2 dimensions (..., y, x), got shape {tuple(images.shape)}")
    ny, nx = int(images.shape[-2]), int(images.shape[-1])

    def bounds(n: int, m: int) -> slice:
        return slice(n // 2 + math.ceil(-m / 2), n // 2 + math.ceil(m / 2))

    keep_x = int(math.floor(nx / 3 + 0.5))
    keep_y = int(math.floor(ny / 2 + 0.5))
    return images[..., bounds(ny, keep_y), bounds(nx, keep_x)]


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


def _set_folder(split: str | None) -> str | None:
    if split is None:
        return None
    if not isinstance(split, str):
        raise ValueError(f"split must be a string or None, got {split!r}")
    return SPLITS.get(split.lower(), split)


def find_full_sample_files(root: PathLike, split: str | None = "train") -> list[Path]:
    """Sorted fully sampled ``.mat`` files under ``root`` (MultiCoil only) of the set ``split``.

    ``split``: "train", "val", "test" (or a set folder name such as "TrainingSet"), None for all.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"root {str(root)!r} is not a directory")
    set_folder = _set_folder(split)
    found = []
    for path in root.rglob("*.mat"):
        relative = path.relative_to(root).parts
        if "SingleCoil" in relative or "_mask" in path.stem:
            continue
        info = parse_path(path)
        if info.sampling_folder is None or not info.sampling_folder.startswith("FullSample"):
            continue
        if set_folder is not None and info.set_name != set_folder:
            continue
        found.append(path)
    return sorted(found)


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
