"""CardioMM: a text-conditioned unrolled network for accelerated (cardiac) MR reconstruction.

The architecture follows the CardioMM figure (wangziblake/CardioMM_MMCMR-427K) and its PromptMR /
PromptMR+ ancestry, written as plain ``torch.nn`` modules:

    metadata sentence ──▶ frozen text encoder ──▶ metadata projection head ──▶ metadata adapter (FiLM)
    undersampling sentence ─▶ frozen encoder ──▶ undersampling projection head ─▶ undersampling prompter
                                                                                     │
    masked k-space ─▶ sensitivity network (ACS region ─▶ small U-Net ─▶ RSS normalisation)
                   └▶ cascade x N: k ─▶ A^H ─▶ channel-attention U-Net (decoder conditioned by both
                                      heads, n_adjacent frames in, centre frame out) ─▶ A ─▶ data
                                      consistency with the measured k-space
                   ─▶ coil-combined image

Two unrolls share the text conditioning and the prior U-Net (``CardioMMConfig.unroll``):

- ``"kspace"`` (the diagram above; PromptMR / E2E-VarNet): zero-filled start, learned
  sensitivities, prior updates added in coil k-space, soft k-space data consistency. Needs long
  training (GPU-days in the papers) before it beats a conventional reconstruction.
- ``"proximal"`` (physics-initialised, MoDL-style): the cascades start from the conventional
  reconstruction (``cardiomm_core.conventional.conventional_recon``: regularised CG-SENSE, with its
  estimated maps, refined by a residual sensitivity U-Net); each cascade adds the prior's residual
  in image space, ``z = x + prior(x)``, then solves ``min ||A x - y||^2 + lam ||x - z||^2`` with a
  few conjugate-gradient steps (``lam`` learned per cascade). The prior's and the refiner's last
  convolutions start at zero, so the untrained network reproduces the conventional recon (up to
  the data-consistency steps) and training only has to learn what improves on it: the packaged
  demo model, trained on two CPU cores, uses it.

Shapes (core convention, DESIGN.md):

    masked_kspace  (B, C, T, ky, kx)  complex64, zeros where unsampled
    mask           (B, 1, T, ky, kx|1) real or bool
    metadata_emb       (B, D)              frozen text embedding of the metadata sentence
    sampling_emb         (B, D)              frozen text embedding of the undersampling sentence
    image          (B, T, y, x)        complex64
    sens           (B, C, 1, y, x)     complex64

Modules: this one holds the configuration, the cascades and ``CardioMM``; the U-Net and its
text conditioning are in :mod:`cardiomm_core.prompt_unet`, the physics of the cascades (data
consistency, sensitivity networks, the proximal start) in :mod:`cardiomm_core.unroll`.

GPU design: all frames of a slice go through each U-Net in one batched call (frames folded into the
batch axis, neighbouring frames gathered by an index tensor), the physics (FFTs, complex
arithmetic, data consistency) runs in float32/complex64 with autocast disabled while the U-Nets may
run under bf16 autocast, convolutions accept channels_last, and the cascades contain no
data-dependent Python control flow (friendly to torch.compile / CUDA graphs). The auto-calibration
region is found once per forward (or passed in precomputed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .checks import check_model_inputs, dataclass_fields_from, dataclass_to_json
from .coils import acs_region_mask
from .prompt_unet import NormPromptUnet, ProjectionHead, PromptUnet
from .sense import sens_expand, sens_reduce
from .unroll import (
    DataConsistency,
    ProximalDataConsistency,
    SensitivityNet,
    SensitivityRefiner,
    adjacent_frame_index,
    apply_prior,
    conventional_start,
    no_autocast,
)

logger = logging.getLogger(__name__)

__all__ = [
    "CardioMMConfig",
    "config_by_name",
    "CONFIG_NAMES",
    "UNROLL_MODES",
    "CONTEXT_MODES",
    "count_parameters",
    "CardioMM",
    "CardioMMOutput",
]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


def _as_int_tuple(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ValueError(f"{name} must be a sequence of integers, got {value!r}")
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a sequence of integers, got {value!r}") from None
    if any(v < 0 for v in out):
        raise ValueError(f"{name} must contain non-negative integers, got {value!r}")
    return out


@dataclass
class CardioMMConfig:
    """Every hyper-parameter of :class:`CardioMM` (stored beside the weights in checkpoints).

    Per-level tuples have one entry per U-Net level (``n_pools`` entries, finest level first).
    """

    #: dimension of the frozen text embeddings fed to the projection heads
    text_dim: int = 64
    #: dimension of the projected embeddings used by the adapters / prompters
    embed_dim: int = 32
    #: number of unrolled cascades (prior + data consistency)
    n_cascades: int = 2
    #: neighbouring frames given to the prior as input channels (odd; circular in time)
    n_adjacent: int = 3
    #: channels of the first (full-resolution) U-Net level
    chans: int = 8
    #: number of down-sampling steps of the U-Net (inputs are padded to a multiple of 2**n_pools)
    n_pools: int = 2
    #: channels after each down-sampling step
    feature_dims: tuple[int, ...] = (12, 16)
    #: undersampling-prompt channels injected at each decoder level
    prompt_dims: tuple[int, ...] = (4, 8)
    #: number of learned prompt components at each decoder level
    n_prompts: tuple[int, ...] = (3, 3)
    #: spatial size of the learned prompt components (interpolated to the feature size)
    prompt_sizes: tuple[int, ...] = (16, 8)
    #: channel-attention blocks (CAB) in each encoder level / decoder level / skip connection
    n_enc_cab: tuple[int, ...] = (1, 1)
    n_dec_cab: tuple[int, ...] = (1, 1)
    n_skip_cab: tuple[int, ...] = (0, 0)
    #: CABs in the bottleneck
    n_bottleneck_cab: int = 1
    #: channel-attention squeeze ratio and switch
    ca_reduction: int = 4
    use_ca: bool = True
    #: sensitivity network: first-level channels and pooling steps of its U-Net
    sens_chans: int = 4
    sens_pools: int = 2
    #: data consistency: initial soft weight in (0, 1), or exact replacement when hard_dc
    dc_weight_init: float = 0.5
    hard_dc: bool = False
    #: gradient checkpointing of each cascade while training (saves memory, costs a recompute)
    use_checkpoint: bool = False
    #: how the cascades are unrolled (see :data:`UNROLL_MODES`):
    #: ``"kspace"``: E2E-VarNet / PromptMR: zero-filled start, learned sensitivity maps from the
    #: ACS region, each cascade adds the prior's update in coil k-space and applies the soft
    #: (or hard) k-space data consistency above;
    #: ``"proximal"``: physics-initialised (MoDL-style): start from the conventional recon
    #: (:func:`cardiomm_core.conventional.conventional_recon`, no gradient) with its estimated maps, refined
    #: by a residual sensitivity network; each cascade adds the prior's residual in image space and
    #: solves ``min ||A x - y||^2 + lam ||x - z||^2`` by ``cg_iterations`` conjugate-gradient steps
    #: with a learned ``lam`` per cascade. Prior and map refinement start at zero, so the untrained
    #: network already reproduces the conventional recon and training learns corrections to it.
    unroll: str = "kspace"
    #: conjugate-gradient iterations of each proximal data-consistency step (``unroll="proximal"``)
    cg_iterations: int = 4
    #: initial ``lam`` of the proximal data consistency (operator scale: rss-normalised maps put
    #: the eigenvalues of ``A^H A`` in [0, 1])
    prox_weight_init: float = 0.5
    #: what the two projection heads read (see :data:`CONTEXT_MODES`): ``"text"``, the frozen
    #: text embeddings of the metadata and undersampling sentences (CardioMM); ``"none"``, the
    #: CardioSM ablation of the paper: the same network with the text context removed, i.e. the
    #: embeddings replaced by zeros for every scan, so each head gives one learned constant
    #: vector (LayerNorm of zeros is its bias, then the MLP) and no scan-specific information
    #: enters the network through the adapters and prompters
    context: str = "text"

    _TUPLE_FIELDS = ("feature_dims", "prompt_dims", "n_prompts", "prompt_sizes",
                     "n_enc_cab", "n_dec_cab", "n_skip_cab")
    #: fields added after the first checkpoints were written: missing in a stored mapping, they
    #: take their defaults (the behaviour of the model before they existed)
    _LATER_FIELDS = ("unroll", "cg_iterations", "prox_weight_init", "context")

    def __post_init__(self) -> None:
        for name in self._TUPLE_FIELDS:
            setattr(self, name, _as_int_tuple(name, getattr(self, name)))
        for name in ("text_dim", "embed_dim", "n_cascades", "n_adjacent", "chans", "n_pools",
                     "ca_reduction", "sens_chans", "sens_pools"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.n_bottleneck_cab < 0:
            raise ValueError(f"n_bottleneck_cab must be >= 0, got {self.n_bottleneck_cab!r}")
        if self.n_adjacent % 2 != 1:
            raise ValueError(f"n_adjacent must be odd (centre frame plus neighbours), got {self.n_adjacent}")
        for name in self._TUPLE_FIELDS:
            if len(getattr(self, name)) != self.n_pools:
                raise ValueError(f"{name} must have n_pools={self.n_pools} entries, got {getattr(self, name)}")
        for name in ("feature_dims", "prompt_dims", "n_prompts", "prompt_sizes"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"{name} entries must be >= 1, got {getattr(self, name)}")
        if not 0.0 < float(self.dc_weight_init) < 1.0:
            raise ValueError(f"dc_weight_init must lie in (0, 1), got {self.dc_weight_init!r}")
        self.dc_weight_init = float(self.dc_weight_init)
        if self.unroll not in UNROLL_MODES:
            raise ValueError(f"unroll must be one of {UNROLL_MODES}, got {self.unroll!r}")
        if not isinstance(self.cg_iterations, int) or isinstance(self.cg_iterations, bool) or self.cg_iterations < 1:
            raise ValueError(f"cg_iterations must be a positive integer, got {self.cg_iterations!r}")
        if not (isinstance(self.prox_weight_init, (int, float)) and math.isfinite(self.prox_weight_init)
                and self.prox_weight_init > 0):
            raise ValueError(f"prox_weight_init must be a positive number, got {self.prox_weight_init!r}")
        self.prox_weight_init = float(self.prox_weight_init)
        if self.context not in CONTEXT_MODES:
            raise ValueError(f"context must be one of {CONTEXT_MODES}, got {self.context!r}")
        self.hard_dc = bool(self.hard_dc)
        self.use_ca = bool(self.use_ca)
        self.use_checkpoint = bool(self.use_checkpoint)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (tuples become lists)."""
        return dataclass_to_json(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CardioMMConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys are a ValueError naming them."""
        return cls(**dataclass_fields_from(cls, values, "CardioMMConfig mapping", may_be_missing=cls._LATER_FIELDS))


#: Values of :attr:`CardioMMConfig.unroll`.
UNROLL_MODES = ("kspace", "proximal")
#: Values of :attr:`CardioMMConfig.context`: "text" (CardioMM) or "none" (the CardioSM ablation).
CONTEXT_MODES = ("text", "none")

CONFIG_NAMES = ("tiny", "small", "base")


def config_by_name(name: str, text_dim: int) -> CardioMMConfig:
    """Named configurations.

    - ``tiny``: unit tests, seconds on a CPU (< 0.5 M parameters).
    - ``small``: a few million parameters, trainable on one GPU in minutes, usable on a CPU.
    - ``base``: PromptMR-class capacity (12 cascades, 5 adjacent frames, about 82 M parameters),
      laid out for a GPU budget (see the comment below).
    """
    if name == "tiny":
        return CardioMMConfig(text_dim=text_dim)
    if name == "small":
        return CardioMMConfig(
            text_dim=text_dim, embed_dim=64, n_cascades=6, n_adjacent=3, chans=24, n_pools=3,
            feature_dims=(36, 48, 60), prompt_dims=(12, 24, 36), n_prompts=(3, 3, 3),
            prompt_sizes=(32, 16, 8), n_enc_cab=(1, 2, 2), n_dec_cab=(1, 1, 2),
            n_skip_cab=(0, 0, 0), n_bottleneck_cab=2, ca_reduction=4, sens_chans=8, sens_pools=3,
        )
    if name == "base":
        # PromptMR-class capacity (~82 M parameters, 12 cascades, 5 adjacent frames) with the
        # work moved away from full resolution: one CAB per level-0 stage, capacity in the deeper
        # levels. ~6.2 TFLOP per CMRxRecon cine slice (12 frames, 246 x 256) against ~11.2 for
        # PromptMR's own level layout (chans 48, dims 72/96/120, CABs 2/3/3), for the <= 50 ms
        # per slice bf16 budget on an H100 (benchmarks/README.md).
        return CardioMMConfig(
            text_dim=text_dim, embed_dim=256, n_cascades=12, n_adjacent=5, chans=32, n_pools=3,
            feature_dims=(64, 96, 144), prompt_dims=(16, 32, 64), n_prompts=(3, 3, 3),
            prompt_sizes=(64, 32, 16), n_enc_cab=(1, 2, 3), n_dec_cab=(1, 2, 3),
            n_skip_cab=(0, 0, 1), n_bottleneck_cab=4, ca_reduction=4, sens_chans=16, sens_pools=4,
        )
    raise ValueError(f"name must be one of {list(CONFIG_NAMES)}, got {name!r}")


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _frame_prior(cfg: CardioMMConfig, residual: bool) -> NormPromptUnet:
    """A cascade's text-conditioned prior: ``n_adjacent`` complex frames in, the centre frame out."""
    unet = PromptUnet(
        2 * cfg.n_adjacent, 2, cfg.chans, cfg.feature_dims, cfg.n_enc_cab, cfg.n_dec_cab,
        cfg.n_skip_cab, cfg.n_bottleneck_cab, cfg.ca_reduction, cfg.use_ca,
        embed_dim=cfg.embed_dim, prompt_dims=cfg.prompt_dims, n_prompts=cfg.n_prompts,
        prompt_sizes=cfg.prompt_sizes,
    )
    return NormPromptUnet(unet, 1, residual=residual)


class _ProximalCascade(nn.Module):
    """Image-space cascade: ``z = x + prior(x)`` (residual, starts at 0), then
    :class:`ProximalDataConsistency`."""

    def __init__(self, cfg: CardioMMConfig) -> None:
        super().__init__()
        self.prior = _frame_prior(cfg, residual=True)
        self.dc = ProximalDataConsistency(cfg.prox_weight_init, cfg.cg_iterations)

    def forward(self, image: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor,
                metadata: torch.Tensor, sampling: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        update = apply_prior(self.prior, image, metadata, sampling, neighbours)
        with no_autocast(image.device):
            return self.dc(image + update, k0, mask, sens)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class CardioMMOutput(NamedTuple):
    """``image (B, T, y, x)``, ``kspace (B, C, T, ky, kx)`` final estimate, ``sens (B, C, 1, y, x)``."""

    image: torch.Tensor
    kspace: torch.Tensor
    sens: torch.Tensor


class _Cascade(nn.Module):
    def __init__(self, cfg: CardioMMConfig) -> None:
        super().__init__()
        self.prior = _frame_prior(cfg, residual=False)
        self.dc = DataConsistency(cfg.dc_weight_init, cfg.hard_dc)

    def forward(self, kspace: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor,
                metadata: torch.Tensor, sampling: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        with no_autocast(kspace.device):
            image = sens_reduce(kspace, sens)                                   # (B, T, y, x)
        update = apply_prior(self.prior, image, metadata, sampling, neighbours)
        with no_autocast(kspace.device):
            return self.dc(kspace + sens_expand(update, sens), k0, mask)


class CardioMM(nn.Module):
    """Text-conditioned unrolled reconstruction network (see the module docstring).

    ``forward(masked_kspace (B,C,T,ky,kx) complex64, mask (B,1,T,ky,kx|1), metadata_emb (B,D),
    sampling_emb (B,D)) -> image (B,T,y,x) complex64``; D is ``config.text_dim``.
    """

    def __init__(self, config: CardioMMConfig) -> None:
        super().__init__()
        if not isinstance(config, CardioMMConfig):
            raise ValueError(f"config must be a CardioMMConfig, got {type(config).__name__}")
        self.config = config
        self.meta_head = ProjectionHead(config.text_dim, config.embed_dim)
        self.us_head = ProjectionHead(config.text_dim, config.embed_dim)
        self.cascades: nn.ModuleList
        self.sens_net: nn.Module
        if config.unroll == "proximal":
            self.sens_net = SensitivityRefiner(config.sens_chans, config.sens_pools, config.ca_reduction,
                                               config.use_ca)
            self.cascades = nn.ModuleList(_ProximalCascade(config) for _ in range(config.n_cascades))
        else:
            self.sens_net = SensitivityNet(config.sens_chans, config.sens_pools, config.ca_reduction,
                                           config.use_ca)
            self.cascades = nn.ModuleList(_Cascade(config) for _ in range(config.n_cascades))

    # -- conveniences --------------------------------------------------------------------------

    def to_channels_last(self) -> CardioMM:
        """Convolution weights and U-Net inputs in channels_last (faster convolutions on GPUs)."""
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # nn.Module.to accepts it; its stubs do not say so
        for module in self.modules():
            if isinstance(module, NormPromptUnet):
                module.channels_last = True
        return self

    # -- forward ---------------------------------------------------------------------------------

    def forward_with_intermediates(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                                   metadata_emb: torch.Tensor, sampling_emb: torch.Tensor,
                                   acs: torch.Tensor | None = None) -> CardioMMOutput:
        """Like :meth:`forward`, returning ``CardioMMOutput(image, kspace, sens)``.

        ``acs (B|1, 1, 1, ky, kx|1)`` optionally gives the auto-calibration region
        (see :func:`cardiomm_core.coils.acs_region_mask`); by default it is found from ``mask``.
        """
        check_model_inputs(masked_kspace, mask, metadata_emb, sampling_emb, text_dim=self.config.text_dim,
                           hint="was the model trained with another text encoder?")
        n_b, _, n_t = masked_kspace.shape[:3]
        mask = mask.expand(n_b, 1, n_t, *mask.shape[-2:])
        metadata_emb = metadata_emb.to(torch.float32).expand(n_b, -1)
        sampling_emb = sampling_emb.to(torch.float32).expand(n_b, -1)
        if self.config.context == "none":  # CardioSM: constant (zero) embeddings, whatever the scan
            metadata_emb = torch.zeros_like(metadata_emb)
            sampling_emb = torch.zeros_like(sampling_emb)
        metadata = self.meta_head(metadata_emb)
        sampling = self.us_head(sampling_emb)
        with no_autocast(masked_kspace.device):
            k0 = masked_kspace * mask.to(torch.float32)
        neighbours = adjacent_frame_index(n_t, self.config.n_adjacent, masked_kspace.device)
        if self.config.unroll == "proximal":
            return self._forward_proximal(k0, mask, metadata, sampling, neighbours)
        if acs is None:
            acs = acs_region_mask(mask)
        sens = self.sens_net(k0, mask, acs.to(torch.float32))
        kspace = self._run_cascades(k0, k0, mask, sens, metadata, sampling, neighbours)
        with no_autocast(masked_kspace.device):
            image = sens_reduce(kspace, sens)
        return CardioMMOutput(image, kspace, sens)

    def _forward_proximal(self, k0: torch.Tensor, mask: torch.Tensor, metadata: torch.Tensor, sampling: torch.Tensor,
                          neighbours: torch.Tensor) -> CardioMMOutput:
        image, sens0 = conventional_start(k0, mask)
        sens = self.sens_net(sens0)
        image = self._run_cascades(image, k0, mask, sens, metadata, sampling, neighbours)
        with no_autocast(k0.device):
            return CardioMMOutput(image, sens_expand(image, sens), sens)

    def _run_cascades(self, x: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor,
                      metadata: torch.Tensor, sampling: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        """``x`` (k-space or image, as the unroll has it) through every cascade; activation
        checkpointing while training when ``config.use_checkpoint``."""
        for cascade in self.cascades:
            if self.config.use_checkpoint and self.training and torch.is_grad_enabled():
                x = checkpoint(cascade, x, k0, mask, sens, metadata, sampling, neighbours, use_reentrant=False)
            else:
                x = cascade(x, k0, mask, sens, metadata, sampling, neighbours)
        return x

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, metadata_emb: torch.Tensor,
                sampling_emb: torch.Tensor, acs: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct: ``(B,C,T,ky,kx)`` complex64 k-space -> coil-combined ``(B,T,y,x)`` complex64."""
        return self.forward_with_intermediates(masked_kspace, mask, metadata_emb, sampling_emb, acs).image
