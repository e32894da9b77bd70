"""Exact resume: a run killed mid-epoch (SIGKILL) or stopped, then resumed, reaches the same weights
as an uninterrupted run; checkpoints are atomic and contain no pickle."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from train.checkpointing import find_latest, list_checkpoints, read_training_checkpoint
from train.trainer import Trainer

from .trainer_helpers import tiny_config, tiny_values, write_yaml

ROOT = Path(__file__).resolve().parents[2]
#: 2 epochs of 6 micro-batches, accumulated in pairs: 3 optimiser steps per epoch, 6 in all.
CHANGES = {"train": {"grad_accum": 2}, "checkpoint": {"every_steps": 1, "keep_last": 3}}


# one torch thread, and torch's deterministic-algorithms flag (the trainer sets it) restored after
pytestmark = pytest.mark.usefixtures("trainer_isolation")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    trainer = Trainer(tiny_config(tmp_path_factory.mktemp("full") / "run", **CHANGES))
    result = trainer.fit()
    assert result.finished and result.step == 6
    return {k: v.clone() for k, v in trainer.model.state_dict().items()}


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
@pytest.mark.parametrize("stop, where", [(2, (0, 4)), (3, (1, 0))])   # mid-epoch, and at an epoch end
def test_stopped_and_resumed_matches_bit_for_bit(tmp_path, uninterrupted, stop, where):
    run = tmp_path / "run"
    first = Trainer(tiny_config(run, **CHANGES)).fit(stop_after_steps=stop)
    assert not first.finished and first.step == stop
    meta = read_training_checkpoint(run).meta
    assert (meta["epoch"], meta["position"]) == where   # (epoch, micro-batches of it done: 4 of 6)
    second = Trainer(tiny_config(run, **CHANGES))
    result = second.fit(resume=True)
    assert result.finished and result.step == 6
    assert _same_weights(second.model.state_dict(), uninterrupted)


#: Runs cardiomm-train in a child that, once its first training checkpoint is on disk, writes a
#: marker and waits to be killed: the kill lands at a known point however busy the machine is.
_PAUSE_AFTER_FIRST_CHECKPOINT = """
import signal, sys
from pathlib import Path
import train.trainer as trainer_module
from train.cli import train_main

marker = Path(sys.argv[1])
original = trainer_module.write_training_checkpoint

def write_then_wait(*args, **kwargs):
    path = original(*args, **kwargs)
    marker.write_text(str(path))
    while True:
        signal.pause()

trainer_module.write_training_checkpoint = write_then_wait
sys.exit(train_main(sys.argv[2:]))
"""


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights(tmp_path, uninterrupted):
    run = tmp_path / "run"
    marker = tmp_path / "first-checkpoint-written"
    config = write_yaml(tmp_path / "cfg.yaml", tiny_values(run, **CHANGES))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-c", _PAUSE_AFTER_FIRST_CHECKPOINT, str(marker),
                                "--config", str(config), "--log-level", "WARNING"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600  # a hang guard only: the child waits for its kill
    try:
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=60)
        stderr = process.stderr.read().decode() if process.stderr else ""
        if process.stderr:
            process.stderr.close()
    assert marker.exists(), f"the run never wrote a checkpoint: {stderr}"
    assert process.returncode == -signal.SIGKILL, stderr
    killed_at = read_training_checkpoint(run)
    assert killed_at.step == 1  # killed mid-run, right after its first checkpoint
    resumed = Trainer(tiny_config(run, **CHANGES))
    assert resumed.fit(resume=True).finished
    assert _same_weights(resumed.model.state_dict(), uninterrupted)


@pytest.mark.slow
def test_resume_never_unpickles_and_files_hold_no_pickle(tmp_path, monkeypatch, uninterrupted):
    run = tmp_path / "run"
    Trainer(tiny_config(run, **CHANGES)).fit(stop_after_steps=3)
    for path in run.rglob("*"):
        if path.is_file():
            head = path.read_bytes()[:4]
            assert not head.startswith(b"\x80"), f"{path} looks like a pickle"
            assert head != b"PK\x03\x04", f"{path} looks like a torch.save zip archive"
            assert path.suffix in (".safetensors", ".json", ".csv", "") and path.name in (
                "state.safetensors", "state.json", "log.csv", "latest"), path

    def refuse(*args, **kwargs):
        raise AssertionError("resume must not unpickle")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    resumed = Trainer(tiny_config(run, **CHANGES))
    assert resumed.fit(resume=True).finished
    assert _same_weights(resumed.model.state_dict(), uninterrupted)


def test_leftovers_of_a_killed_write_are_ignored_and_damage_is_reported(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(run, **CHANGES)).fit(stop_after_steps=2)
    folders = list_checkpoints(run)
    assert [f.name for f in folders] == ["step_00000001", "step_00000002"]
    # a temporary folder left by a kill during a write, and a stale pointer
    stale = run / "checkpoints" / ".step_00000003.abc.tmp"
    stale.mkdir()
    (stale / "state.json").write_text("{")
    assert find_latest(run) == folders[-1]
    (run / "checkpoints" / "latest").write_text("step_00000099\n")
    assert find_latest(run) == folders[-1]
    # damaged tensors: the hash in the JSON says so
    blob = (folders[-1] / "state.safetensors").read_bytes()
    (folders[-1] / "state.safetensors").write_bytes(blob[:-8] + bytes(b ^ 0xFF for b in blob[-8:]))
    with pytest.raises(ValueError, match="does not match"):
        read_training_checkpoint(folders[-1])


def test_resume_refuses_another_architecture(tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(run, **CHANGES)).fit(stop_after_steps=1)
    other = Trainer(tiny_config(run, **CHANGES, model={"name": "tiny", "overrides": {"n_cascades": 3}}))
    with pytest.raises(ValueError, match="architecture"):
        other.fit(resume=True)
