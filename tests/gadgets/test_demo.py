"""The main job (`make demo`): simulate, replay through the default chain, write, score.

The demo runs once for most of these tests (``demo_run``: the default chain without a model, on a
small scan); the tests that need other settings (a model, a mapping scan) run it themselves.
"""

import contextlib
import io
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

from cardiomm_core.phantom import simulate_cardiac_scan
from cardiomm_core.readout import crop_image_readout
from cardiomm_core.sense import rss_complex
from gadgets.io.image_io import read_images
from gadgets.io.simulated_scan import read_ground_truth
from gadgets.tools import demo

#: The shared run: 2 slices (the default), 3 phases, 3 coils, 32 x 32, no model. 32 phase lines keep the
#: effective acceleration (1.8 with the 16 calibration lines) above CardioMMRecon's direct_recon_threshold
#: (1.5), so the conventional fallback (CG-SENSE) reconstructs it, not the direct FFT.
DEMO_ARGS = ["--matrix", "32x32", "--phases", "3", "--coils", "3", "--checkpoint", "none"]


class DemoRun(NamedTuple):
    """What one ``python -m gadgets.tools.demo`` wrote (``out``, read-only) and printed (``stdout``)."""

    out: Path
    stdout: str


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The demo with ``DEMO_ARGS``, run once for the session; treat its folder as read-only."""
    out = tmp_path_factory.mktemp("demo")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = demo.main(["--out", str(out), *DEMO_ARGS])
    assert code == 0, printed.getvalue()
    return DemoRun(out, printed.getvalue())


def test_demo_replays_scan_and_scores_it(demo_run):
    out = demo_run.stdout

    truth = read_ground_truth(demo_run.out / "demo_scan.h5")
    assert truth.images.shape == (2, 3, 32, 32) and truth.pattern == "ktGaussian"

    series = read_images(demo_run.out / "demo_images.h5", group="demo")
    images = [image for group in series.values() for image in group]
    assert len(images) == 2 * 3
    assert all(image.data.shape[-2:] == (32, 32) for image in images)

    with Image.open(demo_run.out / "demo_preview.png") as picture:
        assert picture.size[0] > 32 and picture.size[1] >= 3 * 32

    # the closing table scores the reconstruction and zero-filling, with finite numbers
    rows = re.findall(r"PSNR\s+(-?[\d.]+) dB\s+SSIM\s+(-?[\d.]+)", out)
    assert len(rows) >= 2
    assert all(np.isfinite(float(p)) and 0 <= float(s) <= 1 for p, s in rows)
    assert "zero-filled" in out
    # the method that produced the images is stated plainly
    assert ("CardioMM" in out) and (("fell back" in out) or ("model" in out))
    # while the replay runs it says what it is doing: a line per slice done, with the rate, no flood
    progress = re.findall(r"slice (\d)/2 done: (\d+) acquisitions read in [\d.]+ s \((\d+) acquisitions/s\)", out)
    first_replay = progress[:2]
    assert [p[0] for p in first_replay] == ["1", "2"], out
    assert int(first_replay[0][1]) < int(first_replay[1][1])
    assert len(out.splitlines()) < 20


def test_zero_filled_is_weaker_than_fully_sampled(demo_run):
    zero_filled = demo.zero_filled_rss(demo_run.out / "demo_scan.h5")
    assert zero_filled.shape == (2, 3, 32, 32)
    # the same subject fully sampled: undersampling drops energy and leaves aliasing
    full_kspace = simulate_cardiac_scan(seed=0, n_slices=2, n_frames=3, n_coils=3, matrix=(32, 32),
                                        modality="cine").kspace
    full = crop_image_readout(rss_complex(torch.from_numpy(full_kspace)).numpy(), 32)
    assert full.shape == zero_filled.shape
    assert np.linalg.norm(zero_filled) < np.linalg.norm(full)
    assert np.linalg.norm(zero_filled - full) > 0.05 * np.linalg.norm(full)


def _scores(out: str) -> dict[str, tuple[float, float]]:
    """{label: (psnr, ssim)} of the closing table."""
    found = re.findall(r"^\s+(\S.*?)\s+PSNR\s+(-?[\d.]+) dB\s+SSIM\s+(-?[\d.]+)", out, flags=re.MULTILINE)
    return {label: (float(p), float(s)) for label, p, s in found}


@pytest.mark.slow
def test_demo_with_a_model_also_scores_the_conventional_fallback(tmp_path, capsys):
    """With a model, the same scan is replayed with checkpoint=none and all three are scored."""
    from cardiomm_core.checkpoint import save_checkpoint
    from cardiomm_core.model import CardioMM, CardioMMConfig, config_by_name

    torch.manual_seed(0)
    model = CardioMM(CardioMMConfig.from_dict({**config_by_name("tiny", 64).to_dict(), "unroll": "proximal"}))
    checkpoint = save_checkpoint(tmp_path / "tiny_proximal", model, text_encoder_name="hashing-64", text_encoder_dim=64)
    # 32 lines: with the 16 calibration lines the effective acceleration (1.8) stays above
    # CardioMMRecon's direct_recon_threshold (1.5); at 24 lines (1.4) it would be reconstructed directly
    argv = ["--out", str(tmp_path / "out"), "--matrix", "32x32", "--phases", "3", "--coils", "3",
            "--checkpoint", str(checkpoint), "--device", "cpu"]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    scores = _scores(out)
    assert set(scores) == {"CardioMM", "CG-SENSE (fallback)", "zero-filled RSS"}, out
    assert "The images come from the CardioMM model" in out and "checkpoint=none" in out
    # the untrained physics-initialised network starts from the conventional recon: close to it,
    # and well above zero-filling
    assert abs(scores["CardioMM"][0] - scores["CG-SENSE (fallback)"][0]) < 3.0
    assert scores["CardioMM"][0] > scores["zero-filled RSS"][0]
    with Image.open(tmp_path / "out" / "demo_preview.png") as picture:
        assert picture.size[1] >= 4 * 24  # truth | zero-filled | CG-SENSE | CardioMM


def test_demo_without_a_model_says_it_fell_back(demo_run):
    out = demo_run.stdout
    assert set(_scores(out)) == {"CG-SENSE", "zero-filled RSS"}
    assert "fell back" in out and "checkpoint=none" not in out


def test_reference_is_the_noise_free_rss_of_prewhitened_coil_images(demo_run):
    """reference_images == RSS over coils of W s x (W: any whitening of the stored covariance)."""
    truth = read_ground_truth(demo_run.out / "demo_scan.h5")
    whitening = np.linalg.inv(np.linalg.cholesky(truth.noise_covariance.astype(np.complex128)))
    pad = (truth.sensitivities.shape[-1] - 32) // 2                          # readout oversampling
    padded = np.pad(truth.images, [(0, 0), (0, 0), (0, 0), (pad, pad)])     # (S, T, y, x_enc)
    coil_images = truth.sensitivities[:, :, None] * padded[:, None]         # (S, C, T, y, x_enc)
    whitened = np.einsum("dc,sctyx->sdtyx", whitening, coil_images)
    expected = crop_image_readout(np.sqrt((np.abs(whitened) ** 2).sum(axis=1)), 32)
    np.testing.assert_allclose(demo.reference_images(truth), expected, rtol=1e-4, atol=1e-6)


def test_demo_refuses_a_missing_checkpoint_before_simulating(tmp_path, capsys):
    argv = ["--out", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "nope.safetensors")]
    with pytest.raises(SystemExit) as stop:
        demo.main(argv)
    assert stop.value.code == 2
    assert "nope.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing simulated


def test_demo_runs_a_mapping_scan_through_the_mapping_chain(tmp_path, capsys):
    # 32 lines keep the effective acceleration above CardioMMRecon's direct_recon_threshold (1.5)
    argv = ["--out", str(tmp_path), "--modality", "t2map", "--matrix", "32x32", "--coils", "3", "--slices", "1",
            "--checkpoint", "none"]
    assert demo.main(argv) == 0
    out = capsys.readouterr().out
    assert "cardiomm_mapping_python" in out and "3 weightings" in out  # T2 mapping: 3 preparations by default
    images = [im for group in read_images(tmp_path / "demo_images.h5", group="demo").values() for im in group]
    assert sorted(int(im.contrast) for im in images) == [0, 1, 2] and {int(im.phase) for im in images} == {0}
    assert {im.meta["CardioMM.Metadata"] for im in images} == {images[0].meta["CardioMM.Metadata"]}
    assert "T2 mapping" in images[0].meta["CardioMM.Metadata"]
    assert set(_scores(out)) == {"CG-SENSE", "zero-filled RSS"}


def test_comparison_preview_labels_rows_and_shows_fixed_scale_errors():
    from gadgets.io.preview import comparison_array

    rng = np.random.default_rng(0)
    reference = rng.random((3, 20, 16)) + 0.5
    noisy = reference + 0.05 * rng.standard_normal(reference.shape)
    canvas = comparison_array(reference, [("same", reference.copy()), ("noisy", noisy)],
                              frame_names=["phase 1", "phase 2", "phase 3"])
    label_width = canvas.shape[1] - 2 * 3 * 16
    assert canvas.shape == (14 + 3 * 20, label_width + 6 * 16)
    rows = [canvas[14 + i * 20:14 + (i + 1) * 20] for i in range(3)]
    errors = [row[:, label_width + 3 * 16:] for row in rows]
    assert errors[0].max() == 0  # the reference row has no error maps
    assert errors[1].max() == 0  # a method equal to the reference: black error maps
    assert errors[2].max() > 0
    assert rows[0][:, :label_width].max() > 200  # the row label is drawn in the image (anti-aliased text)
    # a row off by a global scale only (a zero-filled RSS is about 1/R as bright) is drawn as the
    # scale-free scores see it: like the reference, black error maps; unscaled it would look dark
    dim = comparison_array(reference, [("dim", reference / 8)], frame_names=["a", "b", "c"])
    np.testing.assert_array_equal(dim[14 + 20:, label_width:label_width + 3 * 16], dim[14:34, label_width:label_width + 3 * 16])
    assert dim[14 + 20:, label_width + 3 * 16:].max() == 0
    raw = comparison_array(reference, [("dim", reference / 8)], frame_names=["a", "b", "c"], match_intensity=False)
    assert raw[14 + 20:, label_width + 3 * 16:].max() > 100
    with pytest.raises(ValueError, match="shape"):
        comparison_array(reference, [("wrong", reference[:2])], frame_names=["a", "b", "c"])
