"""Shared settings of the trainer tests: a tiny model on tiny synthetic phantoms, one CPU thread."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from train.config import TrainConfig
from train.config_io import config_from_dict

#: Tiny phantoms: 24 x 20 recon matrix, 2x readout oversampling, 4 frames, 3 coils.
TINY_SOURCE = {"kind": "synthetic", "n_subjects": 6, "seed": 0, "matrix": [24, 20], "n_frames": 4, "n_coils": 3,
               "readout_oversampling": 2}

TINY = {
    "seed": 3,
    "data": {
        "train": [TINY_SOURCE],
        "val": [{**TINY_SOURCE, "n_subjects": 2, "seed": 100}],
        "undersampling": {"patterns": ["ktGaussian", "ktUniform", "ktRadial"], "accelerations": [4, 8], "n_acs": 4},
    },
    "model": {"name": "tiny"},
    "text_encoder": {"name": "hashing"},
    "optim": {"lr": 0.003},
    "schedule": {"warmup_steps": 2, "min_lr_ratio": 0.1},
    "train": {"epochs": 2, "threads": 1, "deterministic": True},
    "validation": {"crop": False},
    "checkpoint": {"every_steps": 2, "keep_last": 2},
    "log": {"every_steps": 1, "progress": False, "tensorboard": False},
}


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge ``changes`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_values(run_dir: Path, **changes: Any) -> dict[str, Any]:
    return merge({**TINY, "run_dir": str(run_dir)}, changes)


def tiny_config(run_dir: Path, **changes: Any) -> TrainConfig:
    return config_from_dict(tiny_values(run_dir, **changes))


def write_yaml(path: Path, values: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return path
