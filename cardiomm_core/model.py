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
    meta_emb       (B, D)              frozen text embedding of the metadata sentence
    us_emb         (B, D)              frozen text embedding of the undersampling sentence
    image          (B, T, y, x)        complex64
    sens           (B, C, 1, y, x)     complex64

GPU design: all frames of a slice go through each U-Net in one batched call (frames folded into the
batch axis, neighbouring frames gathered by an index tensor), the physics (FFTs, complex
arithmetic, data consistency) runs in float32/complex64 with autocast disabled while the U-Nets may
run under bf16 autocast, convolutions accept channels_last, and the cascades contain no
data-dependent Python control flow (friendly to torch.compile / CUDA graphs). The auto-calibration
region is found once per forward (or passed in precomputed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .cg import conjugate_gradient
from .checks import check_model_inputs, check_ndim, check_tensor
from .conventional import conventional_recon, time_average_kspace
from .fft import ifft2c
from .sense import sens_expand, sens_reduce

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
    "ProjectionHead",
    "MetadataAdapter",
    "UndersamplingPrompter",
    "PromptUnet",
    "NormPromptUnet",
    "SensitivityNet",
    "SensitivityRefiner",
    "ProximalDataConsistency",
    "conventional_start",
    "DataConsistency",
    "acs_region_mask",
    "adjacent_frame_index",
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
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CardioMMConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys are a ValueError naming them."""
        if not isinstance(values, Mapping):
            raise ValueError(f"values must be a mapping, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        missing = sorted(known - set(values) - set(cls._LATER_FIELDS))
        if unknown or missing:
            raise ValueError(
                f"CardioMMConfig mapping does not match: unknown key(s) {unknown}, missing key(s) {missing}"
            )
        return cls(**dict(values))


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


# ---------------------------------------------------------------------------------------------
# Text conditioning
# ---------------------------------------------------------------------------------------------


class ProjectionHead(nn.Module):
    """Small MLP from a frozen text embedding ``(B, text_dim)`` to ``(B, embed_dim)``."""

    def __init__(self, text_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.LayerNorm(text_dim),
            nn.Linear(text_dim, embed_dim),
            nn.GELU(),
            nn.Linear(embed_dim, embed_dim),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return self.net(emb)


def _conv(in_ch: int, out_ch: int, kernel_size: int = 3, bias: bool = False, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias, stride=stride)


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: global average pool -> 1x1 bottleneck -> sigmoid.

    GELU in the bottleneck (PromptMR uses ReLU): narrow bottlenecks of small models otherwise
    end up with dead units whose weights never learn.
    """

    def __init__(self, chans: int, reduction: int) -> None:
        super().__init__()
        hidden = max(chans // reduction, 1)
        self.gate = nn.Sequential(
            nn.Conv2d(chans, hidden, 1, bias=False), nn.GELU(),
            nn.Conv2d(hidden, chans, 1, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x.mean(dim=(-2, -1), keepdim=True))


class CAB(nn.Module):
    """Channel-attention block: conv-PReLU-conv, channel attention, residual."""

    def __init__(self, chans: int, reduction: int, use_ca: bool = True) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(chans, chans), nn.PReLU(), _conv(chans, chans))
        self.ca: nn.Module = ChannelAttention(chans, reduction) if use_ca else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ca(self.body(x))


def _cabs(chans: int, n: int, reduction: int, use_ca: bool) -> nn.Module:
    return nn.Sequential(*[CAB(chans, reduction, use_ca) for _ in range(n)]) if n > 0 else nn.Identity()


class MetadataAdapter(nn.Module):
    """FiLM modulation of decoder features by the projected metadata embedding, then a CAB.

    ``x (N, F, h, w)`` and ``emb (N, E)`` -> ``(N, F, h, w)``:
    ``CAB(x * (1 + scale(emb)) + shift(emb))``.
    """

    def __init__(self, chans: int, embed_dim: int, reduction: int, use_ca: bool) -> None:
        super().__init__()
        self.film = nn.Linear(embed_dim, 2 * chans)
        self.block = CAB(chans, reduction, use_ca)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.film(emb).to(x.dtype)[:, :, None, None].chunk(2, dim=1)
        return self.block(x * (1 + scale) + shift)


class UndersamplingPrompter(nn.Module):
    """Learned prompt components mixed by a softmax of the undersampling embedding.

    ``emb (N, E)`` and a target size ``(h, w)`` -> prompt ``(N, P, h, w)``. Computed once per slice
    (not per frame) and broadcast to the frames by the caller.
    """

    def __init__(self, embed_dim: int, prompt_dim: int, n_prompts: int, prompt_size: int) -> None:
        super().__init__()
        self.prompts = nn.Parameter(torch.rand(n_prompts, prompt_dim, prompt_size, prompt_size))
        self.weights = nn.Linear(embed_dim, n_prompts)
        self.conv = _conv(prompt_dim, prompt_dim)

    def forward(self, emb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        w = torch.softmax(self.weights(emb), dim=-1)                          # (N, L)
        prompt = torch.einsum("nl,lpyx->npyx", w, self.prompts.to(w.dtype))   # (N, P, s, s)
        prompt = F.interpolate(prompt, size=size, mode="bilinear", align_corners=False)
        return self.conv(prompt)


# ---------------------------------------------------------------------------------------------
# U-Nets
# ---------------------------------------------------------------------------------------------


class _Down(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, n_cab: int, reduction: int, use_ca: bool) -> None:
        super().__init__()
        self.encoder = _cabs(in_ch, n_cab, reduction, use_ca)
        self.down = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.encoder(x)
        return self.down(enc), enc


class _Up(nn.Module):
    """Decoder level: fuse [features, prompt], reduce, upsample x2, add skip, CAB."""

    def __init__(self, in_ch: int, out_ch: int, prompt_ch: int, n_cab: int, reduction: int,
                 use_ca: bool) -> None:
        super().__init__()
        self.fuse = _cabs(in_ch + prompt_ch, n_cab, reduction, use_ca)
        self.reduce = nn.Conv2d(in_ch + prompt_ch, in_ch, 1, bias=False)
        self.up = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.refine = CAB(out_ch, reduction, use_ca)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor | None, skip: torch.Tensor) -> torch.Tensor:
        if prompt is not None:
            x = torch.cat([x, prompt], dim=1)
        x = self.reduce(self.fuse(x))
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return self.refine(self.up(x) + skip)


class PromptUnet(nn.Module):
    """Channel-attention U-Net whose decoder is conditioned by text (PromptMR / CardioMM style).

    ``x (N, in_chans, h, w)`` with h, w multiples of ``2**n_pools`` -> ``(N, out_chans, h, w)``.
    With ``embed_dim`` given, each decoder level receives an undersampling prompt (concatenated
    before fusion) and a metadata FiLM adapter (after the level); ``meta (N0, E)`` and
    ``us (N0, E)`` are per slice and ``N = N0 * repeats`` (frames folded into the batch axis,
    slice-major).
    """

    def __init__(self, in_chans: int, out_chans: int, chans: int, feature_dims: Sequence[int],
                 n_enc_cab: Sequence[int], n_dec_cab: Sequence[int], n_skip_cab: Sequence[int],
                 n_bottleneck_cab: int, reduction: int, use_ca: bool, *,
                 embed_dim: int | None = None, prompt_dims: Sequence[int] = (),
                 n_prompts: Sequence[int] = (), prompt_sizes: Sequence[int] = ()) -> None:
        super().__init__()
        n_pools = len(feature_dims)
        self.n_pools = n_pools
        self.conditioned = embed_dim is not None
        level_in = [chans, *feature_dims[:-1]]
        self.head = _conv(in_chans, chans)
        self.encoders = nn.ModuleList(
            _Down(level_in[i], feature_dims[i], n_enc_cab[i], reduction, use_ca) for i in range(n_pools)
        )
        self.skips = nn.ModuleList(_cabs(level_in[i], n_skip_cab[i], reduction, use_ca) for i in range(n_pools))
        self.bottleneck = _cabs(feature_dims[-1], n_bottleneck_cab, reduction, use_ca)
        pdims = list(prompt_dims) if self.conditioned else [0] * n_pools
        self.decoders = nn.ModuleList(
            _Up(feature_dims[i], level_in[i], pdims[i], n_dec_cab[i], reduction, use_ca) for i in range(n_pools)
        )
        if self.conditioned:
            assert embed_dim is not None
            self.prompters = nn.ModuleList(
                UndersamplingPrompter(embed_dim, prompt_dims[i], n_prompts[i], prompt_sizes[i]) for i in range(n_pools)
            )
            self.adapters = nn.ModuleList(
                MetadataAdapter(level_in[i], embed_dim, reduction, use_ca) for i in range(n_pools)
            )
        self.tail = _conv(chans, out_chans, 5)

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None,
                us: torch.Tensor | None = None) -> torch.Tensor:
        x = self.head(x)
        skips = []
        for encoder, skip in zip(self.encoders, self.skips):
            x, enc = encoder(x)
            skips.append(skip(enc))
        x = self.bottleneck(x)
        if self.conditioned:
            if meta is None or us is None:
                raise ValueError("meta and us embeddings are required by a conditioned PromptUnet")
            repeats = x.shape[0] // meta.shape[0]
            meta_rep = meta.repeat_interleave(repeats, dim=0)
        for level in reversed(range(self.n_pools)):
            prompt = None
            if self.conditioned:
                # one prompt per slice, shared by its frames (slice-major folding)
                prompt = self.prompters[level](us, (x.shape[-2], x.shape[-1])).to(x.dtype)
                prompt = prompt.repeat_interleave(repeats, dim=0)
            x = self.decoders[level](x, prompt, skips[level])
            if self.conditioned:
                x = self.adapters[level](x, meta_rep)
        return self.tail(x)


def _complex_to_chans(x: torch.Tensor) -> torch.Tensor:
    """``(N, K, h, w)`` complex -> ``(N, 2K, h, w)`` real: [real parts..., imaginary parts...]."""
    return torch.cat([x.real, x.imag], dim=1)


def _chans_to_complex(x: torch.Tensor) -> torch.Tensor:
    """``(N, 2K, h, w)`` real -> ``(N, K, h, w)`` complex64."""
    re, im = x.float().chunk(2, dim=1)
    return torch.complex(re, im)


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if ph or pw:
        x = F.pad(x, pads)
    return x, pads


def _crop(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    return x[..., top:h - bottom, left:w - right]


class NormPromptUnet(nn.Module):
    """Complex wrapper: mean/std normalisation (fastMRI NormUnet), padding, U-Net, inverse.

    ``x (N, K, h, w)`` complex -> ``(N, K_out, h, w)`` complex64. Real and imaginary parts are
    normalised separately over all their channels and pixels, the image is zero-padded to a
    multiple of ``2**n_pools`` and cropped back. The U-Net itself may run under autocast; the
    normalisation and its inverse run in float32. ``residual=True``: the output is a correction
    (rescaled by the input's std, no mean added back) and the U-Net's last convolution starts at
    zero, so the module first outputs exactly zero.
    """

    def __init__(self, unet: PromptUnet, out_complex_chans: int, residual: bool = False) -> None:
        super().__init__()
        self.unet = unet
        self.out_complex_chans = out_complex_chans
        self.residual = residual
        self.channels_last = False
        if residual:
            # a correction to add to the input: the output is only rescaled by the input's std
            # (not shifted back by its mean), and it starts at exactly zero
            nn.init.zeros_(self.unet.tail.weight)

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None,
                us: torch.Tensor | None = None) -> torch.Tensor:
        n, k = x.shape[:2]
        chans = _complex_to_chans(x)                                   # (N, 2K, h, w) float32
        grouped = chans.reshape(n, 2, -1)
        mean = grouped.mean(dim=2).view(n, 2, 1, 1)
        std = grouped.std(dim=2).view(n, 2, 1, 1).clamp_min(1e-12)
        chans = ((chans.view(n, 2, k, *chans.shape[-2:]) - mean[:, :, None]) / std[:, :, None]).view_as(chans)
        chans, pads = _pad_to_multiple(chans, 2 ** self.unet.n_pools)
        if self.channels_last:
            chans = chans.contiguous(memory_format=torch.channels_last)
        out = self.unet(chans, meta, us).float()
        out = _crop(out, pads)
        ko = self.out_complex_chans
        out = out.reshape(n, 2, ko, *out.shape[-2:]) * std[:, :, None]
        if not self.residual:
            out = out + mean[:, :, None]
        return _chans_to_complex(out.reshape(n, 2 * ko, *out.shape[-2:]))


# ---------------------------------------------------------------------------------------------
# Physics helpers
# ---------------------------------------------------------------------------------------------


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Autocast off for the physics (FFTs and complex arithmetic stay complex64)."""
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()  # e.g. the meta device used to count FLOPs


def adjacent_frame_index(n_frames: int, n_adjacent: int, device: torch.device | None = None) -> torch.Tensor:
    """Circular neighbourhood: ``(T, n_adjacent)`` int64, row t = t-h .. t+h modulo T (h = n_adjacent // 2)."""
    if n_frames < 1 or n_adjacent < 1 or n_adjacent % 2 != 1:
        raise ValueError(f"need n_frames >= 1 and odd n_adjacent >= 1, got {n_frames}, {n_adjacent}")
    half = n_adjacent // 2
    t = torch.arange(n_frames, device=device)[:, None]
    offsets = torch.arange(-half, half + 1, device=device)[None, :]
    return (t + offsets) % n_frames


def acs_region_mask(mask: torch.Tensor) -> torch.Tensor:
    """The auto-calibration region of each slice's mask as a 0/1 float ``(B, 1, 1, ky, kx)``.

    ``mask (B, 1, T, ky, kx|1)``. Uses :func:`cardiomm_core.coils.find_acs` per slice (ACS lines of
    Cartesian masks, the fully sampled centre of radial masks). A slice whose mask has no
    calibration region gets the whole k-space (the sensitivity network then works from the
    time-averaged data), with a warning.
    """
    from .coils import find_acs  # local import: coils is a sibling module with its own tests

    check_tensor("mask", mask)
    check_ndim("mask", mask, 5, "(batch, 1, frames, ky, kx)")
    n_b, _, _, n_ky, _ = mask.shape
    regions = []
    for b in range(n_b):
        m = mask[b:b + 1].detach().to("cpu")
        region = torch.zeros(1, 1, 1, n_ky, mask.shape[-1], dtype=torch.float32)
        try:
            ky_sl, kx_sl = find_acs(m)
        except ValueError as exc:
            logger.warning("no auto-calibration region in the mask of slice %d (%s); using all of k-space", b, exc)
            ky_sl, kx_sl = slice(None), slice(None)
        region[..., ky_sl, kx_sl] = 1.0
        regions.append(region)
    return torch.cat(regions, dim=0).to(mask.device)


class DataConsistency(nn.Module):
    """Data consistency in k-space with a learned weight (one module per cascade).

    ``pred (B, C, T, ky, kx)`` (current estimate plus the prior's refinement), measured ``k0``
    (same shape), ``mask (B, 1, T, ky, kx|1)`` -> ``pred - w * M * (pred - k0)``.
    Soft: ``w = sigmoid(logit)`` in (0, 1), learned, ``w -> 1`` replaces the sampled samples by the
    measurements. Hard: the sampled locations take the measured k-space exactly.
    """

    def __init__(self, weight_init: float = 0.5, hard: bool = False) -> None:
        super().__init__()
        self.hard = hard
        self.logit = nn.Parameter(torch.tensor(math.log(weight_init / (1.0 - weight_init))))

    @property
    def weight(self) -> torch.Tensor:
        return torch.sigmoid(self.logit)

    def forward(self, pred: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.hard:
            return torch.where(mask.bool(), k0, pred)
        m = mask.to(torch.float32)
        return pred - self.weight * m * (pred - k0)


def _rss_normalise(maps: torch.Tensor) -> torch.Tensor:
    """``maps (B, C, ...)`` divided by their root-sum-of-squares over coils. The power is clamped
    before the root, so pixels where every map is 0 stay 0 with finite gradients."""
    power = (maps.real ** 2 + maps.imag ** 2).sum(dim=1, keepdim=True)
    return maps / torch.sqrt(power.clamp_min(1e-24))


def _coil_unet(chans: int, n_pools: int, reduction: int, use_ca: bool, residual: bool) -> NormPromptUnet:
    """The small unconditioned U-Net of the sensitivity modules (one complex coil image in and out)."""
    dims = [int(round(chans * (1 + 0.5 * (i + 1)))) for i in range(n_pools)]
    ones = [1] * n_pools
    return NormPromptUnet(PromptUnet(2, 2, chans, dims, ones, ones, [0] * n_pools, 1, reduction, use_ca), 1,
                          residual=residual)


def _frame_prior(cfg: CardioMMConfig, residual: bool) -> NormPromptUnet:
    """A cascade's text-conditioned prior: ``n_adjacent`` complex frames in, the centre frame out."""
    unet = PromptUnet(
        2 * cfg.n_adjacent, 2, cfg.chans, cfg.feature_dims, cfg.n_enc_cab, cfg.n_dec_cab,
        cfg.n_skip_cab, cfg.n_bottleneck_cab, cfg.ca_reduction, cfg.use_ca,
        embed_dim=cfg.embed_dim, prompt_dims=cfg.prompt_dims, n_prompts=cfg.n_prompts,
        prompt_sizes=cfg.prompt_sizes,
    )
    return NormPromptUnet(unet, 1, residual=residual)


def _apply_prior(prior: NormPromptUnet, image: torch.Tensor, meta: torch.Tensor, us: torch.Tensor,
                 neighbours: torch.Tensor) -> torch.Tensor:
    """``image (B, T, y, x)`` -> the prior's output ``(B, T, y, x)`` complex64, each frame from its
    ``neighbours (T, A)`` (frames folded into the batch axis, slice-major)."""
    n_b, n_t = image.shape[:2]
    with _no_autocast(image.device):
        stacked = image[:, neighbours].reshape(n_b * n_t, neighbours.shape[1], *image.shape[-2:])
    return prior(stacked, meta, us).reshape(image.shape)


class SensitivityNet(nn.Module):
    """Coil sensitivities from the auto-calibration region (E2E-VarNet style).

    ``masked_kspace (B, C, T, ky, kx)``, ``mask (B, 1, T, ky, kx|1)``, ``acs (B, 1, 1, ky, kx)`` ->
    ``sens (B, C, 1, y, x)``: the time-averaged ACS k-space of each coil -> low-resolution coil
    image -> small U-Net (coils folded into the batch axis) -> division by the root-sum-of-squares.
    """

    def __init__(self, chans: int, n_pools: int, reduction: int, use_ca: bool) -> None:
        super().__init__()
        self.norm_unet = _coil_unet(chans, n_pools, reduction, use_ca, residual=False)

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, acs: torch.Tensor) -> torch.Tensor:
        n_b, n_c = masked_kspace.shape[:2]
        with _no_autocast(masked_kspace.device):
            m = mask.to(torch.float32)
            counts = m.sum(dim=2, keepdim=True).clamp_min(1.0)                 # (B,1,1,ky,kx|1)
            k_avg = (masked_kspace * m).sum(dim=2, keepdim=True) / counts       # (B,C,1,ky,kx)
            coil_images = ifft2c(k_avg * acs)                                   # (B,C,1,y,x)
        flat = coil_images.reshape(n_b * n_c, 1, *coil_images.shape[-2:])
        sens = self.norm_unet(flat).reshape(n_b, n_c, 1, *coil_images.shape[-2:])
        with _no_autocast(masked_kspace.device):
            return _rss_normalise(sens)


class SensitivityRefiner(nn.Module):
    """Residual refinement of estimated coil sensitivities (``unroll="proximal"``).

    ``sens0 (B, C, 1, y, x)`` complex64, rss-normalised where not 0 ->
    ``sens (B, C, 1, y, x)``: ``sens0 + U-Net(sens0)`` (coils folded into the batch axis),
    renormalised to unit root-sum-of-squares on the support of ``sens0`` and 0 elsewhere. The
    U-Net's correction starts at zero, so the untrained module returns ``sens0``.
    """

    def __init__(self, chans: int, n_pools: int, reduction: int, use_ca: bool) -> None:
        super().__init__()
        self.norm_unet = _coil_unet(chans, n_pools, reduction, use_ca, residual=True)

    def forward(self, sens0: torch.Tensor) -> torch.Tensor:
        n_b, n_c = sens0.shape[:2]
        flat = sens0.reshape(n_b * n_c, 1, *sens0.shape[-2:])
        correction = self.norm_unet(flat).reshape(sens0.shape)
        with _no_autocast(sens0.device):
            refined = _rss_normalise(sens0 + correction)
            support = (sens0 != 0).any(dim=1, keepdim=True)
            return torch.where(support, refined, torch.zeros_like(refined))


class ProximalDataConsistency(nn.Module):
    """``x = argmin ||A x - y||^2 + lam ||x - z||^2`` by CG, ``lam = exp(log_lam)`` learned.

    ``z (B, T, y, x)`` complex64, measured ``k0 (B, C, T, ky, kx)`` (0 where unsampled),
    ``mask (B, 1, T, ky, kx|1)``, ``sens (B, C, 1, y, x)`` -> ``x (B, T, y, x)``, with
    ``A = M F S``. Solved as ``x = z + d``, ``(A^H A + lam) d = A^H (y - A z)``, by
    ``n_iter`` CG steps per image.
    """

    def __init__(self, weight_init: float, n_iter: int) -> None:
        super().__init__()
        self.n_iter = n_iter
        self.log_lam = nn.Parameter(torch.tensor(math.log(weight_init)))

    @property
    def weight(self) -> torch.Tensor:
        return torch.exp(self.log_lam)

    def forward(self, z: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
        m = mask.to(torch.float32)
        lam = self.weight.to(torch.float32)

        def normal(image: torch.Tensor) -> torch.Tensor:
            return sens_reduce(sens_expand(image, sens) * (m * m), sens) + lam * image

        rhs = sens_reduce(m * (k0 - m * sens_expand(z, sens)), sens)
        return z + conjugate_gradient(normal, rhs, n_iter=self.n_iter)


class _ProximalCascade(nn.Module):
    """Image-space cascade: ``z = x + prior(x)`` (residual, starts at 0), then
    :class:`ProximalDataConsistency`."""

    def __init__(self, cfg: CardioMMConfig) -> None:
        super().__init__()
        self.prior = _frame_prior(cfg, residual=True)
        self.dc = ProximalDataConsistency(cfg.prox_weight_init, cfg.cg_iterations)

    def forward(self, image: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor,
                meta: torch.Tensor, us: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        update = _apply_prior(self.prior, image, meta, us, neighbours)
        with _no_autocast(image.device):
            return self.dc(image + update, k0, mask, sens)


def conventional_start(k0: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The proximal unroll's starting point: :func:`cardiomm_core.conventional.conventional_recon` of
    each slice, without gradient.

    ``k0 (B, C, T, ky, kx)`` complex64 (0 where unsampled), ``mask (B, 1, T, ky, kx|1)`` ->
    ``(images (B, T, y, x), sens (B, C, 1, y, x))`` complex64.
    """
    images, maps = [], []
    with torch.no_grad(), _no_autocast(k0.device):
        for b in range(k0.shape[0]):
            try:
                result = conventional_recon(k0[b:b + 1], mask[b:b + 1])
                images.append(result.images.to(torch.complex64))
                maps.append(result.sens.to(torch.complex64))
            except ValueError as exc:
                # no calibration region: maps from all of the sampled k-space (as the k-space
                # unroll does), start from their zero-filled SENSE combination
                logger.warning("slice %d: no conventional start (%s); starting from the zero-filled image "
                               "with maps from all sampled k-space", b, exc)
                sens = _rss_normalise(ifft2c(time_average_kspace(k0[b:b + 1], mask[b:b + 1])[0]))
                images.append(sens_reduce(k0[b:b + 1], sens).to(torch.complex64))
                maps.append(sens.to(torch.complex64))
    return torch.cat(images, dim=0), torch.cat(maps, dim=0)


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
                meta: torch.Tensor, us: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
        with _no_autocast(kspace.device):
            image = sens_reduce(kspace, sens)                                   # (B, T, y, x)
        update = _apply_prior(self.prior, image, meta, us, neighbours)
        with _no_autocast(kspace.device):
            return self.dc(kspace + sens_expand(update, sens), k0, mask)


class CardioMM(nn.Module):
    """Text-conditioned unrolled reconstruction network (see the module docstring).

    ``forward(masked_kspace (B,C,T,ky,kx) complex64, mask (B,1,T,ky,kx|1), meta_emb (B,D),
    us_emb (B,D)) -> image (B,T,y,x) complex64``; D is ``config.text_dim``.
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
        self.to(memory_format=torch.channels_last)
        for module in self.modules():
            if isinstance(module, NormPromptUnet):
                module.channels_last = True
        return self

    def _check_inputs(self, masked_kspace: torch.Tensor, mask: torch.Tensor, meta_emb: torch.Tensor,
                      us_emb: torch.Tensor) -> None:
        check_model_inputs(masked_kspace, mask, meta_emb, us_emb, text_dim=self.config.text_dim,
                           hint="was the model trained with another text encoder?")

    # -- forward ---------------------------------------------------------------------------------

    def forward_with_intermediates(self, masked_kspace: torch.Tensor, mask: torch.Tensor,
                                   meta_emb: torch.Tensor, us_emb: torch.Tensor,
                                   acs: torch.Tensor | None = None) -> CardioMMOutput:
        """Like :meth:`forward`, returning ``CardioMMOutput(image, kspace, sens)``.

        ``acs (B|1, 1, 1, ky, kx|1)`` optionally gives the auto-calibration region
        (see :func:`acs_region_mask`); by default it is found from ``mask``.
        """
        self._check_inputs(masked_kspace, mask, meta_emb, us_emb)
        n_b, _, n_t = masked_kspace.shape[:3]
        mask = mask.expand(n_b, 1, n_t, *mask.shape[-2:])
        meta_emb = meta_emb.to(torch.float32).expand(n_b, -1)
        us_emb = us_emb.to(torch.float32).expand(n_b, -1)
        if self.config.context == "none":  # CardioSM: constant (zero) embeddings, whatever the scan
            meta_emb = torch.zeros_like(meta_emb)
            us_emb = torch.zeros_like(us_emb)
        meta = self.meta_head(meta_emb)
        us = self.us_head(us_emb)
        with _no_autocast(masked_kspace.device):
            k0 = masked_kspace * mask.to(torch.float32)
        neighbours = adjacent_frame_index(n_t, self.config.n_adjacent, masked_kspace.device)
        if self.config.unroll == "proximal":
            return self._forward_proximal(k0, mask, meta, us, neighbours)
        if acs is None:
            acs = acs_region_mask(mask)
        sens = self.sens_net(k0, mask, acs.to(torch.float32))
        kspace = k0
        for cascade in self.cascades:
            if self.config.use_checkpoint and self.training and torch.is_grad_enabled():
                kspace = checkpoint(cascade, kspace, k0, mask, sens, meta, us, neighbours, use_reentrant=False)
            else:
                kspace = cascade(kspace, k0, mask, sens, meta, us, neighbours)
        with _no_autocast(masked_kspace.device):
            image = sens_reduce(kspace, sens)
        return CardioMMOutput(image, kspace, sens)

    def _forward_proximal(self, k0: torch.Tensor, mask: torch.Tensor, meta: torch.Tensor, us: torch.Tensor,
                          neighbours: torch.Tensor) -> CardioMMOutput:
        image, sens0 = conventional_start(k0, mask)
        sens = self.sens_net(sens0)
        for cascade in self.cascades:
            if self.config.use_checkpoint and self.training and torch.is_grad_enabled():
                image = checkpoint(cascade, image, k0, mask, sens, meta, us, neighbours, use_reentrant=False)
            else:
                image = cascade(image, k0, mask, sens, meta, us, neighbours)
        with _no_autocast(k0.device):
            return CardioMMOutput(image, sens_expand(image, sens), sens)

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, meta_emb: torch.Tensor,
                us_emb: torch.Tensor, acs: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct: ``(B,C,T,ky,kx)`` complex64 k-space -> coil-combined ``(B,T,y,x)`` complex64."""
        return self.forward_with_intermediates(masked_kspace, mask, meta_emb, us_emb, acs).image
