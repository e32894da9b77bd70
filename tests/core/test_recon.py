import numpy as np
import pytest
import torch

from cardiomm_core.recon import ConventionalResult, cg_sense, conventional_recon, zero_filled
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
    assert (result.method, result.sens_method) == ("cg_sense", "acs")
    assert result.images.shape == (1, 1, ny, nx) and result.images.dtype == torch.complex64
    assert result.sens.shape == (1, 8, 1, ny, nx)
    zf = conventional_recon(kspace, mask, method="zero_filled")
    assert (zf.method, zf.sens_method) == ("zero_filled", "acs")
    error_cg, error_zf = magnitude_error(result.images, truth), magnitude_error(zf.images, truth)
    assert error_cg < 0.01 and error_cg < 0.2 * error_zf


def test_conventional_recon_dynamic_uses_time_average():
    ny, nx, n_frames = 48, 37, 6
    truth = cine_phantom(ny, nx, n_frames)
    ktuniform = np.zeros((1, 1, n_frames, ny, 1), dtype=np.float32)
    for t in range(n_frames):
        ktuniform[0, 0, t, t % 2 :: 2] = 1.0  # R = 2, lines shift over time, no ACS
    mask = torch.from_numpy(ktuniform)
    kspace = sens_expand(truth, as_sens(smooth_maps(8, ny, nx)), mask)
    result = conventional_recon(kspace, mask, n_iter=40)
    assert result.sens_method == "time_average"
    assert result.images.shape == (1, n_frames, ny, nx)
    assert magnitude_error(result.images, truth) < 0.02
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
