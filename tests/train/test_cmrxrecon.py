"""CMRxRecon readers on small files written in the challenges' exact MATLAB v7.3 layouts."""

from __future__ import annotations

import logging
import shutil

import h5py
import numpy as np
import pytest

from train.data.cmrxrecon import (
    CMRxReconDataset,
    kspace_shape,
    read_kspace_slice,
)
from train.data.cmrxrecon_paths import (
    context_from_path,
    parse_modality_view,
    parse_scanner_folder,
)
from train.data.sample import KspaceSample

from .conftest import NC, NX, NY, write_mat


def expected_slice(matlab: np.ndarray, z: int) -> np.ndarray:
    """MATLAB (nx, ny, nc, nz[, nt]) -> core (C, T, ky, kx) of slice z, written out index by index."""
    if matlab.ndim == 4:
        matlab = matlab[..., None]
    nx, ny, nc, _, nt = matlab.shape
    out = np.empty((nc, nt, ny, nx), dtype=np.complex64)
    for c in range(nc):
        for t in range(nt):
            out[c, t] = matlab[:, :, c, z, t].T
    return out


def test_matlab_files_are_hdf5_with_the_matlab_userblock(cmrx_tree):
    path = cmrx_tree.root_2023 / "MultiCoil/Cine/TrainingSet/FullSample/P001/cine_sax.mat"
    assert path.read_bytes()[:10] == b"MATLAB 7.3"
    with h5py.File(path, "r") as handle:
        assert handle.userblock_size == 512
        dataset = handle["kspace_full"]
        assert dataset.dtype.names == ("real", "imag")
        assert dataset.shape == (4, 2, NC, NY, NX)  # (nt, nz, nc, ny, nx)


@pytest.mark.parametrize("relative, n_slices, n_frames", [
    ("2023/MultiCoil/Cine/TrainingSet/FullSample/P001/cine_sax.mat", 2, 4),
    ("2023/MultiCoil/Cine/TrainingSet/FullSample/P001/cine_lax.mat", 1, 4),
    ("2024/MultiCoil/BlackBlood/TrainingSet/FullSample/P001/blackblood.mat", 3, 1),
    ("2025/MultiCoil/Mapping/TrainingSet/FullSample/Center006/Siemens_15T_Avanto/P002/T2map.mat", 2, 3),
])
def test_read_kspace_slice_reverses_the_matlab_axes(cmrx_tree, relative, n_slices, n_frames):
    year, rest = relative.split("/", 1)
    root = {"2023": cmrx_tree.root_2023, "2024": cmrx_tree.root_2024, "2025": cmrx_tree.root_2025}[year]
    matlab = cmrx_tree.arrays[relative]
    assert kspace_shape(root / rest) == (n_slices, NC, n_frames, NY, NX)
    for z in range(n_slices):
        got = read_kspace_slice(root / rest, z)
        assert got.dtype == np.complex64 and got.shape == (NC, n_frames, NY, NX)
        np.testing.assert_array_equal(got, expected_slice(matlab, z))
    with pytest.raises(ValueError, match="slice_index"):
        read_kspace_slice(root / rest, n_slices)


@pytest.mark.parametrize("name, year", [("root_2023", 2023), ("root_2024", 2024), ("root_2025", 2025)])
def test_dataset_detects_the_year_and_yields_every_slice(cmrx_tree, name, year):
    root = getattr(cmrx_tree, name)
    dataset = CMRxReconDataset(root)
    assert dataset.year == year
    prefix = str(year)
    expected = {rel: a for rel, a in cmrx_tree.arrays.items()
                if rel.startswith(prefix + "/") and "/TrainingSet/FullSample/" in rel}
    assert sum(a.shape[3] for a in expected.values()) == len(dataset)  # nz of (nx, ny, nc, nz[, nt])
    seen = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        assert isinstance(sample, KspaceSample)
        relative, slice_part = sample.identifier.split("@slice")
        z = int(slice_part)
        np.testing.assert_array_equal(sample.kspace.numpy(), expected_slice(expected[f"{prefix}/{relative}"], z))
        assert sample.context.pattern == "full" and sample.context.acceleration == 1.0
        seen.add(sample.identifier)
    assert len(seen) == len(dataset)


def test_contexts_from_file_and_folder_names(cmrx_tree):
    dataset = CMRxReconDataset(cmrx_tree.root_2025)
    contexts = {dataset[i].identifier.split("@")[0].rsplit("/", 1)[-1]: dataset[i].context for i in range(len(dataset))}
    lax = contexts["cine_lax_4ch.mat"]
    assert (lax.modality, lax.view, lax.field_strength_t, lax.vendor, lax.scanner_model) == \
        ("Cine", "four-chamber", 3.0, "UIH", "umr780")
    t2 = contexts["T2map.mat"]
    assert (t2.modality, t2.field_strength_t, t2.vendor, t2.scanner_model) == ("T2 mapping", 1.5, "Siemens", "Avanto")
    assert contexts["T1w.mat"].modality == "T1-weighted"
    assert t2.metadata_sentence() == \
        "Adult cardiac MRI reconstruction. Vendor: 1.5T, Siemens, Avanto. Modality: T2 mapping, short-axis."
    # 2023/2024: the documented default scanner
    old = CMRxReconDataset(cmrx_tree.root_2024)[0].context
    assert (old.field_strength_t, old.vendor, old.scanner_model) == (3.0, "Siemens", "Vida")


@pytest.mark.parametrize("name, folder, lax_view, expected", [
    ("cine_sax.mat", "Cine", "long-axis", ("Cine", "short-axis")),
    ("cine_lax", "Cine", "long-axis", ("Cine", "long-axis")),
    ("cine_lax", "Cine", "two-chamber", ("Cine", "two-chamber")),
    ("cine_lax_3ch_kus_ktRadial16.mat", None, "long-axis", ("Cine", "three-chamber")),
    ("cine_lvot", None, "long-axis", ("Cine", "LVOT")),
    ("T1map", "Mapping", "long-axis", ("T1 mapping", "short-axis")),
    ("T2map_mask_Uniform4.mat", None, "long-axis", ("T2 mapping", "short-axis")),
    ("aorta_sag", "Aorta", "long-axis", ("Cine", "aorta, sagittal")),
    ("tagging", "Tagging", "long-axis", ("Tagging", "short-axis")),
    ("blackblood", "BlackBlood", "long-axis", ("Black blood", "short-axis")),
    ("lge_lax_2ch", "LGE", "long-axis", ("LGE", "two-chamber")),
    ("something_new", "Perfusion", "long-axis", ("Perfusion", "short-axis")),
])
def test_parse_modality_view(name, folder, lax_view, expected):
    assert parse_modality_view(name, folder, lax_view) == expected


def test_lax_view_when_told(cmrx_tree):
    dataset = CMRxReconDataset(cmrx_tree.root_2023, modalities=["cine_lax"], lax_view="four-chamber")
    assert len(dataset) == 1
    assert dataset[0].context.view == "four-chamber"


@pytest.mark.parametrize("folder, expected", [
    ("Siemens_30T_Prisma", (3.0, "Siemens", "Prisma")),
    ("UIH_15T_umr680", (1.5, "UIH", "umr680")),
    ("Siemens_30T_CIMA.X", (3.0, "Siemens", "CIMA.X")),
    ("Philips_3T_Ingenia", (3.0, "Philips", "Ingenia")),
    ("P001", None),
    ("Center001", None),
])
def test_parse_scanner_folder(folder, expected):
    assert parse_scanner_folder(folder) == expected


def test_modalities_filter(cmrx_tree):
    root = cmrx_tree.root_2023
    assert len(CMRxReconDataset(root, modalities=["Mapping"])) == 2          # T1map, 2 slices
    assert len(CMRxReconDataset(root, modalities=["cine_sax"])) == 2
    assert len(CMRxReconDataset(root, modalities=["t1 mapping", "cine_lax"])) == 3
    assert len(CMRxReconDataset(root, split="val")) == 0


def test_corrupt_and_unreadable_files_are_skipped_and_counted(cmrx_tree, caplog):
    with caplog.at_level(logging.WARNING, logger="train.data.cmrxrecon"):
        dataset = CMRxReconDataset(cmrx_tree.root_2023, modalities=["Cine"])
    skipped = sorted(path for path, _ in dataset.skipped)
    assert len(skipped) == 2
    assert skipped[0].endswith("P002/cine_sax.mat") and skipped[1].endswith("P003/cine_sax.mat")
    for path in skipped:
        assert any(path in record.getMessage() for record in caplog.records)
    assert len(dataset) == 3  # cine_sax (2 slices) + cine_lax (1 slice) of P001


def test_a_file_unreadable_at_read_time_gives_the_next_item(cmrx_tree, tmp_path, caplog):
    root = tmp_path / "copy"
    shutil.copytree(cmrx_tree.root_2023, root)
    dataset = CMRxReconDataset(root, modalities=["cine_sax", "cine_lax"])
    strict = CMRxReconDataset(root, modalities=["cine_sax", "cine_lax"], on_read_error="raise")
    identifiers = [dataset[i].identifier for i in range(len(dataset))]
    broken = root / identifiers[0].split("@")[0]
    broken.write_bytes(b"\0" * 64)  # the file goes bad after indexing
    n_skipped = len(dataset.skipped)
    with caplog.at_level(logging.WARNING, logger="train.data.cmrxrecon"):
        sample = dataset[0]
    assert sample.identifier.split("@")[0] != identifiers[0].split("@")[0]
    assert len(dataset.skipped) == n_skipped + 1 and dataset.skipped[-1][0] == str(broken)
    assert any(str(broken) in r.getMessage() for r in caplog.records)
    with pytest.raises(RuntimeError, match="cannot read .*cine"):
        strict[0]


def test_ranking_crop_follows_the_challenge():
    from cardiomm_core.metrics import central_crop

    images = np.arange(246 * 512, dtype=np.float32).reshape(1, 246, 512)
    cropped = central_crop(images)
    assert cropped.shape == (1, 123, 171)       # round(246 / 2), round(512 / 3)
    # floor(n/2) + ceil(-m/2): y from 123 - 61 = 62, x from 256 - 85 = 171
    assert cropped[0, 0, 0] == images[0, 62, 171]


def test_context_from_path_defaults_without_scanner_folder(tmp_path):
    path = tmp_path / "MultiCoil/Tagging/TrainingSet/FullSample/P009/tagging.mat"
    context = context_from_path(path)
    assert (context.modality, context.view, context.vendor) == ("Tagging", "short-axis", "Siemens")


def test_non_complex_kspace_is_rejected(tmp_path):
    write_mat(tmp_path / "MultiCoil/Cine/TrainingSet/FullSample/P001/cine_sax.mat",
              kspace_full=np.zeros((4, 3, 2, 1, 2)))
    dataset = CMRxReconDataset(tmp_path)
    assert len(dataset) == 0 and "not complex" in dataset.skipped[0][1]
