"""SyntheticCardiacDataset: shapes, contexts and determinism per index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiomm_core.fft import fft2c
from train.data.sample import KspaceSample, rss_target
from train.data.synthetic import SyntheticCardiacDataset

SMALL = dict(n_frames=3, n_coils=4, matrix=(32, 24), n_slices=2)


def test_items_have_the_documented_shapes_and_contexts():
    dataset = SyntheticCardiacDataset(3, seed=1, **SMALL)
    assert len(dataset) == 6
    modalities = []
    for index in range(len(dataset)):
        sample = dataset[index]
        assert isinstance(sample, KspaceSample)
        assert sample.kspace.shape == (4, 3, 24, 64) and sample.kspace.dtype == torch.complex64
        assert sample.target is not None and sample.target.shape == (3, 24, 32)
        assert sample.recon_nx == 32
        assert sample.context.pattern == "full" and sample.context.acceleration == 1.0
        modalities.append(sample.context.modality)
    assert modalities == ["Cine", "Cine", "T1 mapping", "T1 mapping", "T2 mapping", "T2 mapping"]
    assert len({dataset[i].identifier for i in range(len(dataset))}) == 6


def test_same_index_same_data_in_any_order_and_instance():
    first = SyntheticCardiacDataset(4, seed=3, **SMALL)
    second = SyntheticCardiacDataset(4, seed=3, **SMALL)
    forward = [first[i] for i in range(len(first))]
    backward = {i: second[i] for i in reversed(range(len(second)))}
    for index, sample in enumerate(forward):
        other = backward[index]
        assert sample.identifier == other.identifier
        assert torch.equal(sample.kspace, other.kspace)
        assert torch.equal(sample.target, other.target)
    assert not torch.equal(forward[0].kspace, forward[2].kspace)          # different subjects
    assert not torch.equal(forward[0].kspace, forward[1].kspace)          # different slices


def test_another_seed_gives_other_subjects():
    a = SyntheticCardiacDataset(1, seed=0, **SMALL)[0]
    b = SyntheticCardiacDataset(1, seed=1, **SMALL)[0]
    assert a.kspace.shape == b.kspace.shape and not torch.equal(a.kspace, b.kspace)


def test_returned_tensors_do_not_alias_the_cached_scan():
    dataset = SyntheticCardiacDataset(1, seed=2, **SMALL)
    sample = dataset[0]
    reference = sample.kspace.clone()
    sample.kspace.zero_()
    assert torch.equal(dataset[0].kspace, reference)


def test_noise_free_kspace_is_the_coil_images_of_the_target():
    dataset = SyntheticCardiacDataset(1, seed=5, noise_level=0.0, n_frames=2, n_coils=3, matrix=(16, 20))
    sample = dataset[0]
    target = sample.target
    # rss of the noise-free coil images is |object| * sqrt(sum |sens|^2): zero exactly where the object is
    rss = rss_target(sample.kspace, sample.recon_nx)
    assert rss.shape == target.shape
    assert torch.all(rss[target.abs() == 0] < 1e-4 * rss.max())
    # the oversampled readout holds no object outside the recon FOV
    images = torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(sample.kspace, dim=(-2, -1)), norm="ortho"),
                                dim=(-2, -1))
    start = 32 // 2 - 16 // 2
    outside = torch.cat([images[..., :start], images[..., start + 16:]], dim=-1)
    assert outside.abs().max() < 1e-4 * images.abs().max()
    assert torch.allclose(fft2c(images), sample.kspace, atol=1e-5)


def test_scanners_cycle_over_subjects():
    scanners = ((1.5, "Philips", "Ingenia"), (3.0, "GE", "Premier"))
    dataset = SyntheticCardiacDataset(2, seed=0, scanners=scanners, modalities=("cine",), n_frames=2, n_coils=2,
                                      matrix=(16, 16))
    assert [(s.context.field_strength_t, s.context.vendor, s.context.scanner_model)
            for s in (dataset[0], dataset[1])] == list(scanners)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_subjects=0), "n_subjects"),
    (dict(n_subjects=1, modalities=("lge",)), "modalities"),
    (dict(n_subjects=1, matrix=(32,)), "matrix"),
    (dict(n_subjects=1, noise_level=-1.0), "noise_level"),
])
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticCardiacDataset(**kwargs)


def test_index_out_of_range():
    dataset = SyntheticCardiacDataset(1, n_frames=2, n_coils=2, matrix=(16, 16))
    with pytest.raises(IndexError):
        dataset[1]
    assert np.isfinite(dataset[-1].kspace.abs().max().item())


# -- the chain's coil mixing and the noise-free reference -------------------------------------------

CHAIN_LIKE = dict(n_frames=4, n_coils=6, matrix=(24, 20), readout_oversampling=2, modalities=("cine",))


def test_prewhitened_kspace_has_white_unit_noise():
    """k-space minus the prewhitened noise-free k-space of the same subject is noise with identity
    covariance: what NoiseAdjust hands the rest of the chain."""
    noisy = SyntheticCardiacDataset(1, seed=7, noise_level=0.02, prewhiten=True, **CHAIN_LIKE)
    clean = SyntheticCardiacDataset(1, seed=7, noise_level=0.0, **CHAIN_LIKE)
    mixing = noisy.coil_mixing(noisy._scan(0), 0)
    assert mixing.shape == (6, 6) and np.allclose(np.triu(mixing, 1), 0)       # Cholesky prewhitener
    sample = noisy[0]
    assert sample.reference is None                                             # target "rss" by default
    noise = sample.kspace.numpy() - np.tensordot(mixing, clean[0].kspace.numpy(), axes=([1], [0]))
    flat = noise.reshape(6, -1)
    covariance = flat @ flat.conj().T / flat.shape[1]
    assert np.allclose(np.diag(covariance).real, 1.0, atol=0.06)
    assert np.abs(covariance - np.diag(np.diag(covariance))).max() < 0.06
    raw = SyntheticCardiacDataset(1, seed=7, noise_level=0.02, **CHAIN_LIKE)[0].kspace.numpy()
    raw_noise = (raw - clean[0].kspace.numpy()).reshape(6, -1)
    raw_cov = raw_noise @ raw_noise.conj().T / raw_noise.shape[1]
    assert np.abs(raw_cov - np.diag(np.diag(raw_cov))).max() > 0.1 * np.abs(np.diag(raw_cov)).max()  # was correlated


def test_coil_compression_keeps_the_strongest_virtual_coils():
    full = SyntheticCardiacDataset(1, seed=8, noise_level=0.002, prewhiten=True, **CHAIN_LIKE)
    compressed = SyntheticCardiacDataset(1, seed=8, noise_level=0.002, prewhiten=True, compress_coils=3, **CHAIN_LIKE)
    k_full, k_comp = full[0].kspace, compressed[0].kspace
    assert k_comp.shape == (3,) + tuple(k_full.shape[1:]) and k_comp.dtype == torch.complex64
    energy = (k_comp.abs() ** 2).sum(dim=(1, 2, 3))
    assert torch.all(energy[:-1] >= energy[1:])                                 # sorted by singular value
    kept = float(energy.sum() / (k_full.abs() ** 2).sum())
    singular = np.linalg.svd(k_full.numpy().reshape(6, -1).astype(np.complex128), compute_uv=False)
    assert kept == pytest.approx(float((singular[:3] ** 2).sum() / (singular ** 2).sum()), rel=1e-4)


def test_noise_free_reference_is_the_rss_of_the_noise_free_mixed_coils():
    noisy = SyntheticCardiacDataset(1, seed=9, noise_level=0.02, prewhiten=True, compress_coils=4,
                                    target="noise_free", **CHAIN_LIKE)
    clean = SyntheticCardiacDataset(1, seed=9, noise_level=0.0, **CHAIN_LIKE)
    sample = noisy[0]
    mixing = noisy.coil_mixing(noisy._scan(0), 0)
    assert mixing.shape == (4, 6)
    expected = rss_target(torch.from_numpy(np.tensordot(mixing, clean[0].kspace.numpy(), axes=([1], [0]))
                                           .astype(np.complex64)), 24)
    assert sample.reference.shape == (4, 20, 24) and sample.reference.dtype == torch.float32
    assert torch.allclose(sample.reference, expected, rtol=1e-3, atol=1e-4 * float(expected.max()))
    assert torch.equal(sample.scoring_target(), sample.reference)
    noisy_rss = rss_target(sample.kspace, sample.recon_nx)
    assert not torch.allclose(noisy_rss, sample.reference, rtol=0.05)            # the noise is gone
    # without any mixing and without noise the reference is the plain RSS
    plain = SyntheticCardiacDataset(1, seed=9, noise_level=0.0, target="noise_free", **CHAIN_LIKE)[0]
    assert torch.allclose(plain.reference, rss_target(plain.kspace, plain.recon_nx), rtol=1e-4,
                          atol=1e-5 * float(plain.reference.max()))


@pytest.mark.parametrize("kwargs, message", [
    (dict(prewhiten=True, noise_level=0.0), "prewhiten needs noise"),
    (dict(compress_coils=7), "compress_coils"),
    (dict(compress_coils=0), "compress_coils"),
    (dict(target="clean"), "target"),
    (dict(prewhiten="yes"), "prewhiten"),
])
def test_invalid_chain_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SyntheticCardiacDataset(1, **{**CHAIN_LIKE, **kwargs})


def test_a_reference_of_the_wrong_shape_is_refused():
    sample = SyntheticCardiacDataset(1, seed=1, target="noise_free", **CHAIN_LIKE)[0]
    with pytest.raises(ValueError, match="reference"):
        KspaceSample(sample.kspace, sample.context, sample.identifier, sample.target, sample.recon_nx,
                     sample.reference[:, :, :-1])
    with pytest.raises(ValueError, match="reference"):
        KspaceSample(sample.kspace, sample.context, sample.identifier, sample.target, sample.recon_nx,
                     sample.reference.to(torch.float64))
