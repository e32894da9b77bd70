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
