"""The SENSE operator pair and root-sum-of-squares coil combination.

Shapes follow the core convention (DESIGN.md):

    image   (batch, frames, y, x)            complex
    sens    (batch, coils, 1 | frames, y, x) complex coil sensitivities
    mask    (batch, 1, frames, ky, kx)       real or bool, broadcastable (kx = 1 for line masks)
    kspace  (batch, coils, frames, ky, kx)   complex

``sens_expand`` is the forward model A = M F S and ``sens_reduce`` its adjoint A^H = S^H F^H M.
"""

from __future__ import annotations

import torch

from .checks import check_broadcast, check_complex, check_ndim, check_tensor
from .fft import fft2c, ifft2c


def _check_sens(sens: torch.Tensor) -> None:
    check_tensor("sens", sens)
    check_ndim("sens", sens, 5, "(batch, coils, frames, y, x)")
    check_complex("sens", sens)


def _check_mask(mask: torch.Tensor | None, kspace_shape: tuple[int, ...]) -> None:
    if mask is None:
        return
    check_tensor("mask", mask)
    check_ndim("mask", mask, 5, "(batch, 1, frames, ky, kx)")
    if mask.is_complex():
        raise ValueError(f"mask must be real or bool, got dtype {mask.dtype}")
    check_broadcast(("mask", "kspace"), (mask.shape, kspace_shape))


def apply_mask(kspace: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the unsampled k-space. ``kspace (B, C, T, ky, kx)``, ``mask (B, 1, T, ky, kx|1)``."""
    if mask is None:
        return kspace
    return kspace * mask.to(kspace.real.dtype)


def sens_expand(image: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Forward SENSE model: image ``(B, T, y, x)`` -> masked k-space ``(B, C, T, ky, kx)``.

    ``sens`` is ``(B, C, 1|T, y, x)``; ``mask`` (optional) ``(B, 1, T, ky, kx|1)``.
    """
    check_tensor("image", image)
    check_ndim("image", image, 4, "(batch, frames, y, x)")
    check_complex("image", image)
    _check_sens(sens)
    check_broadcast(("image", "sens"), (image.unsqueeze(1).shape, sens.shape))
    kspace = fft2c(image.unsqueeze(1) * sens)
    _check_mask(mask, tuple(kspace.shape))
    return apply_mask(kspace, mask)


def sens_reduce(kspace: torch.Tensor, sens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Adjoint SENSE model: k-space ``(B, C, T, ky, kx)`` -> image ``(B, T, y, x)``.

    Applies the mask (if given), the inverse FFT, the conjugate sensitivities and sums the coils.
    """
    check_tensor("kspace", kspace)
    check_ndim("kspace", kspace, 5, "(batch, coils, frames, ky, kx)")
    check_complex("kspace", kspace)
    _check_sens(sens)
    _check_mask(mask, tuple(kspace.shape))
    check_broadcast(("kspace", "sens"), (kspace.shape, sens.shape))
    coil_images = ifft2c(apply_mask(kspace, mask))
    return (coil_images * sens.conj()).sum(dim=1)


def rss(coil_images: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares over the coil axis ``dim``: ``(B, C, ...)`` -> real ``(B, ...)``."""
    check_tensor("coil_images", coil_images)
    if not -coil_images.ndim <= dim < coil_images.ndim:
        raise ValueError(f"dim {dim} is out of range for coil_images of shape {tuple(coil_images.shape)}")
    return torch.sqrt((coil_images.abs() ** 2).sum(dim=dim))


def rss_complex(kspace: torch.Tensor) -> torch.Tensor:
    """Root-sum-of-squares image of multi-coil k-space ``(B, C, T, ky, kx)`` -> ``(B, T, y, x)``."""
    check_tensor("kspace", kspace)
    check_ndim("kspace", kspace, 5, "(batch, coils, frames, ky, kx)")
    check_complex("kspace", kspace)
    return rss(ifft2c(kspace), dim=1)
