"""Centred, orthonormal 2D Fourier transforms over the last two axes (ky, kx).

``fft2c(x)`` equals numpy's ``fftshift(fft2(ifftshift(x), norm="ortho"))`` over the last two
axes, and ``ifft2c`` is its inverse (and adjoint). Both accept any leading axes.
"""

from __future__ import annotations

import torch

from .checks import check_complex, check_tensor

_DIMS = (-2, -1)


def fft2c(image: torch.Tensor) -> torch.Tensor:
    """Image -> k-space. ``image (..., y, x)`` complex -> ``kspace (..., ky, kx)`` complex."""
    check_tensor("image", image)
    check_complex("image", image)
    if image.ndim < 2:
        raise ValueError(f"image must have at least 2 dimensions (..., y, x), got {tuple(image.shape)}")
    x = torch.fft.ifftshift(image, dim=_DIMS)
    x = torch.fft.fft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """K-space -> image. ``kspace (..., ky, kx)`` complex -> ``image (..., y, x)`` complex."""
    check_tensor("kspace", kspace)
    check_complex("kspace", kspace)
    if kspace.ndim < 2:
        raise ValueError(f"kspace must have at least 2 dimensions (..., ky, kx), got {tuple(kspace.shape)}")
    x = torch.fft.ifftshift(kspace, dim=_DIMS)
    x = torch.fft.ifft2(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)
