"""Conventional (non-learned) reconstruction: zero-filled SENSE combination and CG-SENSE.

The fallback when no model is available, and the reference a learned recon must beat.
Shapes follow the core convention (DESIGN.md):

    kspace  (batch, coils, frames, ky, kx)   complex64, zero where unsampled
    mask    (batch | 1, 1, frames, ky, kx|1) real or bool
    sens    (batch, coils, 1 | frames, y, x) complex64
    images  (batch, frames, y, x)            complex64

Torch, batched and device-agnostic: every (batch, frame) item is its own linear system, solved
together with per-item step sizes (no Python loop over frames).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ._checks import check_complex, check_ndim, check_tensor
from .coils import _check_kspace_mask, estimate_sensitivities
from .sense import sens_expand, sens_reduce

logger = logging.getLogger(__name__)

#: Reconstruction methods of :func:`conventional_recon`.
RECON_METHODS = ("cg_sense", "zero_filled")
#: Sensitivity methods of :func:`conventional_recon` ("auto" chooses between the other two).
SENS_CHOICES = ("auto", "acs", "time_average")

_ITEM_DIMS = (-2, -1)


def _check_inputs(kspace: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor) -> None:
    _check_kspace_mask(kspace, mask)
    check_tensor("sens", sens)
    check_ndim("sens", sens, 5, "(batch, coils, 1 | frames, y, x)")
    check_complex("sens", sens)
    b, c, t, n_y, n_x = kspace.shape
    sb, sc, st, s_y, s_x = sens.shape
    if sb not in (1, b) or sc != c or st not in (1, t) or (s_y, s_x) != (n_y, n_x):
        raise ValueError(
            f"sens shape {tuple(sens.shape)} does not fit kspace shape {tuple(kspace.shape)}: "
            f"expected ({b} or 1, {c}, 1 or {t}, {n_y}, {n_x})"
        )


def zero_filled(kspace: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
    """SENSE-combined zero-filled image ``A^H y``: ``kspace (B, C, T, ky, kx)``, ``mask (B|1, 1, T, ky, kx|1)``,
    ``sens (B, C, 1|T, y, x)`` -> ``images (B, T, y, x)`` complex64."""
    _check_inputs(kspace, mask, sens)
    return sens_reduce(kspace, sens, mask)


def _inner(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-item real part of <a, b> over (y, x): ``(B, T, y, x)`` x2 -> ``(B, T, 1, 1)``."""
    return (a.conj() * b).real.sum(dim=_ITEM_DIMS, keepdim=True)


def cg_sense(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    sens: torch.Tensor,
    *,
    n_iter: int = 20,
    l2: float = 0.0,
    tol: float = 1e-6,
) -> torch.Tensor:
    """CG-SENSE: solve ``(A^H A + l2 I) x = A^H y`` with ``A = M F S`` (``sens_expand``).

    ``kspace (B, C, T, ky, kx)``, ``mask (B|1, 1, T, ky, kx|1)``, ``sens (B, C, 1|T, y, x)`` ->
    ``images (B, T, y, x)`` complex64. Each (batch, frame) item runs its own conjugate-gradient
    iteration (own step sizes) starting from 0; an item stops once its residual
    ``||A^H y - (A^H A + l2) x|| / ||A^H y||`` is below ``tol``, and the loop ends when all have
    stopped or after ``n_iter`` iterations.
    """
    _check_inputs(kspace, mask, sens)
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"n_iter must be an integer >= 0, got {n_iter!r}")
    if not isinstance(l2, (int, float)) or not l2 >= 0 or l2 == float("inf"):
        raise ValueError(f"l2 must be a finite number >= 0, got {l2!r}")
    if not isinstance(tol, (int, float)) or not tol >= 0 or tol == float("inf"):
        raise ValueError(f"tol must be a finite number >= 0, got {tol!r}")

    def normal(image: torch.Tensor) -> torch.Tensor:
        out = sens_reduce(sens_expand(image, sens, mask), sens, mask)  # M applied twice: A^H A for weighted masks too
        return out + l2 * image if l2 > 0 else out

    rhs = sens_reduce(kspace, sens, mask)
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = _inner(r, r)
    rhs_norm = rs.sqrt()
    threshold = tol * rhs_norm
    active = rs.sqrt() > threshold  # items with rhs == 0 are already solved by x = 0
    for iteration in range(n_iter):
        if not bool(active.any()):
            logger.debug("cg_sense: all items converged after %d iterations", iteration)
            break
        ap = normal(p)
        p_ap = _inner(p, ap)
        usable = active & (p_ap > 0)
        alpha = torch.where(usable, rs / torch.where(usable, p_ap, torch.ones_like(p_ap)), torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = _inner(r, r)
        beta = torch.where(usable, rs_new / torch.where(usable, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = torch.where(usable, r + beta * p, p)
        rs = torch.where(usable, rs_new, rs)
        active = usable & (rs.sqrt() > threshold)
        logger.debug(
            "cg_sense iteration %d: max relative residual %.3e",
            iteration + 1,
            float((rs.sqrt() / rhs_norm.clamp(min=torch.finfo(rs.dtype).tiny)).max()),
        )
    return x


@dataclass
class ConventionalResult:
    """Output of :func:`conventional_recon`.

    ``images (B, T, y, x)`` complex64, ``sens (B, C, 1, y, x)`` complex64 (the estimated maps),
    ``method``: the reconstruction method used (``"cg_sense"`` or ``"zero_filled"``),
    ``sens_method``: the sensitivity method used (``"acs"`` or ``"time_average"``).
    """

    images: torch.Tensor
    sens: torch.Tensor
    method: str
    sens_method: str = ""


def _masks_differ_over_frames(mask: torch.Tensor) -> bool:
    """True when ``mask (B|1, 1, T, ky, kx|1)`` has several frames that are not all the same."""
    if mask.shape[2] < 2:
        return False
    sampled = mask != 0
    return not bool((sampled == sampled[:, :, :1]).all())


def conventional_recon(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    *,
    method: str = "cg_sense",
    n_iter: int = 20,
    l2: float = 1e-3,
    sens_method: str = "auto",
    sens_threshold: float = 0.05,
) -> ConventionalResult:
    """Estimate sensitivities, then reconstruct.

    ``kspace (B, C, T, ky, kx)`` complex64 (zero where unsampled), ``mask (B|1, 1, T, ky, kx|1)``
    -> :class:`ConventionalResult`. ``method`` is ``"cg_sense"`` (``n_iter``, ``l2``) or
    ``"zero_filled"``. ``sens_method`` is ``"acs"``, ``"time_average"`` or ``"auto"``: time
    average when there are several frames whose masks differ, ACS otherwise.
    ``sens_threshold`` zeroes the maps where the low-resolution rss is below that fraction of its
    maximum (see :func:`cardiomm_core.coils.estimate_sensitivities`), which keeps background
    noise and motion ghosts out of the SENSE unfolding.
    """
    if method not in RECON_METHODS:
        raise ValueError(f"method must be one of {RECON_METHODS}, got {method!r}")
    if sens_method not in SENS_CHOICES:
        raise ValueError(f"sens_method must be one of {SENS_CHOICES}, got {sens_method!r}")
    _check_kspace_mask(kspace, mask)
    if sens_method == "auto":
        sens_method = "time_average" if _masks_differ_over_frames(mask) else "acs"
    sens = estimate_sensitivities(kspace, mask, method=sens_method, threshold=sens_threshold)
    if method == "cg_sense":
        images = cg_sense(kspace, mask, sens, n_iter=n_iter, l2=l2)
    else:
        images = zero_filled(kspace, mask, sens)
    logger.debug("conventional_recon: %s with %s sensitivities", method, sens_method)
    return ConventionalResult(images=images, sens=sens, method=method, sens_method=sens_method)
