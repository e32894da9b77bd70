import math

import numpy as np
import pytest
import torch

from cardiomm_core.metrics import central_crop, evaluate, nmse, normalise, psnr, ssim


def test_psnr_of_a_constant_offset(rng):
    target = rng.random((2, 3, 20, 17))
    offset = 0.05
    expected = np.mean([10 * math.log10(img.max() ** 2 / offset**2) for img in target.reshape(-1, 20, 17)])
    assert psnr(target + offset, target) == pytest.approx(expected, rel=1e-12)
    # With an explicit data range: 10 log10(2^2 / 0.05^2) for every image.
    assert psnr(target + offset, target, data_range=2.0) == pytest.approx(10 * math.log10(4 / 0.0025))


def test_psnr_of_an_exact_reconstruction_is_infinite(rng):
    x = rng.random((8, 8))
    assert psnr(x, x) == math.inf


def test_ssim_of_identical_images_is_one(rng):
    x = rng.random((3, 24, 31))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)


def test_ssim_of_constant_images_follows_the_formula():
    a, b, data_range = 0.3, 0.5, 1.0
    c1 = (0.01 * data_range) ** 2
    expected = (2 * a * b + c1) / (a**2 + b**2 + c1)  # variances 0: the contrast term is C2 / C2
    value = ssim(np.full((16, 16), b), np.full((16, 16), a), data_range=data_range)
    assert value == pytest.approx(expected, rel=1e-12)
    assert value < 1


@pytest.mark.parametrize("scale", [0.5, 1.0, 2.5])
def test_nmse_of_a_scaled_image(rng, scale):
    target = rng.standard_normal((2, 12, 9))
    assert nmse(scale * target, target) == pytest.approx((scale - 1) ** 2, abs=1e-12)


def test_metrics_average_per_image(rng):
    target = rng.random((4, 16, 16)) + 0.1
    recon = target + 0.05 * rng.standard_normal(target.shape)
    for metric in (psnr, ssim, nmse):
        per_image = [metric(recon[i], target[i]) for i in range(4)]
        assert metric(recon, target) == pytest.approx(np.mean(per_image))


def test_complex_and_torch_inputs_use_the_magnitude(rng):
    mag = rng.random((2, 16, 16)) + 0.1
    phase = np.exp(1j * rng.uniform(-np.pi, np.pi, mag.shape))
    recon_mag = mag + 0.05 * rng.random(mag.shape)
    for metric in (psnr, ssim, nmse):
        expected = metric(recon_mag, mag)
        assert metric(torch.from_numpy((recon_mag * phase).astype(np.complex64)), mag * phase) == pytest.approx(
            expected, rel=1e-5
        )
        assert metric(torch.from_numpy(recon_mag), torch.from_numpy(mag)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("shape, win_size", [((37, 51), 7), ((2, 64, 48), 7), ((20, 33), 5), ((25, 25), 11)])
@pytest.mark.parametrize("data_range", [None, 3.0])
def test_ssim_matches_skimage(rng, shape, win_size, data_range):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    target = rng.random(shape) * 2
    recon = target + 0.2 * rng.standard_normal(shape)
    expected = np.mean([
        skimage_metrics.structural_similarity(
            t, r, data_range=t.max() if data_range is None else data_range, win_size=win_size
        )
        for t, r in zip(target.reshape(-1, *shape[-2:]), recon.reshape(-1, *shape[-2:]))
    ])
    assert ssim(recon, target, data_range=data_range, win_size=win_size) == pytest.approx(expected, rel=1e-9)


def test_psnr_matches_skimage(rng):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    target = rng.random((30, 40))
    recon = target + 0.1 * rng.standard_normal(target.shape)
    expected = skimage_metrics.peak_signal_noise_ratio(target, recon, data_range=target.max())
    assert psnr(recon, target) == pytest.approx(expected, rel=1e-12)


def test_normalisations(rng):
    image = (rng.random((3, 2, 40, 30)) * 5 + 1) * np.exp(1j * rng.random((3, 2, 40, 30)))
    by_max = normalise(image, "2023")
    np.testing.assert_allclose(by_max.max(axis=(-2, -1)), 1.0)
    z = normalise(torch.from_numpy(image), "2024")
    np.testing.assert_allclose(z.mean(axis=(-2, -1)), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=(-2, -1)), 1.0)
    by_percentile = normalise(image, "2025")
    np.testing.assert_allclose(np.percentile(by_percentile, 99.5, axis=(-2, -1)), 1.0)
    assert by_percentile.shape == image.shape and by_percentile.dtype == np.float64
    # An all-zero image is left as it is rather than turned into NaN.
    for convention in ("2023", "2024", "2025"):
        assert np.all(normalise(np.zeros((4, 4)), convention) == 0)


@pytest.mark.parametrize("shape, expected", [((246, 512), (123, 171)), ((2, 3, 13, 18), (2, 3, 7, 6)), ((9, 9), (5, 3))])
def test_central_crop_shape(shape, expected):
    assert central_crop(np.zeros(shape)).shape == expected


def test_central_crop_is_centred_like_matlab():
    image = np.zeros((246, 512), dtype=np.complex64)
    image[123, 256] = 1  # the k-space / image centre (n // 2)
    cropped = central_crop(image, "2023")
    assert cropped.dtype == np.complex64
    # MATLAB crop: start floor(n/2) + ceil(-c/2) (0-based) -> 123 - 61 = 62 and 256 - 85 = 171.
    assert cropped[123 - 62, 256 - 171] == 1
    np.testing.assert_array_equal(central_crop(np.arange(90).reshape(9, 10)), np.arange(90).reshape(9, 10)[2:7, 4:7])
    # (9 rows: start 4 + ceil(-5/2) = 2; 10 columns: round(10/3) = 3, start 5 + ceil(-3/2) = 4)


@pytest.mark.parametrize("convention", ["2023", "2024", "2025"])
def test_evaluate_perfect_and_scaled_reconstruction(rng, convention):
    target = rng.random((2, 48, 60)) + 0.1
    scores = evaluate(3.0 * target, target, convention)  # normalisation removes a global scale
    assert set(scores) == {"psnr", "ssim", "nmse"}
    assert scores["psnr"] > 250  # exact up to floating-point rounding of the normalisation
    assert scores["ssim"] == pytest.approx(1.0)
    assert scores["nmse"] == pytest.approx(0.0, abs=1e-24)


def test_evaluate_follows_the_challenge_pipeline(rng):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    target = rng.random((2, 60, 72)) + 0.1
    recon = target + 0.1 * rng.standard_normal(target.shape)
    scores = evaluate(recon, target, "2024")
    psnrs, ssims, nmses = [], [], []
    for t, r in zip(target, recon):
        t, r = t[15:45, 24:48], r[15:45, 24:48]  # central crop: 30 = 60/2 rows, 24 = 72/3 columns
        t, r = (t - t.mean()) / t.std(), (r - r.mean()) / r.std()
        psnrs.append(skimage_metrics.peak_signal_noise_ratio(t, r, data_range=t.max()))
        ssims.append(skimage_metrics.structural_similarity(t, r, data_range=t.max()))
        nmses.append(np.sum((t - r) ** 2) / np.sum(t**2))
    assert scores["psnr"] == pytest.approx(np.mean(psnrs), rel=1e-10)
    assert scores["ssim"] == pytest.approx(np.mean(ssims), rel=1e-9)
    assert scores["nmse"] == pytest.approx(np.mean(nmses), rel=1e-10)
    uncropped = evaluate(recon, target, "2024", crop=False)
    assert uncropped["ssim"] != pytest.approx(scores["ssim"], rel=1e-6)


def test_errors_are_readable(rng):
    x = rng.random((16, 16))
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, rng.random((16, 15)))
    with pytest.raises(ValueError, match="convention must be one of"):
        normalise(x, "2022")
    with pytest.raises(ValueError, match="convention must be one of"):
        evaluate(x, x, "fastmri")
    with pytest.raises(ValueError, match="at least win_size=7"):
        ssim(x[:5], x[:5])
    with pytest.raises(ValueError, match="win_size must be an odd integer"):
        ssim(x, x, win_size=6)
    with pytest.raises(ValueError, match="data_range must be a positive"):
        psnr(x, x, data_range=0.0)
    with pytest.raises(ValueError, match="pass data_range explicitly"):
        ssim(x, -x)
    with pytest.raises(ValueError, match="all-zero image"):
        nmse(x, np.zeros_like(x))
    with pytest.raises(ValueError, match="numpy array or torch.Tensor"):
        psnr(x.tolist(), x)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        central_crop(np.zeros(5))
    with pytest.raises(ValueError, match="image must be a numpy array or torch.Tensor, got list"):
        central_crop([[1.0, 2.0]])
