import numpy as np
import pytest
import torch

from cardiomm_core.masks import (
    LINE_PATTERNS,
    MASK_PATTERNS,
    SamplingMask,
    acs_start,
    make_mask,
)
from cardiomm_core.sense import apply_mask
from tests.helpers import crandn

KT_LINE_PATTERNS = ("ktUniform", "ktGaussian")
KT_ACCELERATIONS = (4, 8, 12, 16, 20, 24)


def _outside_acs_counts(m: SamplingMask) -> tuple[int, int]:
    """(non-ACS grid locations, sampled non-ACS locations) counted from the mask itself."""
    inside = np.zeros(m.mask.shape[1:], dtype=bool)
    inside[m.acs_slice()] = True
    outside = ~inside
    return int(outside.sum()) * m.n_frames, int(m.mask[:, outside].sum())


def _check_family_properties(m: SamplingMask, acceleration: float, n_acs: int) -> None:
    assert m.mask.dtype == np.float32
    assert set(np.unique(m.mask)) <= {0.0, 1.0}
    assert m.n_acs == n_acs
    assert m.acceleration == acceleration
    # Calibration region fully sampled in every frame, and of the advertised size.
    ky, kx = m.acs_slice()
    assert ky.stop - ky.start == n_acs
    assert np.all(m.mask[:, ky, kx] == 1.0)
    # The advertised accelerations are what the mask holds.
    n_outside, n_sampled_outside = _outside_acs_counts(m)
    assert m.realised_acceleration == pytest.approx(n_outside / n_sampled_outside)
    assert m.effective_acceleration == pytest.approx(m.mask.size / m.mask.sum())
    # The nominal acceleration is met outside the calibration region, within 10 %.
    assert abs(m.realised_acceleration - acceleration) <= 0.1 * acceleration
    assert m.effective_acceleration < m.realised_acceleration


@pytest.mark.parametrize("acceleration", [4, 8, 10])
@pytest.mark.parametrize("n_ky", [246, 245, 160])
@pytest.mark.parametrize("n_frames", [1, 12])
def test_uniform_hits_acceleration_with_24_acs_lines(acceleration, n_ky, n_frames):
    m = make_mask("Uniform", acceleration, n_frames, n_ky, 512)
    assert m.mask.shape == (n_frames, n_ky, 1)
    _check_family_properties(m, acceleration, 24)


def test_uniform_is_cmrxrecon_pattern_same_in_every_frame():
    m = make_mask("Uniform", 4, 5, 246, 512)
    start = acs_start(246, 24)
    expected = sorted(set(range(0, 246, 4)) | set(range(start, start + 24)))  # MATLAB 1:R:end + zpad ACS
    for t in range(5):
        np.testing.assert_array_equal(m.sampled_lines(t), expected)
    assert start == 111


@pytest.mark.parametrize("pattern", KT_LINE_PATTERNS)
@pytest.mark.parametrize("acceleration", KT_ACCELERATIONS)
@pytest.mark.parametrize("n_frames, n_ky", [(12, 246), (12, 97), (12, 128), (3, 160), (5, 133)])
def test_kt_line_families_hit_acceleration_and_keep_acs(pattern, acceleration, n_frames, n_ky):
    m = make_mask(pattern, acceleration, n_frames, n_ky, 256, seed=3)
    assert m.mask.shape == (n_frames, n_ky, 1)
    _check_family_properties(m, acceleration, 16)


@pytest.mark.parametrize("acceleration", KT_ACCELERATIONS)
@pytest.mark.parametrize("n_frames, n_ky, n_kx", [(12, 96, 96), (12, 97, 113), (3, 128, 160), (4, 160, 131)])
def test_kt_radial_hits_acceleration_and_keeps_acs_square(acceleration, n_frames, n_ky, n_kx):
    m = make_mask("ktRadial", acceleration, n_frames, n_ky, n_kx)
    assert m.mask.shape == (n_frames, n_ky, n_kx)
    _check_family_properties(m, acceleration, 16)
    ky, kx = m.acs_slice()
    assert kx.stop - kx.start == 16


@pytest.mark.parametrize("n_kx", [512, 256])
@pytest.mark.parametrize("acceleration", [4, 24])
def test_kt_radial_on_cmrxrecon_sizes(n_kx, acceleration):
    m = make_mask("ktRadial", acceleration, 2, 246, n_kx)
    _check_family_properties(m, acceleration, 16)


def test_ktuniform_is_a_sheared_lattice_covering_all_lines():
    r, n_ky = 8, 246
    m = make_mask("ktUniform", r, 2 * r, n_ky, 64)
    ky_acs = m.acs_slice()[0]
    residues = []
    for t in range(m.n_frames):
        lines = np.setdiff1d(m.sampled_lines(t), np.arange(ky_acs.start, ky_acs.stop))
        # Equispaced: one residue modulo R per frame ...
        assert len(set(lines % r)) == 1
        assert np.all(np.diff(lines)[np.diff(lines) < 2 * r] == r)
        residues.append(int(lines[0] % r))
    # ... shifted by one line from frame to frame, so a cycle of R frames covers every ky.
    assert all((b - a) % r == 1 for a, b in zip(residues, residues[1:]))
    covered = np.zeros(n_ky, dtype=bool)
    for t in range(r):
        covered[m.sampled_lines(t)] = True
    assert covered.all()


def test_ktgaussian_lines_differ_between_frames_and_favour_the_centre():
    m = make_mask("ktGaussian", 8, 12, 246, 64, seed=5)
    frames = [tuple(m.sampled_lines(t)) for t in range(12)]
    assert len(set(frames)) == 12
    # Variable density: lines near the centre (outside the ACS) are sampled more often than the edges.
    density = m.mask[:, :, 0].mean(axis=0)
    ky_acs = m.acs_slice()[0]
    near = np.r_[ky_acs.start - 30:ky_acs.start, ky_acs.stop:ky_acs.stop + 30]
    far = np.r_[0:30, 246 - 30:246]
    assert density[near].mean() > 1.5 * density[far].mean()


def test_ktradial_frames_differ_by_rotation_and_spokes_cross_the_centre():
    m = make_mask("ktRadial", 8, 4, 128, 128)
    for t in range(3):
        assert not np.array_equal(m.mask[t], m.mask[t + 1])
    # Each frame holds about the same number of samples (rotation, not a different density).
    counts = m.mask.reshape(4, -1).sum(axis=1)
    assert counts.max() <= 1.15 * counts.min()
    # Spokes pass through the centre: the pattern is point-symmetric about (64, 64) up to rounding.
    frame = m.mask[1] > 0
    dilated = frame.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            dilated |= np.roll(frame, (dy, dx), axis=(0, 1))
    ky, kx = np.nonzero(frame)
    my, mx = 128 - ky, 128 - kx
    inside = (my < 128) & (mx < 128)
    assert dilated[my[inside], mx[inside]].mean() > 0.97


@pytest.mark.parametrize("pattern", MASK_PATTERNS)
def test_same_seed_same_mask(pattern):
    a = make_mask(pattern, 8, 3, 97, 64, seed=11)
    b = make_mask(pattern, 8, 3, 97, 64, seed=11)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.realised_acceleration == b.realised_acceleration


def test_different_seed_different_random_mask():
    a = make_mask("ktGaussian", 8, 3, 97, 64, seed=1)
    b = make_mask("ktGaussian", 8, 3, 97, 64, seed=2)
    assert not np.array_equal(a.mask, b.mask)


@pytest.mark.parametrize("pattern", MASK_PATTERNS)
def test_as_tensor_broadcasts_against_core_kspace(rng, pattern):
    n_frames, n_ky, n_kx = 3, 40, 24
    m = make_mask(pattern, 4, n_frames, n_ky, n_kx, n_acs=8)
    tensor = m.as_tensor()
    kx = 1 if pattern in LINE_PATTERNS else n_kx
    assert tensor.shape == (1, 1, n_frames, n_ky, kx)
    assert tensor.dtype == torch.float32
    kspace = crandn(rng, 2, 4, n_frames, n_ky, n_kx)
    masked = apply_mask(kspace, tensor)
    full = np.broadcast_to(m.mask[None, None], kspace.shape)
    assert torch.all(masked[torch.from_numpy(full == 0)] == 0)
    torch.testing.assert_close(masked[torch.from_numpy(full == 1)], kspace[torch.from_numpy(full == 1)])


def test_sampled_lines_and_mask_is_read_only():
    m = make_mask("ktGaussian", 4, 2, 64, 32, n_acs=8)
    np.testing.assert_array_equal(m.sampled_lines(1), np.flatnonzero(m.mask[1, :, 0]))
    with pytest.raises(ValueError, match="frame must be an integer"):
        m.sampled_lines(2)
    with pytest.raises(ValueError):
        m.mask[0, 0, 0] = 0.5
    with pytest.raises(ValueError, match="line patterns"):
        make_mask("ktRadial", 4, 1, 64, 64).sampled_lines(0)


def test_full_pattern():
    m = make_mask("full", 1, 2, 13, 18)
    assert m.mask.shape == (2, 13, 1)
    assert np.all(m.mask == 1)
    assert (m.acceleration, m.realised_acceleration, m.effective_acceleration) == (1.0, 1.0, 1.0)
    assert m.acs_slice()[0] == slice(0, 13)


def test_custom_acs_width_on_odd_grid():
    m = make_mask("ktUniform", 6, 6, 51, 17, n_acs=7)
    ky, _ = m.acs_slice()
    assert (ky.start, ky.stop) == (22, 29)  # centred on 51 // 2 = 25
    assert np.all(m.mask[:, 22:29] == 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pattern="Poisson"), "pattern must be one of"),
        (dict(acceleration=0.5), "acceleration must be a finite number >= 1"),
        (dict(acceleration=float("nan")), "acceleration must be a finite number >= 1"),
        (dict(acceleration=100), "exceeds what the grid allows"),
        (dict(n_acs=64), "n_acs must be smaller than n_ky"),
        (dict(n_acs=-1), "n_acs must be an integer >= 0"),
        (dict(n_frames=0), "n_frames must be an integer >= 1"),
        (dict(n_ky=12.5), "n_ky must be an integer >= 1"),
        (dict(seed=-3), "seed must be an integer >= 0"),
        (dict(pattern="full"), "acceleration must be 1 for pattern 'full'"),
        (dict(pattern="ktRadial", n_kx=10, n_acs=12), "n_acs must be smaller than n_kx"),
        (dict(pattern="ktRadial", acceleration=1.5), "must be >= 2 for ktRadial"),
        (dict(pattern="ktRadial", acceleration=500), "exceeds what the grid allows for ktRadial"),
    ],
)
def test_errors_are_readable(kwargs, message):
    args = dict(pattern="ktGaussian", acceleration=8, n_frames=2, n_ky=64, n_kx=64)
    args.update(kwargs)
    pattern, acceleration = args.pop("pattern"), args.pop("acceleration")
    n_frames, n_ky, n_kx = args.pop("n_frames"), args.pop("n_ky"), args.pop("n_kx")
    with pytest.raises(ValueError, match=message):
        make_mask(pattern, acceleration, n_frames, n_ky, n_kx, **args)
