"""The conjugate-gradient solver of the project: CG-SENSE of the conventional fallback
(:mod:`cardiomm_core.conventional`) and the proximal data consistency of the network
(:class:`cardiomm_core.unroll.ProximalDataConsistency`).

Batched: ``rhs (B, T, y, x)`` complex holds B x T independent systems ``normal(x) = rhs``, one
per (batch, frame) image, each with its own step sizes (no Python loop over items). Two ways to
stop:

- ``tol`` a number (the fallback): an item stops once its relative residual
  ``||rhs - normal(x)|| / ||rhs||`` is below ``tol``, the loop ends when every item has stopped
  (a host synchronisation per iteration) or after ``n_iter`` iterations;
- ``tol=None`` (the network): exactly ``n_iter`` iterations, differentiable and free of
  data-dependent control flow (no host synchronisation; friendly to torch.compile and CUDA
  graphs); an item whose residual reaches 0 stays where it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

logger = logging.getLogger(__name__)

__all__ = ["conjugate_gradient", "inner"]

_ITEM_DIMS = (-2, -1)


def inner(a: torch.Tensor, b: torch.Tensor, dims: tuple[int, ...] = _ITEM_DIMS) -> torch.Tensor:
    """Per-item real part of ``<a, b>`` over ``dims``: ``(B, T, y, x)`` x2 -> ``(B, T, 1, 1)``."""
    return (a.conj() * b).real.sum(dim=dims, keepdim=True)


def conjugate_gradient(
    normal: Callable[[torch.Tensor], torch.Tensor],
    rhs: torch.Tensor,
    *,
    n_iter: int,
    tol: float | None = None,
    name: str = "conjugate_gradient",
) -> torch.Tensor:
    """Solve ``normal(x) = rhs`` (Hermitian positive semi-definite per item) from ``x = 0``.

    ``rhs (B, T, y, x)`` complex -> ``x (B, T, y, x)``. Every (batch, frame) item has its own step
    sizes; an item whose step is undefined (``<p, normal(p)> <= 0``) stops where it is. ``tol``:
    see the module docstring (None: exactly ``n_iter`` steps, no host synchronisation). ``name``
    labels the debug log.
    """
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    p = r.clone()
    rs = inner(r, r)
    rhs_norm = rs.sqrt()
    threshold = tol * rhs_norm if tol is not None else torch.zeros_like(rhs_norm)
    active = rs.sqrt() > threshold  # items with rhs == 0 are already solved by x = 0
    for iteration in range(n_iter):
        if tol is not None and not bool(active.any()):
            logger.debug("%s: all items converged after %d iterations", name, iteration)
            break
        ap = normal(p)
        p_ap = inner(p, ap)
        usable = active & (p_ap > 0)
        alpha = torch.where(usable, rs / torch.where(usable, p_ap, torch.ones_like(p_ap)), torch.zeros_like(rs))
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = inner(r, r)
        beta = torch.where(usable, rs_new / torch.where(usable, rs, torch.ones_like(rs)), torch.zeros_like(rs))
        p = torch.where(usable, r + beta * p, p)
        rs = torch.where(usable, rs_new, rs)
        active = usable & (rs.sqrt() > threshold)
        if tol is not None and logger.isEnabledFor(logging.DEBUG):
            logger.debug("%s iteration %d: max relative residual %.3e", name, iteration + 1,
                         float((rs.sqrt() / rhs_norm.clamp(min=torch.finfo(rs.dtype).tiny)).max()))
    return x
