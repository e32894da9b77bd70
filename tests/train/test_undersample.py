"""Retrospective undersampling: balance of the draws, masks, sentences, determinism, batching."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from cardiomm_core.context import PATTERN_WORDS, ScanContext
from cardiomm_core.masks import make_mask
from cardiomm_core.prompting import describe_sampling
from train.data.sample import KspaceSample, TrainingExample, collate_examples
from train.data.synthetic import SyntheticCardiacDataset
from train.data.undersample import (
    UndersampledDataset,
    UndersamplingSpec,
    draw_mask,
    draw_sampling,
    undersample,
)

from ..helpers import crandn

N_COILS, N_FRAMES, N_KY, N_KX, RECON_NX = 3, 4, 48, 40, 20


class SampleList(Dataset):
    """Fully sampled random k-space samples held in memory."""

    def __init__(self, n: int, seed: int = 0, shape: tuple[int, int, int, int] = (N_COILS, N_FRAMES, N_KY, N_KX)):
        rng = np.random.default_rng(seed)
        self.samples = [KspaceSample(crandn(rng, *shape), ScanContext(), f"random{i}@slice0", None, RECON_NX)
                        for i in range(n)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> KspaceSample:
        return self.samples[index]


@pytest.fixture(scope="module")
def base() -> SampleList:
    return SampleList(12)


def test_draws_follow_the_configured_frequencies():
    spec = UndersamplingSpec()
    table = spec.probabilities()
    assert abs(sum(table.values()) - 1) < 1e-12
    # Uniform keeps its own accelerations unless told; the kt patterns use the general list
    assert {a for p, a in table if p == "Uniform"} == {4.0, 8.0, 10.0}
    assert {a for p, a in table if p == "ktRadial"} == {4.0, 8.0, 12.0, 16.0, 20.0, 24.0}
    n = 12000
    counts = Counter(draw_sampling(spec, seed=7, epoch=e, index=i)[:2] for e in range(3) for i in range(n // 3))
    assert set(counts) == set(table)
    for key, p in table.items():
        sigma = np.sqrt(n * p * (1 - p))
        assert abs(counts[key] - n * p) < 4.5 * sigma, (key, counts[key], n * p)
    patterns = Counter(p for p, _ in counts.elements())
    for pattern in spec.patterns:
        assert abs(patterns[pattern] / n - 0.25) < 0.02


def test_custom_weights_and_lists():
    spec = UndersamplingSpec(patterns=("ktGaussian", "Uniform"), accelerations=(8, 16), pattern_weights=(3, 1),
                             acceleration_weights=(1, 0), pattern_accelerations={})
    table = spec.probabilities()
    assert table == pytest.approx({("ktGaussian", 8.0): 0.75, ("ktGaussian", 16.0): 0.0,
                                   ("Uniform", 8.0): 0.25, ("Uniform", 16.0): 0.0})
    counts = Counter(draw_sampling(spec, seed=1, epoch=0, index=i)[:2] for i in range(4000))
    assert counts[("ktGaussian", 16.0)] == 0 and counts[("Uniform", 16.0)] == 0
    assert abs(counts[("ktGaussian", 8.0)] / 4000 - 0.75) < 0.03


@pytest.mark.parametrize("kwargs, message", [
    (dict(patterns=("Poisson",)), "patterns"),
    (dict(patterns=()), "patterns"),
    (dict(patterns=("ktRadial",), accelerations=(1.5,)), "ktRadial"),
    (dict(pattern_weights=(1, 2)), "pattern_weights"),
    (dict(accelerations=(4, float("nan"))), "accelerations"),
    (dict(pattern_accelerations={"Radial": (4,)}), "pattern_accelerations"),
    (dict(n_acs=-1), "n_acs"),
])
def test_invalid_specs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UndersamplingSpec(**kwargs)


def test_examples_match_their_masks_and_sentences(base):
    dataset = UndersampledDataset(base, UndersamplingSpec(), seed=11)
    patterns = set()
    for index in range(len(dataset)):
        example = dataset[index]
        assert isinstance(example, TrainingExample)
        mask = dataset.mask_for(index, N_FRAMES, N_KY, N_KX)
        np.testing.assert_array_equal(example.mask.numpy(), mask.as_tensor()[0].numpy())
        context = example.context
        # the one description the gadgets give the same mask (on this 48-line, 4-frame grid a
        # sparse kt mask can be too sparse to tell its family; realistic grids: test_prompting)
        described = describe_sampling(mask.mask, declared_acceleration=mask.acceleration)
        assert (context.acceleration, context.pattern) == described
        assert described == describe_sampling(mask.as_tensor())
        assert context.undersampling_sentence() == \
            f"Undersampling: {int(described[0])}x {PATTERN_WORDS[described[1]]}."
        assert context.metadata_sentence() == base[index].context.metadata_sentence()
        assert example.mask.shape[-1] == (N_KX if mask.pattern == "ktRadial" else 1)
        # zero exactly where the mask is zero, the full k-space where it is one
        full = base[index].kspace
        mask_full = example.mask.expand(-1, -1, -1, N_KX)[0].expand(N_COILS, -1, -1, -1).bool()
        assert torch.all(example.masked_kspace[~mask_full] == 0)
        assert torch.equal(example.masked_kspace[mask_full], full[mask_full])
        assert example.n_acs == mask.n_acs
        patterns.add(mask.pattern)
    assert len(patterns) >= 3


def test_target_is_the_cropped_rss_of_the_full_kspace(base):
    example = UndersampledDataset(base, seed=0)[0]
    full = base[0].kspace.numpy()
    images = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(full, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    rss = np.sqrt((np.abs(images) ** 2).sum(axis=0))
    start = N_KX // 2 - RECON_NX // 2
    assert example.target.shape == (N_FRAMES, N_KY, RECON_NX) and example.target.dtype == torch.float32
    np.testing.assert_allclose(example.target.numpy(), rss[..., start:start + RECON_NX], rtol=1e-5, atol=1e-6)


def test_masks_are_deterministic_by_epoch_index_and_seed(base):
    spec = UndersamplingSpec()
    a, b = UndersampledDataset(base, spec, seed=5), UndersampledDataset(base, spec, seed=5)
    for dataset in (a, b):
        dataset.set_epoch(3)
    for index in (0, 7):
        assert torch.equal(a[index].mask, b[index].mask)
        assert torch.equal(a[index].masked_kspace, b[index].masked_kspace)
    masks = {epoch: [] for epoch in (0, 1)}
    for epoch in masks:
        a.set_epoch(epoch)
        masks[epoch] = [a[i].mask for i in range(len(a))]
    assert any(m0.shape != m1.shape or not torch.equal(m0, m1) for m0, m1 in zip(masks[0], masks[1]))
    other_seed = UndersampledDataset(base, spec, seed=6)
    assert any(draw_sampling(spec, seed=5, epoch=0, index=i) != draw_sampling(spec, seed=6, epoch=0, index=i)
               for i in range(len(base)))
    assert other_seed[0].masked_kspace.shape == a[0].masked_kspace.shape


def test_fixed_masks_ignore_the_epoch(base):
    dataset = UndersampledDataset(base, seed=2, fixed=True)
    first = [dataset[i].mask for i in range(4)]
    dataset.set_epoch(9)
    assert all(torch.equal(m, dataset[i].mask) for i, m in enumerate(first))


def test_infeasible_draw_names_the_pattern():
    small = SampleList(1, shape=(2, 2, 20, 20))
    spec = UndersamplingSpec(patterns=("Uniform",))
    with pytest.raises(ValueError, match="Uniform"):
        UndersampledDataset(small, spec)[0]


def test_undersample_checks_its_arguments(base):
    mask = make_mask("ktUniform", 4, N_FRAMES + 1, N_KY, N_KX)
    with pytest.raises(ValueError, match="does not fit"):
        undersample(base[0], mask)
    with pytest.raises(ValueError, match="seed"):
        draw_mask(UndersamplingSpec(), N_FRAMES, N_KY, N_KX, seed=-1, epoch=0, index=0)


def test_collate_stacks_and_expands_line_masks(base):
    spec_line = UndersamplingSpec(patterns=("ktGaussian",))
    spec_radial = UndersamplingSpec(patterns=("ktRadial",))
    line = UndersampledDataset(base, spec_line)[0]
    radial = UndersampledDataset(base, spec_radial)[1]
    batch = collate_examples([line, radial])
    assert len(batch) == 2
    assert batch.masked_kspace.shape == (2, N_COILS, N_FRAMES, N_KY, N_KX)
    assert batch.mask.shape == (2, 1, N_FRAMES, N_KY, N_KX)
    assert torch.equal(batch.mask[0], line.mask.expand(-1, -1, -1, N_KX))
    assert batch.target.shape == (2, N_FRAMES, N_KY, RECON_NX)
    assert batch.identifiers == [line.identifier, radial.identifier]
    assert [c.pattern for c in batch.contexts] == ["ktGaussian", "ktRadial"]
    same = collate_examples([line, line])
    assert same.mask.shape == (2, 1, N_FRAMES, N_KY, 1)


def test_collate_rejects_unequal_shapes(base):
    other = SampleList(1, shape=(N_COILS, N_FRAMES, 50, N_KX))
    a = UndersampledDataset(base, seed=0)[0]
    b = UndersampledDataset(other, seed=0)[0]
    with pytest.raises(ValueError, match="different masked_kspace shapes.*batch_size=1"):
        collate_examples([a, b])
    with pytest.raises(ValueError, match="empty"):
        collate_examples([])


def test_with_synthetic_phantoms_in_a_dataloader():
    base = SyntheticCardiacDataset(2, seed=0, n_frames=3, n_coils=2, matrix=(24, 40), modalities=("cine", "t2map"))
    dataset = UndersampledDataset(base, UndersamplingSpec(patterns=("ktUniform", "ktGaussian")), seed=3)
    loader = torch.utils.data.DataLoader(dataset, batch_size=1, collate_fn=collate_examples)
    batches = list(loader)
    assert len(batches) == 2
    for batch, modality in zip(batches, ("Cine", "T2 mapping")):
        assert batch.masked_kspace.shape == (1, 2, 3, 40, 48)
        assert batch.target.shape == (1, 3, 40, 24)
        assert batch.contexts[0].modality == modality
        assert batch.contexts[0].pattern in ("ktUniform", "ktGaussian")


def test_a_sample_reference_becomes_the_training_target():
    """Synthetic sources with target=noise_free: the example learns the noise-free RSS, and the
    masked k-space is still the noisy one."""
    base = SyntheticCardiacDataset(2, seed=4, n_frames=4, n_coils=4, matrix=(24, 20), noise_level=0.02,
                                   target="noise_free")
    noisy = SyntheticCardiacDataset(2, seed=4, n_frames=4, n_coils=4, matrix=(24, 20), noise_level=0.02)
    spec = UndersamplingSpec(patterns=("ktGaussian",), accelerations=(8.0,), n_acs=4)
    example = UndersampledDataset(base, spec, seed=1)[1]
    plain = UndersampledDataset(noisy, spec, seed=1)[1]
    assert torch.equal(example.target, base[1].reference)
    assert torch.equal(example.masked_kspace, plain.masked_kspace)
    assert not torch.allclose(example.target, plain.target)


def test_official_convention_draws_the_official_masks_and_says_their_nominal_r():
    """The paper's protocol as a training option: official recipes with 20 ACS lines, the nominal R."""
    base = SampleList(6, shape=(N_COILS, 12, 96, N_KX))
    spec = UndersamplingSpec(patterns=("Uniform", "ktGaussian", "ktRadial"), accelerations=(4.0, 8.0, 16.0, 24.0),
                             pattern_accelerations={}, convention="official")
    dataset = UndersampledDataset(base, spec, seed=3)
    for index in range(len(dataset)):
        example = dataset[index]
        mask = dataset.mask_for(index, 12, 96, N_KX)
        expected = make_mask(mask.pattern, mask.acceleration, 12, 96, N_KX, n_acs=20, seed=0, convention="official")
        assert example.n_acs == 20 and mask.n_acs == 20
        if mask.pattern != "ktGaussian":  # deterministic recipes: the same mask for any seed
            np.testing.assert_array_equal(mask.mask, expected.mask)
        assert (example.context.acceleration, example.context.pattern) == (mask.acceleration, mask.pattern)
    with pytest.raises(ValueError, match="convention"):
        UndersamplingSpec(convention="matlab")


def test_config_carries_the_mask_convention_and_sentence_style():
    from train.config import undersampling_spec
    from train.config_io import load_config

    cfg = load_config(None, ["data.undersampling.convention=official", "prompt.style=official"])
    assert undersampling_spec(cfg.data.undersampling).convention == "official"
    assert cfg.prompt.style == "official"
    assert load_config(None).prompt.style == "project"
    with pytest.raises(ValueError, match="prompt.style"):
        load_config(None, ["prompt.style=loud"])
    with pytest.raises(ValueError, match="convention"):
        load_config(None, ["data.undersampling.convention=matlab"])
