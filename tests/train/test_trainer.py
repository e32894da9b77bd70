"""Trainer: learning on a fixed batch, loss, scaling as the engine scales, schedule, data order,
logs, and readable configuration errors."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from cardiomm_core.metrics import ssim as metric_ssim
from train.cli import train_main
from train.config_io import load_config
from train.data.sample import collate_examples
from train.losses import ReconLoss, ssim_torch
from train.schedule import epoch_order, lr_factor
from train.trainer import Trainer, scaled_forward

from .trainer_helpers import tiny_config, tiny_values, write_yaml

# one torch thread, and torch's deterministic-algorithms flag (the trainer sets it) restored after
pytestmark = pytest.mark.usefixtures("trainer_isolation")


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(tmp_path):
    trainer = Trainer(tiny_config(tmp_path / "run", schedule={"kind": "constant", "warmup_steps": 0}))
    batch = collate_examples([trainer.train_set[1]])

    def loss() -> torch.Tensor:
        magnitude, target, _ = scaled_forward(trainer.model, batch, trainer.embeddings, trainer.device,
                                              trainer.normalisation, amp=False)
        return trainer.loss_fn(magnitude, target).loss

    with torch.no_grad():
        before = float(loss())
    for _ in range(12):
        trainer.optimizer.zero_grad()
        loss().backward()
        trainer.optimizer.step()
    with torch.no_grad():
        after = float(loss())
    assert after < 0.8 * before, (before, after)


def test_fit_logs_csv_rows_validation_and_progress(tmp_path, capsys):
    cfg = tiny_config(tmp_path / "run", train={"epochs": 1}, log={"progress": True})
    result = Trainer(cfg).fit()
    assert result.finished and result.step == 6 and result.epoch == 1
    with open(tmp_path / "run" / "log.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    train_rows = [r for r in rows if r["kind"] == "train"]
    val_rows = [r for r in rows if r["kind"] == "val"]
    assert [int(r["step"]) for r in train_rows] == list(range(1, 7))
    assert all(math.isfinite(float(r["loss"])) and float(r["lr"]) > 0 for r in train_rows)
    assert len(val_rows) == 1 and float(val_rows[0]["psnr"]) > 5 and 0 < float(val_rows[0]["ssim"]) <= 1
    assert set(result.val_metrics) >= {"psnr", "ssim", "nmse", "loss"}
    assert result.val_metrics["n_items"] == 2
    err = capsys.readouterr().err
    assert "step 6/6" in err and "validation at step 6 (epoch 1)" in err


def test_loss_is_invariant_to_the_data_scale(tmp_path):
    """The engine's normalisation makes training blind to scanner intensity units."""
    trainer = Trainer(tiny_config(tmp_path / "run"))
    batch = collate_examples([trainer.train_set[0]])
    scaled = collate_examples([trainer.train_set[0]])
    scaled.masked_kspace = scaled.masked_kspace * 37.0
    scaled.target = scaled.target * 37.0
    with torch.no_grad():
        a = trainer.loss_fn(*scaled_forward(trainer.model, batch, trainer.embeddings, trainer.device,
                                            trainer.normalisation, False)[:2]).loss
        b = trainer.loss_fn(*scaled_forward(trainer.model, scaled, trainer.embeddings, trainer.device,
                                            trainer.normalisation, False)[:2]).loss
    assert float(a) == pytest.approx(float(b), rel=1e-4)


def test_ssim_loss_matches_the_metric_and_has_gradients(rng):
    target = torch.from_numpy(rng.random((2, 3, 19, 23)).astype(np.float32))
    recon = (target + 0.1 * torch.from_numpy(rng.standard_normal((2, 3, 19, 23)).astype(np.float32))).abs()
    recon.requires_grad_(True)
    values = ssim_torch(recon, target)
    assert values.shape == (2, 3)
    assert float(values.detach().mean()) == pytest.approx(metric_ssim(recon.detach().numpy(), target.numpy()), abs=1e-5)
    ReconLoss()(recon, target).loss.backward()
    assert recon.grad is not None and torch.isfinite(recon.grad).all() and recon.grad.abs().sum() > 0
    assert float(ssim_torch(target, target).min()) == pytest.approx(1.0, abs=1e-5)


def test_epoch_order_shards_partition_a_seeded_permutation():
    n, world = 11, 3
    shards = [epoch_order(n, seed=5, epoch=2, rank=r, world_size=world) for r in range(world)]
    assert {len(s) for s in shards} == {4}                      # padded to 12, equal per rank
    assert set().union(*map(set, shards)) == set(range(n))      # every item visited
    assert shards == [epoch_order(n, 5, 2, r, world) for r in range(world)]
    assert epoch_order(n, 5, 3, 0, 1) != epoch_order(n, 5, 2, 0, 1)
    assert sorted(epoch_order(n, 5, 3, 0, 1)) == list(range(n))


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    factors = [lr_factor(s, 20, 4, "cosine", 0.1) for s in range(20)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:]))
    assert lr_factor(20, 20, 4, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(15, 20, 4, "constant") == 1.0


@pytest.mark.parametrize("changes, words", [
    ({"optim": {"lrr": 1}}, ["optim", "'lrr'", "known"]),
    ({"data": {"train": [{"kind": "synthetic", "n_subject": 3}]}}, ["data.train[0]", "'n_subject'"]),
    ({"data": {"train": [{"kind": "dicom"}]}}, ["data.train[0].kind", "'dicom'"]),
    ({"train": {"epochs": "many"}}, ["train.epochs", "integer"]),
    ({"optim": {"betas": [0.9]}}, ["optim.betas", "2 items"]),
    ({"model": {"name": "huge"}}, ["model.name", "tiny"]),
    ({"data": {"undersampling": {"patterns": ["Spiral"]}}}, ["data.undersampling", "Spiral"]),
    ({"loss": {"ssim_window": 4}}, ["loss.ssim_window", "odd"]),
])
def test_config_errors_name_the_key(tmp_path, changes, words):
    path = write_yaml(tmp_path / "bad.yaml", tiny_values(tmp_path / "run", **changes))
    with pytest.raises(ValueError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message, message


def test_overrides_and_model_override_errors(tmp_path):
    path = write_yaml(tmp_path / "cfg.yaml", tiny_values(tmp_path / "run"))
    cfg = load_config(path, ["train.max_steps=3", "data.train.0.n_subjects=4", "optim.betas=[0.8, 0.99]"])
    assert cfg.train.max_steps == 3 and cfg.data.train[0].n_subjects == 4 and cfg.optim.betas == (0.8, 0.99)
    with pytest.raises(ValueError, match="data.train.5"):
        load_config(path, ["data.train.5.seed=1"])
    with pytest.raises(ValueError, match="KEY=VALUE|key.sub=VALUE"):
        load_config(path, ["train.max_steps"])
    with pytest.raises(ValueError, match=r"model.overrides: unknown key\(s\) \['n_cascade'\]"):
        Trainer(tiny_config(tmp_path / "run", model={"name": "tiny", "overrides": {"n_cascade": 3}}))


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[2] / "train" / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    cfg = load_config(path)
    assert cfg.data.train and cfg.model.name in ("small", "base", "varnet")


def test_cli_reports_config_errors_in_one_line(tmp_path, capsys):
    path = write_yaml(tmp_path / "bad.yaml", tiny_values(tmp_path / "run", schedule={"warmup": 3}))
    assert train_main(["--config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("cardiomm-train: error:") and "schedule" in err[-1] and "'warmup'" in err[-1]


def test_cli_refuses_to_train_into_an_earlier_run_without_resume_or_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    path = write_yaml(tmp_path / "cfg.yaml", tiny_values(run, train={"epochs": 1, "max_steps": 2},
                                                         checkpoint={"every_steps": 1}))
    assert train_main(["--config", str(path)]) == 0
    log_before = (run / "log.csv").read_bytes()
    checkpoints_before = sorted(p.name for p in (run / "checkpoints").iterdir())
    capsys.readouterr()

    assert train_main(["--config", str(path)]) == 2  # neither --resume nor --overwrite
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cardiomm-train: error:"), err
    assert "--resume" in err[0] and "--overwrite" in err[0] and str(run) in err[0]
    assert (run / "log.csv").read_bytes() == log_before  # nothing truncated
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == checkpoints_before

    assert train_main(["--config", str(path), "--resume", "--overwrite"]) == 2
    assert "not both" in capsys.readouterr().err

    (run / "checkpoints" / "step_00000099").mkdir()  # a stray later checkpoint must not survive --overwrite
    assert train_main(["--config", str(path), "--overwrite"]) == 0
    assert not (run / "checkpoints" / "step_00000099").exists()
    with open(run / "log.csv", newline="") as handle:
        steps = [int(r["step"]) for r in csv.DictReader(handle) if r["kind"] == "train"]
    assert steps == [1, 2]  # one fresh run's rows, not two runs' rows
