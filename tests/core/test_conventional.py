import numpy as np
import pytest
import torch

from cardiomm_core.conventional import (
    ConventionalResult,
    cg_sense,
    conventional_recon,
    low_resolution_prior,
    rss_full_sampling,
    temporal_reference,
    temporal_sense,
    time_average_kspace,
    zero_filled,
)
from cardiomm_core.fft import fft2c, ifft2c
from cardiomm_core.masks import make_mask
from cardiomm_core.metrics import evaluate
from cardiomm_core.phantom import simulate_cardiac_scan
from cardiomm_core.sense import rss, sens_expand, sens_reduce
from tests.core.test_coils import line_mask, smooth_maps, smooth_object
from tests.helpers import crandn


def as_sens(maps: np.ndarray) -> torch.Tensor:
    """(coils, y, x) numpy -> (1, coils, 1, y, x) complex64."""
    return torch.from_numpy(maps.astype(np.complex64))[None, :, None]


def textured_images(rng: np.random.Generator, batch: int, n_frames: int, ny: int, nx: int) -> torch.Tensor:
    """(B, T, y, x) complex64: the smooth phantom with a random complex texture per item."""
    base = torch.from_numpy(smooth_object(ny, nx, n_frames).astype(np.complex64))
    return base * (1 + 0.3 * crandn(rng, batch, n_frames, ny, nx))


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    return float((x - ref).abs().pow(2).sum().sqrt() / ref.abs().pow(2).sum().sqrt())


def normal_equation_objective(x, kspace, mask, sens, l2):
    """||A x - y||^2 + l2 ||x||^2 (the function CG minimises)."""
    return float((sens_expand(x, sens, mask) - kspace * mask).abs().pow(2).sum() + l2 * x.abs().pow(2).sum())


def test_zero_filled_is_sens_reduce(rng):
    kspace = crandn(rng, 2, 3, 2, 13, 18)
    sens = crandn(rng, 2, 3, 1, 13, 18)
    mask = torch.from_numpy(rng.random((2, 1, 2, 13, 1)) < 0.5)
    out = zero_filled(kspace, mask, sens)
    assert out.shape == (2, 2, 13, 18) and out.dtype == torch.complex64
    torch.testing.assert_close(out, sens_reduce(kspace * mask, sens))


@pytest.mark.parametrize("n_coils", [1, 3, 6])
def test_cg_sense_full_sampling_equals_sens_reduce(rng, n_coils):
    sens = crandn(rng, 2, n_coils, 1, 13, 18)
    sens = sens / rss(sens, dim=1).unsqueeze(1)  # A^H A = I
    kspace = crandn(rng, 2, n_coils, 3, 13, 18)
    mask = torch.ones(1, 1, 3, 13, 1)
    out = cg_sense(kspace, mask, sens, n_iter=10)
    torch.testing.assert_close(out, zero_filled(kspace, mask, sens), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("ny", "nx"), [(48, 37), (42, 26)])
def test_cg_sense_recovers_r2_equispaced_with_8_coils(rng, ny, nx):
    sens = as_sens(smooth_maps(8, ny, nx))
    images = textured_images(rng, 2, 3, ny, nx)
    mask = torch.zeros(1, 1, 3, ny, 1)
    mask[..., 0::2, :] = 1.0  # R = 2, no ACS
    kspace = sens_expand(images, sens, mask)
    out = cg_sense(kspace, mask, sens, n_iter=100, tol=1e-7)
    assert out.shape == images.shape and out.dtype == torch.complex64
    assert relative_error(out, images) < 1e-3
    assert relative_error(zero_filled(kspace, mask, sens), images) > 0.1  # aliasing was real
    for b in range(2):  # every (batch, frame) item converged on its own
        for t in range(3):
            assert relative_error(out[b, t], images[b, t]) < 1e-3


@pytest.mark.parametrize("l2", [0.0, 0.05])
def test_cg_sense_objective_decreases(rng, l2):
    ny, nx = 33, 26
    sens = as_sens(smooth_maps(4, ny, nx))
    images = textured_images(rng, 1, 2, ny, nx)
    mask = torch.from_numpy(line_mask(ny, 2, acceleration=3, n_acs=4)).float()
    kspace = sens_expand(images, sens, mask) + 0.01 * crandn(rng, 1, 4, 2, ny, nx) * mask
    values = [
        normal_equation_objective(cg_sense(kspace, mask, sens, n_iter=n, l2=l2, tol=0.0), kspace, mask, sens, l2)
        for n in (0, 1, 2, 4, 8, 16)
    ]
    assert all(later < earlier for earlier, later in zip(values, values[1:])), values


def test_cg_sense_solves_the_regularised_normal_equations_and_l2_shrinks(rng):
    ny, nx = 29, 22
    sens = as_sens(smooth_maps(5, ny, nx))
    images = textured_images(rng, 2, 2, ny, nx)
    mask = torch.from_numpy(line_mask(ny, 2, acceleration=3, n_acs=6)).float()
    kspace = sens_expand(images, sens, mask)
    l2 = 0.1
    x_l2 = cg_sense(kspace, mask, sens, n_iter=200, l2=l2, tol=1e-7)
    rhs = sens_reduce(kspace, sens, mask)
    normal = sens_reduce(sens_expand(x_l2, sens, mask), sens) + l2 * x_l2
    assert relative_error(normal, rhs) < 1e-4
    x_0 = cg_sense(kspace, mask, sens, n_iter=200, l2=0.0, tol=1e-7)
    assert x_l2.abs().pow(2).sum() < x_0.abs().pow(2).sum()
    bigger = cg_sense(kspace, mask, sens, n_iter=200, l2=1.0, tol=1e-7)
    assert bigger.abs().pow(2).sum() < x_l2.abs().pow(2).sum()


def test_cg_sense_zero_data_and_zero_iterations(rng):
    sens = crandn(rng, 1, 2, 1, 13, 18)
    mask = torch.ones(1, 1, 2, 13, 1)
    kspace = torch.zeros(1, 2, 2, 13, 18, dtype=torch.complex64)
    kspace[:, :, 1] = crandn(rng, 1, 2, 13, 18)  # frame 0 has no data: stays exactly 0
    out = cg_sense(kspace, mask, sens, n_iter=5)
    assert torch.all(out[:, 0] == 0) and torch.isfinite(out.abs()).all() and out[:, 1].abs().sum() > 0
    assert torch.all(cg_sense(kspace, mask, sens, n_iter=0) == 0)


def cine_phantom(ny: int, nx: int, n_frames: int) -> torch.Tensor:
    """(1, T, y, x) complex64: a static body with a beating "heart" (its radius changes over time)."""
    y, x = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    body = 1 / (1 + np.exp(np.minimum(((y / 0.8) ** 2 + (x / 0.7) ** 2 - 1) / 0.03, 50)))
    frames = []
    for t in range(n_frames):
        radius = 0.22 + 0.05 * np.sin(2 * np.pi * t / n_frames)
        heart = 1 / (1 + np.exp(np.minimum((((y + 0.1) ** 2 + (x - 0.15) ** 2) / radius**2 - 1) / 0.05, 50)))
        frames.append(0.6 * body + 0.8 * heart)
    return torch.from_numpy(np.stack(frames).astype(np.complex64))[None]


def magnitude_error(images: torch.Tensor, truth: torch.Tensor) -> float:
    """Relative error of magnitudes where the truth has signal (estimated maps carry the object's
    low-resolution phase, so only magnitudes are comparable)."""
    support = truth.abs() > 0.3
    return relative_error(images.abs()[support], truth.abs()[support])


def test_conventional_recon_static_uses_acs():
    ny, nx = 48, 37
    truth = cine_phantom(ny, nx, 1)
    mask = torch.from_numpy(line_mask(ny, 1, acceleration=2, n_acs=16)).float()
    kspace = sens_expand(truth, as_sens(smooth_maps(8, ny, nx)), mask)
    result = conventional_recon(kspace, mask, n_iter=30)
    assert isinstance(result, ConventionalResult)
    assert (result.method, result.sens_method, result.regularization) == ("cg_sense", "acs", "low_resolution_prior")
    assert result.images.shape == (1, 1, ny, nx) and result.images.dtype == torch.complex64
    assert result.sens.shape == (1, 8, 1, ny, nx)
    zf = conventional_recon(kspace, mask, method="zero_filled")
    assert (zf.method, zf.sens_method, zf.regularization) == ("zero_filled", "acs", "none")
    error_cg, error_zf = magnitude_error(result.images, truth), magnitude_error(zf.images, truth)
    assert error_cg < 0.05 and error_cg < 0.7 * error_zf  # the prior biases noise-free data a little
    plain = conventional_recon(kspace, mask, n_iter=30, prior_weight=0.0, tol=1e-6)
    assert plain.regularization == "tikhonov" and magnitude_error(plain.images, truth) < 0.01


def test_conventional_recon_dynamic_uses_time_average():
    ny, nx, n_frames = 48, 37, 6
    truth = cine_phantom(ny, nx, n_frames)
    ktuniform = np.zeros((1, 1, n_frames, ny, 1), dtype=np.float32)
    for t in range(n_frames):
        ktuniform[0, 0, t, t % 2 :: 2] = 1.0  # R = 2, lines shift over time, no ACS
    mask = torch.from_numpy(ktuniform)
    kspace = sens_expand(truth, as_sens(smooth_maps(8, ny, nx)), mask)
    result = conventional_recon(kspace, mask, n_iter=40)
    assert (result.sens_method, result.regularization) == ("time_average", "temporal")
    assert result.images.shape == (1, n_frames, ny, nx)
    assert magnitude_error(result.images, truth) < 0.05  # the temporal prior biases noise-free data a little
    plain = conventional_recon(kspace, mask, n_iter=40, temporal_weight=0.0, tol=1e-6)
    assert plain.regularization == "tikhonov" and magnitude_error(plain.images, truth) < 0.02
    zf = conventional_recon(kspace, mask, method="zero_filled")
    assert magnitude_error(zf.images, truth) > 0.2
    with pytest.raises(ValueError, match="no calibration region"):
        conventional_recon(kspace, mask, sens_method="acs")


def test_conventional_recon_same_masks_over_frames_uses_acs():
    ny, nx = 40, 29
    truth = cine_phantom(ny, nx, 3)
    mask = torch.from_numpy(line_mask(ny, 3, acceleration=2, n_acs=16, shift=False)).float()
    kspace = sens_expand(truth, as_sens(smooth_maps(6, ny, nx)), mask)
    assert conventional_recon(kspace, mask, method="zero_filled").sens_method == "acs"


def test_recon_readable_errors(rng):
    kspace = crandn(rng, 1, 3, 2, 13, 18)
    mask = torch.ones(1, 1, 2, 13, 1)
    with pytest.raises(ValueError, match=r"sens shape \(1, 4, 1, 13, 18\) does not fit kspace shape"):
        cg_sense(kspace, mask, crandn(rng, 1, 4, 1, 13, 18))
    with pytest.raises(ValueError, match="sens must have 5 dimensions"):
        zero_filled(kspace, mask, crandn(rng, 3, 13, 18))
    with pytest.raises(ValueError, match=r"mask shape \(1, 1, 2, 12, 1\) does not fit kspace shape"):
        cg_sense(kspace, torch.ones(1, 1, 2, 12, 1), crandn(rng, 1, 3, 1, 13, 18))
    with pytest.raises(ValueError, match="n_iter must be an integer >= 0"):
        cg_sense(kspace, mask, crandn(rng, 1, 3, 1, 13, 18), n_iter=-1)
    with pytest.raises(ValueError, match="l2 must be a finite number >= 0"):
        cg_sense(kspace, mask, crandn(rng, 1, 3, 1, 13, 18), l2=-1.0)
    with pytest.raises(ValueError, match="method must be one of"):
        conventional_recon(kspace, mask, method="grappa")
    with pytest.raises(ValueError, match="sens_method must be one of"):
        conventional_recon(kspace, mask, sens_method="espirit")
    with pytest.raises(ValueError, match="temporal_weight must be a finite number >= 0"):
        conventional_recon(kspace, mask, temporal_weight=-0.1)
    with pytest.raises(ValueError, match="prior_weight must be a finite number >= 0"):
        conventional_recon(kspace, mask, prior_weight=float("nan"))
    sens = crandn(rng, 1, 3, 1, 13, 18)
    with pytest.raises(ValueError, match="weight must be a finite number >= 0"):
        temporal_sense(kspace, mask, sens, weight=-1.0)
    with pytest.raises(ValueError, match=r"prior shape \(1, 2, 12, 18\) does not fit the images' shape"):
        temporal_sense(kspace, mask, sens, reference=crandn(rng, 1, 2, 12, 18))
    with pytest.raises(ValueError, match="prior must be complex"):
        cg_sense(kspace, mask, sens, prior=torch.ones(1, 2, 13, 18), prior_weight=0.1)


def rss_normalised_maps(rng: np.random.Generator, n_coils: int, ny: int, nx: int) -> torch.Tensor:
    """(1, C, 1, y, x) random maps with rss 1, zero on a background band (as thresholded maps are)."""
    sens = crandn(rng, 1, n_coils, 1, ny, nx)
    sens = sens / rss(sens, dim=1).unsqueeze(1)
    sens[..., :2, :] = 0
    return sens


def random_kt_mask(rng: np.random.Generator, n_frames: int, ny: int, fraction: float) -> torch.Tensor:
    """(1, 1, T, ky, 1) float mask: random lines per frame plus the centre line."""
    mask = torch.from_numpy((rng.random((1, 1, n_frames, ny, 1)) < fraction).astype(np.float32))
    mask[..., ny // 2, :] = 1.0
    return mask


def test_time_average_kspace_divides_by_the_sample_count(rng):
    kspace = crandn(rng, 2, 3, 4, 9, 7)
    mask = random_kt_mask(rng, 4, 9, 0.5)
    mask[..., 0, :] = 0.0  # a line no frame sampled
    average, union = time_average_kspace(kspace * mask, mask)
    assert average.shape == (2, 3, 1, 9, 7) and union.shape == (1, 1, 1, 9, 1)
    count = mask.sum(dim=2, keepdim=True)
    torch.testing.assert_close(union, (count > 0).float())
    line = int(torch.nonzero(count[0, 0, 0, :, 0] > 1)[0])
    frames = torch.nonzero(mask[0, 0, :, line, 0]).flatten()
    torch.testing.assert_close(average[:, :, 0, line], kspace[:, :, frames, line].mean(dim=2))
    assert torch.all(average[..., 0, :] == 0)


@pytest.mark.parametrize("n_coils", [1, 4])
def test_temporal_sense_full_sampling_is_the_plain_solution(rng, n_coils):
    """With every location sampled the temporal term vanishes: A^H y whatever the reference."""
    ny, nx, n_frames = 13, 18, 3
    sens = rss_normalised_maps(rng, n_coils, ny, nx)
    kspace = crandn(rng, 2, n_coils, n_frames, ny, nx)
    mask = torch.ones(1, 1, n_frames, ny, 1)
    plain = zero_filled(kspace, mask, sens)
    out = temporal_sense(kspace, mask, sens, tol=1e-7)
    assert out.shape == (2, n_frames, ny, nx) and out.dtype == torch.complex64
    torch.testing.assert_close(out, plain, rtol=1e-4, atol=1e-5)
    far_reference = 10 * crandn(rng, 2, 1, ny, nx)
    torch.testing.assert_close(temporal_sense(kspace, mask, sens, reference=far_reference, weight=5.0, tol=1e-7),
                               plain, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(cg_sense(kspace, mask, sens, l2=1e-3), plain / (1 + 1e-3), rtol=1e-4, atol=1e-5)


def test_temporal_sense_solves_its_normal_equations_and_weight_pulls_towards_the_reference(rng):
    ny, nx, n_frames = 21, 16, 4
    sens = as_sens(smooth_maps(4, ny, nx))
    images = textured_images(rng, 1, n_frames, ny, nx)
    mask = random_kt_mask(rng, n_frames, ny, 0.3)
    kspace = sens_expand(images, sens, mask) + 0.01 * crandn(rng, 1, 4, n_frames, ny, nx) * mask
    reference = temporal_reference(kspace, mask, sens)
    assert reference.shape == (1, 1, ny, nx)
    unsampled = (mask == 0).float()
    gaps = []
    for weight in (0.05, 0.5, 5.0):
        x = temporal_sense(kspace, mask, sens, weight=weight, n_iter=300, tol=1e-7, reference=reference)
        d = x - reference
        coil_k = fft2c(d.unsqueeze(1) * sens)
        normal = sens_reduce(coil_k * (mask + weight * unsampled), sens)
        rhs = sens_reduce(kspace - sens_expand(reference.expand(-1, n_frames, -1, -1), sens, mask), sens, mask)
        assert relative_error(normal, rhs) < 1e-4
        gaps.append(float((coil_k * unsampled).abs().pow(2).sum()))  # ||P F S (x - x_ref)||^2
    assert gaps[0] > gaps[1] > gaps[2]


def phantom_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Small noisy synthetic cine (8 coils, 8 frames, 64 x 56) at ktGaussian R = 8: k-space, mask, truth."""
    scan = simulate_cardiac_scan(seed=seed, n_frames=8, n_coils=8, matrix=(64, 56), readout_oversampling=1)
    sampling = make_mask("ktGaussian", 8, 8, 56, 64, seed=seed)
    mask = torch.from_numpy(sampling.mask.copy())[None, None]
    return torch.from_numpy(scan.kspace) * mask, mask, scan.images[0]


@pytest.mark.parametrize("seed", [0, 1])
def test_temporal_sense_beats_zero_filled_and_per_frame_cg_sense_on_a_phantom(seed):
    kspace, mask, truth = phantom_case(seed)
    result = conventional_recon(kspace, mask)
    assert (result.method, result.regularization) == ("cg_sense", "temporal")
    psnr = {name: evaluate(images[0], truth)["psnr"] for name, images in {
        "default": result.images,
        "zero_filled": conventional_recon(kspace, mask, method="zero_filled").images,
        "per_frame": conventional_recon(kspace, mask, temporal_weight=0.0, tol=1e-6).images,
    }.items()}
    assert psnr["default"] > psnr["zero_filled"] + 1.5, psnr
    assert psnr["default"] > psnr["per_frame"] + 2.0, psnr


@pytest.mark.parametrize("seed", [0, 1])
def test_static_uniform_r8_default_is_not_worse_than_zero_filled(seed):
    """One noisy frame at Uniform R = 8 (beyond 1D SENSE with 8 coils): the low-resolution prior
    keeps the default at least as good as zero-filling, where plain CG-SENSE amplifies noise."""
    scan = simulate_cardiac_scan(seed=seed, n_frames=1, n_coils=8, matrix=(64, 56), readout_oversampling=1)
    mask = torch.from_numpy(make_mask("Uniform", 8, 1, 56, 64).mask.copy())[None, None]
    kspace = torch.from_numpy(scan.kspace) * mask
    result = conventional_recon(kspace, mask)
    assert (result.sens_method, result.regularization) == ("acs", "low_resolution_prior")
    psnr = {name: evaluate(images[0], scan.images[0])["psnr"] for name, images in {
        "default": result.images,
        "zero_filled": conventional_recon(kspace, mask, method="zero_filled").images,
        "plain": conventional_recon(kspace, mask, prior_weight=0.0, tol=1e-6).images,
    }.items()}
    assert psnr["default"] >= psnr["zero_filled"] and psnr["default"] > psnr["plain"] + 1.0, psnr


def test_conventional_recon_default_for_dynamic_data_is_temporal_sense(rng):
    kspace, mask, _ = phantom_case(2)
    result = conventional_recon(kspace, mask)
    torch.testing.assert_close(result.images, temporal_sense(kspace, mask, result.sens, tol=1e-3))
    full = torch.ones(1, 1, 8, 56, 1)
    full_kspace = kspace + crandn(rng, *kspace.shape) * (1 - mask)
    full_result = conventional_recon(full_kspace, full)
    assert full_result.regularization == "rss_full_sampling"  # nothing to unfold: rss


@pytest.mark.parametrize("method", ["cg_sense", "zero_filled"])
def test_conventional_recon_full_sampling_is_rss_with_the_sense_phase(rng, method):
    """Every location sampled in every frame: |images| is the rss of the coil images exactly, the
    phase is the sensitivity-weighted combination's (which the SENSE solution shares)."""
    ny, nx, n_frames = 40, 29, 3
    truth = cine_phantom(ny, nx, n_frames) * torch.exp(1j * torch.linspace(0, 2, nx)).to(torch.complex64)
    kspace = sens_expand(truth, as_sens(smooth_maps(6, ny, nx)), None) + 0.02 * crandn(rng, 1, 6, n_frames, ny, nx)
    mask = torch.ones(1, 1, n_frames, ny, 1, dtype=torch.bool)
    result = conventional_recon(kspace, mask, method=method)
    assert (result.method, result.sens_method, result.regularization) == (method, "acs", "rss_full_sampling")
    assert result.images.shape == (1, n_frames, ny, nx) and result.images.dtype == torch.complex64
    magnitude = rss(ifft2c(kspace), dim=1)
    torch.testing.assert_close(result.images.abs(), magnitude, rtol=1e-5, atol=1e-5 * float(magnitude.max()))
    sense = zero_filled(kspace, mask, result.sens)
    solved = cg_sense(kspace, mask, result.sens, n_iter=50, l2=1e-3, tol=1e-7)
    for combination in (sense, solved):
        strong = (combination.abs() > 1e-3 * float(combination.abs().max())) & (magnitude > 0.05 * magnitude.max())
        assert strong.float().mean() > 0.3  # the check covers the object
        phase_error = (result.images[strong] * combination[strong].conj()).angle().abs()
        assert float(phase_error.max()) < 1e-3
    # The sensitivity-weighted magnitude is genuinely different (low-resolution maps): rss is a change.
    assert relative_error(sense.abs(), magnitude) > 1e-2
    # Where the thresholded maps are all 0 the image is still the rss, real and non-negative.
    outside = (result.sens == 0).all(dim=1).expand_as(result.images)
    if bool(outside.any()):
        torch.testing.assert_close(result.images[outside], magnitude[outside].to(torch.complex64))


def test_rss_full_sampling_is_invariant_to_a_unitary_coil_transform(rng):
    kspace = crandn(rng, 2, 4, 2, 13, 18)
    sens = rss_normalised_maps(rng, 4, 13, 18)
    images = rss_full_sampling(kspace, sens)
    assert images.shape == (2, 2, 13, 18) and images.dtype == torch.complex64
    unitary = torch.linalg.qr(crandn(rng, 4, 4).to(torch.complex128))[0].to(torch.complex64)
    mixed = torch.einsum("dc,bctyx->bdtyx", unitary, kspace)
    torch.testing.assert_close(rss_full_sampling(mixed, sens).abs(), images.abs(), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="kspace must have 5 dimensions"):
        rss_full_sampling(kspace[0], sens)


def test_low_resolution_prior_is_the_windowed_calibration_block(rng):
    """One coil with unit map: the prior's k-space is the data tapered on the ACS block, 0 elsewhere."""
    ny, nx, n_acs = 32, 20, 8
    sens = torch.ones(1, 1, 1, ny, nx, dtype=torch.complex64)
    mask = torch.from_numpy(line_mask(ny, 2, acceleration=4, n_acs=n_acs)).float()  # lines move: block = ACS
    kspace = crandn(rng, 1, 1, 2, ny, nx) * mask
    prior = low_resolution_prior(kspace, mask, sens)
    assert prior.shape == (1, 2, ny, nx) and prior.dtype == torch.complex64
    prior_k = fft2c(prior)
    block = slice(ny // 2 - n_acs // 2, ny // 2 + n_acs // 2)
    outside = torch.ones(ny, dtype=torch.bool)
    outside[block] = False
    assert float(prior_k[..., outside, :].abs().max()) < 1e-6  # sampled lines outside the block are left out
    ratio = (prior_k[..., block, :].abs() / kspace[:, 0, :, block].abs()).numpy()
    assert np.all(ratio <= 1 + 1e-5) and np.all(ratio > 0)  # a taper, never an amplification
    np.testing.assert_allclose(ratio[..., n_acs // 2, nx // 2], 1.0, rtol=1e-4)  # untouched centre
    with pytest.raises(ValueError, match="no calibration region"):
        low_resolution_prior(kspace, torch.zeros_like(mask), sens)


@pytest.mark.cuda
def test_recon_on_cuda_matches_cpu():
    ny, nx, n_frames = 40, 29, 4
    truth = cine_phantom(ny, nx, n_frames)
    ktuniform = np.zeros((1, 1, n_frames, ny, 1), dtype=np.float32)
    for t in range(n_frames):
        ktuniform[0, 0, t, t % 2 :: 2] = 1.0
    mask = torch.from_numpy(ktuniform)
    kspace = sens_expand(truth, as_sens(smooth_maps(8, ny, nx)), mask)
    cpu = conventional_recon(kspace, mask, n_iter=20)
    gpu = conventional_recon(kspace.cuda(), mask.cuda(), n_iter=20)
    assert gpu.images.device.type == "cuda" and gpu.sens.device.type == "cuda"
    assert gpu.sens_method == cpu.sens_method == "time_average"
    torch.testing.assert_close(gpu.sens.cpu(), cpu.sens, rtol=1e-4, atol=1e-4)
    assert relative_error(gpu.images.cpu(), cpu.images) < 1e-4
