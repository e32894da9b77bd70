import numpy as np
import pytest
import torch

from cardiomm_core.fft import fft2c, ifft2c
from cardiomm_core.sense import rss, rss_complex, sens_expand, sens_reduce
from tests.helpers import crandn, vdot


@pytest.mark.parametrize("shape", [(13, 18), (2, 3, 16, 16), (1, 4, 3, 7, 9)])
def test_fft2c_matches_numpy(rng, shape):
    x = crandn(rng, *shape)
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(fft2c(x).numpy(), ref, rtol=1e-5, atol=1e-5)
    ref_inv = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(ifft2c(x).numpy(), ref_inv, rtol=1e-5, atol=1e-5)


def test_fft2c_roundtrip_and_energy(rng):
    x = crandn(rng, 3, 13, 18)
    k = fft2c(x)
    torch.testing.assert_close(ifft2c(k), x, rtol=1e-5, atol=1e-5)
    assert torch.allclose(k.abs().pow(2).sum(), x.abs().pow(2).sum(), rtol=1e-5)


def test_fft2c_rejects_real_input():
    with pytest.raises(ValueError, match="complex"):
        fft2c(torch.zeros(4, 4))


@pytest.mark.parametrize("n_coils", [1, 4, 7])
@pytest.mark.parametrize("n_frames", [1, 3])
@pytest.mark.parametrize("size", [(13, 18), (16, 16)])
@pytest.mark.parametrize("line_mask", [True, False])
def test_sense_pair_is_adjoint(rng, n_coils, n_frames, size, line_mask):
    ny, nx = size
    x = crandn(rng, 2, n_frames, ny, nx)
    y = crandn(rng, 2, n_coils, n_frames, ny, nx)
    sens = crandn(rng, 2, n_coils, 1, ny, nx)
    mask_shape = (2, 1, n_frames, ny, 1 if line_mask else nx)
    mask = torch.from_numpy(rng.random(mask_shape) < 0.4)
    ax = sens_expand(x, sens, mask)
    ahy = sens_reduce(y, sens, mask)
    lhs, rhs = vdot(ax, y), vdot(x, ahy)
    assert abs(lhs - rhs) <= 1e-4 * abs(lhs)


def test_sens_reduce_inverts_expand_for_normalised_maps(rng):
    sens = crandn(rng, 1, 5, 1, 12, 10)
    sens = sens / rss(sens, dim=1).unsqueeze(1)
    x = crandn(rng, 1, 2, 12, 10)
    torch.testing.assert_close(sens_reduce(sens_expand(x, sens), sens), x, rtol=1e-4, atol=1e-5)


def test_rss_complex_is_coil_magnitude(rng):
    k = crandn(rng, 1, 3, 2, 8, 8)
    img = ifft2c(k)
    expected = img.abs().pow(2).sum(1).sqrt()
    torch.testing.assert_close(rss_complex(k), expected)


def test_sense_shape_errors_are_readable(rng):
    with pytest.raises(ValueError, match="sens must have 5 dimensions"):
        sens_expand(crandn(rng, 1, 1, 4, 4), crandn(rng, 1, 4, 4))
    with pytest.raises(ValueError, match="do not broadcast"):
        sens_expand(crandn(rng, 1, 1, 4, 4), crandn(rng, 1, 2, 1, 5, 4))
