import gc
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch

from cardiomm_core.checkpoint import save_checkpoint
from cardiomm_core.context import ScanContext
from cardiomm_core.conventional import conventional_recon
from cardiomm_core.engine import (
    DEFAULT_NORMALISATION,
    ENGINES,
    EngineCache,
    InferenceEngine,
    ReconOutcome,
    get_engine,
    normalisation_scale,
    reconstruct_or_fallback,
)
from cardiomm_core.model import CardioMM, config_by_name
from cardiomm_core.text import HashingEncoder

CONTEXT = ScanContext(acceleration=4, pattern="ktUniform")


# tiny tensors gain nothing from intra-op threads; embedding cache in a temporary folder
pytestmark = pytest.mark.usefixtures("one_thread", "embedding_cache")


class CountingEncoder:
    """A real HashingEncoder that counts its encode calls."""

    def __init__(self, dim: int = 64) -> None:
        self.inner = HashingEncoder(dim=dim)
        self.name, self.dim, self.calls = self.inner.name, dim, 0

    def encode(self, sentences):
        self.calls += 1
        return self.inner.encode(sentences)


def tiny_model(text_dim: int = 64) -> CardioMM:
    torch.manual_seed(0)
    return CardioMM(config_by_name("tiny", text_dim))


def scan(rng, n_s=3, n_c=3, n_t=2, n_ky=13, n_kx=18):
    """numpy k-space (S, C, T, ky, kx) complex64 (zero where unsampled) and mask (S, 1, T, ky, 1)."""
    mask = (rng.random((n_s, 1, n_t, n_ky, 1)) < 0.4).astype(np.float32)
    mask[..., n_ky // 2 - 2:n_ky // 2 + 2, :] = 1
    data = rng.standard_normal((n_s, n_c, n_t, n_ky, n_kx)) + 1j * rng.standard_normal((n_s, n_c, n_t, n_ky, n_kx))
    return (data * mask).astype(np.complex64), mask


def test_reconstruct_numpy_gives_complex64_images(rng):
    engine = InferenceEngine(tiny_model(), HashingEncoder(dim=64), device="cpu")
    kspace, mask = scan(rng)
    images = engine.reconstruct(kspace, mask, CONTEXT)
    assert isinstance(images, np.ndarray) and images.dtype == np.complex64
    assert images.shape == (3, 2, 13, 18)
    assert np.isfinite(images).all() and np.abs(images).max() > 0
    # torch input, and one mask shared by every slice, give the same as the per-slice mask
    shared_mask = mask[:1]
    kspace_shared = (kspace * shared_mask).astype(np.complex64)
    a = engine.reconstruct(torch.from_numpy(kspace_shared), torch.from_numpy(shared_mask), CONTEXT)
    b = engine.reconstruct(kspace_shared, np.repeat(shared_mask, 3, axis=0), CONTEXT)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_output_follows_input_scale(rng):
    engine = InferenceEngine(tiny_model(), HashingEncoder(dim=64), device="cpu")
    kspace, mask = scan(rng, n_s=2)
    small = engine.reconstruct(kspace, mask, CONTEXT)
    large = engine.reconstruct(kspace * np.float32(10), mask, CONTEXT)
    rel = np.linalg.norm(large - 10 * small) / np.linalg.norm(10 * small)
    assert rel < 1e-3


def test_normalisation_scale_brings_acs_image_to_target(rng):
    kspace, mask = scan(rng, n_s=2)
    k, m = torch.from_numpy(kspace), torch.from_numpy(mask)
    scale = normalisation_scale(k, m)
    assert scale.shape == (2,) and (scale > 0).all()
    torch.testing.assert_close(normalisation_scale(k * 4, m), scale / 4)
    assert torch.equal(normalisation_scale(k, m, {"kind": "none"}), torch.ones(2))
    assert torch.equal(normalisation_scale(torch.zeros_like(k), m), torch.ones(2))
    with pytest.raises(ValueError, match="kind"):
        normalisation_scale(k, m, {"kind": "max_abs"})


def test_batched_equals_unbatched(rng):
    kspace, mask = scan(rng, n_s=3)
    one = InferenceEngine(tiny_model(), HashingEncoder(dim=64), device="cpu", max_batch_elems=1)
    many = InferenceEngine(tiny_model(), HashingEncoder(dim=64), device="cpu", max_batch_elems=10**9)
    assert one.slices_per_batch(kspace.shape) == 1 and many.slices_per_batch(kspace.shape) == 3
    np.testing.assert_allclose(one.reconstruct(kspace, mask, CONTEXT), many.reconstruct(kspace, mask, CONTEXT),
                               rtol=1e-4, atol=1e-5)


def test_embeddings_are_encoded_once_per_context(rng):
    encoder = CountingEncoder()
    engine = InferenceEngine(tiny_model(), encoder, device="cpu")
    kspace, mask = scan(rng, n_s=1)
    engine.reconstruct(kspace, mask, CONTEXT)
    engine.reconstruct(kspace, mask, CONTEXT)
    assert encoder.calls == 1
    engine.reconstruct(kspace, mask, CONTEXT.with_sampling(8, "ktGaussian"))
    assert encoder.calls == 2


def test_fallback_on_model_failure_gives_cg_sense(rng):
    # the model expects 32-dim embeddings, the encoder gives 64: the model fails, CG-SENSE answers
    engine = InferenceEngine(tiny_model(text_dim=32), HashingEncoder(dim=64), device="cpu")
    kspace, mask = scan(rng, n_s=2)
    outcome = reconstruct_or_fallback(engine, kspace, mask, CONTEXT)
    assert isinstance(outcome, ReconOutcome)
    assert outcome.fallback is True and outcome.method == "cg_sense"
    assert "text_dim" in outcome.reason
    assert outcome.images.dtype == np.complex64 and outcome.images.shape == (2, 2, 13, 18)
    expected = conventional_recon(torch.from_numpy(kspace), torch.from_numpy(mask), method="cg_sense").images
    np.testing.assert_allclose(outcome.images, expected.numpy(), rtol=1e-5, atol=1e-6)


def test_fallback_without_engine_and_success_path(rng):
    kspace, mask = scan(rng, n_s=1)
    none = reconstruct_or_fallback(None, kspace, mask, CONTEXT, fallback_method="zero_filled")
    assert none.fallback and none.method == "zero_filled" and none.reason
    engine = InferenceEngine(tiny_model(), HashingEncoder(dim=64), device="cpu")
    ok = reconstruct_or_fallback(engine, kspace, mask, CONTEXT)
    assert ok.fallback is False and ok.method == "cardiomm" and ok.reason is None
    np.testing.assert_array_equal(ok.images, engine.reconstruct(kspace, mask, CONTEXT))
    with pytest.raises(ValueError, match="fallback_method"):
        reconstruct_or_fallback(engine, kspace, mask, CONTEXT, fallback_method="magic")


def test_from_checkpoint_and_get_engine(rng, tmp_path):
    model = tiny_model()
    path = save_checkpoint(tmp_path / "tiny", model, text_encoder_name="hashing-64", text_encoder_dim=64,
                           normalisation=DEFAULT_NORMALISATION)
    direct = InferenceEngine(model, HashingEncoder(dim=64), device="cpu")
    loaded = InferenceEngine.from_checkpoint(path, device="cpu")
    assert loaded.text_encoder.name == "hashing-64" and loaded.normalisation == DEFAULT_NORMALISATION
    kspace, mask = scan(rng, n_s=1)
    np.testing.assert_allclose(loaded.reconstruct(kspace, mask, CONTEXT), direct.reconstruct(kspace, mask, CONTEXT),
                               rtol=1e-6, atol=1e-7)
    ENGINES.clear()
    first = get_engine(path, device="cpu")
    assert get_engine(str(path), device="cpu") is first
    with pytest.raises(ValueError, match="text encoder mismatch"):
        InferenceEngine.from_checkpoint(path, device="cpu", text_encoder=HashingEncoder(dim=32))
    ENGINES.clear()


def test_engine_cache_frees_evicted_engines(tmp_path):
    """Beyond maxsize the least recently used engine leaves the cache and, unreferenced, is collected."""
    paths = [save_checkpoint(tmp_path / f"tiny{i}", tiny_model(), text_encoder_name="hashing-64",
                             text_encoder_dim=64, normalisation=DEFAULT_NORMALISATION) for i in range(3)]
    cache = EngineCache(maxsize=2)
    seen: list[Path] = []
    first, loaded = cache.get(paths[0], "cpu", before_load=seen.append)
    assert loaded and seen == [paths[0].resolve()] and cache.loads == 1
    assert cache.get(paths[0], "cpu", before_load=seen.append) == (first, False) and len(seen) == 1
    assert isinstance(first.run_lock, type(threading.Lock())) and first.run_lock is not cache.get(paths[1], "cpu")[0].run_lock
    gone = weakref.ref(first)
    del first
    cache.get(paths[2], "cpu")  # evicts paths[0], the least recently used
    gc.collect()
    assert gone() is None and len(cache) == 2 and cache.loads == 3
    def refuse(path: Path) -> None:
        raise ValueError(f"refused {path.name}")

    with pytest.raises(ValueError, match="refused"):
        cache.get(paths[0], "cpu", before_load=refuse)
    assert len(cache) == 2 and cache.loads == 3
    with pytest.raises(ValueError, match="maxsize"):
        EngineCache(maxsize=0)


def test_bad_inputs_are_named(rng):
    engine = InferenceEngine(tiny_model(), HashingEncoder(dim=64), device="cpu")
    kspace, mask = scan(rng, n_s=2)
    with pytest.raises(ValueError, match="kspace must be complex"):
        engine.reconstruct(kspace.real, mask, CONTEXT)
    with pytest.raises(ValueError, match="mask shape"):
        engine.reconstruct(kspace, mask[:, :, :1, :5], CONTEXT)
    with pytest.raises(ValueError, match="context"):
        engine.reconstruct(kspace, mask, "cine")
    with pytest.raises(ValueError, match="max_batch_elems"):
        InferenceEngine(tiny_model(), HashingEncoder(dim=64), device="cpu", max_batch_elems=0)


@pytest.mark.cuda
def test_cuda_matches_cpu(rng, monkeypatch):
    kspace, mask = scan(rng, n_s=2, n_c=4, n_t=3, n_ky=32, n_kx=36)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # fp32 means fp32 for this comparison
    cpu = InferenceEngine(tiny_model(), HashingEncoder(dim=64), device="cpu").reconstruct(kspace, mask, CONTEXT)
    for amp, tol in ((False, 1e-3), (True, 5e-2)):
        gpu = InferenceEngine(tiny_model(), HashingEncoder(dim=64), device="cuda", amp=amp)
        out = gpu.reconstruct(kspace, mask, CONTEXT)
        assert out.dtype == np.complex64 and out.shape == cpu.shape
        assert np.linalg.norm(out - cpu) / np.linalg.norm(cpu) < tol
