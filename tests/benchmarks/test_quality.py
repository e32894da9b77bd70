"""benchmarks/quality.py end to end on tiny sizes (the twins of the bench models), the CS peer's
conventions, the CS tuning script and the report merge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("sigpy", reason="sigpy is not installed (the project's bench extra)")
pytest.importorskip("fastmri", reason="fastmri is not installed (pip install --no-deps fastmri==0.3.0)")

from benchmarks import bench_train, cs_tuning, quality  # noqa: E402
from benchmarks.cs import CSSettings, cs_recon  # noqa: E402
from cardiomm_core.fft import fft2c  # noqa: E402
from cardiomm_core.masks import make_mask  # noqa: E402
from cardiomm_core.metrics import nmse  # noqa: E402
from train.data.synthetic import SyntheticCardiacDataset  # noqa: E402


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("twins")
    assert bench_train.main(["--out", str(out), "--tiny", "--tiny-steps", "2", "--log-level", "WARNING"]) == 0
    yield out
    torch.set_num_threads(threads)


def test_sigpy_fft_is_the_project_fft_on_odd_sizes():
    import sigpy as sp

    x = (np.random.default_rng(0).standard_normal((3, 13, 18))
         + 1j * np.random.default_rng(1).standard_normal((3, 13, 18))).astype(np.complex64)
    ours = fft2c(torch.from_numpy(x)).numpy()
    theirs = sp.linop.FFT(x.shape, axes=(-2, -1), center=True) * x
    assert np.allclose(theirs, ours, atol=1e-5)


def test_cs_recovers_an_undersampled_slice_better_than_zero_filling():
    sample = SyntheticCardiacDataset(1, seed=5, matrix=(32, 28), n_frames=6, n_coils=4, readout_oversampling=1)[0]
    n_c, n_t, n_ky, n_kx = sample.kspace.shape
    mask = torch.from_numpy(np.array(make_mask("ktGaussian", 4.0, n_t, n_ky, n_kx, n_acs=6, seed=1).mask,
                                     dtype=np.float32))
    kspace = sample.kspace * mask.to(torch.complex64)
    target = sample.scoring_target().numpy()
    images = cs_recon(kspace, mask, CSSettings(0.003, 0.03, 40))
    assert images.shape == (n_t, n_ky, n_kx) and images.dtype == np.complex64
    zero_filled = torch.sqrt((torch.fft.ifftshift(torch.fft.ifft2(torch.fft.ifftshift(kspace, dim=(-2, -1)),
                                                                   norm="ortho"), dim=(-2, -1)).abs() ** 2).sum(0))
    assert nmse(np.abs(images), target) < 0.5 * nmse(zero_filled.numpy(), target)
    with pytest.raises(ValueError, match="mask"):
        cs_recon(kspace, mask[:, :5], CSSettings())


@pytest.mark.slow
def test_quality_runs_end_to_end_on_tiny_sizes(twins, tmp_path):
    out = tmp_path / "q"
    args = ["--quick", "--subjects", "3", "--matrices", "24x20", "--workers", "1", "--out", str(out),
            *[f"--checkpoint={n}={twins / (n + '.safetensors')}" for n in ("small", "cardiosm", "varnet")]]
    assert quality.main(args) == 0
    data = json.loads((out / "quality.json").read_text())
    methods = {"zero_filled", "cg_sense", "cs", "small", "cardiosm", "varnet"}
    assert {r["method"] for r in data["rows"]} == methods
    assert {r["modality"] for r in data["rows"]} == {"Cine", "T1 mapping", "T2 mapping"}
    assert len(data["rows"]) == 6 * 3 * len(quality.QUICK_SETTINGS)
    assert all(np.isfinite(r["psnr"]) and np.isfinite(r["ssim"]) and np.isfinite(r["nmse"]) for r in data["rows"])
    text = (out / "quality.md").read_text()
    for words in ("CardioMM small", "CardioSM", "E2E-VarNet", "CS (sigpy)", "CG-SENSE", "Zero-filled", "**",
                  "mean PSNR at R >= 8", "python -m benchmarks.quality"):
        assert words in text
    for modality in ("cine", "t1_mapping", "t2_mapping"):
        assert (out / f"quality_{modality}.png").stat().st_size > 0
    # the same mask for every method: zero-filling scored twice gives the same numbers
    again = tmp_path / "again"
    assert quality.main(["--quick", "--subjects", "1", "--matrices", "24x20", "--workers", "1", "--out", str(again),
                         "--methods", "zero_filled"]) == 0
    first = {(r["subject"], r["pattern"]): r["psnr"] for r in data["rows"] if r["method"] == "zero_filled"}
    second = json.loads((again / "quality.json").read_text())["rows"]
    assert all(first[(r["subject"], r["pattern"])] == r["psnr"] for r in second)
    # two runs of different methods merge into one table
    merged = tmp_path / "merged"
    assert quality.main(["--merge", str(again / "quality.json"), str(out / "quality.json"), "--out", str(merged)]) == 0
    assert {r["method"] for r in json.loads((merged / "quality.json").read_text())["rows"]} == methods
    frames = quality.read_frames(merged / "quality_frames.npz")
    assert set(frames) == {"Cine", "T1 mapping", "T2 mapping"} and set(frames["Cine"]) == methods | {"reference"}
    assert (merged / "quality_cine.png").stat().st_size > 0


def test_quality_refuses_bad_arguments_in_one_line(tmp_path, capsys):
    assert quality.main(["--checkpoint", "small", "--out", str(tmp_path)]) == 2
    assert quality.main(["--checkpoint", f"small={tmp_path / 'none.safetensors'}", "--out", str(tmp_path)]) == 2
    assert quality.main(["--methods", "bogus", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("quality: error:") == 3 and "NAME=PATH" in err


def test_cs_tuning_writes_its_choice(tmp_path):
    result = cs_tuning.tune(tmp_path, quick=True, workers=1)
    data = json.loads((tmp_path / "cs_tuning.json").read_text())
    assert data["best"] == result["best"] and data["seed"] == cs_tuning.TUNING_SEED
    assert data["best"]["psnr"] == max(m["psnr"] for m in data["means"])
    from benchmarks.cs import load_tuned_settings

    settings, source = load_tuned_settings(tmp_path / "cs_tuning.json")
    assert settings.lamda_wavelet == data["best"]["lamda_wavelet"] and "tuned on seed" in source


@pytest.mark.slow
def test_prefill_skips_hashing_encoders_and_says_so(twins, tmp_path, capsys):
    args = ["--quick", "--subjects", "1", "--matrices", "24x20", "--prefill-embeddings", str(tmp_path / "cache"),
            f"--checkpoint=varnet={twins / 'varnet.safetensors'}", f"--checkpoint=cardiosm={twins / 'cardiosm.safetensors'}"]
    assert quality.main(args) == 0
    assert "0 sentences" in capsys.readouterr().err  # both read hashing encoders: nothing to carry


def test_a_stopped_run_resumes_from_its_partial_rows(tmp_path, capsys):
    args = ["--quick", "--subjects", "2", "--matrices", "24x20", "--workers", "1", "--out", str(tmp_path),
            "--methods", "zero_filled,cg_sense"]
    assert quality.main(args) == 0
    first = json.loads((tmp_path / "quality.json").read_text())["rows"]
    lines = (tmp_path / "quality.partial.jsonl").read_text().splitlines()
    assert len(lines) == 2 * len(quality.QUICK_SETTINGS)
    # as if stopped after two jobs, the last line cut in the middle
    (tmp_path / "quality.partial.jsonl").write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:40])
    capsys.readouterr()
    assert quality.main([*args, "--resume"]) == 0
    assert "taken from" in capsys.readouterr().err
    again = json.loads((tmp_path / "quality.json").read_text())["rows"]
    key = lambda r: (r["method"], r["subject"], r["pattern"], r["acceleration"])  # noqa: E731
    assert sorted(map(key, again)) == sorted(map(key, first))
    assert {key(r): r["psnr"] for r in again} == {key(r): r["psnr"] for r in first}
