"""The text-conditioned U-Net of CardioMM's cascades and its building blocks (PromptMR / PromptMR+).

- ``ProjectionHead``: frozen text embedding ``(B, text_dim)`` -> ``(B, embed_dim)``;
- ``ChannelAttention``, ``CAB``: channel-attention blocks;
- ``MetadataAdapter`` (FiLM from the metadata embedding) and ``UndersamplingPrompter`` (learned
  prompt components weighted by the undersampling embedding) condition the decoder;
- ``PromptUnet``: the real-valued U-Net, ``(N, in_chans, h, w) -> (N, out_chans, h, w)``;
- ``NormPromptUnet``: its complex wrapper (normalisation, padding to a multiple of
  ``2**n_pools`` with ``pad_to_multiple`` and back with ``unpad``).

Attribute names are those of the checkpoints' state dicts: renaming one breaks loading.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CAB",
    "ChannelAttention",
    "MetadataAdapter",
    "NormPromptUnet",
    "ProjectionHead",
    "PromptUnet",
    "UndersamplingPrompter",
    "pad_to_multiple",
    "unpad",
]


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
    before fusion) and a metadata FiLM adapter (after the level); ``metadata (N0, E)`` and
    ``sampling (N0, E)`` are per slice and ``N = N0 * repeats`` (frames folded into the batch axis,
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

    def forward(self, x: torch.Tensor, metadata: torch.Tensor | None = None,
                sampling: torch.Tensor | None = None) -> torch.Tensor:
        x = self.head(x)
        skips = []
        for encoder, skip in zip(self.encoders, self.skips):
            x, enc = encoder(x)
            skips.append(skip(enc))
        x = self.bottleneck(x)
        if self.conditioned:
            if metadata is None or sampling is None:
                raise ValueError("the metadata and sampling embeddings are required by a conditioned PromptUnet")
            repeats = x.shape[0] // metadata.shape[0]
            metadata_rep = metadata.repeat_interleave(repeats, dim=0)
        for level in reversed(range(self.n_pools)):
            prompt = None
            if self.conditioned:
                # one prompt per slice, shared by its frames (slice-major folding)
                prompt = self.prompters[level](sampling, (x.shape[-2], x.shape[-1])).to(x.dtype)
                prompt = prompt.repeat_interleave(repeats, dim=0)
            x = self.decoders[level](x, prompt, skips[level])
            if self.conditioned:
                x = self.adapters[level](x, metadata_rep)
        return self.tail(x)

def _complex_to_chans(x: torch.Tensor) -> torch.Tensor:
    """``(N, K, h, w)`` complex -> ``(N, 2K, h, w)`` real: [real parts..., imaginary parts...]."""
    return torch.cat([x.real, x.imag], dim=1)

def _chans_to_complex(x: torch.Tensor) -> torch.Tensor:
    """``(N, 2K, h, w)`` real -> ``(N, K, h, w)`` complex64."""
    re, im = x.float().chunk(2, dim=1)
    return torch.complex(re, im)

def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Zero-pad the last two axes of ``x (..., h, w)`` (centred) to multiples of ``multiple``; returns
    ``(padded, pads)`` with ``pads = (left, right, top, bottom)`` for :func:`unpad`."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if ph or pw:
        x = F.pad(x, pads)
    return x, pads

def unpad(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """Inverse of :func:`pad_to_multiple`: ``x (..., h, w)`` without the ``pads`` it was given."""
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

    def forward(self, x: torch.Tensor, metadata: torch.Tensor | None = None,
                sampling: torch.Tensor | None = None) -> torch.Tensor:
        n, k = x.shape[:2]
        chans = _complex_to_chans(x)                                   # (N, 2K, h, w) float32
        grouped = chans.reshape(n, 2, -1)
        mean = grouped.mean(dim=2).view(n, 2, 1, 1)
        std = grouped.std(dim=2).view(n, 2, 1, 1).clamp_min(1e-12)
        chans = ((chans.view(n, 2, k, *chans.shape[-2:]) - mean[:, :, None]) / std[:, :, None]).view_as(chans)
        chans, pads = pad_to_multiple(chans, 2 ** self.unet.n_pools)
        if self.channels_last:
            chans = chans.contiguous(memory_format=torch.channels_last)
        out = self.unet(chans, metadata, sampling).float()
        out = unpad(out, pads)
        ko = self.out_complex_chans
        out = out.reshape(n, 2, ko, *out.shape[-2:]) * std[:, :, None]
        if not self.residual:
            out = out + mean[:, :, None]
        return _chans_to_complex(out.reshape(n, 2 * ko, *out.shape[-2:]))
