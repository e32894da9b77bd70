"""The physics of CardioMM's unrolled cascades: autocast guard, neighbouring frames, k-space and
proximal data consistency, the sensitivity networks and the proximal unroll's conventional start.

Shapes (core convention): ``kspace (B, C, T, ky, kx)``, ``mask (B, 1, T, ky, kx|1)``,
``image (B, T, y, x)``, ``sens (B, C, 1, y, x)``; the physics runs in float32 / complex64 with
autocast off (``no_autocast``) while the U-Nets may run under bf16 autocast.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import torch
from torch import nn

from .cg import conjugate_gradient
from .conventional import conventional_recon, time_average_kspace
from .fft import ifft2c
from .prompt_unet import NormPromptUnet, PromptUnet
from .sense import sens_expand, sens_reduce

logger = logging.getLogger(__name__)

__all__ = [
    "DataConsistency",
    "ProximalDataConsistency",
    "SensitivityNet",
    "SensitivityRefiner",
    "adjacent_frame_index",
    "apply_prior",
    "conventional_start",
    "no_autocast",
]


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
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

def apply_prior(prior: NormPromptUnet, image: torch.Tensor, metadata: torch.Tensor, sampling: torch.Tensor,
                 neighbours: torch.Tensor) -> torch.Tensor:
    """``image (B, T, y, x)`` -> the prior's output ``(B, T, y, x)`` complex64, each frame from its
    ``neighbours (T, A)`` (frames folded into the batch axis, slice-major)."""
    n_b, n_t = image.shape[:2]
    with no_autocast(image.device):
        stacked = image[:, neighbours].reshape(n_b * n_t, neighbours.shape[1], *image.shape[-2:])
    return prior(stacked, metadata, sampling).reshape(image.shape)

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
        with no_autocast(masked_kspace.device):
            m = mask.to(torch.float32)
            counts = m.sum(dim=2, keepdim=True).clamp_min(1.0)                 # (B,1,1,ky,kx|1)
            k_avg = (masked_kspace * m).sum(dim=2, keepdim=True) / counts       # (B,C,1,ky,kx)
            coil_images = ifft2c(k_avg * acs)                                   # (B,C,1,y,x)
        flat = coil_images.reshape(n_b * n_c, 1, *coil_images.shape[-2:])
        sens = self.norm_unet(flat).reshape(n_b, n_c, 1, *coil_images.shape[-2:])
        with no_autocast(masked_kspace.device):
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
        with no_autocast(sens0.device):
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

def conventional_start(k0: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The proximal unroll's starting point: :func:`cardiomm_core.conventional.conventional_recon` of
    each slice, without gradient.

    ``k0 (B, C, T, ky, kx)`` complex64 (0 where unsampled), ``mask (B, 1, T, ky, kx|1)`` ->
    ``(images (B, T, y, x), sens (B, C, 1, y, x))`` complex64.
    """
    images, maps = [], []
    with torch.no_grad(), no_autocast(k0.device):
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
