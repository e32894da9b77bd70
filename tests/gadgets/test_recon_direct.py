"""CardioMMRecon: direct FFT + RSS below direct_recon_threshold, said in the meta."""

from __future__ import annotations

import numpy as np

from cardiomm_core.readout import crop_image_readout
from gadgets.buffer import AcquisitionBuffer
from gadgets.layout import buffer_to_kspace
from gadgets.recon import CardioMMRecon
from tests.gadgets.harness import synthetic_scan


def _fft_rss(kspace: np.ndarray) -> np.ndarray:
    coil_images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    return np.sqrt((np.abs(coil_images) ** 2).sum(axis=1))


def test_fully_sampled_scan_is_reconstructed_directly(rng) -> None:
    scan = synthetic_scan(rng, acceleration=1, n_acs=0, noise_samples=0, n_slices=1)
    buffers = list(AcquisitionBuffer(N_dimension="phase")(iter(scan.acquisitions), scan.header))
    images = list(CardioMMRecon(checkpoint="packaged")(iter(buffers), scan.header))
    assert len(images) == 3
    assert {im.meta["CardioMM.Method"] for im in images} == {"direct"}
    assert {im.meta["CardioMM.Fallback"] for im in images} == {"false"}
    assert {im.meta["CardioMM.Model"] for im in images} == {"none"}
    assert "below direct_recon_threshold 1.5" in images[0].meta["CardioMM.DirectReason"]
    kspace, _ = buffer_to_kspace(np.asarray(buffers[0].bits[0].data.data), "N")
    expected = crop_image_readout(_fft_rss(kspace)[0], 10)  # (frames, y, x)
    for image in images:
        got = np.asarray(image.data)[0, 0]
        want = expected[int(image.phase)]
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5


def test_threshold_one_never_reconstructs_directly(rng) -> None:
    scan = synthetic_scan(rng, acceleration=1, n_acs=0, noise_samples=0, n_slices=1)
    buffers = list(AcquisitionBuffer()(iter(scan.acquisitions), scan.header))
    images = list(CardioMMRecon(checkpoint="none", direct_recon_threshold=1.0)(iter(buffers), scan.header))
    assert {im.meta["CardioMM.Method"] for im in images} == {"cg_sense"}
