import math

import numpy as np
import pytest

from cardiomm_core.noise import (
    DEFAULT_RECEIVER_NOISE_BANDWIDTH,
    NoiseAccumulator,
    noise_bandwidth_scale,
    noise_covariance,
    prewhiten,
    prewhitening_matrix,
)


def correlated_noise(rng: np.random.Generator, n_coils: int, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Noise (coils, samples) complex64 with a random, strongly correlated true covariance."""
    mixing = rng.standard_normal((n_coils, n_coils)) + 1j * rng.standard_normal((n_coils, n_coils))
    mixing += 2.0 * np.eye(n_coils)
    white = (rng.standard_normal((n_coils, n_samples)) + 1j * rng.standard_normal((n_coils, n_samples))) / np.sqrt(2)
    return (mixing @ white).astype(np.complex64), mixing @ mixing.conj().T


def test_noise_covariance_is_the_unbiased_sample_covariance(rng):
    noise, _ = correlated_noise(rng, 3, 7)
    cov = noise_covariance(noise)
    x = noise.astype(np.complex128)
    expected = np.array([[np.sum(x[i] * np.conj(x[j])) for j in range(3)] for i in range(3)]) / 6
    assert cov.dtype == np.complex128 and cov.shape == (3, 3)
    np.testing.assert_allclose(cov, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cov, cov.conj().T, atol=0)


@pytest.mark.parametrize("n_coils", [1, 4, 7])
def test_noise_covariance_estimates_the_true_covariance(rng, n_coils):
    noise, true_cov = correlated_noise(rng, n_coils, 20000)
    cov = noise_covariance(noise)
    # relative Frobenius error of a sample covariance ~ n_coils / sqrt(n_samples)
    err = np.linalg.norm(cov - true_cov) / np.linalg.norm(true_cov)
    assert err < 4 * n_coils / math.sqrt(20000)


@pytest.mark.parametrize("n_coils", [1, 3, 8])
def test_prewhitening_makes_noise_white(rng, n_coils):
    noise, _ = correlated_noise(rng, n_coils, 40000)
    calibration, fresh = noise[:, :20000], noise[:, 20000:]  # same coils, independent samples
    cov = noise_covariance(calibration)
    w = prewhitening_matrix(cov)
    assert w.dtype == np.complex64 and w.shape == (n_coils, n_coils)
    np.testing.assert_array_equal(w, np.tril(w))
    # exact on the covariance it was computed from ...
    np.testing.assert_allclose(w.astype(np.complex128) @ cov @ w.conj().T, np.eye(n_coils), atol=1e-5)
    assert np.abs(noise_covariance(prewhiten(calibration, w)) - np.eye(n_coils)).max() < 1e-5
    # ... and within sampling error on fresh noise (entries ~ N(0, 1/sqrt(n)))
    empirical = noise_covariance(prewhiten(fresh, w))
    assert np.abs(empirical - np.eye(n_coils)).max() < 6 / math.sqrt(20000)
    # while the raw noise is far from white
    assert np.abs(noise_covariance(fresh) - np.eye(n_coils)).max() > 0.5


def test_prewhitening_matches_gadgetron_convention(rng):
    """Re-derive NoiseAdjustGadget's math literally: D (samples, channels), cov = D^H D / (n - 1),
    R = chol(cov) upper (Armadillo), W_g = inv(R) * scale, data <- D W_g."""
    n_coils = 5
    noise, _ = correlated_noise(rng, n_coils, 3000)
    data, _ = correlated_noise(rng, n_coils, 64)
    d_noise = noise.T.astype(np.complex128)
    cov_gadgetron = d_noise.conj().T @ d_noise / (d_noise.shape[0] - 1)
    upper = np.linalg.cholesky(cov_gadgetron).conj().T  # R with R^H R = cov, as arma::chol
    np.testing.assert_allclose(upper.conj().T @ upper, cov_gadgetron, rtol=1e-10, atol=1e-10)
    scale = noise_bandwidth_scale(5.0, 2.5, 0.793)
    w_gadgetron = np.linalg.inv(upper) * scale
    expected = (data.T.astype(np.complex128) @ w_gadgetron).T

    w = prewhitening_matrix(noise_covariance(noise), scale)
    np.testing.assert_allclose(prewhiten(data, w), expected, rtol=1e-4, atol=1e-4)
    # Gadgetron's column-major (CHA, CHA) buffers read as C-order arrays are our matrices
    np.testing.assert_allclose(noise_covariance(noise), cov_gadgetron.T, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(w, w_gadgetron.T, rtol=1e-4, atol=1e-5)
    # whitened noise has variance scale^2 per channel
    np.testing.assert_allclose(
        noise_covariance(prewhiten(noise, w)), scale**2 * np.eye(n_coils), atol=1e-4
    )


@pytest.mark.parametrize(
    ("noise_dwell", "acq_dwell", "bandwidth", "expected"),
    [
        (5.0, 2.5, 0.793, math.sqrt(0.793)),  # 2 * 2.5 / 5 * 0.793
        (5.0, 10.0, 1.0, 2.0),  # sqrt(2 * 10 / 5 * 1) = sqrt(4)
        (7.8, 3.9, 0.79, math.sqrt(0.79)),
        (4.0, 3.0, 0.8, math.sqrt(1.2)),  # 2 * 3 / 4 * 0.8 = 1.2 -> 1.0954451
        (0.0, 3.0, 0.793, 1.0),  # Gadgetron: a zero dwell time means no scaling
        (5.0, 0.0, 0.793, 1.0),
    ],
)
def test_bandwidth_scale_against_hand_computed_values(noise_dwell, acq_dwell, bandwidth, expected):
    assert noise_bandwidth_scale(noise_dwell, acq_dwell, bandwidth) == pytest.approx(expected, rel=1e-6)


def test_bandwidth_scale_default_and_single_precision():
    assert DEFAULT_RECEIVER_NOISE_BANDWIDTH == 0.793
    assert noise_bandwidth_scale(5.0, 2.5) == noise_bandwidth_scale(5.0, 2.5, 0.793)
    value = noise_bandwidth_scale(4.0, 3.0, 0.8)
    assert value == float(np.float32(value))  # the float32 value Gadgetron multiplies with
    assert value == pytest.approx(1.0954451150103321, rel=1e-7)


@pytest.mark.parametrize("bad", [(-1.0, 2.0, 0.793), (5.0, float("nan"), 0.793), (5.0, 2.0, -0.1)])
def test_bandwidth_scale_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="must be a finite number"):
        noise_bandwidth_scale(*bad)


def test_scale_multiplies_the_prewhitener(rng):
    noise, _ = correlated_noise(rng, 4, 500)
    cov = noise_covariance(noise)
    np.testing.assert_allclose(prewhitening_matrix(cov, 0.5), 0.5 * prewhitening_matrix(cov), rtol=1e-6)


def test_prewhiten_any_layout(rng):
    n_coils = 4
    noise, _ = correlated_noise(rng, n_coils, 500)
    w = prewhitening_matrix(noise_covariance(noise))
    data = (rng.standard_normal((3, 5, n_coils, 7)) + 1j * rng.standard_normal((3, 5, n_coils, 7))).astype(np.complex64)
    out = prewhiten(data, w, coil_axis=2)
    assert out.shape == data.shape and out.dtype == np.complex64
    expected = np.einsum("ij,abjc->abic", w, data)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prewhiten(np.moveaxis(data, 2, 0), w, coil_axis=0), np.moveaxis(expected, 2, 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(prewhiten(data, w, coil_axis=-2), expected, rtol=1e-5, atol=1e-5)


def test_accumulator_equals_one_block(rng):
    noise, _ = correlated_noise(rng, 6, 900)
    acc = NoiseAccumulator()
    for block, dwell in ((noise[:, :256], 5.0), (noise[:, 256:512], 7.0), (noise[:, 512:], None)):
        acc.add(block, dwell)
    assert acc.n_samples == 900 and acc.n_coils == 6
    assert acc.dwell_time_us == 5.0  # the first noise acquisition's dwell time, as Gadgetron keeps
    np.testing.assert_allclose(acc.covariance, noise_covariance(noise), rtol=1e-10, atol=1e-12)


def test_accumulator_errors(rng):
    acc = NoiseAccumulator()
    with pytest.raises(ValueError, match="at least 2 noise samples"):
        _ = acc.covariance
    acc.add(np.ones((3, 4), np.complex64))
    with pytest.raises(ValueError, match="has 2 coils but earlier blocks had 3"):
        acc.add(np.ones((2, 4), np.complex64))
    with pytest.raises(ValueError, match=r"noise_block must have 2 dimensions \(coils, samples\)"):
        acc.add(np.ones((3, 4, 1), np.complex64))


def test_readable_errors(rng):
    with pytest.raises(ValueError, match="at least 2 samples"):
        noise_covariance(np.ones((3, 1), np.complex64))
    with pytest.raises(ValueError, match=r"noise must have 2 dimensions"):
        noise_covariance(np.ones(3, np.complex64))
    with pytest.raises(ValueError, match="square"):
        prewhitening_matrix(np.ones((3, 2), np.complex64))
    with pytest.raises(ValueError, match="Hermitian"):
        prewhitening_matrix(np.array([[1.0, 0.5], [0.0, 1.0]], np.complex64))
    with pytest.raises(ValueError, match="not positive definite"):
        prewhitening_matrix(np.array([[1.0, 2.0], [2.0, 1.0]], np.complex64))
    with pytest.raises(ValueError, match="scale must be"):
        prewhitening_matrix(np.eye(2, dtype=np.complex64), 0.0)
    with pytest.raises(ValueError, match="data has 3 coils on axis 1 but matrix expects 2"):
        prewhiten(np.ones((4, 3), np.complex64), np.eye(2, dtype=np.complex64), coil_axis=1)


def test_zero_covariance_gives_scaled_identity():
    w = prewhitening_matrix(np.zeros((3, 3), np.complex64), 2.0)
    np.testing.assert_array_equal(w, 2.0 * np.eye(3, dtype=np.complex64))
