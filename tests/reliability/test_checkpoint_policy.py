"""Issue 10, item 12: a remote configuration must not reveal (or load) the host's files.

A CONFIG (the warm worker's, or a ``<execute>`` child's) may name a checkpoint only inside the
packaged models folder or ``$CARDIOMM_CHECKPOINT_DIR``; the worker's own ``--checkpoint`` stays
usable. Outside, the scan gets the fallback images with one reason that is the same whether the
file exists or not, and nothing sent to the peer contains a host path.
"""

from __future__ import annotations

import os

import pytest
import torch

from cardiomm_core.checkpoint import save_checkpoint
from cardiomm_core.model import CardioMM, config_by_name
from gadgets.protocol.checkpoint_policy import (
    CHECKPOINT_DIR_VARIABLE,
    REFUSED_REASON,
    CheckpointRefused,
    check_remote_checkpoint,
)
from gadgets.protocol.wire_limits import redact_paths
from tests.gadgets.harness import run_gadget
from tests.reliability.network_helpers import images_of, play_gadgetron, start_worker, stop_worker


@pytest.fixture(scope="module")
def allowed_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("allowed")
    return str(save_checkpoint(folder / "tiny", CardioMM(config_by_name("tiny", 64)), text_encoder_name="hashing-64",
                               text_encoder_dim=64))


def meta_values(result, key: str) -> set[str]:
    return {str(image.meta.get(key)) for image in images_of(result)}


def test_policy_rules(tmp_path, monkeypatch, allowed_checkpoint):
    folder = os.path.dirname(allowed_checkpoint)
    monkeypatch.setenv(CHECKPOINT_DIR_VARIABLE, f"{tmp_path / 'other'}{os.pathsep}{folder}")
    for fine in ("packaged", "none", " PACKAGED ", allowed_checkpoint, allowed_checkpoint[:-len(".safetensors")]):
        check_remote_checkpoint(fine)
    check_remote_checkpoint("/srv/own/model.safetensors", operator_setting="/srv/own/model")  # the operator's
    outside = tmp_path / "secret.safetensors"
    outside.write_bytes(b"x")
    escape = os.path.join(folder, "link.safetensors")
    os.symlink(outside, escape)  # a link inside the allowed folder to a file outside it
    for refused in ("/etc/passwd", str(outside), f"{folder}/../secret.safetensors", escape, "relative.safetensors"):
        with pytest.raises(CheckpointRefused) as caught:
            check_remote_checkpoint(refused, operator_setting="packaged")
        assert str(caught.value) == REFUSED_REASON and "/" not in str(caught.value)


def test_redact_paths_keeps_no_directories():
    text = "checkpoint '/srv/secret dir/m1.safetensors' does not exist (looked for /srv/x/m1.json); 3/4 a/b"
    assert redact_paths(text) == "checkpoint 'm1.safetensors' does not exist (looked for m1.json); 3/4 a/b"


@pytest.mark.slow
def test_worker_refuses_checkpoints_outside_the_allowed_directories(tiny_scan, tmp_path, allowed_checkpoint):
    _path, _header, xml, recon_data = tiny_scan
    existing = tmp_path / "private.safetensors"
    existing.write_bytes(b"\x00" * 64)
    worker, port = start_worker("--checkpoint", "none", env={
        "CARDIOMM_CACHE_DIR": str(tmp_path / "cache"), CHECKPOINT_DIR_VARIABLE: os.path.dirname(allowed_checkpoint)})
    try:
        probes = {name: play_gadgetron(port, xml, recon_data, {"checkpoint": value, "device": "cpu"})
                  for name, value in (("exists", str(existing)), ("missing", str(tmp_path / "absent.safetensors")),
                                      ("system", "/etc/passwd"), ("allowed", allowed_checkpoint))}
    finally:
        assert stop_worker(worker) == 0
    reasons = set()
    for name in ("exists", "missing", "system"):
        result = probes[name]
        assert result.errors == [] and len(images_of(result)) == 4, result.errors
        assert meta_values(result, "CardioMM.Fallback") == {"true"}
        reasons |= meta_values(result, "CardioMM.FallbackReason")
    assert reasons == {REFUSED_REASON}  # the same answer whether the file exists or not, and no path in it
    allowed = probes["allowed"]
    assert allowed.errors == [] and meta_values(allowed, "CardioMM.Method") == {"cardiomm"}
    assert "refused checkpoint" in worker.log and "Traceback" not in worker.log


@pytest.mark.slow
def test_gadget_child_refuses_a_checkpoint_outside(tiny_scan, tmp_path):
    _path, _header, xml, recon_data = tiny_scan
    result = run_gadget("gadgets.recon", "CardioMMRecon", header_xml=xml, items=recon_data,
                        properties={"checkpoint": "/etc/passwd"},
                        env={"CARDIOMM_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"})
    assert result.errors == [] and result.closed, result.stderr[-3000:]
    assert meta_values(result, "CardioMM.FallbackReason") == {REFUSED_REASON}
    assert "/etc/passwd" not in "".join(str(image.meta) for image in images_of(result))
