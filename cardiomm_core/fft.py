"""Centred, orthonormal 2D Fourier transforms over the last two axes (ky, kx).

``fft2c(x)`` equals numpy's ``fftshift(fft2(ifftshift(x), norm="ortho"))`` over the last two
axes, and ``ifft2c`` is its inverse (and adjoint). Both accept any leading axes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .checks import check_complex, check_tensor

_DIMS = (-2, -1)


def _centred(transform: Callable[..., torch.Tensor], name: str, x: torch.Tensor, layout: str) -> torch.Tensor:
    """``fftshift(transform(ifftshift(x), norm="ortho"))`` over the last two axes, after checking ``x``."""
    check_tensor(name, x)
    check_complex(name, x)
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions {layout}, got {tuple(x.shape)}")
    x = torch.fft.ifftshift(x, dim=_DIMS)
    x = transform(x, dim=_DIMS, norm="ortho")
    return torch.fft.fftshift(x, dim=_DIMS)


def fft2c(image: torch.Tensor) -> torch.Tensor:
    """Image -> k-space. ``image (..., y, x)`` complex -> ``kspace (..., ky, kx)`` complex."""
    return _centred(torch.fft.fft2, "image", image, "(..., y, x)")


def ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """K-space -> image. ``kspace (..., ky, kx)`` complex -> ``image (..., y, x)`` complex."""
    return _centred(torch.fft.ifft2, "kspace", kspace, "(..., ky, kx)")
