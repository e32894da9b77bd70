"""Varied synthetic acquisitions: per-subject matrix, coils, frames, noise and scanner, the
simulation cache, the Gram-matrix coil compression, and the sentences a config can produce."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cardiomm_core.coils import coil_compression
from cardiomm_core.phantom.anatomy import slice_fractions
from cardiomm_core.prompting import context_sentences
from train.config_io import config_from_dict, load_config
from train.data.synthetic import (
    CMRXRECON_FRAMES,
    VARIED_SCANNERS,
    SyntheticCardiacDataset,
    gram_coil_compression,
)
from train.data.undersample import UndersampledDataset, UndersamplingSpec
from train.embeddings import config_sentences, nominal_undersampling_sentences

from .trainer_helpers import tiny_values

#: Small varied ranges (the real configs use 96..256; the draws are the same function of the ranges).
VARIED = dict(nx_range=(33, 47), ny_range=(41, 55), coils_range=(3, 9),
              frames_by_modality={"cine": (2, 5), "t1map": (9, 9), "t2map": (3, 3)},
              noise_range=(0.004, 0.03), scanners=VARIED_SCANNERS, scanner_choice="random",
              readout_oversampling=1)


def test_subject_params_are_a_function_of_seed_and_subject_and_respect_the_ranges():
    a = SyntheticCardiacDataset(300, seed=5, **VARIED)
    b = SyntheticCardiacDataset(300, seed=5, **VARIED)
    params = [a.subject_params(s) for s in range(300)]
    assert params == [b.subject_params(s) for s in range(300)]
    assert params != [SyntheticCardiacDataset(300, seed=6, **VARIED).subject_params(s) for s in range(300)]
    nx = {p.matrix[0] for p in params}
    ny = {p.matrix[1] for p in params}
    coils = {p.n_coils for p in params}
    assert nx == set(range(33, 48)) and ny == set(range(41, 56))         # every size, odd ones included
    assert coils == set(range(3, 10))
    for p in params:
        low, high = VARIED["frames_by_modality"][p.modality]
        assert low <= p.n_frames <= high
        assert 0.004 <= p.noise_level <= 0.03
        assert p.scanner in VARIED_SCANNERS
    assert {p.n_frames for p in params if p.modality == "cine"} == {2, 3, 4, 5}
    assert {p.scanner for p in params} == set(VARIED_SCANNERS)
    assert {p.scanner[0] for p in params} == {1.5, 3.0}
    # one range set or not leaves the other draws alone
    only_nx = SyntheticCardiacDataset(50, seed=5, nx_range=(33, 47), readout_oversampling=1)
    assert [only_nx.subject_params(s).matrix[0] for s in range(50)] == [p.matrix[0] for p in params[:50]]
    assert {only_nx.subject_params(s).matrix[1] for s in range(50)} == {112}


def test_items_are_deterministic_and_have_the_drawn_shapes_and_scanner():
    dataset = SyntheticCardiacDataset(3, seed=2, prewhiten=True, compress_coils=4, target="noise_free", **VARIED)
    again = SyntheticCardiacDataset(3, seed=2, prewhiten=True, compress_coils=4, target="noise_free", **VARIED)
    for index in (2, 0, 1):
        sample, twin = dataset[index], again[index]
        params = dataset.subject_params(index)
        n_coils = min(4, params.n_coils)
        assert tuple(sample.kspace.shape) == dataset.item_shape(index) == (n_coils, params.n_frames,
                                                                           params.matrix[1], params.matrix[0])
        assert tuple(sample.reference.shape) == (params.n_frames, params.matrix[1], params.matrix[0])
        assert torch.equal(sample.kspace, twin.kspace) and torch.equal(sample.reference, twin.reference)
        assert (sample.context.field_strength_t, sample.context.vendor, sample.context.scanner_model) == params.scanner
        assert sample.context == params.context()
        assert torch.isfinite(torch.view_as_real(sample.kspace)).all()


def test_without_ranges_the_fixed_geometry_is_unchanged():
    fixed = SyntheticCardiacDataset(4, seed=1, n_frames=3, n_coils=4, matrix=(32, 24))
    assert not fixed.varied
    for subject in range(4):
        params = fixed.subject_params(subject)
        assert (params.matrix, params.n_coils, params.n_frames, params.noise_level) == ((32, 24), 4, 3, 0.01)
        assert params.scanner == (3.0, "Siemens", "Vida")
    assert fixed.item_shape(0) == tuple(fixed[0].kspace.shape) == (4, 3, 24, 64)


def test_the_cache_gives_back_exactly_what_was_simulated(tmp_path):
    kwargs = dict(prewhiten=True, compress_coils=4, target="noise_free", **VARIED)
    cached = SyntheticCardiacDataset(2, seed=4, cache_dir=tmp_path, **kwargs)
    first = cached[1]
    files = list(tmp_path.rglob("*.npz"))
    assert len(files) == 1 and files[0].parent.name == cached.fingerprint()
    again = SyntheticCardiacDataset(2, seed=4, cache_dir=tmp_path, **kwargs)
    again._simulate = None  # a cached item is read, never simulated again  # type: ignore[assignment]
    second = again[1]
    assert torch.equal(first.kspace, second.kspace) and torch.equal(first.reference, second.reference)
    assert torch.equal(first.target, second.target)
    assert (first.context, first.identifier, first.recon_nx) == (second.context, second.identifier, second.recon_nx)
    # other parameters, another folder
    assert SyntheticCardiacDataset(2, seed=5, cache_dir=tmp_path, **kwargs).fingerprint() != cached.fingerprint()
    # a damaged entry is simulated again
    files[0].write_bytes(b"not an npz")
    assert torch.equal(SyntheticCardiacDataset(2, seed=4, cache_dir=tmp_path, **kwargs)[1].kspace, first.kspace)


def test_gram_compression_spans_the_svds_virtual_coils():
    rng = np.random.default_rng(0)
    mixing = rng.standard_normal((8, 8)) + 1j * rng.standard_normal((8, 8))
    calib = (mixing @ (rng.standard_normal((8, 500)) + 1j * rng.standard_normal((8, 500)))).astype(np.complex64)
    pre = (np.eye(8) + 0.1 * rng.standard_normal((8, 8))).astype(np.complex64)
    ours = gram_coil_compression(calib, 3, pre)
    svd = coil_compression(pre @ calib, 0, n_virtual=3).matrix
    assert ours.shape == (3, 8) and ours.dtype == np.complex64
    # the same subspace, each virtual coil up to a phase
    np.testing.assert_allclose(np.abs(np.sum(ours * svd.conj(), axis=1)), 1.0, atol=1e-4)
    assert np.all(np.abs(np.angle(ours[:, 0]))[np.abs(ours[:, 0]) > 1e-6] < 1e-5)


def test_varied_ranges_are_checked():
    with pytest.raises(ValueError, match="nx_range"):
        SyntheticCardiacDataset(1, nx_range=(40, 30))
    with pytest.raises(ValueError, match="frames_by_modality"):
        SyntheticCardiacDataset(1, frames_by_modality={"lge": (1, 2)})
    with pytest.raises(ValueError, match="noise_range"):
        SyntheticCardiacDataset(1, noise_range=(0.0, 0.1))
    with pytest.raises(ValueError, match="scanner_choice"):
        SyntheticCardiacDataset(1, scanner_choice="sometimes")
    assert CMRXRECON_FRAMES == {"cine": (8, 30), "t1map": (9, 9), "t2map": (3, 3)}


def test_the_config_keys_reach_the_data_set_and_batch_size_must_be_one(tmp_path):
    source = {"kind": "synthetic", "n_subjects": 4, "nx_range": [33, 47], "ny_range": [41, 55],
              "coils_range": [3, 9], "frames_by_modality": {"cine": [2, 5]}, "noise_range": [0.004, 0.03],
              "scanner_set": "varied", "scanner_choice": "random", "readout_oversampling": 1}
    cfg = config_from_dict(tiny_values(tmp_path, data={"train": [source]}))
    from train.data.sources import build_source, describe_sources

    dataset = build_source(cfg.data.train[0])
    assert dataset.varied and dataset.scanners == VARIED_SCANNERS and dataset.nx_range == (33, 47)
    assert "33-47x41-55" in describe_sources(cfg.data.train) and "12 scanners" in describe_sources(cfg.data.train)
    with pytest.raises(ValueError, match="batch_size"):
        config_from_dict(tiny_values(tmp_path, data={"train": [source], "batch_size": 2}))
    with pytest.raises(ValueError, match="scanner_set"):
        config_from_dict(tiny_values(tmp_path, data={"train": [{**source, "scanner_set": "all"}]}))


def test_every_training_sentence_is_in_the_enumerated_set(tmp_path):
    """The sentences the trainer's own path gives drawn items (four families, R 4 and 8, varied
    shapes, 3-frame mapping scans) are among those ``train.embeddings`` enumerates without a walk."""
    source = {"kind": "synthetic", "n_subjects": 6, "seed": 3, "readout_oversampling": 1,
              "nx_range": [40, 57], "ny_range": [48, 61], "coils_range": [3, 5],
              "frames_by_modality": {"cine": [2, 6], "t1map": [9, 9], "t2map": [3, 3]},
              "scanner_set": "varied", "scanner_choice": "random"}
    cfg = config_from_dict(tiny_values(tmp_path, data={
        "train": [source], "val": [],
        "undersampling": {"patterns": ["ktGaussian", "ktUniform", "ktRadial", "Uniform"], "accelerations": [4, 8],
                          "pattern_accelerations": {}}}))
    enumerated = set(config_sentences(cfg))
    assert len(nominal_undersampling_sentences(cfg)) == 8
    spec = UndersamplingSpec(patterns=("ktGaussian", "ktUniform", "ktRadial", "Uniform"), accelerations=(4, 8),
                             pattern_accelerations={})
    from train.data.sources import build_source

    data = UndersampledDataset(build_source(cfg.data.train[0], tmp_path / "sim"), spec, seed=cfg.seed)
    seen = set()
    for epoch in (0, 1, 2):
        data.set_epoch(epoch)
        for index in range(len(data)):
            meta, us = context_sentences(data[index].context)
            assert meta in enumerated and us in enumerated, (meta, us)
            seen.add(us)
    assert len(seen) >= 4


def test_the_generalist_configs_load_and_enumerate_the_nominal_sentences():
    for name in ("generalist_finetune_gpu", "generalist_finetune_cpu", "generalist_continue_cpu",
                 "generalist_continue2_cpu", "generalist_continue3_cpu"):
        cfg = load_config(f"train/configs/{name}.yaml")
        # the third continuation starts where the second one stopped (its run folder: the latest step)
        assert cfg.model.init_from == ("runs/generalist_continue2_cpu" if name == "generalist_continue3_cpu"
                                       else "cardiomm_core/models/cardiomm_small_synthetic.safetensors")
        assert set(cfg.data.undersampling.patterns) == {"ktGaussian", "ktUniform", "ktRadial", "Uniform"}
        assert "synthetic" in cfg.description.lower() and "patient" in cfg.description.lower()
        sentences = config_sentences(cfg)
        assert len(sentences) == len(VARIED_SCANNERS) * 3 + 6 * 4
        assert "Undersampling: 24x Radial." in sentences and "Undersampling: 4x kt-Uniform." in sentences
    gpu = load_config("train/configs/generalist_finetune_gpu.yaml")
    assert gpu.train.device == "cuda" and gpu.train.amp and gpu.data.batch_size == 1
    assert gpu.data.train[0].nx_range == (96, 256) and gpu.data.train[0].coils_range == (4, 32)
    # the second CPU continuation keeps the small matrices (96 x 80) where the first one lost T1 mapping
    second = load_config("train/configs/generalist_continue2_cpu.yaml")
    assert min(source.nx_range[0] for source in second.data.train) == 96
    assert min(source.ny_range[0] for source in second.data.train) == 80
    assert second.data.train[1].modalities.count("t1map") == 2
    # the third one draws slices of whole stacks: basal and apical slices, not only the one-slice
    # phantom's mid-ventricular cut at 40 % of the ventricle
    third = load_config("train/configs/generalist_continue3_cpu.yaml")
    assert third.model.init_from == second.run_dir
    positions = set()
    for source in third.data.train:
        assert source.n_slices >= 3
        positions |= {round(float(u), 3) for u in slice_fractions(source.n_slices)}
    assert min(positions) <= 0.1 and max(positions) >= 0.85 and len(positions) >= 6
