"""The benchmark peers of issue 14 through the project's trainer, export and engine: fastMRI's
E2E-VarNet (``model.name: varnet``) and the CardioSM ablation (``overrides: {context: none}``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cardiomm_core.checkpoint import load_checkpoint, read_checkpoint_meta
from cardiomm_core.engine import InferenceEngine
from cardiomm_core.model import CardioMM, CardioMMConfig
from cardiomm_core.text import get_encoder
from train.cli import export_main
from train.model_setup import build_model
from train.trainer import Trainer

from .trainer_helpers import tiny_config

VARNET_TINY = {"name": "varnet", "overrides": {"num_cascades": 2, "chans": 4, "pools": 2, "sens_chans": 4,
                                               "sens_pools": 2}}


@pytest.fixture(scope="module")
def varnet_run(tmp_path_factory):
    pytest.importorskip("fastmri", reason="fastmri is not installed (pip install --no-deps fastmri==0.3.0)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("varnet")
    cfg = tiny_config(base / "run", model=VARNET_TINY, train={"epochs": 1, "threads": 1, "deterministic": False},
                      description="tiny VarNet")
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    result = trainer.fit()
    assert export_main([str(base / "run"), str(base / "varnet.safetensors"), "--storage-dtype", "float16"]) == 0
    yield trainer, result, before, base / "varnet.safetensors"
    torch.set_num_threads(threads)


def test_varnet_trains_with_our_trainer_and_exports_as_kind_varnet(varnet_run):
    trainer, result, before, path = varnet_run
    assert result.finished and result.step == 6 and np.isfinite(result.val_metrics["psnr"])
    changed = [k for k, v in trainer.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("varnet.cascades.") for k in changed) and any(k.startswith("varnet.sens_net.")
                                                                          for k in changed)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["architecture"]["kind"] == "varnet" and sidecar["architecture"]["num_cascades"] == 2
    assert sidecar["training"]["config"]["model"]["name"] == "varnet"
    model, meta = load_checkpoint(path)
    assert type(model).__name__ == "VarNetRecon" and meta.architecture == trainer.model.config
    state = trainer.model.state_dict()
    for key, value in model.state_dict().items():  # float16 on disk: equal to half precision
        assert torch.allclose(value, state[key].to(torch.float16).float())


def test_the_engine_runs_varnet_as_the_trainer_did(varnet_run):
    trainer, _, _, path = varnet_run
    engine = InferenceEngine.from_checkpoint(path, device="cpu", text_encoder=get_encoder("hashing"))
    example = trainer.val_set[0]
    images = engine.reconstruct(example.masked_kspace[None].numpy(), example.mask[None].numpy(), example.context)
    assert images.shape == (1, *example.masked_kspace.shape[1:]) and np.isfinite(images).all()
    assert float(np.abs(images.imag).max()) == 0.0  # a magnitude, as fastMRI's VarNet returns


def test_a_chain_refuses_a_varnet_checkpoint_in_one_line(varnet_run):
    from gadgets.recon import check_model_setting

    _, _, _, path = varnet_run
    with pytest.raises(ValueError, match="E2E-VarNet benchmark peer") as info:
        check_model_setting(str(path), "cpu")
    assert "\n" not in str(info.value)


def test_varnet_overrides_are_checked(tmp_path):
    for overrides, words in (({"chanz": 3}, "unknown key"), ({"kind": "official"}, "kind"),
                             ({"text_dim": 8}, "text_dim"), ({"chans": 0}, "chans")):
        cfg = tiny_config(tmp_path, model={"name": "varnet", "overrides": overrides})
        with pytest.raises(ValueError, match=words):
            build_model(cfg, 64)


def test_cardiosm_feeds_constant_embeddings_and_records_it(tmp_path):
    cfg = tiny_config(tmp_path / "run", model={"name": "tiny", "overrides": {"context": "none"}},
                      train={"epochs": 1, "max_steps": 2, "threads": 1, "deterministic": False})
    trainer = Trainer(cfg)
    model = trainer.model
    assert isinstance(model, CardioMM) and model.config.context == "none"
    # the output does not depend on what the text says
    example = trainer.val_set[0]
    k, m = example.masked_kspace[None], example.mask[None]
    model.eval()
    with torch.no_grad():
        a = model(k, m, torch.randn(1, 64), torch.randn(1, 64))
        b = model(k, m, torch.zeros(1, 64), torch.ones(1, 64))
    assert torch.equal(a, b)
    trainer.fit()
    assert export_main([str(tmp_path / "run"), str(tmp_path / "sm.safetensors")]) == 0
    meta = read_checkpoint_meta(tmp_path / "sm.safetensors")
    assert meta.architecture.context == "none"
    assert json.loads((tmp_path / "sm.json").read_text())["architecture"]["context"] == "none"
    # a CardioMM reads its text: another sentence gives another image
    text = CardioMM(CardioMMConfig(text_dim=64)).eval()
    with torch.no_grad():
        assert not torch.equal(text(k, m, torch.randn(1, 64), torch.randn(1, 64)),
                               text(k, m, torch.zeros(1, 64), torch.ones(1, 64)))
    with pytest.raises(ValueError, match="context"):
        CardioMMConfig(context="nothing")


def test_a_wall_clock_budget_stops_the_run_with_a_checkpoint(tmp_path):
    cfg = tiny_config(tmp_path / "run", train={"epochs": 3, "threads": 1, "deterministic": False,
                                               "max_seconds": 1e-6})
    result = Trainer(cfg).fit()
    assert not result.finished and result.step == 1 and result.checkpoint is not None


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning")
def test_a_time_schedule_reaches_its_end_with_the_budget(tmp_path):
    """schedule.by_time: the learning rate follows the spent fraction of train.max_seconds."""
    cfg = tiny_config(tmp_path / "run", schedule={"warmup_steps": 0, "min_lr_ratio": 0.1, "by_time": True},
                      train={"epochs": 3, "threads": 1, "deterministic": False, "max_seconds": 3600.0})
    trainer = Trainer(cfg)
    factor = trainer.scheduler.lr_lambdas[0]
    trainer.time_progress = 1.0  # the whole budget spent: the schedule is at its end, whatever the step
    assert abs(factor(1) - 0.1) < 1e-12
    trainer.time_progress = 0.0
    assert factor(1) > 0.9
    trainer.time_progress = 0.5  # half the time: half-way down the cosine even at step 1
    assert abs(factor(1) - (0.1 + 0.9 * 0.5)) < 0.01


def test_progress_eta_of_a_time_budgeted_run_is_the_time_left_not_the_planned_steps(tmp_path, capsys):
    """A run stopped by train.max_seconds with 1000 epochs planned: the ETA of each progress line is
    at most the budget (it used to print the time of every planned step: '1621h38m')."""
    cfg = tiny_config(tmp_path / "run", log={"every_steps": 1, "progress": True, "tensorboard": False},
                      train={"epochs": 1000, "threads": 1, "deterministic": False, "max_seconds": 1.0})
    Trainer(cfg).fit()
    etas = [line.rsplit("ETA ", 1)[1].strip() for line in capsys.readouterr().err.splitlines()
            if line.startswith("[cardiomm-train] epoch") and "ETA" in line]
    assert etas, "no progress line"
    assert all(eta in ("0m00s", "0m01s") for eta in etas), etas
