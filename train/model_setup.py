"""The model side of a run: the network a config names, its initial weights, the text encoder
and the table of frozen text embeddings the trainer feeds it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cardiomm_core.context import ScanContext
from cardiomm_core.embedding_cache import CachedEncoder, EmbeddingCache
from cardiomm_core.model import CardioMM, CardioMMConfig, config_by_name
from cardiomm_core.prompting import context_sentences, encode_sentences
from cardiomm_core.text import canonical_encoder_name, get_encoder

from .checkpointing import read_training_checkpoint
from .config import TrainConfig

__all__ = ["EmbeddingTable", "build_model", "load_initial_weights", "make_encoder", "same_architecture"]


def build_model(cfg: TrainConfig, text_dim: int) -> torch.nn.Module:
    """The network of ``cfg.model``: ``config_by_name(cfg.model.name, text_dim)`` with
    ``cfg.model.overrides`` applied, or for ``name: varnet`` fastMRI's E2E-VarNet
    (``cardiomm_core.varnet``: its published size, ``VarNetConfig`` fields as overrides)."""
    if cfg.model.name == "varnet":
        from cardiomm_core.varnet import VarNetConfig, VarNetRecon, varnet_config_by_name

        base = varnet_config_by_name("published", text_dim).to_dict()
    else:
        base = config_by_name(cfg.model.name, text_dim).to_dict()
    unknown = sorted(set(cfg.model.overrides) - set(base))
    if unknown:
        raise ValueError(f"model.overrides: unknown key(s) {unknown}; known: {sorted(set(base) - {'kind'})}")
    for fixed, why in (("text_dim", "is set by the text encoder"), ("kind", "is set by model.name")):
        if fixed in cfg.model.overrides:
            raise ValueError(f"model.overrides: {fixed} {why}, not by an override")
    try:
        if cfg.model.name == "varnet":
            return VarNetRecon(VarNetConfig.from_dict({**base, **cfg.model.overrides}))
        config = CardioMMConfig.from_dict({**base, **cfg.model.overrides})
    except (TypeError, ValueError) as error:
        raise ValueError(f"model.overrides: {error}") from error
    return CardioMM(config)


def same_architecture(stored: Any) -> dict[str, Any]:
    """A stored architecture mapping in its current full form (fields added later take their
    defaults), to compare with a model's ``config.to_dict()``."""
    from cardiomm_core.checkpoint import architecture_from_dict

    try:
        return architecture_from_dict(stored).to_dict()
    except (TypeError, ValueError):
        return dict(stored) if isinstance(stored, dict) else {}


def load_initial_weights(model: torch.nn.Module, path: str | os.PathLike[str], encoder_name: str, encoder_dim: int) -> Path:
    """Load the weights of ``path`` into ``model`` (``model.init_from``); return the file or folder read.

    ``path``: a training checkpoint (step folder, or run folder: its latest) or an inference
    checkpoint (stem, ``.safetensors`` or ``.json``). Raises ValueError naming the differing
    architecture fields or the other text encoder, FileNotFoundError when nothing is there.
    """
    from cardiomm_core.checkpoint import load_checkpoint

    path = Path(path)
    if path.suffix in (".safetensors", ".json") or path.with_suffix(".safetensors").is_file():
        try:
            source, meta = load_checkpoint(path, text_encoder_name=encoder_name, text_encoder_dim=encoder_dim)
        except ValueError as error:
            raise ValueError(f"model.init_from {path}: {error}") from error
        state, architecture, found = source.state_dict(), source.config.to_dict(), meta.weights_path
    else:
        ckpt = read_training_checkpoint(path)
        trained_with = ckpt.meta.get("text_encoder", {}).get("name")
        if trained_with is not None and canonical_encoder_name(trained_with) != canonical_encoder_name(encoder_name):
            raise ValueError(f"model.init_from {ckpt.path} was trained with text encoder {trained_with!r}, "
                             f"this run uses {encoder_name!r}")
        state, architecture, found = ckpt.model_state(), same_architecture(ckpt.meta["architecture"]), ckpt.path
    wanted = model.config.to_dict()
    differing = sorted(k for k in set(wanted) | set(architecture) if wanted.get(k) != architecture.get(k))
    if differing:
        details = ", ".join(f"{k}: {architecture.get(k)!r} there, {wanted.get(k)!r} here" for k in differing)
        raise ValueError(f"model.init_from {found}: another architecture ({details})")
    model.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in state.items()},
                          strict=True)
    return Path(found)


class EmbeddingTable:
    """Frozen text embeddings, computed once per sentence pair (a ``CachedEncoder`` underneath).

    ``batch(contexts)`` -> (metadata ``(B, D)``, undersampling ``(B, D)``) float32 on ``device``.
    """

    def __init__(self, encoder: Any, device: torch.device, style: str = "project") -> None:
        self.encoder = encoder
        self.device = device
        self.style = style
        self._table: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, context: ScanContext) -> tuple[torch.Tensor, torch.Tensor]:
        key = context_sentences(context, self.style)
        hit = self._table.get(key)
        if hit is None:
            try:
                meta, us = encode_sentences(self.encoder, key)
            except ImportError as error:
                raise ValueError(f"the sentences {key!r} are not in the embedding cache and the text encoder "
                                 f"{self.encoder.name!r} cannot be loaded here ({error}); write them with "
                                 f"python -m train.embeddings") from error
            hit = (meta.to(self.device, torch.float32), us.to(self.device, torch.float32))
            self._table[key] = hit
        return hit

    def batch(self, contexts: Sequence[ScanContext]) -> tuple[torch.Tensor, torch.Tensor]:
        pairs = [self.get(c) for c in contexts]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])

    def __len__(self) -> int:
        return len(self._table)


def make_encoder(name: str, cache_dir: str | None) -> Any:
    """The text encoder of a run: hashing encoders as they are (cheap), others behind a
    ``CachedEncoder`` with an on-disk cache (``cache_dir`` or the default)."""
    encoder = get_encoder(name)
    if encoder.name.startswith("hashing"):
        return encoder
    return CachedEncoder(encoder, EmbeddingCache(cache_dir) if cache_dir else None)
