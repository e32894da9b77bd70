import numpy as np
import pytest
import torch

from cardiomm_core.coils import SvdCoilCompression, coil_compression, estimate_sensitivities, find_acs
from cardiomm_core.fft import fft2c

# ---------------------------------------------------------------------------------------------
# synthetic data


def smooth_maps(n_coils: int, ny: int, nx: int) -> np.ndarray:
    """(coils, y, x) complex: Gaussian coil profiles around the object with smooth phase, rss 1."""
    y, x = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    maps = []
    for c in range(n_coils):
        angle = 2 * np.pi * c / n_coils
        centre_y, centre_x = 1.3 * np.sin(angle), 1.3 * np.cos(angle)
        magnitude = np.exp(-((y - centre_y) ** 2 + (x - centre_x) ** 2) / (2 * 0.9**2))
        phase = 0.5 * (y * np.cos(angle) - x * np.sin(angle)) + angle
        maps.append(magnitude * np.exp(1j * phase))
    maps = np.stack(maps)
    return maps / np.sqrt((np.abs(maps) ** 2).sum(0))


def smooth_object(ny: int, nx: int, n_frames: int = 1) -> np.ndarray:
    """(frames, y, x) real positive: a soft-edged ellipse whose width changes over the frames."""
    y, x = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    frames = []
    for t in range(n_frames):
        r2 = (y / 0.75) ** 2 + (x / (0.65 + 0.03 * t)) ** 2
        frames.append((1 + 0.3 * np.cos(2 * x)) / (1 + np.exp((r2 - 1) / 0.08)))
    return np.stack(frames)


def full_kspace(maps: np.ndarray, obj: np.ndarray) -> torch.Tensor:
    """(1, coils, frames, ky, kx) complex64 k-space of ``obj (frames, y, x)`` seen by ``maps``."""
    coil_images = maps[:, None] * obj[None]
    return fft2c(torch.from_numpy(coil_images.astype(np.complex64)))[None]


def line_mask(ny: int, n_frames: int, acceleration: int, n_acs: int, shift: bool = True) -> np.ndarray:
    """(1, 1, frames, ky, 1) bool: equispaced lines (offset t mod R when ``shift``) + central ACS."""
    mask = np.zeros((1, 1, n_frames, ny, 1), dtype=bool)
    for t in range(n_frames):
        mask[0, 0, t, (t % acceleration if shift else 0) :: acceleration] = True
    start = ny // 2 - n_acs // 2
    mask[0, 0, :, start : start + n_acs] = True
    return mask


def radial_mask(ny: int, nx: int, n_frames: int, n_spokes: int, centre: int = 16) -> np.ndarray:
    """(1, 1, frames, ky, kx) bool: rasterised spokes (incl. horizontal and vertical) + a centre block."""
    mask = np.zeros((1, 1, n_frames, ny, nx), dtype=bool)
    cy, cx = ny // 2, nx // 2
    radius = np.linspace(-max(ny, nx), max(ny, nx), 8 * max(ny, nx))
    for t in range(n_frames):
        for s in range(n_spokes):
            angle = np.pi * s / n_spokes + 0.1 * t
            iy = np.round(cy + radius * np.sin(angle)).astype(int)
            ix = np.round(cx + radius * np.cos(angle)).astype(int)
            keep = (iy >= 0) & (iy < ny) & (ix >= 0) & (ix < nx)
            mask[0, 0, t, iy[keep], ix[keep]] = True
        mask[0, 0, t, cy, :] = True  # a horizontal and a vertical spoke through the centre
        mask[0, 0, t, :, cx] = True
    mask[..., cy - centre // 2 : cy - centre // 2 + centre, cx - centre // 2 : cx - centre // 2 + centre] = True
    return mask


def map_error(est: torch.Tensor, maps: np.ndarray, support: np.ndarray) -> float:
    """Relative error of estimated ``(1, C, 1, y, x)`` maps on ``support`` (no phase alignment)."""
    diff = est[0, :, 0].numpy() - maps
    return float(np.linalg.norm(diff[:, support]) / np.linalg.norm(maps[:, support]))


# ---------------------------------------------------------------------------------------------
# coil compression


def mixed_calibration(rng: np.random.Generator, n_coils: int, n_samples: int, rank: int) -> np.ndarray:
    """(coils, samples): a few strong sources mixed into the coils plus weak noise."""
    sources = rng.standard_normal((rank, n_samples)) + 1j * rng.standard_normal((rank, n_samples))
    sources *= np.linspace(3, 1, rank)[:, None]
    mixing = rng.standard_normal((n_coils, rank)) + 1j * rng.standard_normal((n_coils, rank))
    noise = 0.05 * (rng.standard_normal((n_coils, n_samples)) + 1j * rng.standard_normal((n_coils, n_samples)))
    return (mixing @ sources + noise).astype(np.complex64)


@pytest.mark.parametrize("n_coils", [2, 5, 12])
def test_compression_to_all_coils_is_lossless(rng, n_coils):
    calib = mixed_calibration(rng, n_coils, 13 * 18, rank=min(3, n_coils))
    cc = coil_compression(calib, n_virtual=n_coils)
    assert cc.n_virtual == cc.n_coils == n_coils
    assert cc.matrix.dtype == np.complex64 and cc.singular_values.dtype == np.float64
    np.testing.assert_allclose(cc.matrix @ cc.matrix.conj().T, np.eye(n_coils), atol=1e-5)
    assert cc.energy_kept == pytest.approx(1.0, abs=1e-9)
    compressed = cc.apply(calib, coil_axis=0)
    np.testing.assert_allclose(cc.matrix.conj().T @ compressed, calib, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(cc.singular_values, np.linalg.svd(calib.astype(np.complex128), compute_uv=False), rtol=1e-6)


def test_compression_with_fewer_samples_than_coils_is_still_unitary(rng):
    calib = mixed_calibration(rng, 8, 5, rank=3)
    cc = coil_compression(calib, n_virtual=8)
    np.testing.assert_allclose(cc.matrix @ cc.matrix.conj().T, np.eye(8), atol=1e-5)
    np.testing.assert_allclose(cc.matrix.conj().T @ cc.apply(calib, 0), calib, rtol=1e-4, atol=1e-4)
    assert cc.singular_values.shape == (8,) and np.all(cc.singular_values[5:] == 0)


def _energy_fraction(cc: SvdCoilCompression, calib: np.ndarray) -> float:
    compressed = cc.apply(calib, coil_axis=0)
    return float(np.sum(np.abs(compressed) ** 2) / np.sum(np.abs(calib) ** 2))


@pytest.mark.parametrize(("n_coils", "n_virtual"), [(5, 1), (8, 3), (12, 4)])
def test_compression_to_fewer_coils_keeps_the_stated_energy(rng, n_coils, n_virtual):
    calib = mixed_calibration(rng, n_coils, 17 * 13, rank=3)
    cc = coil_compression(calib, n_virtual=n_virtual)
    assert cc.n_virtual == n_virtual
    assert _energy_fraction(cc, calib) == pytest.approx(cc.energy_kept, rel=1e-5)
    power = cc.singular_values**2
    assert cc.energy_kept == pytest.approx(power[:n_virtual].sum() / power.sum(), rel=1e-9)
    # the SVD is optimal: random orthonormal rows keep less
    q, _ = np.linalg.qr(rng.standard_normal((n_coils, n_virtual)) + 1j * rng.standard_normal((n_coils, n_virtual)))
    random_cc = SvdCoilCompression(q.conj().T.astype(np.complex64), cc.singular_values, 0.0)
    assert _energy_fraction(random_cc, calib) < cc.energy_kept


@pytest.mark.parametrize("n_coils", [6, 10])
@pytest.mark.parametrize("energy", [0.5, 0.9, 0.999, 1.0])
def test_compression_by_energy_is_minimal_and_sufficient(rng, n_coils, energy):
    calib = mixed_calibration(rng, n_coils, 13 * 18, rank=4)
    cc = coil_compression(calib, energy=energy)
    assert cc.energy_kept >= energy - 1e-9
    assert _energy_fraction(cc, calib) >= energy - 1e-4
    if cc.n_virtual > 1:  # one coil fewer would not be enough
        fewer = coil_compression(calib, n_virtual=cc.n_virtual - 1)
        assert fewer.energy_kept < energy
    if energy == 1.0:
        assert cc.n_virtual == n_coils


@pytest.mark.parametrize("coil_axis", [0, 1, 3, -1, -2])
def test_apply_agrees_for_numpy_torch_and_coil_axes(rng, coil_axis):
    n_coils = 7
    calib = mixed_calibration(rng, n_coils, 100, rank=3)
    cc = coil_compression(calib, n_virtual=3)
    data0 = (rng.standard_normal((n_coils, 2, 5, 4)) + 1j * rng.standard_normal((n_coils, 2, 5, 4))).astype(np.complex64)
    reference = np.einsum("vc,cabd->vabd", cc.matrix, data0)
    data = np.moveaxis(data0, 0, coil_axis)
    expected = np.moveaxis(reference, 0, coil_axis)
    out_np = cc.apply(data, coil_axis=coil_axis)
    out_t = cc.apply(torch.from_numpy(data), coil_axis=coil_axis)
    assert isinstance(out_np, np.ndarray) and isinstance(out_t, torch.Tensor)
    assert out_np.dtype == np.complex64 and out_t.dtype == torch.complex64
    assert out_np.shape == expected.shape == tuple(out_t.shape)
    np.testing.assert_allclose(out_np, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out_t.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_apply_is_differentiable_in_torch(rng):
    calib = mixed_calibration(rng, 4, 50, rank=2)
    cc = coil_compression(calib, n_virtual=2)
    data = torch.from_numpy(calib).requires_grad_(True)
    cc.apply(data, coil_axis=0).abs().pow(2).sum().backward()
    assert data.grad is not None and torch.isfinite(data.grad.abs()).all()


def test_compression_over_other_axes_and_kspace_layout(rng):
    # (B, C, T, ky, kx) k-space: coil axis 1, every other axis is a sample
    calib = mixed_calibration(rng, 6, 2 * 3 * 13 * 9, rank=3).reshape(6, 2, 3, 13, 9)
    kspace = np.moveaxis(calib, 0, 1)
    cc_moved = coil_compression(kspace, coil_axis=1, n_virtual=4)
    cc_ref = coil_compression(calib.reshape(6, -1), n_virtual=4)
    np.testing.assert_allclose(cc_moved.singular_values, cc_ref.singular_values, rtol=1e-6)
    assert cc_moved.apply(kspace, coil_axis=1).shape == (2, 4, 3, 13, 9)


def test_compression_readable_errors(rng):
    calib = mixed_calibration(rng, 4, 20, rank=2)
    with pytest.raises(ValueError, match="exactly one of n_virtual or energy"):
        coil_compression(calib)
    with pytest.raises(ValueError, match="exactly one of n_virtual or energy"):
        coil_compression(calib, n_virtual=2, energy=0.9)
    with pytest.raises(ValueError, match=r"n_virtual must be an integer in 1..4"):
        coil_compression(calib, n_virtual=5)
    with pytest.raises(ValueError, match=r"n_virtual must be an integer in 1..4"):
        coil_compression(calib, n_virtual=0)
    for bad in (0.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="0 < energy <= 1"):
            coil_compression(calib, energy=bad)
    with pytest.raises(ValueError, match="coil_axis 3 is out of range"):
        coil_compression(calib, coil_axis=3, n_virtual=1)
    with pytest.raises(ValueError, match="all zero"):
        coil_compression(np.zeros((3, 5), np.complex64), n_virtual=1)
    with pytest.raises(ValueError, match="calib must be a numpy array or torch.Tensor, got list"):
        coil_compression(calib.tolist(), n_virtual=1)
    cc = coil_compression(calib, n_virtual=2)
    with pytest.raises(ValueError, match="data has 3 coils on axis 0, the compression expects 4"):
        cc.apply(np.ones((3, 5), np.complex64), coil_axis=0)


# ---------------------------------------------------------------------------------------------
# find_acs


@pytest.mark.parametrize("ny", [47, 48, 61])
@pytest.mark.parametrize("n_acs", [16, 24])
@pytest.mark.parametrize("n_frames", [1, 3])
def test_find_acs_line_masks(ny, n_acs, n_frames):
    mask = line_mask(ny, n_frames, acceleration=4, n_acs=n_acs)
    start = ny // 2 - n_acs // 2
    # a static mask may extend the block by the regular lines next to it: drop those
    mask[..., start - 1, :] = False
    mask[..., start + n_acs, :] = False
    ky, kx = find_acs(torch.from_numpy(mask))
    assert (ky, kx) == (slice(start, start + n_acs), slice(None))
    assert find_acs(mask.astype(np.float32)) == (ky, kx)  # numpy and float masks too


def test_find_acs_needs_every_frame():
    mask = line_mask(48, 4, acceleration=4, n_acs=16)
    # lines next to the ACS are sampled in some frames only: not part of the block
    assert mask[0, 0, :, 24 + 8].any() and not mask[0, 0, :, 24 + 8].all()
    assert find_acs(torch.from_numpy(mask)) == (slice(16, 32), slice(None))
    mask[0, 0, 2, 20] = False  # one frame misses a line of the ACS: the block stops short of it
    assert find_acs(torch.from_numpy(mask)) == (slice(21, 32), slice(None))


@pytest.mark.parametrize(("ny", "nx"), [(40, 37), (48, 48), (41, 52)])
def test_find_acs_radial_centre(ny, nx):
    mask = radial_mask(ny, nx, n_frames=3, n_spokes=6)
    ky, kx = find_acs(torch.from_numpy(mask))
    cy, cx = ny // 2, nx // 2
    assert (ky, kx) == (slice(cy - 8, cy + 8), slice(cx - 8, cx + 8))


def test_find_acs_batch_must_share_the_block():
    mask = np.concatenate([line_mask(48, 2, 4, 16), line_mask(48, 2, 4, 24)], axis=0)
    mask[..., 15, :] = mask[..., 32, :] = False
    assert find_acs(torch.from_numpy(mask)) == (slice(16, 32), slice(None))


def test_find_acs_without_calibration_region():
    mask = np.zeros((1, 1, 2, 48, 1), dtype=bool)
    mask[..., 1::2, :] = True  # R = 2, centre line 24 not sampled
    with pytest.raises(ValueError, match=r"no calibration region: the central line ky=24 is not sampled"):
        find_acs(torch.from_numpy(mask))
    mask[..., 24, :] = True  # centre sampled: with its neighbours 23 and 25 a block of 3 lines
    with pytest.raises(ValueError, match=r"no calibration region: only 3 contiguous central line\(s\) are sampled in every frame \(need at least 4\)"):
        find_acs(torch.from_numpy(mask))
    cross = radial_mask(40, 37, n_frames=1, n_spokes=0, centre=0)  # only the two central spokes
    with pytest.raises(ValueError, match=r"no calibration region: the fully sampled centre in every frame is only 40 x 1"):
        find_acs(torch.from_numpy(cross))
    with pytest.raises(ValueError, match="mask must have at least 3 dimensions"):
        find_acs(torch.ones(48, 1))


# ---------------------------------------------------------------------------------------------
# estimate_sensitivities


@pytest.mark.parametrize("method", ["acs", "time_average"])
@pytest.mark.parametrize("n_coils", [4, 8])
def test_sensitivities_reproduce_smooth_maps_line_mask(method, n_coils):
    ny, nx, n_frames = 48, 37, 4
    maps = smooth_maps(n_coils, ny, nx)
    obj = smooth_object(ny, nx, n_frames)
    mask = torch.from_numpy(line_mask(ny, n_frames, acceleration=4, n_acs=16))
    kspace = full_kspace(maps, obj) * mask
    sens = estimate_sensitivities(kspace, mask, method=method)
    assert sens.shape == (1, n_coils, 1, ny, nx) and sens.dtype == torch.complex64
    support = obj.mean(0) > 0.5
    rss = sens.abs().pow(2).sum(1).sqrt()[0, 0].numpy()
    np.testing.assert_allclose(rss[support], 1.0, atol=1e-5)
    assert map_error(sens, maps, support) < 0.03


def test_sensitivities_from_radial_centre():
    ny, nx = 40, 37
    maps = smooth_maps(6, ny, nx)
    obj = smooth_object(ny, nx, 2)
    mask = torch.from_numpy(radial_mask(ny, nx, n_frames=2, n_spokes=8))
    sens = estimate_sensitivities(full_kspace(maps, obj) * mask, mask, method="acs")
    assert map_error(sens, maps, obj.mean(0) > 0.5) < 0.05


def test_time_average_works_without_acs_and_beats_it():
    ny, nx, n_frames = 48, 37, 4
    maps = smooth_maps(6, ny, nx)
    obj = smooth_object(ny, nx, n_frames)
    support = obj.mean(0) > 0.5
    ktuniform = np.zeros((1, 1, n_frames, ny, 1), dtype=bool)
    for t in range(n_frames):
        ktuniform[0, 0, t, t % 4 :: 4] = True  # the union covers all of k-space, no ACS
    mask = torch.from_numpy(ktuniform)
    kspace = full_kspace(maps, obj) * mask
    with pytest.raises(ValueError, match="no calibration region"):
        estimate_sensitivities(kspace, mask, method="acs")
    assert map_error(estimate_sensitivities(kspace, mask, method="time_average"), maps, support) < 0.05
    # with a small ACS the union gives the sharper (better) maps
    mask_acs = torch.from_numpy(line_mask(ny, n_frames, 4, n_acs=8))
    kspace_acs = full_kspace(maps, obj) * mask_acs
    err_acs = map_error(estimate_sensitivities(kspace_acs, mask_acs, method="acs"), maps, support)
    err_avg = map_error(estimate_sensitivities(kspace_acs, mask_acs, method="time_average"), maps, support)
    assert err_avg < err_acs


def test_sensitivities_batched_and_differentiable():
    ny, nx = 33, 26
    maps = np.stack([smooth_maps(5, ny, nx), np.roll(smooth_maps(5, ny, nx), 2, axis=0)])
    obj = smooth_object(ny, nx, 3)
    kspace = torch.cat([full_kspace(maps[0], obj), full_kspace(maps[1], obj)])  # (2, 5, 3, ky, kx)
    mask = torch.from_numpy(line_mask(ny, 3, acceleration=3, n_acs=16)).float()  # batch 1, broadcast
    kspace = (kspace * mask).requires_grad_(True)
    sens = estimate_sensitivities(kspace, mask, method="acs")
    assert sens.shape == (2, 5, 1, ny, nx)
    single = estimate_sensitivities(kspace[1:].detach(), mask, method="acs")
    torch.testing.assert_close(sens[1:].detach(), single)  # items are independent
    (sens * sens.detach().conj()).real.sum().backward()
    assert kspace.grad is not None and torch.isfinite(kspace.grad.abs()).all() and kspace.grad.abs().sum() > 0


def test_sensitivity_threshold_zeroes_the_background_only():
    ny, nx = 40, 29
    maps = smooth_maps(6, ny, nx)
    obj = smooth_object(ny, nx, 1)
    mask = torch.from_numpy(line_mask(ny, 1, acceleration=2, n_acs=16))
    kspace = full_kspace(maps, obj) * mask
    plain = estimate_sensitivities(kspace, mask)
    masked = estimate_sensitivities(kspace, mask, threshold=0.05)
    kept = masked.abs().sum(1)[0, 0] > 0
    support = torch.from_numpy(obj[0] > 0.2)
    assert kept[support].all()  # the object keeps its maps, unchanged
    torch.testing.assert_close(masked[..., kept], plain[..., kept])
    assert (~kept).sum() > 0.1 * kept.numel()  # the empty corners are zeroed
    assert plain.abs().sum(1)[0, 0][~kept].min() > 0  # which the default keeps
    with pytest.raises(ValueError, match="threshold must be a number with 0 <= threshold < 1"):
        estimate_sensitivities(kspace, mask, threshold=1.0)


def test_sensitivities_readable_errors():
    kspace = torch.zeros(1, 4, 2, 20, 18, dtype=torch.complex64)
    mask = torch.ones(1, 1, 2, 20, 1)
    with pytest.raises(ValueError, match="method must be one of"):
        estimate_sensitivities(kspace, mask, method="espirit")
    with pytest.raises(ValueError, match=r"mask shape \(1, 1, 3, 20, 1\) does not fit kspace shape"):
        estimate_sensitivities(kspace, torch.ones(1, 1, 3, 20, 1))
    with pytest.raises(ValueError, match="kspace must have 5 dimensions"):
        estimate_sensitivities(kspace[0], mask)
    with pytest.raises(ValueError, match="kspace must be complex"):
        estimate_sensitivities(kspace.real, mask)


@pytest.mark.cuda
def test_sensitivities_and_compression_on_cuda_match_cpu(rng):
    ny, nx = 40, 29
    maps = smooth_maps(6, ny, nx)
    obj = smooth_object(ny, nx, 3)
    mask = torch.from_numpy(line_mask(ny, 3, acceleration=4, n_acs=16))
    kspace = full_kspace(maps, obj) * mask
    for method in ("acs", "time_average"):
        cpu = estimate_sensitivities(kspace, mask, method=method)
        gpu = estimate_sensitivities(kspace.cuda(), mask.cuda(), method=method)
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)
    cc = coil_compression(kspace.numpy(), coil_axis=1, n_virtual=3)
    torch.testing.assert_close(cc.apply(kspace.cuda(), coil_axis=1).cpu(), cc.apply(kspace, coil_axis=1), rtol=1e-4, atol=1e-4)
