"""cardiomm-simulate writes ISMRMRD raw data that ismrmrd-python and the C++ library read back exactly."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import ismrmrd
import numpy as np
import pytest
import torch
from PIL import Image

from cardiomm_core.masks import acs_start, make_mask
from cardiomm_core.phantom import simulate_cardiac_scan
from cardiomm_core.readout import crop_image_readout
from cardiomm_core.sense import rss, rss_complex
from gadgets.io.ismrmrd_io import (
    CURRENT_HEADER_VERSION,
    RawFile,
    header_version,
    iter_acquisitions,
    read_header,
)
from gadgets.io.preview import montage_array, save_montage
from gadgets.io.simulated_scan import read_ground_truth, write_simulated_scan
from gadgets.tools.simulate import main as simulate_main
from tests.gadgets.conftest import SIMULATED_SCAN


def n_acquisitions(path) -> int:
    with RawFile(path) as raw:
        return len(raw)


def _phantom(**kwargs):
    """Regenerate the phantom of a write_simulated_scan call."""
    nx, ny = kwargs["matrix"]
    return simulate_cardiac_scan(seed=kwargs["seed"], n_slices=kwargs["n_slices"], n_frames=kwargs["n_phases"],
                                 n_coils=kwargs["n_coils"], matrix=(nx, ny), readout_oversampling=2,
                                 modality=kwargs["modality"], noise_level=kwargs["noise_level"])


def _assemble(path: Path, frame_index: str) -> np.ndarray:
    """K-space (slices, coils, frames, ky, kx_enc) of the imaging acquisitions of ``path``."""
    header, _ = read_header(path)
    enc = header.encoding[0]
    limits = enc.encodingLimits
    n_frames = getattr(limits, frame_index).maximum + 1
    shape = (limits.slice.maximum + 1, header.acquisitionSystemInformation.receiverChannels, n_frames,
             enc.encodedSpace.matrixSize.y, enc.encodedSpace.matrixSize.x)
    kspace = np.zeros(shape, np.complex64)
    for acq in iter_acquisitions(path):
        if not acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            kspace[acq.idx.slice, :, getattr(acq.idx, frame_index), acq.idx.kspace_encode_step_1] = acq.data
    return kspace


# --------------------------------------------------------------------------- header

def test_header_describes_the_scan(simulated_scan_file, simulated_scan_summary):
    header, xml_text = read_header(simulated_scan_file)
    assert header.version == CURRENT_HEADER_VERSION == header_version(xml_text) == simulated_scan_summary.header_version
    system = header.acquisitionSystemInformation
    assert (system.systemVendor, system.systemModel, system.systemFieldStrength_T) == ("Siemens", "Vida", 3.0)
    assert system.receiverChannels == SIMULATED_SCAN["n_coils"]
    assert 0 < system.relativeReceiverNoiseBandwidth < 1
    assert header.experimentalConditions.H1resonanceFrequency_Hz == pytest.approx(42.577e6 * 3.0, rel=1e-3)
    info = header.measurementInformation
    assert info.protocolName == "CardioMM_cine_sax"
    assert info.patientPosition == ismrmrd.xsd.patientPositionType.HFS
    enc = header.encoding[0]
    nx, ny = SIMULATED_SCAN["matrix"]
    assert (enc.encodedSpace.matrixSize.x, enc.encodedSpace.matrixSize.y, enc.encodedSpace.matrixSize.z) == (2 * nx, ny, 1)
    assert (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y) == (nx, ny)
    assert enc.encodedSpace.fieldOfView_mm.x == pytest.approx(2 * enc.reconSpace.fieldOfView_mm.x, rel=1e-4)
    assert enc.encodedSpace.fieldOfView_mm.y == enc.reconSpace.fieldOfView_mm.y
    # square pixels in mm
    assert enc.reconSpace.fieldOfView_mm.x / nx == pytest.approx(enc.reconSpace.fieldOfView_mm.y / ny, rel=1e-4)
    limits = enc.encodingLimits
    assert (limits.kspace_encoding_step_1.minimum, limits.kspace_encoding_step_1.maximum,
            limits.kspace_encoding_step_1.center) == (0, ny - 1, ny // 2)
    assert limits.slice.maximum == SIMULATED_SCAN["n_slices"] - 1
    assert limits.phase.maximum == SIMULATED_SCAN["n_phases"] - 1
    assert limits.contrast.maximum == 0
    assert enc.trajectory == ismrmrd.xsd.trajectoryType.CARTESIAN
    assert enc.parallelImaging.accelerationFactor.kspace_encoding_step_1 == 4
    assert enc.parallelImaging.calibrationMode == ismrmrd.xsd.calibrationModeType.EMBEDDED
    sequence = header.sequenceParameters
    assert sequence.TR and sequence.TE and sequence.flipAngle_deg and not sequence.TI
    doubles = {p.name: p.value for p in header.userParameters.userParameterDouble}
    assert doubles["CardioMM.realised_acceleration"] == pytest.approx(simulated_scan_summary.realised_acceleration)


# --------------------------------------------------------------------------- acquisitions

def test_acquisitions_are_the_sampled_lines(simulated_scan_file, simulated_scan_summary):
    truth = read_ground_truth(simulated_scan_file)
    n_slices, n_frames = SIMULATED_SCAN["n_slices"], SIMULATED_SCAN["n_phases"]
    ny = SIMULATED_SCAN["matrix"][1]
    acs = range(acs_start(ny, SIMULATED_SCAN["n_acs"]), acs_start(ny, SIMULATED_SCAN["n_acs"]) + SIMULATED_SCAN["n_acs"])
    lines = {t: np.flatnonzero(truth.mask[t, :, 0]) for t in range(n_frames)}
    expected = [(s, t, int(k)) for s in range(n_slices) for t in range(n_frames) for k in lines[t]]
    n_noise = 1

    acquisitions = list(iter_acquisitions(simulated_scan_file))
    assert n_acquisitions(simulated_scan_file) == len(acquisitions) == len(expected) + n_noise
    assert simulated_scan_summary.n_acquisitions == len(acquisitions)
    assert simulated_scan_summary.n_sampled_lines == int(truth.mask.sum()) * n_slices

    noise, imaging = acquisitions[0], acquisitions[1:]
    assert noise.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    assert not any(a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in imaging)
    assert [(a.idx.slice, a.idx.phase, a.idx.kspace_encode_step_1) for a in imaging] == expected
    assert all(a.idx.contrast == 0 and a.idx.repetition == 0 and a.idx.kspace_encode_step_2 == 0 for a in imaging)

    for i, (acq, (s, t, ky)) in enumerate(zip(imaging, expected)):
        group = [k for (s2, t2, k) in expected if (s2, t2) == (s, t)]
        first, last = ky == group[0], ky == group[-1]
        assert acq.is_flag_set(ismrmrd.ACQ_FIRST_IN_ENCODE_STEP1) == first
        assert acq.is_flag_set(ismrmrd.ACQ_LAST_IN_ENCODE_STEP1) == last
        assert acq.is_flag_set(ismrmrd.ACQ_FIRST_IN_PHASE) == first
        assert acq.is_flag_set(ismrmrd.ACQ_LAST_IN_PHASE) == last
        assert acq.is_flag_set(ismrmrd.ACQ_FIRST_IN_SLICE) == (first and t == 0)
        assert acq.is_flag_set(ismrmrd.ACQ_LAST_IN_SLICE) == (last and t == n_frames - 1)
        assert acq.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING) == (ky in acs)
        assert acq.is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT) == (i == len(imaging) - 1)
    assert sum(a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING) for a in imaging) \
        == n_slices * n_frames * len(acs)


def test_acquisition_headers(simulated_scan_file):
    truth = read_ground_truth(simulated_scan_file)
    acquisitions = list(iter_acquisitions(simulated_scan_file))
    noise, imaging = acquisitions[0], acquisitions[1:]
    nx_enc = 2 * SIMULATED_SCAN["matrix"][0]
    n_coils = SIMULATED_SCAN["n_coils"]
    assert [a.scan_counter for a in acquisitions] == list(range(1, len(acquisitions) + 1))
    stamps = np.array([a.acquisition_time_stamp for a in acquisitions], dtype=np.int64)
    assert np.all(np.diff(stamps) > 0)
    assert noise.sample_time_us > 0 and imaging[0].sample_time_us > 0
    assert noise.sample_time_us != pytest.approx(imaging[0].sample_time_us)
    for acq in acquisitions:
        assert (acq.number_of_samples, acq.active_channels, acq.available_channels) == (nx_enc, n_coils, n_coils)
        assert (acq.center_sample, acq.discard_pre, acq.discard_post, acq.trajectory_dimensions) == (nx_enc // 2, 0, 0, 0)
        assert all(acq.isChannelActive(c) for c in range(n_coils)) and not acq.isChannelActive(n_coils)
    for acq in imaging:
        assert acq.physiology_time_stamp[0] == round(truth.frame_times_ms[acq.idx.phase] / 2.5)
        assert acq.sample_time_us == pytest.approx(imaging[0].sample_time_us)

    # geometry: orthonormal right-handed directions, slices stacked along slice_dir
    read, phase, slice_ = (np.array(imaging[0].read_dir), np.array(imaging[0].phase_dir), np.array(imaging[0].slice_dir))
    np.testing.assert_allclose(np.stack([read, phase, slice_]) @ np.stack([read, phase, slice_]).T, np.eye(3), atol=1e-6)
    np.testing.assert_allclose(np.cross(read, phase), slice_, atol=1e-6)
    by_slice = {a.idx.slice: np.array(a.position) for a in imaging}
    step = by_slice[1] - by_slice[0]
    np.testing.assert_allclose(step, np.dot(step, slice_) * slice_, atol=1e-3)
    header, _ = read_header(simulated_scan_file)
    doubles = {p.name: p.value for p in header.userParameters.userParameterDouble}
    assert np.dot(step, slice_) == pytest.approx(doubles["CardioMM.slice_spacing_mm"], rel=1e-5)
    assert doubles["CardioMM.slice_spacing_mm"] >= header.encoding[0].reconSpace.fieldOfView_mm.z
    for acq in imaging:
        np.testing.assert_allclose(acq.position, by_slice[acq.idx.slice])
        np.testing.assert_allclose(acq.slice_dir, slice_)


def test_line_data_equals_the_phantom(simulated_scan_file):
    scan = _phantom(**SIMULATED_SCAN)
    truth = read_ground_truth(simulated_scan_file)
    acquisitions = list(iter_acquisitions(simulated_scan_file))
    for acq in acquisitions[1:]:
        expected = scan.kspace[acq.idx.slice, :, acq.idx.phase, acq.idx.kspace_encode_step_1, :]
        np.testing.assert_array_equal(acq.data, expected)
    noise = scan.noise_samples(2 * SIMULATED_SCAN["matrix"][0], seed=SIMULATED_SCAN["seed"])
    np.testing.assert_allclose(acquisitions[0].data, noise * truth.noise_scan_scale, rtol=1e-6)
    assert truth.noise_scan_scale == pytest.approx(np.sqrt(acquisitions[1].sample_time_us / acquisitions[0].sample_time_us),
                                                   rel=1e-5)


def test_ground_truth_group(simulated_scan_file, simulated_scan_summary):
    scan = _phantom(**SIMULATED_SCAN)
    truth = read_ground_truth(simulated_scan_file)
    np.testing.assert_array_equal(truth.images, scan.images)
    np.testing.assert_array_equal(truth.sensitivities, scan.sensitivities)
    np.testing.assert_array_equal(truth.noise_covariance, scan.noise_covariance)
    ny, nx_enc = SIMULATED_SCAN["matrix"][1], 2 * SIMULATED_SCAN["matrix"][0]
    mask = make_mask("ktGaussian", 4.0, SIMULATED_SCAN["n_phases"], ny, nx_enc, n_acs=SIMULATED_SCAN["n_acs"],
                     seed=SIMULATED_SCAN["seed"])
    np.testing.assert_array_equal(truth.mask, mask.mask)
    assert truth.mask.dtype == np.float32 and truth.mask.shape == (SIMULATED_SCAN["n_phases"], ny, 1)
    assert truth.seed == SIMULATED_SCAN["seed"] and truth.nominal_acceleration == 4.0
    assert truth.realised_acceleration == pytest.approx(mask.realised_acceleration)
    assert truth.context.acceleration == pytest.approx(mask.realised_acceleration)
    assert truth.context.pattern == "ktGaussian" and truth.context.modality == "Cine"
    assert truth.context.undersampling_sentence() == "Undersampling: 4x Random."
    assert truth.context == simulated_scan_summary.context


# --------------------------------------------------------------------------- other programs

def test_cpp_tools_read_the_file(simulated_scan_file, tmp_path):
    info = shutil.which("ismrmrd_info")
    recon = shutil.which("ismrmrd_recon_cartesian_2d")
    if info is None or recon is None:
        pytest.skip("Debian's ismrmrd-tools is not installed")
    # ismrmrd_info of ismrmrd-tools 1.8 prints the library version only (it does not open the file)
    result = subprocess.run([info, str(simulated_scan_file)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # ismrmrd_recon_cartesian_2d parses the header with the C++ library, reads every acquisition and
    # appends an image to the file: run it on a copy.
    copy = tmp_path / "copy.h5"
    shutil.copy(simulated_scan_file, copy)
    result = subprocess.run([recon, str(copy)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    count = re.search(r"Number of acquisitions\s*:\s*(\d+)", result.stdout)
    assert count is not None and int(count.group(1)) == n_acquisitions(simulated_scan_file)
    nx, ny = SIMULATED_SCAN["matrix"]
    assert f"Encoding Matrix Size        : [{2 * nx}, {ny}, 1]" in result.stdout
    assert f"Reconstruction Matrix Size  : [{nx}, {ny}, 1]" in result.stdout


@pytest.mark.slow
def test_console_script_writes_a_mapping_scan(tmp_path):
    out = tmp_path / "t1.h5"
    script = Path(sys.executable).with_name("cardiomm-simulate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gadgets.tools.simulate"]
    command += [str(out), "--slices", "1", "--phases", "3", "--coils", "3", "--matrix", "32x24", "--accel", "4",
                "--acs", "8", "--pattern", "ktUniform", "--modality", "mapping", "--seed", "2", "--no-noise-scan"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stderr  # progress goes to stderr through logging
    header, xml_text = read_header(out)
    truth = read_ground_truth(out)
    n_lines = int(truth.mask.sum())
    assert f"{n_lines} acquisitions" in result.stdout
    assert header_version(xml_text) == CURRENT_HEADER_VERSION
    assert header.measurementInformation.protocolName == "CardioMM_mapping_sax"
    limits = header.encoding[0].encodingLimits
    assert (limits.contrast.maximum, limits.phase.maximum) == (2, 0)
    np.testing.assert_allclose(header.sequenceParameters.TI, truth.frame_times_ms)
    acquisitions = list(iter_acquisitions(out))
    assert len(acquisitions) == n_lines  # no noise scan
    assert not any(a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in acquisitions)
    assert [a.idx.contrast for a in acquisitions] == sorted(a.idx.contrast for a in acquisitions)
    assert {a.idx.phase for a in acquisitions} == {0}
    assert sum(a.is_flag_set(ismrmrd.ACQ_FIRST_IN_CONTRAST) for a in acquisitions) == 3
    assert truth.context.modality == "T1 mapping" and truth.pattern == "ktUniform"
    scan = _phantom(seed=2, n_slices=1, n_phases=3, n_coils=3, matrix=(32, 24), modality="mapping", noise_level=0.01)
    for acq in acquisitions:
        np.testing.assert_array_equal(acq.data, scan.kspace[0, :, acq.idx.contrast, acq.idx.kspace_encode_step_1])


def test_full_sampling_rss_equals_the_phantom(tmp_path):
    settings = dict(n_slices=2, n_phases=2, n_coils=3, matrix=(32, 24), seed=4, modality="cine", noise_level=0.0)
    path = tmp_path / "full.h5"
    summary = write_simulated_scan(path, pattern="full", noise_scan=False, **settings)
    assert summary.n_acquisitions == 2 * 2 * 24 and summary.realised_acceleration == 1.0
    header, _ = read_header(path)
    assert header.encoding[0].parallelImaging.accelerationFactor.kspace_encoding_step_1 == 1
    acquisitions = list(iter_acquisitions(path))
    assert not any(a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING) for a in acquisitions)
    kspace = torch.from_numpy(_assemble(path, "phase"))
    scan = _phantom(**settings)
    torch.testing.assert_close(rss_complex(kspace), rss_complex(torch.from_numpy(scan.kspace)))
    # physics: rss of the coil images = |image| * rss(sensitivities) on the recon FOV
    combined = crop_image_readout(rss_complex(kspace).numpy(), 32)
    sens_rss = crop_image_readout(rss(torch.from_numpy(scan.sensitivities), dim=1).numpy(), 32)
    np.testing.assert_allclose(combined, np.abs(scan.images) * sens_rss[:, None], atol=1e-5)


def test_progress_is_logged_only_when_asked(tmp_path, caplog):
    settings = dict(n_slices=1, n_phases=2, n_coils=2, matrix=(32, 24), acceleration=4.0, n_acs=8)
    with caplog.at_level(logging.INFO, logger="gadgets.io.simulated_scan"):
        write_simulated_scan(tmp_path / "quiet.h5", **settings)
    assert not [r for r in caplog.records if r.levelno >= logging.INFO]
    with caplog.at_level(logging.INFO, logger="gadgets.io.simulated_scan"):
        summary = write_simulated_scan(tmp_path / "loud.h5", progress=True, **settings)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert any(f"{summary.n_acquisitions} / {summary.n_acquisitions} acquisitions" in m for m in messages)


# --------------------------------------------------------------------------- bad input

def test_radial_is_rejected(tmp_path, capsys):
    with pytest.raises(ValueError, match="ktRadial.*not line-based"):
        write_simulated_scan(tmp_path / "radial.h5", pattern="ktRadial", matrix=(32, 24), n_phases=2, n_coils=2)
    with pytest.raises(SystemExit) as exit_info:
        simulate_main([str(tmp_path / "radial.h5"), "--pattern", "ktRadial", "--matrix", "32x24"])
    assert exit_info.value.code == 2
    assert "not line-based" in capsys.readouterr().err
    assert not (tmp_path / "radial.h5").exists()


@pytest.mark.parametrize("kwargs,match", [
    ({"matrix": (32,)}, "matrix must be"),
    ({"modality": "flow"}, "modality must be one of"),
    ({"n_phases": 0}, "n_phases must be"),
    ({"pattern": "spiral"}, "pattern must be one of"),
    ({"acceleration": 0.5}, "acceleration must be"),
])
def test_bad_arguments_are_named(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        write_simulated_scan(tmp_path / "bad.h5", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_cli_rejects_a_bad_matrix(tmp_path, capsys):
    with pytest.raises(SystemExit):
        simulate_main([str(tmp_path / "x.h5"), "--matrix", "32by24"])
    assert "RxP" in capsys.readouterr().err


def test_ground_truth_of_a_foreign_file_is_a_clear_error(shepp_logan_file):
    with pytest.raises(ValueError, match=r"shepp_logan\.h5.*no ground truth"):
        read_ground_truth(shepp_logan_file)


# --------------------------------------------------------------------------- preview and demo

def test_montage_shapes_and_windowing(rng):
    images = rng.standard_normal((5, 8, 6)) + 1j * rng.standard_normal((5, 8, 6))
    assert montage_array(images).shape == (2 * 8, 3 * 6)            # ceil(sqrt(5)) = 3 columns
    assert montage_array(images, n_cols=5).shape == (8, 5 * 6)
    assert montage_array(images, n_cols=2).shape == (3 * 8, 2 * 6)
    assert montage_array(images[0].real).shape == (8, 6)            # a single 2D image
    tiled = montage_array(images, n_cols=5)
    assert tiled.dtype == np.uint8 and tiled.max() == 255
    # magnitude is shown: the complex conjugate gives the same montage
    np.testing.assert_array_equal(montage_array(images.conj(), n_cols=5), tiled)
    scaled = images.copy()
    scaled[1] *= 10
    per_image = montage_array(scaled, n_cols=5, normalise="per_image")
    np.testing.assert_array_equal(per_image, tiled)                 # each tile windowed alone
    global_ = montage_array(scaled, n_cols=5, normalise="global")
    assert global_[:, :6].mean() < global_[:, 6:12].mean()          # tile 0 darker than the boosted tile 1
    # empty last tile stays black
    assert montage_array(images, n_cols=3)[8:, 12:].max() == 0


def test_montage_bad_input():
    with pytest.raises(ValueError, match="images must have 3 dimensions"):
        montage_array(np.zeros((1, 2, 3, 4)))
    with pytest.raises(ValueError, match="normalise must be one of"):
        montage_array(np.zeros((1, 4, 4)), normalise="max")
    with pytest.raises(ValueError, match="n_cols must be"):
        montage_array(np.zeros((2, 4, 4)), n_cols=0)


def test_save_montage_png(tmp_path, rng):
    images = rng.random((4, 10, 12)).astype(np.float32)
    path = save_montage(images, tmp_path / "sub" / "m.png", n_cols=4)
    with Image.open(path) as picture:
        assert picture.size == (4 * 12, 10) and picture.mode == "L"
        np.testing.assert_array_equal(np.asarray(picture), montage_array(images, n_cols=4))
    titled = save_montage(images, tmp_path / "t.png", n_cols=2, title="hello")
    with Image.open(titled) as picture:
        assert picture.size[0] == 2 * 12 and picture.size[1] > 2 * 10


def test_header_identifies_subject_study_and_measurement(simulated_scan_file):
    """Patient, study and a Siemens-style four-part measurementID plus one coil label per coil, as
    siemens_to_ismrmrd writes them (Gadgetron's native NoiseAdjustGadget needs the IDs)."""
    from gadgets.io.simulated_header import SIMULATED_DEVICE_SERIAL, measurement_uid, scan_ids

    header, _ = read_header(simulated_scan_file)
    seed = SIMULATED_SCAN["seed"]
    ids = scan_ids(seed)
    assert header.subjectInformation.patientID == ids["patient_id"]
    assert header.studyInformation.studyID == ids["study_id"]
    assert re.fullmatch(r"2\.25\.[1-9][0-9]*", header.studyInformation.studyInstanceUID)
    parts = header.measurementInformation.measurementID.split("_")
    assert parts == [SIMULATED_DEVICE_SERIAL, ids["patient_id"], ids["study_id"], str(measurement_uid(seed))]
    assert all(part.isalnum() for part in parts)
    with ismrmrd.Dataset(str(simulated_scan_file), "dataset", False) as dataset:
        assert dataset.read_acquisition(0).measurement_uid == measurement_uid(seed)
    system = header.acquisitionSystemInformation
    assert system.deviceSerialNumber == SIMULATED_DEVICE_SERIAL
    labels = system.coilLabel
    assert [label.coilNumber for label in labels] == list(range(system.receiverChannels))
    assert len({label.coilName for label in labels}) == system.receiverChannels
    assert scan_ids(seed + 1)["measurement_id"] != ids["measurement_id"]
