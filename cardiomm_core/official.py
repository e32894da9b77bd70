"""The authors' CardioMM network (wangziblake/CardioMM_MMCMR-427K), rebuilt to load their weights.

``OfficialCardioMM`` reproduces the architecture of the published CardioMM reconstruction code
(its ``CardioMM_SEM`` network plus the two text projection heads) with this project's own code,
and names its sub-modules so that the state dict of an official PyTorch Lightning checkpoint,
filtered to the prefixes ``metausunetlight.``, ``lm_head_meta.fc1.`` and ``lm_head_us.fc1.``,
loads into it key for key (``cardiomm_core.official_import`` does the filtering). The facts it
follows, measured on the official code (../shared/CARDIOMM_OFFICIAL.md):

- unrolled network of ``n_cascades`` (10 released) cascades; each cascade is
  ``k <- DC(E(U(R(k))))`` with ``R`` the coil combination with the estimated maps, ``U`` a
  3-level channel-attention U-Net conditioned by both sentences, ``E`` the expansion back to coil
  k-space, and ``DC`` the blend ``(k0 + |w| m) / (1 + |w|)`` at sampled locations (``m`` elsewhere).
  It is not residual: the cascade's k-space is *replaced* by the U-Net's prediction;
- every U-Net input is normalised by one mean and one (unbiased) standard deviation taken jointly
  over its real and imaginary channels and all pixels, zero-padded to a multiple of 8, and the
  normalisation is undone on the output (no epsilon: an all-zero input gives NaN, as officially);
- coil maps come from the same text-conditioned U-Net class (smaller), run on each coil image of
  the zero-filled *central band* of ``num_low_frequencies`` (20) phase-encoding lines over the
  full readout, for every sampling pattern (radial included: the official 2D branch is never
  reached), then divided by their root-sum-of-squares over coils (no clamp);
- every 2D frame is reconstructed on its own (no neighbouring frames);
- the networks were trained with the readout along the image height and the phase encoding along
  its width, the transpose of this project's ``(ky, kx)`` layout: frames are transposed on the way
  in and out (the project's centred orthonormal FFT is the convention of fastMRI's ``fft2c``);
- the output is the root-sum-of-squares *magnitude* of the coil images of the final k-space;
- text: two frozen 512-d CLIP text features (not L2-normalised) go through their own
  ``Linear(512, 256)`` head. Officially the heads L2-normalise over an axis of length one, so each
  head effectively returns ``sign(fc1(e))`` (a vector of +-1); this is reproduced exactly. The
  metadata embedding gates the decoder features after each level
  (``x + CAB((x * gamma + beta) * sigmoid(Linear(e)))``); the undersampling embedding mixes a frozen
  bank of three random prompts per decoder level (softmax weights), resized bilinearly and
  concatenated before the level's fusion blocks;
- one PReLU module is shared by (almost) every channel-attention block of every U-Net, cascades and
  coil-map net alike: officially a default argument evaluated once; here one instance handed down
  explicitly. Only the first encoder block of each U-Net and the blocks of the text gates own
  theirs. 253 state-dict keys alias that one tensor in the released configuration.

Two details differ deliberately from the official code and are equivalent to it wherever the
official code was run: (1) officially the per-sample text gates and prompt weights are tiled over
a batch that holds several coils with ``repeat``, which matches each coil to its own sample only
for a batch of one (as in official training and inference); here each sample's embedding is
applied to its own coils and frames for any batch; (2) the ``acs`` argument of :meth:`forward`
is ignored, the coil maps always use the fixed central band, as officially.

Shapes (project convention, DESIGN.md)::

    masked_kspace  (B, C, T, ky, kx)  complex64 (zeros where unsampled)
    mask           (B|1, 1, T|1, ky, kx|1) real or bool
    metadata_emb       (B|1, text_dim)    CLIP text feature of the metadata sentence (unnormalised)
    sampling_emb         (B|1, text_dim)    CLIP text feature of the undersampling sentence
    output         (B, T, y, x)       complex64 whose real part is the RSS magnitude (imag 0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_model_inputs, dataclass_fields_from, dataclass_to_json
from .fft import fft2c, ifft2c
from .prompt_unet import pad_to_multiple, unpad
from .unroll import no_autocast

__all__ = [
    "OFFICIAL_CONFIG_NAMES",
    "OFFICIAL_KIND",
    "OfficialCardioMM",
    "OfficialConfig",
    "official_config_by_name",
]

#: value of the ``kind`` key that marks an official architecture in a checkpoint's JSON.
OFFICIAL_KIND = "official"
#: named configurations of :func:`official_config_by_name`.
OFFICIAL_CONFIG_NAMES = ("official", "tiny")
#: the official U-Nets have exactly three levels (enc_level1..3, dec_level1..3).
_LEVELS = 3


def _int_triple(name: str, value: Any) -> tuple[int, int, int]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"{name} must be a sequence of {_LEVELS} integers, got {value!r}")
    items = list(value)
    if len(items) != _LEVELS or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in items):
        raise ValueError(f"{name} must be {_LEVELS} non-negative integers, got {value!r}")
    return (items[0], items[1], items[2])


@dataclass
class OfficialConfig:
    """Hyper-parameters of :class:`OfficialCardioMM`; the defaults are the released model.

    Names follow :class:`cardiomm_core.model.CardioMMConfig` where the meaning is the same
    (``chans`` is the official ``n_feat0``, ``n_prompts`` its ``len_prompt``). Per-level tuples have
    three entries, finest level first. ``kind`` is always ``"official"`` (it tells checkpoint
    readers which class to build).
    """

    kind: str = OFFICIAL_KIND
    #: size of the frozen text features (CLIP ViT-B/16 text projection)
    text_dim: int = 512
    #: output size of each projection head (official ``llm_embd_dim``)
    embed_dim: int = 256
    n_cascades: int = 10
    chans: int = 48
    feature_dims: tuple[int, int, int] = (72, 96, 120)
    prompt_dims: tuple[int, int, int] = (24, 48, 72)
    n_prompts: tuple[int, int, int] = (3, 3, 3)
    prompt_sizes: tuple[int, int, int] = (64, 32, 16)
    n_enc_cab: tuple[int, int, int] = (2, 3, 3)
    n_dec_cab: tuple[int, int, int] = (2, 2, 3)
    n_skip_cab: tuple[int, int, int] = (1, 1, 1)
    n_bottleneck_cab: int = 3
    ca_reduction: int = 4
    use_ca: bool = True
    #: coil-map U-Net: first-level channels, level channels and prompt channels (the rest is shared)
    sens_chans: int = 24
    sens_feature_dims: tuple[int, int, int] = (36, 48, 60)
    sens_prompt_dims: tuple[int, int, int] = (12, 24, 36)
    #: central phase-encoding lines (over the full readout) fed to the coil-map network
    num_low_frequencies: int = 20

    _TUPLE_FIELDS = ("feature_dims", "prompt_dims", "n_prompts", "prompt_sizes", "n_enc_cab", "n_dec_cab",
                     "n_skip_cab", "sens_feature_dims", "sens_prompt_dims")

    def __post_init__(self) -> None:
        if self.kind != OFFICIAL_KIND:
            raise ValueError(f"kind must be {OFFICIAL_KIND!r}, got {self.kind!r}")
        for name in self._TUPLE_FIELDS:
            setattr(self, name, _int_triple(name, getattr(self, name)))
        for name in ("text_dim", "embed_dim", "n_cascades", "chans", "ca_reduction", "sens_chans",
                     "num_low_frequencies"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.n_bottleneck_cab, bool) or not isinstance(self.n_bottleneck_cab, int) \
                or self.n_bottleneck_cab < 0:
            raise ValueError(f"n_bottleneck_cab must be a non-negative integer, got {self.n_bottleneck_cab!r}")
        for name in ("feature_dims", "prompt_dims", "n_prompts", "prompt_sizes", "sens_feature_dims",
                     "sens_prompt_dims"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"{name} entries must be >= 1, got {getattr(self, name)}")
        if self.n_enc_cab[0] < 1:
            raise ValueError(f"n_enc_cab[0] must be >= 1 (the first encoder block owns its PReLU), got {self.n_enc_cab}")
        if self.use_ca:
            narrow = min(self.chans, self.sens_chans, *self.feature_dims, *self.sens_feature_dims)
            if narrow // self.ca_reduction < 1:
                raise ValueError(f"ca_reduction={self.ca_reduction} leaves no channels for {narrow}-channel features")
        self.use_ca = bool(self.use_ca)

    # Properties read by code written for CardioMMConfig (e.g. the gadget's model description).
    @property
    def n_pools(self) -> int:
        """Down-sampling steps of each U-Net (always 3)."""
        return _LEVELS

    @property
    def n_adjacent(self) -> int:
        """Frames the prior sees at once (always 1: every frame on its own)."""
        return 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (tuples become lists), including ``"kind": "official"``."""
        return dataclass_to_json(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> OfficialConfig:
        """Inverse of :meth:`to_dict`; unknown or missing keys are a ValueError naming them."""
        return cls(**dataclass_fields_from(cls, values, "OfficialConfig mapping"))


def official_config_by_name(name: str = "official", **overrides: Any) -> OfficialConfig:
    """``"official"``: the released network (10 cascades, 48/[72,96,120]; 68.4 M parameters
    without the text heads). ``"tiny"``: the same structure at toy width, for tests (seconds on a
    CPU). ``overrides`` replace fields (e.g. ``n_cascades=12`` for the class default of the
    official code)."""
    if name == "official":
        cfg = OfficialConfig()
    elif name == "tiny":
        cfg = OfficialConfig(
            embed_dim=8, n_cascades=2, chans=4, feature_dims=(4, 8, 8), prompt_dims=(2, 2, 4),
            n_prompts=(3, 3, 3), prompt_sizes=(8, 4, 2), n_enc_cab=(1, 1, 1), n_dec_cab=(1, 1, 1),
            n_skip_cab=(1, 0, 1), n_bottleneck_cab=1, ca_reduction=4, sens_chans=4,
            sens_feature_dims=(4, 4, 8), sens_prompt_dims=(2, 2, 2),
        )
    else:
        raise ValueError(f"name must be one of {list(OFFICIAL_CONFIG_NAMES)}, got {name!r}")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg


# ---------------------------------------------------------------------------------------------
# Building blocks (attribute names follow the official state dict)
# ---------------------------------------------------------------------------------------------


def _same_conv(in_ch: int, out_ch: int, kernel_size: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=bias)


def _per_sample(values: torch.Tensor, batch: int) -> torch.Tensor:
    """``values (N, K)`` per sample -> ``(batch, K)`` with each row repeated for the ``batch // N``
    consecutive batch entries (coils or frames) of its sample."""
    n = values.shape[0]
    if batch == n:
        return values
    if batch % n:
        raise ValueError(f"feature batch {batch} is not a multiple of the {n} text embeddings")
    return values.repeat_interleave(batch // n, dim=0)


class _ChannelAttention(nn.Module):
    """``x * sigmoid(W2 relu(W1 avgpool(x)))`` with a ``C -> C // reduction -> C`` bottleneck."""

    def __init__(self, chans: int, reduction: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(chans, chans // reduction, 1, bias=False),
            nn.ReLU(inplace=True),
            nn.Conv2d(chans // reduction, chans, 1, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class _CAB(nn.Module):
    """Channel-attention block: ``x + CA(conv3x3(act(conv3x3(x))))``; ``act`` may be shared."""

    def __init__(self, chans: int, reduction: int, act: nn.Module, use_ca: bool) -> None:
        super().__init__()
        self.body = nn.Sequential(_same_conv(chans, chans, 3), act, _same_conv(chans, chans, 3))
        self.CA: nn.Module = _ChannelAttention(chans, reduction) if use_ca else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.CA(self.body(x)) + x


def _cab_stack(chans: int, n: int, reduction: int, act: nn.Module, use_ca: bool) -> nn.Sequential:
    return nn.Sequential(*[_CAB(chans, reduction, act, use_ca) for _ in range(n)])


class _MetadataGate(nn.Module):
    """``x + CAB((x * gamma + beta) * sigmoid(fc(e)))``: the metadata sentence steers a decoder level."""

    def __init__(self, chans: int, embed_dim: int, reduction: int) -> None:
        super().__init__()
        self.fc = nn.Linear(embed_dim, chans)
        self.block = _CAB(chans, reduction, nn.PReLU(), True)
        self.beta = nn.Parameter(torch.zeros(1, chans, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, chans, 1, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc(emb))
        gate = _per_sample(gate, x.shape[0])[:, :, None, None]
        return self.block((x * self.gamma + self.beta) * gate) + x


class _UndersamplingPrompt(nn.Module):
    """A frozen bank of prompts mixed by softmax weights from the undersampling sentence, resized
    to the decoder level and passed through a 3x3 convolution."""

    def __init__(self, prompt_dim: int, n_prompts: int, prompt_size: int, embed_dim: int) -> None:
        super().__init__()
        # frozen random bank: its values come from the checkpoint, they cannot be regenerated
        self.prompt_param = nn.Parameter(torch.rand(1, n_prompts, prompt_dim, prompt_size, prompt_size),
                                         requires_grad=False)
        self.linear_layer2 = nn.Linear(embed_dim, n_prompts)
        self.dec_conv3x3 = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        weights = F.softmax(self.linear_layer2(emb), dim=1)
        weights = _per_sample(weights, x.shape[0])[:, :, None, None, None]     # (N, L, 1, 1, 1)
        prompt = (weights * self.prompt_param).sum(dim=1)                      # (N, P, s, s)
        prompt = F.interpolate(prompt, tuple(x.shape[-2:]), mode="bilinear", align_corners=False)
        return self.dec_conv3x3(prompt)


class _EncoderLevel(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, n_cab: int, reduction: int, act: nn.Module, use_ca: bool,
                 own_first_act: bool) -> None:
        super().__init__()
        blocks = [_CAB(in_ch, reduction, nn.PReLU() if (own_first_act and i == 0) else act, use_ca)
                  for i in range(n_cab)]
        self.encoder = nn.Sequential(*blocks)
        self.down = nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.encoder(x)
        return self.down(skip), skip


class _DecoderLevel(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, prompt_ch: int, n_cab: int, reduction: int, act: nn.Module,
                 use_ca: bool) -> None:
        super().__init__()
        self.fuse = _cab_stack(in_ch + prompt_ch, n_cab, reduction, act, use_ca)
        self.reduce = nn.Conv2d(in_ch + prompt_ch, in_ch, 1, bias=False)
        self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                nn.Conv2d(in_ch, out_ch, 1, bias=False))
        self.ca = _CAB(out_ch, reduction, act, use_ca)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.reduce(self.fuse(torch.cat([x, prompt], dim=1)))
        return self.ca(self.up(x) + skip)


class _SkipPath(nn.Module):
    def __init__(self, chans: int, n_cab: int, reduction: int, act: nn.Module, use_ca: bool) -> None:
        super().__init__()
        self.skip_attn: nn.Module = _cab_stack(chans, n_cab, reduction, act, use_ca) if n_cab else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip_attn(x)


class _TextUNet(nn.Module):
    """Three-level channel-attention U-Net whose decoder reads both sentence embeddings.

    ``forward(x (N, 2, H, W) float, metadata (n, E), sampling (n, E)) -> (N, 2, H, W)``, ``N`` a multiple of
    ``n`` (coils/frames of one sample are consecutive), ``H, W`` multiples of 8.
    """

    def __init__(self, cfg: OfficialConfig, chans: int, dims: tuple[int, int, int], prompt_dims: tuple[int, int, int],
                 act: nn.Module) -> None:
        super().__init__()
        red, ca, emb = cfg.ca_reduction, cfg.use_ca, cfg.embed_dim
        widths = (chans, *dims)                       # channels entering levels 1..3, then the bottleneck
        self.feat_extract = _same_conv(2, chans, 3)
        for lvl in range(1, _LEVELS + 1):
            setattr(self, f"enc_level{lvl}", _EncoderLevel(widths[lvl - 1], widths[lvl], cfg.n_enc_cab[lvl - 1],
                                                           red, act, ca, own_first_act=lvl == 1))
        for lvl in range(1, _LEVELS + 1):
            setattr(self, f"skip_attn{lvl}", _SkipPath(widths[lvl - 1], cfg.n_skip_cab[lvl - 1], red, act, ca))
        self.bottleneck = _cab_stack(widths[_LEVELS], cfg.n_bottleneck_cab, red, act, ca)
        for lvl in range(_LEVELS, 0, -1):
            setattr(self, f"prompt_level{lvl}", _UndersamplingPrompt(prompt_dims[lvl - 1], cfg.n_prompts[lvl - 1],
                                                                     cfg.prompt_sizes[lvl - 1], emb))
            setattr(self, f"dec_level{lvl}", _DecoderLevel(widths[lvl], widths[lvl - 1], prompt_dims[lvl - 1],
                                                           cfg.n_dec_cab[lvl - 1], red, act, ca))
            setattr(self, f"metacond_level{lvl}", _MetadataGate(widths[lvl - 1], emb, red))
        self.conv_last = _same_conv(chans, 2, 5)

    def forward(self, x: torch.Tensor, metadata: torch.Tensor, sampling: torch.Tensor) -> torch.Tensor:
        x = self.feat_extract(x)
        skips = []
        for lvl in range(1, _LEVELS + 1):
            x, skip = getattr(self, f"enc_level{lvl}")(x)
            skips.append(skip)
        x = self.bottleneck(x)
        for lvl in range(_LEVELS, 0, -1):
            prompt = getattr(self, f"prompt_level{lvl}")(x, sampling)
            x = getattr(self, f"dec_level{lvl}")(x, prompt, getattr(self, f"skip_attn{lvl}")(skips[lvl - 1]))
            x = getattr(self, f"metacond_level{lvl}")(x, metadata)
        return self.conv_last(x)


class _NormalisedUNet(nn.Module):
    """Complex image ``(N, H, W)`` -> complex64 ``(N, H, W)`` through :class:`_TextUNet`, with one
    joint mean / unbiased std over the real and imaginary channels of each image, zero padding to
    a multiple of 8, and the inverse on the way out (float32 outside the U-Net)."""

    def __init__(self, unet: _TextUNet) -> None:
        super().__init__()
        self.unet = unet
        self.channels_last = False

    def forward(self, image: torch.Tensor, metadata: torch.Tensor, sampling: torch.Tensor) -> torch.Tensor:
        n = image.shape[0]
        with no_autocast(image.device):
            chans = torch.stack([image.real, image.imag], dim=1).to(torch.float32)   # (N, 2, H, W)
            flat = chans.reshape(n, -1)
            mean = flat.mean(dim=1).view(n, 1, 1, 1)
            std = flat.std(dim=1).view(n, 1, 1, 1)
            chans, pads = pad_to_multiple((chans - mean) / std, 2 ** _LEVELS)
        if self.channels_last:
            chans = chans.contiguous(memory_format=torch.channels_last)
        out = self.unet(chans, metadata, sampling)
        with no_autocast(image.device):
            out = unpad(out.float(), pads) * std + mean
            return torch.complex(out[:, 0], out[:, 1])


class _Cascade(nn.Module):
    """One official cascade: ``k <- DC(E(U(R(k))))`` (not residual)."""

    def __init__(self, unet: _TextUNet) -> None:
        super().__init__()
        self.model = _NormalisedUNet(unet)
        self.dc_weight = nn.Parameter(torch.ones(1))

    def forward(self, kspace: torch.Tensor, k0: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor,
                metadata: torch.Tensor, sampling: torch.Tensor) -> torch.Tensor:
        """``kspace, k0 (N, C, H, W)`` complex64, ``mask (N, 1, H, W|1)`` 0/1 float, ``sens (N, C, H, W)``."""
        with no_autocast(kspace.device):
            image = (ifft2c(kspace) * sens.conj()).sum(dim=1)
        image = self.model(image, metadata, sampling)
        with no_autocast(kspace.device):
            pred = fft2c(image.unsqueeze(1) * sens)
            w = self.dc_weight.abs().to(torch.float32)
            return mask * ((k0 + w * pred) / (1 + w)) + (1 - mask) * pred


class _CoilMapNet(nn.Module):
    """Coil maps from the central ``num_low_frequencies`` PE lines (full readout) of each frame."""

    def __init__(self, unet: _TextUNet, num_low_frequencies: int) -> None:
        super().__init__()
        self.norm_unet = _NormalisedUNet(unet)
        self.num_low_frequencies = num_low_frequencies

    def forward(self, k0: torch.Tensor, metadata: torch.Tensor, sampling: torch.Tensor) -> torch.Tensor:
        """``k0 (N, C, H=readout, W=PE)`` complex64 -> maps ``(N, C, H, W)`` complex64 (RSS 1)."""
        n, c, h, w = k0.shape
        width = min(self.num_low_frequencies, w)
        start = (w - width + 1) // 2
        band = torch.zeros_like(k0)
        band[..., start:start + width] = k0[..., start:start + width]
        with no_autocast(k0.device):
            images = ifft2c(band).reshape(n * c, h, w)
        maps = self.norm_unet(images, metadata, sampling).reshape(n, c, h, w)
        with no_autocast(k0.device):
            rss = (maps.real ** 2 + maps.imag ** 2).sum(dim=1, keepdim=True).sqrt()
            return maps / rss


class _Unrolled(nn.Module):
    """The official ``CardioMM_SEM`` with one frame per sample: ``(k0, mask, metadata, sampling) -> RSS``."""

    def __init__(self, cfg: OfficialConfig, act: nn.Module) -> None:
        super().__init__()
        self.sens_net = _CoilMapNet(_TextUNet(cfg, cfg.sens_chans, cfg.sens_feature_dims, cfg.sens_prompt_dims, act),
                                    cfg.num_low_frequencies)
        self.cascades = nn.ModuleList(_Cascade(_TextUNet(cfg, cfg.chans, cfg.feature_dims, cfg.prompt_dims, act))
                                      for _ in range(cfg.n_cascades))

    def forward(self, k0: torch.Tensor, mask: torch.Tensor, metadata: torch.Tensor, sampling: torch.Tensor) -> torch.Tensor:
        """``k0 (N, C, H, W)`` complex64 masked k-space (H readout, W phase encoding), ``mask
        (N, 1, H|1, W)`` 0/1 float, ``metadata, sampling (N, E)`` projected embeddings -> ``(N, H, W)`` float32
        root-sum-of-squares magnitude."""
        sens = self.sens_net(k0, metadata, sampling)
        kspace = k0
        for cascade in self.cascades:
            kspace = cascade(kspace, k0, mask, sens, metadata, sampling)
        with no_autocast(k0.device):
            return ifft2c(kspace).abs().pow(2).sum(dim=1).sqrt()


class _SignHead(nn.Module):
    """``Linear(text_dim, embed_dim)`` then the official "normalisation" over an axis of length 1,
    which is ``y / max(|y|, 1e-12)``: a vector of +-1 (exactly as the official heads behave)."""

    def __init__(self, text_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(text_dim, embed_dim)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc1(emb).unsqueeze(1), p=2, dim=1).squeeze(1)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class OfficialCardioMM(nn.Module):
    """The authors' CardioMM in this project's conventions (see the module docstring).

    ``forward(masked_kspace (B,C,T,ky,kx) complex64, mask (B|1,1,T|1,ky,kx|1), metadata_emb (B|1,D),
    sampling_emb (B|1,D), acs=None) -> (B,T,y,x) complex64`` holding the RSS magnitude (imaginary part 0);
    D is ``config.text_dim`` (512, unnormalised CLIP text features). Its ``state_dict`` keys are the
    official checkpoint's (``metausunetlight.*``, ``lm_head_meta.fc1.*``, ``lm_head_us.fc1.*``).
    """

    def __init__(self, config: OfficialConfig | None = None) -> None:
        super().__init__()
        if config is None:
            config = OfficialConfig()
        if not isinstance(config, OfficialConfig):
            raise ValueError(f"config must be an OfficialConfig, got {type(config).__name__}")
        self.config = config
        shared_act = nn.PReLU()   # one activation for (almost) every CAB of every U-Net
        self.metausunetlight = _Unrolled(config, shared_act)
        self.lm_head_meta = _SignHead(config.text_dim, config.embed_dim)
        self.lm_head_us = _SignHead(config.text_dim, config.embed_dim)

    def to_channels_last(self) -> OfficialCardioMM:
        """Convolution weights and U-Net inputs in channels_last (faster convolutions on GPUs).

        Only the 4-D convolution weights are converted (``Module.to(memory_format=...)`` would
        refuse the 5-D prompt banks)."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
            elif isinstance(module, _NormalisedUNet):
                module.channels_last = True
        return self

    def forward(self, masked_kspace: torch.Tensor, mask: torch.Tensor, metadata_emb: torch.Tensor,
                sampling_emb: torch.Tensor, acs: torch.Tensor | None = None) -> torch.Tensor:
        """Reconstruct every frame on its own; ``acs`` is accepted for the engine's interface and
        ignored (the coil maps use the fixed central band of ``config.num_low_frequencies`` lines)."""
        check_model_inputs(masked_kspace, mask, metadata_emb, sampling_emb, text_dim=self.config.text_dim,
                           hint="the official model reads 512-d CLIP text features")
        n_b, n_c, n_t, n_ky, n_kx = masked_kspace.shape
        with no_autocast(masked_kspace.device):
            m = (mask != 0).to(torch.float32).expand(n_b, 1, n_t, n_ky, mask.shape[-1])
            k0 = masked_kspace * m
            # (B, C, T, ky, kx) -> (B*T, C, kx, ky): one sample per frame, readout along the height
            k0 = k0.permute(0, 2, 1, 4, 3).reshape(n_b * n_t, n_c, n_kx, n_ky)
            m = m.permute(0, 2, 1, 4, 3).reshape(n_b * n_t, 1, m.shape[-1], n_ky)
        metadata = self.lm_head_meta(metadata_emb.to(torch.float32).expand(n_b, -1))
        sampling = self.lm_head_us(sampling_emb.to(torch.float32).expand(n_b, -1))
        metadata = metadata.float().repeat_interleave(n_t, dim=0)
        sampling = sampling.float().repeat_interleave(n_t, dim=0)
        rss = self.metausunetlight(k0, m, metadata, sampling)                       # (B*T, kx, ky)
        image = rss.reshape(n_b, n_t, n_kx, n_ky).transpose(-2, -1)
        return torch.complex(image.contiguous(), torch.zeros_like(image))
