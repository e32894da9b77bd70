"""Small helpers shared by tests (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

import numpy as np
import torch


def crandn(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    """Complex64 standard-normal tensor of ``shape`` drawn from ``rng``."""
    data = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return torch.from_numpy(data.astype(np.complex64))


def vdot(a: torch.Tensor, b: torch.Tensor) -> complex:
    """<a, b> = sum(conj(a) * b) in double precision."""
    return complex((a.conj().to(torch.complex128) * b.to(torch.complex128)).sum())
