"""Export to the inference checkpoint format and evaluation against CG-SENSE and zero-filling."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cardiomm_core.checkpoint import load_checkpoint
from cardiomm_core.engine import DEFAULT_NORMALISATION, InferenceEngine
from cardiomm_core.text import get_encoder
from train.cli import eval_main, export_main
from train.data.sample import collate_examples
from train.evaluate import evaluate_checkpoint, load_eval_data
from train.trainer import Trainer, scaled_forward

from .trainer_helpers import tiny_config, tiny_values, write_yaml


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("export")
    cfg = tiny_config(base / "run", train={"epochs": 1, "threads": 1, "deterministic": False},
                      description="tiny test model")
    trainer = Trainer(cfg)
    trainer.fit()
    assert export_main([str(base / "run"), str(base / "model.safetensors")]) == 0
    yield trainer, base / "model.safetensors"
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_export_loads_with_metadata_and_the_same_weights(trained):
    trainer, path = trained
    model, meta = load_checkpoint(path, text_encoder_name="hashing", text_encoder_dim=64)
    assert meta.architecture == trainer.model.config
    assert meta.normalisation == DEFAULT_NORMALISATION
    training = meta.training
    assert training["data"].startswith("synthetic phantoms only")
    assert training["steps"] == 6 and training["description"] == "tiny test model"
    assert training["config"]["model"]["name"] == "tiny" and training["trained_until"]
    state = trainer.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["text_encoder"] == {"name": "hashing-64", "dim": 64}
    # how the model was spoken to in training travels with it
    assert sidecar["prompt"] == {"style": "project", "mask_convention": "project", "acceleration": "nominal"}


def test_engine_reproduces_what_the_trainer_computed(trained):
    """Training and inference scale the data the same way: the engine's output is the trainer's
    scaled output mapped back to the input's intensity."""
    trainer, path = trained
    engine = InferenceEngine.from_checkpoint(path, device="cpu", text_encoder=get_encoder("hashing"))
    example = trainer.val_set[0]
    batch = collate_examples([example])
    trainer.model.eval()
    with torch.no_grad():
        magnitude, _, scale = scaled_forward(trainer.model, batch, trainer.embeddings, trainer.device,
                                             trainer.normalisation, amp=False)
    images = engine.reconstruct(batch.masked_kspace, batch.mask, example.context)       # (1, T, y, x_enc)
    width = magnitude.shape[-1]
    start = images.shape[-1] // 2 - width // 2
    from_engine = np.abs(images[..., start:start + width])
    expected = (magnitude / scale.view(-1, 1, 1, 1)).numpy()
    np.testing.assert_allclose(from_engine, expected, rtol=1e-4, atol=1e-6 * expected.max())


def test_eval_writes_csv_markdown_and_png_for_every_setting(trained, tmp_path, capsys):
    _, path = trained
    out = tmp_path / "eval"
    spec = "synthetic:n_subjects=2,seed=900,matrix=32x24,n_frames=4,n_coils=3,modalities=cine+t1map"
    code = eval_main(["--checkpoint", str(path), "--data", spec, "--out", str(out), "--accelerations", "4", "8",
                      "--patterns", "ktGaussian", "Uniform", "--n-acs", "6", "--no-crop", "--convention", "2023"])
    assert code == 0
    with open(out / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    settings = {(r["method"], r["modality"], r["pattern"], float(r["acceleration"])) for r in rows}
    expected = {(m, mod, p, a) for m in ("cardiomm", "cg_sense", "zero_filled")
                for mod in ("Cine", "T1 mapping", "all") for p in ("ktGaussian", "Uniform") for a in (4.0, 8.0)}
    assert settings == expected and len(rows) == len(expected)
    for row in rows:
        assert np.isfinite(float(row["psnr"])) and 0 < float(row["ssim"]) <= 1 and float(row["nmse"]) >= 0
    # a 4x mask keeps more data than an 8x one: zero-filling is better at R = 4
    zf = {(r["pattern"], float(r["acceleration"])): float(r["psnr"]) for r in rows
          if r["method"] == "zero_filled" and r["modality"] == "all"}
    assert zf[("Uniform", 4.0)] > zf[("Uniform", 8.0)]
    with open(out / "per_slice.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 3 * 2 * 2 * 2
    markdown = (out / "metrics.md").read_text()
    assert "| Pattern | R | CardioMM PSNR | CG-SENSE PSNR | Zero-filled PSNR" in markdown
    assert "## Cine" in markdown and "## All modalities" in markdown
    assert "PSNR gain over CG-SENSE (dB) | n |" in markdown and "conventional fallback" in markdown
    # the gain column is the difference of the two PSNR columns
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 13 and cells[0] in ("ktGaussian", "Uniform"):
            assert abs(float(cells[2]) - float(cells[3]) - float(cells[11])) < 0.011
    assert markdown in capsys.readouterr().out
    with Image.open(out / "metrics.png") as figure:
        assert figure.format == "PNG" and figure.size[0] > 400
        colours = {c for _, c in figure.convert("RGB").getcolors(1 << 20)}
    assert (214, 39, 40) in colours and (31, 119, 180) in colours    # the CardioMM and CG-SENSE lines


def test_eval_data_from_a_training_config_and_readable_spec_errors(tmp_path, capsys):
    config = write_yaml(tmp_path / "cfg.yaml", tiny_values(tmp_path / "run"))
    dataset, description = load_eval_data(config)
    assert len(dataset) == 2 and "seed 100" in description           # the config's validation source
    with pytest.raises(ValueError, match="start with one of"):
        load_eval_data("phantoms:n_subjects=2")
    with pytest.raises(ValueError, match="n_subject"):
        load_eval_data("synthetic:n_subject=2")
    assert eval_main(["--checkpoint", "none", "--data", "synthetic:n_subjects=0", "--out", str(tmp_path / "e")]) == 2
    assert "n_subjects" in capsys.readouterr().err


def test_plain_cg_sense_is_the_unregularised_reference():
    """On request, the textbook per-frame CG-SENSE: same masks and maps as the fallback, no temporal
    regularisation, so at R = 8 on a kt pattern it is well below the fallback."""
    dataset, _ = load_eval_data("synthetic:n_subjects=1,seed=31,matrix=48x40,n_frames=6,n_coils=6,readout_oversampling=1")
    rows = evaluate_checkpoint(None, dataset, accelerations=[8], patterns=["ktGaussian"],
                               methods=["cg_sense", "cg_sense_plain"], crop=False)
    psnr = {row.method: row.psnr for row in rows}
    assert set(psnr) == {"cg_sense", "cg_sense_plain"}
    assert psnr["cg_sense"] > psnr["cg_sense_plain"] + 1.0
    with pytest.raises(ValueError, match="methods must be among"):
        evaluate_checkpoint(None, dataset, methods=["sense"])


# -- model.init_from: fine-tuning from a run or an exported model ----------------------------------

def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_init_from_a_run_folder_or_an_exported_checkpoint_takes_its_weights(trained, tmp_path):
    trainer, path = trained
    fresh = Trainer(tiny_config(tmp_path / "fresh"))
    assert not _same_weights(fresh.model, trainer.model)
    from_run = Trainer(tiny_config(tmp_path / "a", model={"name": "tiny", "init_from": str(path.parent / "run")}))
    assert _same_weights(from_run.model, trainer.model)
    assert from_run.step == 0 and from_run.optimizer.state == {}                 # weights only
    from_export = Trainer(tiny_config(tmp_path / "b", model={"name": "tiny", "init_from": str(path)}))
    assert _same_weights(from_export.model, trainer.model)
    from_export.fit(stop_after_steps=1)                                          # and it trains on
    assert from_export.step == 1 and not _same_weights(from_export.model, trainer.model)
    assert export_main([str(tmp_path / "b"), str(tmp_path / "tuned.safetensors")]) == 0
    _, meta = load_checkpoint(tmp_path / "tuned.safetensors", text_encoder_name="hashing")
    assert meta.training["initialised_from"] == str(path) and meta.training["steps"] == 1


@pytest.mark.parametrize("changes, words", [
    ({"model": {"name": "tiny", "overrides": {"n_cascades": 1}}}, ["another architecture", "n_cascades"]),
    ({"text_encoder": {"name": "hashing-32"}}, ["hashing"]),
])
def test_init_from_another_architecture_or_encoder_is_refused(trained, tmp_path, changes, words):
    trainer, path = trained
    for source in (str(path.parent / "run"), str(path)):
        model = {**changes.get("model", {"name": "tiny"}), "init_from": source}
        with pytest.raises(ValueError) as error:
            Trainer(tiny_config(tmp_path / "x", **{**changes, "model": model}))
        assert all(word in str(error.value) for word in words), str(error.value)


def test_init_from_nothing_there_is_a_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        Trainer(tiny_config(tmp_path / "x", model={"name": "tiny", "init_from": str(tmp_path / "missing")}))


def test_a_run_in_the_official_style_exports_its_prompt_and_the_engine_speaks_it(tmp_path):
    """prompt.style and data.undersampling.convention travel from the run to the exported sidecar,
    and the engine built from it renders the official sentences."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = tiny_config(tmp_path / "run", prompt={"style": "official"},
                          data={"undersampling": {"convention": "official"}, "val": []},
                          train={"epochs": 1, "max_steps": 1, "threads": 1, "deterministic": False},
                          validation={"every_epochs": 0})
        trainer = Trainer(cfg)
        assert trainer.embeddings.style == "official"
        trainer.fit()
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "official.safetensors"
    assert export_main([str(tmp_path / "run"), str(out)]) == 0
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["prompt"] == {"style": "official", "mask_convention": "official", "acceleration": "nominal"}
    engine = InferenceEngine.from_checkpoint(out, device="cpu", text_encoder=get_encoder("hashing"))
    assert engine.sentences(trainer.train_set[0].context)[1].endswith(("x uniform.", "x random.", "x radial."))
