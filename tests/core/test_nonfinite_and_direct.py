"""Non-finite model output falls back (reconstruct_or_fallback); the direct FFT + RSS reconstruction."""

import numpy as np
import pytest
import torch

from cardiomm_core.context import ScanContext
from cardiomm_core.conventional import direct_recon, effective_acceleration
from cardiomm_core.engine import InferenceEngine, reconstruct_or_fallback
from cardiomm_core.fft import ifft2c
from cardiomm_core.model import CardioMM, config_by_name
from cardiomm_core.sense import rss
from cardiomm_core.text import HashingEncoder

CONTEXT = ScanContext(acceleration=4, pattern="ktUniform")
pytestmark = pytest.mark.usefixtures("one_thread", "embedding_cache")


def _scan(rng, n_s=2, n_c=3, n_t=2, n_ky=13, n_kx=18, p=0.4):
    mask = (rng.random((n_s, 1, n_t, n_ky, 1)) < p).astype(np.float32)
    mask[..., n_ky // 2 - 2:n_ky // 2 + 2, :] = 1
    data = rng.standard_normal((n_s, n_c, n_t, n_ky, n_kx)) + 1j * rng.standard_normal((n_s, n_c, n_t, n_ky, n_kx))
    return (data * mask).astype(np.complex64), mask


def test_nan_weights_fall_back_with_a_reason(rng):
    torch.manual_seed(0)
    model = CardioMM(config_by_name("tiny", 64))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    engine = InferenceEngine(model, HashingEncoder(dim=64), device="cpu")
    kspace, mask = _scan(rng)
    outcome = reconstruct_or_fallback(engine, kspace, mask, CONTEXT, fallback_method="zero_filled")
    assert outcome.fallback and outcome.method == "zero_filled"
    assert "not finite" in outcome.reason
    assert np.isfinite(outcome.images).all() and np.abs(outcome.images).max() > 0


def test_direct_recon_is_fft_plus_rss(rng):
    kspace, mask = _scan(rng, p=1.1)  # everything sampled
    k, m = torch.from_numpy(kspace), torch.from_numpy(mask)
    images = direct_recon(k, m)
    expected = rss(ifft2c(k), dim=1)
    assert images.shape == (2, 2, 13, 18) and images.dtype == torch.complex64
    torch.testing.assert_close(images.abs(), expected, rtol=1e-5, atol=1e-6)
    assert effective_acceleration(m) == 1.0


def test_direct_recon_without_calibration_is_real_rss(rng):
    kspace, mask = _scan(rng)
    mask[..., 4:9, :] = 0  # no calibration block left
    kspace = (kspace * mask).astype(np.complex64)
    images = direct_recon(torch.from_numpy(kspace), torch.from_numpy(mask))
    assert torch.all(images.imag == 0)
    torch.testing.assert_close(images.real, rss(ifft2c(torch.from_numpy(kspace)), dim=1))
    assert effective_acceleration(torch.from_numpy(mask)) > 1.0
    assert effective_acceleration(torch.zeros(1, 1, 1, 4, 1)) == float("inf")
