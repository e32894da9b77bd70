"""What a CMRxRecon 2023, 2024 or 2025 path says, and where the fully sampled files are.

A file's year, modality folder, set, sampling folder, scanner folder and patient come from its
folders (:func:`parse_path`), its modality and view from its name (:func:`parse_modality_view`).
Only the fully sampled files are read (:func:`find_full_sample_files`); the undersampled files and
masks below are named so that they are told apart and skipped.
The files themselves are read by ``train.data.cmrxrecon``.

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
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from cardiomm_core.context import ScanContext

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

#: Challenge years this module reads.
YEARS = (2023, 2024, 2025)
#: (field strength T, vendor, model) of the 2023 and 2024 data (3 T Siemens MAGNETOM Vida).
DEFAULT_SCANNER = (3.0, "Siemens", "Vida")
#: Split names -> set folder names.
SPLITS = {"train": "TrainingSet", "training": "TrainingSet", "val": "ValidationSet",
          "validation": "ValidationSet", "test": "TestSet"}
#: View of a plain ``cine_lax`` file unless the dataset is told the chamber view.
DEFAULT_LAX_VIEW = "long-axis"

_SAMPLING_FOLDER = re.compile(r"^(FullSample|UnderSample|AccFactor|Mask)")
_SCANNER_FOLDER = re.compile(r"^(?P<vendor>[A-Za-z]+)_(?P<field>\d+(?:\.\d+)?)T_(?P<model>.+)$")
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
