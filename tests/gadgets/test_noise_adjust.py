"""gadgets.noise_adjust.NoiseAdjust: noise scans consumed, later acquisitions prewhitened."""

from __future__ import annotations

import ismrmrd
import numpy as np
import pytest

from cardiomm_core.noise import noise_bandwidth_scale, noise_covariance, prewhitening_matrix
from gadgets.io.ismrmrd_io import read_acquisitions, read_header
from gadgets.noise_adjust import NoiseAdjust
from tests.gadgets.harness import assert_items_equal, run_gadget, synthetic_scan


@pytest.fixture(scope="module")
def scan() -> object:
    return synthetic_scan(np.random.default_rng(11), n_coils=4, n_slices=1, n_phases=2, noise_samples=400)


def test_noise_is_consumed_and_data_prewhitened(scan: object) -> None:
    noise = scan.acquisitions[0]
    assert noise.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
    out = list(NoiseAdjust()(iter(scan.acquisitions), scan.header))
    assert len(out) == len(scan.acquisitions) - 1
    assert not any(acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for acq in out)
    covariance = noise_covariance(noise.data)
    scale = noise_bandwidth_scale(5.0, 2.5, 0.79)  # header bandwidth, noise and imaging dwell times
    assert scale == pytest.approx(np.sqrt(2 * 2.5 / 5.0 * 0.79), rel=1e-6)
    matrix = prewhitening_matrix(covariance, scale)
    np.testing.assert_allclose(matrix @ covariance @ matrix.conj().T, scale**2 * np.eye(4), atol=1e-4)
    for original, whitened in zip(scan.acquisitions[1:], out):
        assert bytes(memoryview(whitened.getHead())) == bytes(memoryview(original.getHead()))
        assert whitened.data.dtype == np.complex64
        np.testing.assert_allclose(whitened.data, matrix @ original.data, rtol=1e-4, atol=1e-5)
    # The coil mixing of the synthetic noise is undone. Every line carries the same signal, so the
    # deviations from the mean line are pure noise: correlated before, uncorrelated after.
    def max_coil_correlation(acquisitions: list) -> float:
        lines = np.stack([acq.data for acq in acquisitions])
        residual = (lines - lines.mean(axis=0)).transpose(1, 0, 2).reshape(lines.shape[1], -1)
        correlation = np.abs(np.corrcoef(residual))
        return float((correlation - np.eye(len(correlation))).max())

    assert max_coil_correlation(scan.acquisitions[1:]) > 0.3
    assert max_coil_correlation(out) < 0.15


def test_without_noise_scan_data_pass_unchanged() -> None:
    scan = synthetic_scan(np.random.default_rng(2), n_slices=1, n_phases=1, noise_samples=0)
    out = list(NoiseAdjust()(iter(scan.acquisitions), scan.header))
    assert all(a is b for a, b in zip(out, scan.acquisitions)) and len(out) == len(scan.acquisitions)


def test_bandwidth_parameter_overrides_header(scan: object) -> None:
    default = list(NoiseAdjust()(iter(scan.acquisitions[:3]), scan.header))
    wider = list(NoiseAdjust(receiver_noise_bandwidth="3.16")(iter(scan.acquisitions[:3]), scan.header))
    ratio = np.sqrt(3.16 / 0.79)
    np.testing.assert_allclose(wider[0].data, ratio * default[0].data, rtol=1e-4)
    with pytest.raises(ValueError, match="receiver_noise_bandwidth"):
        NoiseAdjust(receiver_noise_bandwidth="-1")


def test_channel_mismatch_passes_or_fails(scan: object) -> None:
    odd = scan.acquisitions[1].getHead()
    odd.active_channels = 2
    stranger = ismrmrd.Acquisition(odd, np.ones((2, odd.number_of_samples), np.complex64),
                                   np.zeros((odd.number_of_samples, 0), np.float32))
    stream = [scan.acquisitions[0], stranger]
    assert list(NoiseAdjust()(iter(stream), scan.header))[0] is stranger
    with pytest.raises(ValueError, match="has 2 channels, the noise scan had 4"):
        list(NoiseAdjust(pass_nonconformant_data=False)(iter(stream), scan.header))


def test_shepp_logan_noise_calibration(shepp_logan_file: object) -> None:
    header, _ = read_header(shepp_logan_file)
    acquisitions = read_acquisitions(shepp_logan_file)
    out = list(NoiseAdjust()(iter(acquisitions), header))
    assert len(out) == len(acquisitions) - 1  # the C++ tool's noise acquisition is consumed
    assert not np.allclose(out[0].data, acquisitions[1].data)


def test_over_the_socket_matches_in_process(scan: object) -> None:
    result = run_gadget("gadgets.noise_adjust", "NoiseAdjust", header_xml=scan.header_xml,
                        items=scan.acquisitions, properties={"pass_nonconformant_data": "true"})
    assert result.protocol_error is None and result.errors == [] and result.closed, result.stderr
    assert_items_equal(result.items, list(NoiseAdjust()(iter(scan.acquisitions), scan.header)))
