"""cardiomm_core.readout: the image-space readout crop and pad, and readout oversampling removal in k-space."""

from __future__ import annotations

import numpy as np
import pytest

from cardiomm_core.readout import crop_image_readout, pad_image_readout, remove_readout_oversampling


def test_readout_crop_and_pad_are_inverse():
    x = np.arange(2 * 7, dtype=np.float32).reshape(2, 7) + 1
    padded = pad_image_readout(x, 14)
    assert padded.shape == (2, 14) and padded.sum() == x.sum()
    np.testing.assert_array_equal(crop_image_readout(padded, 7), x)
    assert padded[0, 14 // 2] == x[0, 7 // 2]                      # the centre pixel stays the centre
    with pytest.raises(ValueError, match="nx_enc"):
        pad_image_readout(x, 5)
    with pytest.raises(ValueError, match="nx"):
        crop_image_readout(x, 9)


def cifft(x: np.ndarray) -> np.ndarray:
    return np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(x, axes=-1), axis=-1, norm="ortho"), axes=-1)


@pytest.mark.parametrize("n_samples, n_keep", [(18, 9), (20, 10), (15, 7), (13, 13)])
def test_crop_keeps_the_central_image_samples(rng: np.random.Generator, n_samples: int, n_keep: int) -> None:
    data = (rng.standard_normal((3, n_samples)) + 1j * rng.standard_normal((3, n_samples))).astype(np.complex64)
    cropped, start = remove_readout_oversampling(data, n_keep)
    assert cropped.shape == (3, n_keep) and cropped.dtype == np.complex64
    assert start == (n_samples - n_keep) // 2
    np.testing.assert_allclose(cifft(cropped), cifft(data)[:, start:start + n_keep], atol=1e-5)
    with pytest.raises(ValueError, match="n_keep"):
        remove_readout_oversampling(data, n_samples + 1)


def test_image_crop_is_the_kspace_removal_for_even_sizes(rng: np.random.Generator) -> None:
    """Both keep the same image columns when n_keep is even (the gadget's and the image crop's start agree)."""
    data = (rng.standard_normal((2, 24)) + 1j * rng.standard_normal((2, 24))).astype(np.complex64)
    kspace, _ = remove_readout_oversampling(data, 12)
    np.testing.assert_allclose(cifft(kspace), crop_image_readout(cifft(data), 12), atol=1e-5)
