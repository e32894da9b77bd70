"""The main job (`make demo`): simulate, replay through the default chain, write, score."""

import re

import numpy as np
import torch
from PIL import Image

from cardiomm_core.phantom import crop_readout, simulate_cardiac_scan
from cardiomm_core.sense import rss_complex
from gadgets import demo
from gadgets.image_io import read_images
from gadgets.simulate import read_ground_truth


def test_demo_replays_scan_and_scores_it(tmp_path, capsys):
    argv = ["--out", str(tmp_path), "--matrix", "32x24", "--phases", "3", "--coils", "3"]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out

    truth = read_ground_truth(tmp_path / "demo_scan.h5")
    assert truth.images.shape == (2, 3, 24, 32) and truth.pattern == "ktGaussian"

    series = read_images(tmp_path / "demo_images.h5", group="demo")
    images = [image for group in series.values() for image in group]
    assert len(images) == 2 * 3
    assert all(image.data.shape[-2:] == (24, 32) for image in images)

    with Image.open(tmp_path / "demo_preview.png") as picture:
        assert picture.size[0] > 32 and picture.size[1] >= 3 * 24

    # the closing table scores the reconstruction and zero-filling, with finite numbers
    rows = re.findall(r"PSNR\s+(-?[\d.]+) dB\s+SSIM\s+(-?[\d.]+)", out)
    assert len(rows) >= 2
    assert all(np.isfinite(float(p)) and 0 <= float(s) <= 1 for p, s in rows)
    assert "zero-filled" in out
    # the method that produced the images is stated plainly
    assert ("CardioMM" in out) and (("fell back" in out) or ("model" in out))


def test_zero_filled_is_weaker_than_fully_sampled(tmp_path):
    assert demo.main(["--out", str(tmp_path), "--matrix", "32x24", "--phases", "3", "--coils", "3"]) == 0
    zero_filled = demo.zero_filled_rss(tmp_path / "demo_scan.h5")
    assert zero_filled.shape == (2, 3, 24, 32)
    # the same subject fully sampled: undersampling drops energy and leaves aliasing
    full_kspace = simulate_cardiac_scan(seed=0, n_slices=2, n_frames=3, n_coils=3, matrix=(32, 24),
                                        modality="cine").kspace
    full = crop_readout(rss_complex(torch.from_numpy(full_kspace)).numpy(), 32)
    assert full.shape == zero_filled.shape
    assert np.linalg.norm(zero_filled) < np.linalg.norm(full)
    assert np.linalg.norm(zero_filled - full) > 0.05 * np.linalg.norm(full)
