"""train.weight_average: WiSE-FT interpolation of a start checkpoint and its fine-tune."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from cardiomm_core.checkpoint import load_checkpoint, read_checkpoint_meta, save_checkpoint
from cardiomm_core.model import CardioMM, config_by_name
from train.weight_average import average_checkpoints, main

pytestmark = pytest.mark.usefixtures("one_thread")


def _checkpoint(folder, name, seed, **kwargs):
    torch.manual_seed(seed)
    model = CardioMM(config_by_name("tiny", 64))
    path = save_checkpoint(folder / name, model, text_encoder_name="hashing-64", text_encoder_dim=64,
                           training={"description": f"model {name}", "data": f"data of {name}"}, **kwargs)
    return path, model.state_dict()


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_interpolated_weights_are_the_weighted_sum_of_the_parents(tmp_path, alpha):
    start, sa = _checkpoint(tmp_path, "start", 0)
    tuned, sb = _checkpoint(tmp_path, "tuned", 1)
    out = average_checkpoints(start, tuned, alpha, tmp_path / "mixed")
    model, meta = load_checkpoint(out)
    assert sa.keys() == model.state_dict().keys()
    for name, value in model.state_dict().items():
        expected = (1 - alpha) * sa[name].double() + alpha * sb[name].double()
        torch.testing.assert_close(value.double(), expected, rtol=0, atol=1e-6, msg=name)
    # the parents differ, so the result is not one of them unless alpha says so
    differs_from_start = any(not torch.equal(model.state_dict()[k], sa[k]) for k in sa)
    assert differs_from_start == (alpha != 0.0)
    record = meta.training["interpolation"]
    assert record["alpha"] == alpha and record["method"] == "wise-ft"
    assert record["start"]["file"] == "start.safetensors"
    assert record["start"]["weights_sha256"] == read_checkpoint_meta(start).weights_sha256
    assert record["finetuned"]["training"]["description"] == "model tuned"
    assert meta.training["data"] == "data of tuned"


def test_interpolating_a_fine_tune_gives_the_output_in_between(tmp_path):
    """For a fine-tune (weights near the start, as model.init_from gives) the halfway model's output
    lies near the midpoint of the parents' outputs: the network is not broken by the mixing."""
    start, state = _checkpoint(tmp_path, "start", 0)
    torch.manual_seed(1)
    model = CardioMM(config_by_name("tiny", 64))
    model.load_state_dict({k: v + 0.02 * v.abs().mean() * torch.randn_like(v) if v.is_floating_point() else v
                           for k, v in state.items()})
    tuned = save_checkpoint(tmp_path / "tuned", model, text_encoder_name="hashing-64", text_encoder_dim=64)
    half = average_checkpoints(start, tuned, 0.5, tmp_path / "half")
    torch.manual_seed(5)
    mask = torch.zeros(1, 1, 3, 16, 1)
    mask[..., ::2, :] = 1
    mask[..., 6:10, :] = 1
    kspace = torch.randn(1, 2, 3, 16, 12, dtype=torch.complex64) * mask
    emb = torch.randn(1, 64), torch.randn(1, 64)
    outs = []
    for path in (start, half, tuned):
        net, _ = load_checkpoint(path)
        with torch.no_grad():
            outs.append(net(kspace, mask, *emb))
    assert torch.isfinite(outs[1]).all()
    spread = (outs[2] - outs[0]).abs().mean()
    assert spread > 0
    assert (outs[1] - (outs[0] + outs[2]) / 2).abs().mean() < 0.1 * spread


def test_refuses_checkpoints_that_do_not_match(tmp_path):
    start, _ = _checkpoint(tmp_path, "start", 0)
    other, _ = _checkpoint(tmp_path, "other", 1, normalisation={"kind": "max_abs"})
    with pytest.raises(ValueError, match="input normalisations differ"):
        average_checkpoints(start, other, 0.5, tmp_path / "x")
    torch.manual_seed(0)
    bigger = save_checkpoint(tmp_path / "bigger", CardioMM(dataclasses.replace(config_by_name("tiny", 64), n_cascades=3)),
                             text_encoder_name="hashing-64", text_encoder_dim=64)
    with pytest.raises(ValueError, match="architectures differ"):
        average_checkpoints(start, bigger, 0.5, tmp_path / "x")
    with pytest.raises(ValueError, match="alpha must be in"):
        average_checkpoints(start, start, 1.5, tmp_path / "x")
    assert not (tmp_path / "x.safetensors").exists()


def test_cli_writes_the_checkpoint_and_reports_errors_in_one_line(tmp_path, capsys):
    start, _ = _checkpoint(tmp_path, "start", 0)
    tuned, _ = _checkpoint(tmp_path, "tuned", 1)
    assert main([str(start), str(tuned), "--alpha", "0.25", "-o", str(tmp_path / "cli"), "--storage-dtype", "float16"]) == 0
    sidecar = json.loads((tmp_path / "cli.json").read_text())
    assert sidecar["storage_dtype"] == "float16"
    assert sidecar["training"]["interpolation"]["alpha"] == 0.25
    assert main([str(start), str(tmp_path / "missing"), "--alpha", "0.5", "-o", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "missing" in err[0]
