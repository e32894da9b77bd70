"""IsmrmrdRawDataset on files written by gadgets.io.simulated_scan and by the C++ ISMRMRD library."""

from __future__ import annotations

import logging

import ismrmrd
import numpy as np
import pytest
import torch

from cardiomm_core.noise import NoiseAccumulator, noise_bandwidth_scale
from cardiomm_core.phantom import simulate_cardiac_scan
from gadgets.io.ismrmrd_io import iter_acquisitions, read_header
from gadgets.io.simulated_header import RELATIVE_NOISE_BANDWIDTH
from gadgets.io.simulated_scan import write_simulated_scan
from train.data.ismrmrd_raw import IsmrmrdRawDataset, context_from_header, protocol_modality_view
from train.data.undersample import UndersampledDataset, UndersamplingSpec

SCAN = dict(n_slices=2, n_phases=3, n_coils=4, matrix=(32, 24), seed=5, noise_level=0.01)


def phantom(modality: str):
    return simulate_cardiac_scan(seed=SCAN["seed"], n_slices=SCAN["n_slices"], n_frames=SCAN["n_phases"],
                                 n_coils=SCAN["n_coils"], matrix=SCAN["matrix"], readout_oversampling=2,
                                 modality=modality, noise_level=SCAN["noise_level"])


@pytest.fixture(scope="module")
def raw_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    files = {}
    for modality in ("cine", "t1map"):
        files[modality] = folder / f"{modality}.h5"
        write_simulated_scan(files[modality], acceleration=1, pattern="full", modality=modality, noise_scan=False,
                             **SCAN)
    files["noisy"] = folder / "cine_noise.h5"
    write_simulated_scan(files["noisy"], acceleration=1, pattern="full", modality="cine", noise_scan=True, **SCAN)
    return files


@pytest.mark.parametrize("modality, expected", [("cine", "Cine"), ("t1map", "T1 mapping")])
def test_fully_sampled_file_matches_the_phantom_kspace(raw_files, modality, expected):
    dataset = IsmrmrdRawDataset(raw_files[modality])
    truth = phantom(modality)
    assert len(dataset) == SCAN["n_slices"]
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample.identifier == f"{modality}.h5@slice{index}"
        assert sample.kspace.shape == (4, 3, 24, 64)
        np.testing.assert_array_equal(sample.kspace.numpy(), truth.kspace[index])
        assert sample.recon_nx == 32
        context = sample.context
        assert (context.modality, context.view, context.vendor, context.scanner_model, context.field_strength_t) == \
            (expected, "short-axis", truth.context.vendor, truth.context.scanner_model, truth.context.field_strength_t)
        assert context.pattern == "full"


def test_noise_scan_prewhitens_with_the_chain_semantics(raw_files):
    whitened = IsmrmrdRawDataset(raw_files["noisy"])[0].kspace.numpy()
    plain = IsmrmrdRawDataset(raw_files["noisy"], prewhiten=False)[0].kspace.numpy()
    truth = phantom("cine").kspace[0]
    np.testing.assert_array_equal(plain, truth)               # noise acquisitions are not image data
    # whitened = W @ truth over coils; recover W and check it whitens the file's own noise scan
    x = truth.reshape(4, -1).astype(np.complex128)
    y = whitened.reshape(4, -1).astype(np.complex128)
    w = y @ np.linalg.pinv(x)
    np.testing.assert_allclose(w @ x, y, atol=1e-4 * np.abs(y).max())
    assert np.abs(np.triu(w, 1)).max() < 1e-4 * np.abs(w).max()          # lower triangular, as Gadgetron's
    accumulator = NoiseAccumulator()
    first_imaging = None
    for acq in iter_acquisitions(raw_files["noisy"]):
        if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            accumulator.add(np.asarray(acq.data), float(acq.sample_time_us))
        elif first_imaging is None:
            first_imaging = acq
    scale = noise_bandwidth_scale(accumulator.dwell_time_us, float(first_imaging.sample_time_us),
                                  RELATIVE_NOISE_BANDWIDTH)
    np.testing.assert_allclose(w @ accumulator.covariance @ w.conj().T, scale ** 2 * np.eye(4), atol=1e-3 * scale ** 2)


def test_remove_oversampling_crops_the_readout(raw_files):
    sample = IsmrmrdRawDataset(raw_files["cine"], remove_oversampling=True)[0]
    assert sample.kspace.shape == (4, 3, 24, 32) and sample.recon_nx is None


def test_c_library_file_assembles(shepp_logan_raw):
    dataset = IsmrmrdRawDataset(shepp_logan_raw)
    sample = dataset[0]
    assert len(dataset) == 1
    assert sample.kspace.shape == (4, 2, 32, 64)        # 2 repetitions become the frames
    assert sample.recon_nx == 32
    assert torch.all(sample.kspace.abs().sum(dim=(0, 1, 3)) > 0)   # every ky line filled


def test_unreadable_files_are_skipped(raw_files, tmp_path, caplog):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not hdf5" * 8)
    with caplog.at_level(logging.WARNING, logger="train.data.ismrmrd_raw"):
        dataset = IsmrmrdRawDataset([broken, raw_files["cine"]])
    assert len(dataset) == 2 and [p for p, _ in dataset.skipped] == [str(broken)]
    assert any(str(broken) in r.getMessage() for r in caplog.records)


def test_undersampling_a_raw_sample(raw_files):
    dataset = UndersampledDataset(IsmrmrdRawDataset(raw_files["cine"]), UndersamplingSpec(patterns=("ktGaussian",)),
                                  seed=1)
    example = dataset[1]
    assert example.target.shape == (3, 24, 32)
    assert example.context.undersampling_sentence().endswith("x Random.")


@pytest.mark.parametrize("protocol, expected", [
    ("CardioMM_cine_sax", ("Cine", "short-axis")),
    ("CardioMM_t2map_sax", ("T2 mapping", "short-axis")),
    ("CardioMM_mapping_sax", ("T1 mapping", "short-axis")),
    ("MOLLI_5(3)3_SAX", ("T1 mapping", "short-axis")),
    ("tfl_cine_4ch", ("Cine", "four-chamber")),
    ("CV_LGE_PSIR_2CH", ("LGE", "two-chamber")),
    ("trufi_lvot", ("Cine", "LVOT")),
    ("flow_aorta", ("Flow", "aorta")),
    (None, ("Cine", "short-axis")),
])
def test_protocol_modality_view(protocol, expected):
    assert protocol_modality_view(protocol) == expected


def test_context_defaults_for_missing_header_fields(raw_files):
    header, _ = read_header(raw_files["cine"])
    header.acquisitionSystemInformation = None
    header.measurementInformation = None
    context = context_from_header(header)
    assert (context.vendor, context.scanner_model, context.field_strength_t) == ("Unknown", "Unknown", 3.0)
