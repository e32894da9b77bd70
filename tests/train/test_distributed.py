"""Data-parallel training on the CPU (gloo): two processes stay in lock-step and equal one process
that accumulates the same two examples per step; ``torchrun`` drives the CLI."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from train.checkpointing import read_training_checkpoint
from train.schedule import DistInfo
from train.trainer import Trainer

from .trainer_helpers import merge, tiny_config, tiny_values, write_yaml

pytestmark = pytest.mark.slow  # every test here takes seconds (processes, servers): `make test-fast` skips them

ROOT = Path(__file__).resolve().parents[2]
#: 4 training items: 2 steps per epoch on 2 ranks with batch 1 (or 1 rank accumulating 2).
CHANGES = {"data": {"train": [{"kind": "synthetic", "n_subjects": 4, "seed": 0, "matrix": [24, 20], "n_frames": 4,
                               "n_coils": 3, "readout_oversampling": 2}]},
           "train": {"epochs": 2}, "checkpoint": {"every_steps": 1}}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, world_size: int, port: int, run_dir: str, out_dir: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    trainer = Trainer(tiny_config(Path(run_dir), **CHANGES), dist_info=DistInfo(rank, world_size, rank))
    try:
        result = trainer.fit()
        state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(state, os.path.join(out_dir, f"rank{rank}.safetensors"))
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
            json.dump({"step": result.step, "val": result.val_metrics}, handle)
    finally:
        trainer.close()


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, _free_port(), str(base / "run"), str(base)), nprocs=2, join=True)
    return base


def test_two_gloo_ranks_hold_identical_weights(ddp_run):
    rank0 = load_file(ddp_run / "rank0.safetensors")
    rank1 = load_file(ddp_run / "rank1.safetensors")
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    info = [json.loads((ddp_run / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert info[0]["step"] == info[1]["step"] == 4
    # validation is sharded and all-reduced: both ranks report the same numbers over both items
    assert info[0]["val"] == info[1]["val"] and info[0]["val"]["n_items"] == 2
    # rank 0 alone wrote checkpoints, and they hold the final weights
    ckpt = read_training_checkpoint(ddp_run / "run")
    assert ckpt.step == 4 and ckpt.meta["sampler"]["world_size"] == 2
    saved = ckpt.model_state()
    assert all(torch.equal(saved[k], rank0[k]) for k in rank0)


def test_data_parallel_equals_one_process_accumulating(ddp_run, tmp_path):
    torch.set_num_threads(1)
    single = Trainer(tiny_config(tmp_path / "run", **merge(CHANGES, {"train": {"grad_accum": 2}})))
    initial = {k: v.clone() for k, v in single.model.state_dict().items()}
    assert single.fit().step == 4
    rank0 = load_file(ddp_run / "rank0.safetensors")
    for name, value in single.model.state_dict().items():
        torch.testing.assert_close(value, rank0[name], rtol=1e-3, atol=2e-4, msg=name)
    moved = max(float((rank0[k] - initial[k]).abs().max()) for k in initial)
    assert moved > 1e-3  # the weights did train


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is not installed beside this Python")
def test_torchrun_launches_the_cli(tmp_path):
    run = tmp_path / "run"
    config = write_yaml(tmp_path / "cfg.yaml", tiny_values(run, **merge(CHANGES, {"train": {"epochs": 1}})))
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([torchrun, "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
                             str(_free_port()), "-m", "train.cli", "--config", str(config), "--log-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_training_checkpoint(run).step == 2
    assert result.stderr.count("cardiomm-train: step 2, epoch 1, finished") == 1   # rank 0 reports, alone
    rows = (run / "log.csv").read_text().splitlines()
    assert len([r for r in rows if r.startswith("train,")]) == 2
