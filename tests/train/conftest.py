"""Fixtures for the training-data tests: CMRxRecon-style MATLAB v7.3 files written with h5py.

``write_mat(path, **variables)`` writes what MATLAB's ``save -v7.3`` writes, as far as a reader can
tell: an HDF5 file with a 512-byte userblock holding the MATLAB text header, one dataset per
variable with a ``MATLAB_class`` attribute, arrays in MATLAB (column-major) order, so a MATLAB
``(nx, ny, nc, nz, nt)`` array is the HDF5 dataset ``(nt, nz, nc, ny, nx)``, and complex arrays as
a compound dtype with ``real`` and ``imag`` fields. Tests pass arrays in MATLAB order.

``cmrx_tree`` builds, once per session, three small challenge trees (2023, 2024, 2025 layouts)
plus the MATLAB-order arrays written into them (``CmrxTree.arrays[relative path]``), including a
corrupt file and a file without k-space in the 2023 tree.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tests.helpers import one_torch_thread

_USERBLOCK = 512


def _matlab_userblock() -> bytes:
    text = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    header = text.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM"
    return header.ljust(_USERBLOCK, b"\x00")


def write_mat(path: Path, **variables: np.ndarray) -> Path:
    """Write ``variables`` (MATLAB-order arrays) as a MATLAB v7.3 file at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=_USERBLOCK) as handle:
        for name, array in variables.items():
            array = np.asarray(array)
            stored = np.ascontiguousarray(array.T)  # column-major MATLAB -> reversed HDF5 dims
            if np.iscomplexobj(stored):
                real_dtype = np.float32 if stored.dtype == np.complex64 else np.float64
                compound = np.dtype([("real", real_dtype), ("imag", real_dtype)])
                data = np.empty(stored.shape, dtype=compound)
                data["real"], data["imag"] = stored.real, stored.imag
                dataset = handle.create_dataset(name, data=data)
                dataset.attrs["MATLAB_class"] = np.bytes_("single" if real_dtype == np.float32 else "double")
            else:
                dataset = handle.create_dataset(name, data=stored)
                dataset.attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as raw:
        raw.write(_matlab_userblock())
    return path


def matlab_kspace(rng: np.random.Generator, shape: tuple[int, ...], dtype: type = np.complex64) -> np.ndarray:
    """Random complex k-space in MATLAB order, e.g. ``(nx, ny, nc, nz, nt)``."""
    return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)


@dataclass
class CmrxTree:
    """Roots of the three trees and the MATLAB-order arrays written (keyed by path relative to the root)."""

    root_2023: Path
    root_2024: Path
    root_2025: Path
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    line_masks: dict[str, np.ndarray] = field(default_factory=dict)


#: Small sizes: readout nx, phase ny, coils.
NX, NY, NC = 12, 10, 3


@pytest.fixture(scope="session")
def cmrx_tree(tmp_path_factory: pytest.TempPathFactory) -> CmrxTree:
    rng = np.random.default_rng(2023)
    base = tmp_path_factory.mktemp("cmrxrecon")
    tree = CmrxTree(base / "2023" / "ChallengeData", base / "2024" / "ChallengeData", base / "2025")

    def put(root: Path, relative: str, variable: str, array: np.ndarray) -> None:
        write_mat(root / relative, **{variable: array})
        tree.arrays[f"{root.parent.name if root.name == 'ChallengeData' else root.name}/{relative}"] = array

    # 2023: Cine (sax 2 slices x 4 frames, lax 1 slice, double precision) and Mapping (T1map).
    r = tree.root_2023
    put(r, "MultiCoil/Cine/TrainingSet/FullSample/P001/cine_sax.mat", "kspace_full",
        matlab_kspace(rng, (NX, NY, NC, 2, 4)))
    put(r, "MultiCoil/Cine/TrainingSet/FullSample/P001/cine_lax.mat", "kspace_full",
        matlab_kspace(rng, (NX, NY, NC, 1, 4), np.complex128))
    put(r, "MultiCoil/Mapping/TrainingSet/FullSample/P001/T1map.mat", "kspace_full",
        matlab_kspace(rng, (NX, NY, NC, 2, 3)))
    # a corrupt file (not HDF5) and a file without k-space
    corrupt = r / "MultiCoil/Cine/TrainingSet/FullSample/P002/cine_sax.mat"
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(b"this is not a MATLAB file" * 10)
    write_mat(r / "MultiCoil/Cine/TrainingSet/FullSample/P003/cine_sax.mat", notes=np.zeros((3, 2)))
    # AccFactor08: undersampled k-space and its 2D Uniform mask (MATLAB (nx, ny))
    lines = np.zeros(NY, dtype=bool)
    lines[[0, 4, 5, 8]] = True
    full = tree.arrays["2023/MultiCoil/Cine/TrainingSet/FullSample/P001/cine_sax.mat"]
    mask2d = np.broadcast_to(lines[None, :], (NX, NY)).astype(np.float64)
    put(r, "MultiCoil/Cine/TrainingSet/AccFactor08/P001/cine_sax.mat", "kspace_sub08",
        full * mask2d[:, :, None, None, None])
    write_mat(r / "MultiCoil/Cine/TrainingSet/AccFactor08/P001/cine_sax_mask.mat", mask08=mask2d)
    tree.line_masks["2023/AccFactor08"] = lines

    # 2024: Cine LVOT (5D), BlackBlood (4D, no time axis); Task 1 and Task 2 undersampled files.
    r = tree.root_2024
    put(r, "MultiCoil/Cine/TrainingSet/FullSample/P001/cine_lvot.mat", "kspace_full",
        matlab_kspace(rng, (NX, NY, NC, 1, 5)))
    put(r, "MultiCoil/BlackBlood/TrainingSet/FullSample/P001/blackblood.mat", "kspace_full",
        matlab_kspace(rng, (NX, NY, NC, 3)))
    full = tree.arrays["2024/MultiCoil/Cine/TrainingSet/FullSample/P001/cine_lvot.mat"]
    kt_lines = rng.random((NY, 5)) < 0.4                                  # (ny, nt)
    kt_lines[NY // 2] = True
    mask3d = np.broadcast_to(kt_lines[None], (NX, NY, 5)).astype(np.float64)   # MATLAB (nx, ny, nt)
    put(r, "MultiCoil/Cine/ValidationSet/UnderSample_Task2/P001/cine_lvot_kus_ktGaussian16.mat", "kus",
        full * mask3d[:, :, None, None, :])
    write_mat(r / "MultiCoil/Cine/ValidationSet/Mask_Task2/P001/cine_lvot_mask_ktGaussian16.mat", mask=mask3d)
    tree.line_masks["2024/ktGaussian16"] = kt_lines
    put(r, "MultiCoil/Cine/ValidationSet/UnderSample_Task1/P001/cine_lvot_kus_Uniform4.mat", "kus",
        full * mask2d[:, :, None, None, None])
    write_mat(r / "MultiCoil/Cine/ValidationSet/Mask_Task1/P001/cine_lvot_mask_Uniform4.mat", mask=mask2d)
    # a ktRadial file without a mask file: the mask comes from the non-zero samples
    radial = rng.random((NX, NY, 5)) < 0.3
    put(r, "MultiCoil/Cine/ValidationSet/UnderSample_Task2/P001/cine_lvot_kus_ktRadial8.mat", "kus",
        full * radial[:, :, None, None, :])
    tree.line_masks["2024/ktRadial8"] = radial

    # 2025: centre / scanner folders, variable `kspace`.
    r = tree.root_2025
    put(r, "MultiCoil/Cine/TrainingSet/FullSample/Center001/UIH_30T_umr780/P001/cine_lax_4ch.mat", "kspace",
        matlab_kspace(rng, (NX, NY, NC, 1, 3)))
    put(r, "MultiCoil/Mapping/TrainingSet/FullSample/Center006/Siemens_15T_Avanto/P002/T2map.mat", "kspace",
        matlab_kspace(rng, (NX, NY, NC, 2, 3)))
    put(r, "MultiCoil/T1w/TrainingSet/FullSample/Center006/Siemens_15T_Avanto/P002/T1w.mat", "kspace",
        matlab_kspace(rng, (NX, NY, NC, 2)))
    return tree


@pytest.fixture(scope="session")
def shepp_logan_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ISMRMRD file from Debian's C++ ismrmrd_generate_cartesian_shepp_logan (32 x 32, 4 coils,
    2 repetitions, 2x readout oversampling, a noise acquisition first); skipped without the tool."""
    tool = shutil.which("ismrmrd_generate_cartesian_shepp_logan")
    if tool is None:
        pytest.skip("ismrmrd_generate_cartesian_shepp_logan (Debian ismrmrd-tools) is not installed")
    folder = tmp_path_factory.mktemp("shepp_logan_train")
    path = folder / "shepp_logan.h5"
    result = subprocess.run([tool, "-m", "32", "-c", "4", "-r", "2", "-O", "2", "-n", "0.05", "-C", "-o", str(path)],
                            cwd=folder, capture_output=True, text=True, timeout=300)
    if result.returncode != 0 or not path.exists():
        raise RuntimeError(f"ismrmrd_generate_cartesian_shepp_logan failed ({result.returncode}): {result.stderr}")
    return path


@pytest.fixture
def trainer_isolation():
    """One torch thread for the test; torch's deterministic-algorithms flag restored afterwards."""
    deterministic = torch.are_deterministic_algorithms_enabled()
    with one_torch_thread():
        yield
    torch.use_deterministic_algorithms(deterministic)
