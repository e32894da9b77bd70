import numpy as np
import pytest

from cardiomm_core.phantom import TISSUES, PhantomScan, noise_free_rss, phantom_geometry, simulate_cardiac_scan
from cardiomm_core.readout import crop_image_readout, pad_image_readout
from tests.core.phantom_analysis import (
    cardiac_phase_volumes,
    ejection_fraction,
    lv_blood_pool_areas,
    tissue_fractions,
    tissue_relaxation,
)


def np_fft2c(x: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=axes), norm="ortho"), axes=axes)


def np_ifft2c(x: np.ndarray) -> np.ndarray:
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x, axes=axes), norm="ortho"), axes=axes)


@pytest.mark.parametrize("n_slices,n_coils,n_frames,matrix,oversampling,modality", [
    (1, 1, 1, (37, 29), 2, "cine"),
    (2, 3, 4, (32, 24), 1, "cine"),
    (1, 5, 3, (37, 29), 3, "t2map"),
    (3, 2, 8, (24, 33), 2, "mapping"),
    (1, 7, 5, (40, 36), 2, "t1map"),
])
def test_shapes_and_dtypes(n_slices, n_coils, n_frames, matrix, oversampling, modality):
    nx, ny = matrix
    scan = simulate_cardiac_scan(seed=3, n_slices=n_slices, n_frames=n_frames, n_coils=n_coils, matrix=matrix,
                                 readout_oversampling=oversampling, modality=modality)
    nx_enc = nx * oversampling
    assert scan.kspace.shape == (n_slices, n_coils, n_frames, ny, nx_enc)
    assert scan.images.shape == (n_slices, n_frames, ny, nx)
    assert scan.sensitivities.shape == (n_slices, n_coils, ny, nx_enc)
    assert scan.noise_covariance.shape == (n_coils, n_coils)
    assert scan.frame_times_ms.shape == (n_frames,)
    for arr in (scan.kspace, scan.images, scan.sensitivities, scan.noise_covariance):
        assert arr.dtype == np.complex64
        assert np.all(np.isfinite(arr))
    assert scan.frame_times_ms.dtype == np.float64
    assert scan.readout_oversampling == oversampling and scan.seed == 3
    expected = {"cine": "Cine", "t2map": "T2 mapping", "mapping": "T1 mapping", "t1map": "T1 mapping"}[modality]
    assert scan.context.modality == expected
    assert scan.context.view == "short-axis" and scan.context.pattern == "full" and scan.context.acceleration == 1
    assert np.all(np.diff(scan.frame_times_ms) > 0) or n_frames == 1
    assert np.abs(scan.images).max() == pytest.approx(1.0, abs=1e-6)


def test_context_carries_scanner_description():
    scan = simulate_cardiac_scan(matrix=(24, 20), n_frames=2, n_coils=2, field_strength_t=1.5, vendor="GE",
                                 scanner_model="Artist", modality="t2map")
    assert scan.context.metadata_sentence() == (
        "Adult cardiac MRI reconstruction. Vendor: 1.5T, GE, Artist. Modality: T2 mapping, short-axis.")


def test_body_fits_inside_recon_fov():
    scan = simulate_cardiac_scan(seed=5, n_slices=2, n_frames=2, n_coils=2, matrix=(37, 29))
    mag = np.abs(scan.images)
    for edge in (mag[..., 0, :], mag[..., -1, :], mag[..., :, 0], mag[..., :, -1]):
        assert edge.max() == 0.0
    # the body fills most of the readout: it is wider than half the recon FOV
    assert (mag.max(axis=(0, 1, 2)) > 0).sum() > 0.6 * 37


def test_deterministic_by_seed_and_subjects_differ():
    kwargs = dict(n_slices=2, n_frames=3, n_coils=3, matrix=(32, 28))
    a = simulate_cardiac_scan(seed=11, **kwargs)
    b = simulate_cardiac_scan(seed=11, **kwargs)
    c = simulate_cardiac_scan(seed=12, **kwargs)
    for name in ("kspace", "images", "sensitivities", "noise_covariance", "frame_times_ms"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert np.abs(a.images - c.images).max() > 0.1
    assert not np.allclose(a.frame_times_ms, c.frame_times_ms)  # another heart rate
    assert phantom_geometry(a).pixel_spacing_mm != phantom_geometry(c).pixel_spacing_mm  # another body size


def test_noise_free_kspace_is_fft_of_sensitivities_times_object():
    scan = simulate_cardiac_scan(seed=2, n_slices=2, n_frames=3, n_coils=4, matrix=(37, 29), noise_level=0.0)
    nx = scan.images.shape[-1]
    nx_enc = scan.kspace.shape[-1]
    obj = pad_image_readout(scan.images.astype(np.complex128), nx_enc)                  # (S, T, y, x_enc)
    expected = np_fft2c(scan.sensitivities.astype(np.complex128)[:, :, None] * obj[:, None])
    np.testing.assert_allclose(scan.kspace, expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    # rss of the coil images, cropped to the recon FOV, is |object| * rss(sensitivities)
    rss = np.sqrt((np.abs(np_ifft2c(scan.kspace.astype(np.complex128))) ** 2).sum(axis=1))
    sens_rss = np.sqrt((np.abs(scan.sensitivities) ** 2).sum(axis=1))          # (S, y, x_enc)
    np.testing.assert_allclose(crop_image_readout(rss, nx), np.abs(scan.images) * crop_image_readout(sens_rss, nx)[:, None],
                               rtol=0, atol=1e-5 * rss.max())
    # nothing of the object lies in the oversampled part of the readout
    assert np.abs(rss).max() > 0 and np.abs(obj).sum() == pytest.approx(np.abs(scan.images).sum(), rel=1e-6)
    assert np.all(np.isfinite(np.angle(scan.sensitivities))) and np.ptp(np.angle(scan.sensitivities)) > 1.0


def test_sensitivities_are_smooth_and_localised():
    scan = simulate_cardiac_scan(seed=1, n_frames=1, n_coils=8, matrix=(64, 56), noise_level=0.0)
    mag = np.abs(scan.sensitivities[0])                                           # (C, y, x_enc)
    body = crop_image_readout(pad_image_readout(np.abs(scan.images[0, 0]), mag.shape[-1]) > 0, mag.shape[-1])
    inside = mag[:, body]
    # every coil sees the body, with a strongly varying sensitivity (surface coils)
    assert np.all(inside.max(axis=1) > 3 * inside.min(axis=1))
    # anterior coils (first half) are stronger at the top of the body than the posterior ones
    rows = np.nonzero(body.any(axis=1))[0]
    top, bottom = rows[0] + 3, rows[-1] - 3
    assert mag[:4, top].max() > mag[4:, top].max() and mag[4:, bottom].max() > mag[:4, bottom].max()
    # smooth: neighbouring pixels differ by a few percent of the local value at most
    step = np.abs(np.diff(scan.sensitivities[0], axis=-1)) / (mag[..., 1:] + 1e-3 * mag.max())
    assert np.median(step) < 0.05


def test_cine_lv_contracts_with_plausible_ejection_fraction():
    for seed in range(4):
        scan = simulate_cardiac_scan(seed=seed, n_slices=3, n_frames=12, n_coils=1, matrix=(96, 80), noise_level=0.0)
        volumes = cardiac_phase_volumes(scan)
        ef = ejection_fraction(volumes)
        assert 0.45 <= ef <= 0.8, (seed, ef)
        es = int(np.argmin(volumes))
        assert 2 <= es <= 6 and int(np.argmax(volumes)) in (0, 11)       # end-systole ~ a third of RR
        areas = lv_blood_pool_areas(scan)
        assert np.all(areas[:, es] < areas[:, 0])
        # the image agrees: the bright (blood) pixels of the mid slice are fewest at end-systole
        mag = np.abs(scan.images[1])
        bright = (mag > 0.6 * np.percentile(mag[mag > 0], 99)).sum(axis=(-2, -1))
        assert abs(int(np.argmin(bright)) - es) <= 1
        assert bright[0] - bright.min() > 0.3 * areas[1, 0] / phantom_geometry(scan).pixel_spacing_mm ** 2


def test_wall_thickens_in_systole():
    scan = simulate_cardiac_scan(seed=4, n_frames=12, n_coils=1, matrix=(128, 112), noise_level=0.0)
    fractions = tissue_fractions(scan)
    volumes = cardiac_phase_volumes(scan)
    es = int(np.argmin(volumes))
    # LV myocardium area (myocardium within 1.5 LV radii of the cavity centre) stays about constant,
    # so wall thickness = r_epi - r_endo grows as the cavity shrinks
    lv = fractions["lv_blood"][0]
    yy, xx = np.mgrid[:lv.shape[-2], :lv.shape[-1]]
    cy = (lv[0] * yy).sum() / lv[0].sum()
    cx = (lv[0] * xx).sum() / lv[0].sum()
    r_endo = np.sqrt(lv.sum(axis=(-2, -1)) / np.pi)
    wall = []
    for t in (0, es):
        near = np.hypot(yy - cy, xx - cx) < r_endo[0] * 1.6
        myo = fractions["myocardium"][0, t] * near * (xx - cx > -0.2 * r_endo[0])   # lateral half: LV wall only
        ring = 2 * myo.sum() + lv[t].sum()
        wall.append(np.sqrt(ring / np.pi) - r_endo[t])
    assert wall[1] > 1.2 * wall[0]


def test_heart_smaller_at_apex_than_base():
    scan = simulate_cardiac_scan(seed=7, n_slices=5, n_frames=2, n_coils=1, matrix=(64, 56), noise_level=0.0)
    areas = lv_blood_pool_areas(scan)
    assert areas[0, 0] > 1.5 * areas[-1, 0]
    assert np.all(np.diff(areas[1:, 0]) < 0)                   # shrinking from mid towards the apex
    fractions = tissue_fractions(scan)
    heart = (fractions["myocardium"] + fractions["lv_blood"] + fractions["rv_blood"])[:, 0].sum(axis=(-2, -1))
    assert heart[0] > 1.5 * heart[-1]
    positions = phantom_geometry(scan).slice_positions_mm
    assert positions.shape == (5,) and np.all(np.diff(positions) > 0)


def test_tissue_fractions_partition_the_image():
    scan = simulate_cardiac_scan(seed=6, n_slices=2, n_frames=3, n_coils=1, matrix=(40, 32), noise_level=0.0)
    fractions = tissue_fractions(scan)
    assert set(fractions) == set(TISSUES)
    total = sum(fractions.values())
    np.testing.assert_allclose(total, 1.0, atol=1e-5)
    assert all(f.min() >= -1e-6 for f in fractions.values())
    np.testing.assert_array_equal(np.abs(scan.images) == 0, fractions["air"] >= 1.0 - 1e-7)


def _pure(fractions: dict, tissue: str) -> np.ndarray:
    return (fractions[tissue] > 0.9999).all(axis=1)           # (S, y, x): pure in every frame


def test_t2_mapping_follows_mono_exponential_decay():
    scan = simulate_cardiac_scan(seed=8, n_slices=1, n_frames=4, n_coils=2, matrix=(96, 80),
                                 modality="t2map", noise_level=0.0)
    np.testing.assert_allclose(scan.frame_times_ms, [0.0, 80 / 3, 160 / 3, 80.0])
    fractions = tissue_fractions(scan)
    relax = tissue_relaxation(scan)
    for tissue, low, high in (("myocardium", 40, 50), ("lv_blood", 220, 280), ("liver", 30, 40)):
        pure = _pure(fractions, tissue)[0]
        assert pure.sum() >= 5, tissue
        signal = scan.images[0][:, pure]                                   # (T, n)
        # static phase, magnitude decays as exp(-TE / T2) with the subject's T2
        np.testing.assert_allclose(np.angle(signal * signal[0].conj()), 0.0, atol=1e-4)
        ratio = np.abs(signal) / np.abs(signal[0])
        t2_fit = -scan.frame_times_ms[1:, None] / np.log(ratio[1:])
        assert np.ptp(t2_fit) < 1e-3 * t2_fit.mean()
        assert t2_fit.mean() == pytest.approx(relax[tissue][1], rel=1e-3)
        assert low < t2_fit.mean() < high, (tissue, t2_fit.mean())


def test_t1_mapping_follows_inversion_recovery():
    scan = simulate_cardiac_scan(seed=9, n_slices=1, n_frames=8, n_coils=2, matrix=(96, 80),
                                 modality="mapping", noise_level=0.0)
    ti = scan.frame_times_ms
    assert ti[0] == pytest.approx(100.0) and ti[1] == pytest.approx(180.0)      # MOLLI 5(3)3
    assert np.sum(ti < 300) == 2 and ti[-1] > 2500
    fractions = tissue_fractions(scan)
    relax = tissue_relaxation(scan)
    grid = np.arange(200.0, 3000.0, 0.5)
    for tissue, low, high in (("myocardium", 1080, 1320), ("lv_blood", 1700, 2100), ("fat", 340, 460)):
        pure = _pure(fractions, tissue)[0]
        assert pure.sum() >= 5, tissue
        signal = scan.images[0][:, pure]
        real = (signal * np.exp(-1j * np.angle(signal[-1]))).astype(np.complex128)  # last TI: positive
        np.testing.assert_allclose(real.imag, 0.0, atol=1e-5)                        # sign, not phase, changes
        curve = real.real.mean(axis=1)
        model = 1.0 - 2.0 * np.exp(-ti[:, None] / grid[None])                       # (T, grid)
        amplitude = (model * curve[:, None]).sum(0) / (model ** 2).sum(0)
        residual = ((curve[:, None] - amplitude * model) ** 2).sum(0)
        t1_fit = grid[np.argmin(residual)]
        assert residual.min() < 1e-6 * (curve ** 2).sum()  # grid step limits it
        assert t1_fit == pytest.approx(relax[tissue][0], abs=1.0)
        assert low < t1_fit < high, (tissue, t1_fit)
        assert curve[0] < 0 < curve[-1]                                             # inversion


def test_noise_covariance_is_hermitian_pd_and_realised():
    kwargs = dict(seed=4, n_slices=1, n_frames=2, n_coils=6, matrix=(32, 28))
    scan = simulate_cardiac_scan(noise_level=0.05, **kwargs)
    clean = simulate_cardiac_scan(noise_level=0.0, **kwargs)
    cov = scan.noise_covariance.astype(np.complex128)
    np.testing.assert_allclose(cov, cov.conj().T, atol=1e-9)
    assert np.linalg.eigvalsh(cov).min() > 0
    assert np.real(np.diag(cov)).mean() == pytest.approx(0.05 ** 2, rel=1e-4)
    std = np.sqrt(np.real(np.diag(cov)))
    corr = np.abs(cov) / np.outer(std, std)
    off = corr[~np.eye(6, dtype=bool)]
    assert 0.1 < off.max() < 0.8                                 # neighbours correlate, no two coils alike
    samples = scan.noise_samples(200_000, seed=1)
    assert samples.shape == (6, 200_000) and samples.dtype == np.complex64
    np.testing.assert_array_equal(samples, scan.noise_samples(200_000, seed=1))
    assert not np.array_equal(samples, scan.noise_samples(200_000, seed=2))
    sample_cov = samples @ samples.conj().T / samples.shape[1]
    np.testing.assert_allclose(sample_cov, cov, atol=0.02 * 0.05 ** 2)
    noise = (scan.kspace - clean.kspace).transpose(1, 0, 2, 3, 4).reshape(6, -1)
    k_cov = noise @ noise.conj().T / noise.shape[1]
    np.testing.assert_allclose(k_cov, cov, atol=0.05 * 0.05 ** 2)
    assert np.abs(np.mean(noise)) < 1e-3                          # zero mean
    assert not np.any(clean.noise_covariance)                     # noise_level 0: no noise at all
    assert not np.any(clean.noise_samples(10))


@pytest.mark.parametrize("kwargs,name", [
    (dict(matrix=(4, 32)), "matrix"),
    (dict(matrix=(32,)), "matrix"),
    (dict(matrix=(32.5, 32)), "matrix"),
    (dict(n_coils=0), "n_coils"),
    (dict(n_frames=0), "n_frames"),
    (dict(n_slices=-1), "n_slices"),
    (dict(readout_oversampling=0), "readout_oversampling"),
    (dict(modality="flow"), "modality"),
    (dict(noise_level=-0.1), "noise_level"),
    (dict(noise_level=float("nan")), "noise_level"),
    (dict(seed=-3), "seed"),
    (dict(field_strength_t=0.0), "field_strength_t"),
    (dict(vendor=""), "vendor"),
])
def test_invalid_arguments_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        simulate_cardiac_scan(**kwargs)


def test_helpers_reject_bad_input():
    scan = simulate_cardiac_scan(matrix=(24, 20), n_frames=2, n_coils=1)
    assert isinstance(scan, PhantomScan)
    with pytest.raises(ValueError, match="n_samples"):
        scan.noise_samples(0)
    with pytest.raises(ValueError, match="scan"):
        cardiac_phase_volumes(object())
    with pytest.raises(ValueError, match="volumes"):
        ejection_fraction(np.array([1.0]))


def test_noise_free_rss_is_the_rss_of_the_mixed_noise_free_coil_images():
    """|x| ||M s|| (cropped) equals the RSS of M applied to the noise-free coil images, per slice."""
    scan = simulate_cardiac_scan(seed=4, n_slices=2, n_frames=3, n_coils=4, matrix=(20, 16), noise_level=0.0)
    rng = np.random.default_rng(0)
    mixing = (rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))).astype(np.complex64)
    mixed = np.einsum("dc,sctyx->sdtyx", mixing, np_ifft2c(scan.kspace))       # (S, 3, T, y, x_enc)
    expected = crop_image_readout(np.sqrt((np.abs(mixed) ** 2).sum(axis=1)), 20)
    got = noise_free_rss(scan.images, scan.sensitivities, mixing)
    assert got.shape == (2, 3, 16, 20) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6 * expected.max())
    one = noise_free_rss(scan.images[1], scan.sensitivities[1])                 # one slice, no mixing
    np.testing.assert_allclose(one, crop_image_readout(np.sqrt((np.abs(np_ifft2c(scan.kspace[1])) ** 2).sum(axis=0)), 20),
                               rtol=1e-4, atol=1e-6 * expected.max())
    with pytest.raises(ValueError, match="mixing"):
        noise_free_rss(scan.images, scan.sensitivities, mixing[:, :3])
    with pytest.raises(ValueError, match="same number of axes"):
        noise_free_rss(scan.images[0], scan.sensitivities)
