"""Training checkpoint -> inference checkpoint (``cardiomm_core.checkpoint`` format).

``export_checkpoint(train_ckpt, out)`` reads a training checkpoint (a ``checkpoints/step_*``
folder, or a run folder: its latest), rebuilds the network from the architecture stored beside
the weights, and writes ``<out>.safetensors`` + ``<out>.json`` with ``save_checkpoint``: the
text encoder it was trained with, the input normalisation the trainer used (the engine applies
the same), and a ``training`` section saying what it was trained on. When every training source
is synthetic, the data description starts with "synthetic phantoms only" so nobody mistakes the
model for one trained on patients.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cardiomm_core.checkpoint import architecture_from_dict, build_network, save_checkpoint

from .checkpointing import read_training_checkpoint
from .config_io import config_from_dict

logger = logging.getLogger(__name__)

__all__ = ["data_description", "export_checkpoint"]


def data_description(config: dict[str, Any]) -> str:
    """What the training data was, from a run's config mapping (honest about synthetic data)."""
    from .data.sources import describe_sources

    cfg = config_from_dict(config)
    text = describe_sources(cfg.data.train)
    kinds = {s.kind for s in cfg.data.train}
    if kinds == {"synthetic"}:
        return f"synthetic phantoms only (no patient data): {text}"
    return text


def export_checkpoint(train_checkpoint: str | os.PathLike[str], out: str | os.PathLike[str], *,
                      description: str | None = None, storage_dtype: str = "float32") -> Path:
    """Export a training checkpoint as an inference checkpoint; return the ``.safetensors`` path.

    ``out``: the stem or the ``.safetensors`` / ``.json`` name. ``description`` replaces the run
    config's ``description`` in the training section. ``storage_dtype`` ("float32", "float16",
    "bfloat16") is how the weights are kept on disk (see cardiomm_core.checkpoint.save_checkpoint).
    """
    ckpt = read_training_checkpoint(train_checkpoint)
    meta = ckpt.meta
    model = build_network(architecture_from_dict(meta["architecture"]))
    model.load_state_dict(ckpt.model_state(), strict=True)
    config = meta["config"]
    training = {
        "description": description if description is not None else config.get("description", ""),
        "data": data_description(config),
        "steps": int(meta["step"]),
        "epochs_completed": int(meta["epoch"]),
        "planned_steps": int(meta.get("total_steps", meta["step"])),
        "trained_until": meta.get("created", ""),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "validation": meta.get("metrics", {}),
        "loss": config.get("loss", {}),
        "undersampling": config.get("data", {}).get("undersampling", {}),
        "model_config_name": config.get("model", {}).get("name", ""),
        "initialised_from": config.get("model", {}).get("init_from"),
        "source_checkpoint": ckpt.path.name,
        "config": config,
    }
    encoder = meta["text_encoder"]
    path = save_checkpoint(out, model, text_encoder_name=encoder["name"], text_encoder_dim=int(encoder["dim"]),
                           normalisation=meta["normalisation"], training=training,
                           storage_dtype=storage_dtype, prompt=meta.get("prompt"))
    logger.info("exported %s (step %d) to %s", ckpt.path, ckpt.step, path)
    return path
