"""The demo model shipped in the package (cardiomm_core/models): present, honest, and better than
the conventional fallback on a subject it has never seen."""

import json

import numpy as np
import pytest
import torch

from cardiomm_core.checkpoint import read_checkpoint_meta
from cardiomm_core.engine import InferenceEngine
from cardiomm_core.masks import make_mask
from cardiomm_core.metrics import evaluate
from cardiomm_core.packaged import packaged_model_path
from cardiomm_core.phantom import simulate_cardiac_scan
from cardiomm_core.recon import conventional_recon
from cardiomm_core.sense import rss_complex

pytestmark = pytest.mark.usefixtures("one_thread")


def test_packaged_model_is_installed_small_and_says_what_it_was_trained_on():
    path = packaged_model_path()
    assert path is not None, "cardiomm_core/models/cardiomm_small_synthetic.{safetensors,json} is missing"
    assert path.stat().st_size < 20 * 2**20  # a few MB: float16 storage
    meta = read_checkpoint_meta(path)
    assert meta.text_encoder_name == "minilm-l6-v2"  # the default encoder: no setting needed
    sidecar = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    text = json.dumps(sidecar).lower()
    assert "synthetic phantoms only" in text and "not trained on patient data" in text


@pytest.fixture(scope="module")
def engine():
    return InferenceEngine.from_checkpoint(packaged_model_path(), device="cpu")


@pytest.mark.parametrize("pattern,acceleration", [("ktGaussian", 8.0), ("ktUniform", 16.0)])
def test_packaged_model_beats_the_conventional_recon_on_a_new_subject(engine, pattern, acceleration):
    """A phantom seed outside every training / validation / evaluation range, at the demo's
    geometry: the model's PSNR and SSIM are above the conventional fallback's and zero-filling's."""
    scan = simulate_cardiac_scan(seed=777_001, n_slices=1, n_frames=12, n_coils=8, matrix=(96, 80),
                                 modality="cine", readout_oversampling=1)
    kspace = torch.from_numpy(scan.kspace[:1])                              # (1, C, T, ky, kx)
    target = rss_complex(kspace).abs().numpy()[0]                          # (T, y, x)
    mask = make_mask(pattern, acceleration, 12, kspace.shape[-2], kspace.shape[-1], seed=3)
    core_mask = torch.from_numpy(np.array(mask.mask, dtype=np.float32))[None, None]
    undersampled = kspace * core_mask
    context = scan.context.with_sampling(mask.acceleration, mask.pattern)
    model = evaluate(np.abs(engine.reconstruct(undersampled, core_mask, context))[0], target)
    conventional = evaluate(conventional_recon(undersampled, core_mask).images.abs().numpy()[0], target)
    zero_filled = evaluate(conventional_recon(undersampled, core_mask, method="zero_filled").images.abs().numpy()[0],
                           target)
    assert model["psnr"] > conventional["psnr"] > zero_filled["psnr"]
    assert model["ssim"] > conventional["ssim"]
