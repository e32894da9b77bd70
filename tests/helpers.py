"""Small helpers shared by tests (import as ``from tests.helpers import ...``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch


def crandn(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    """Complex64 standard-normal tensor of ``shape`` drawn from ``rng``."""
    data = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)
    return torch.from_numpy(data.astype(np.complex64))


def vdot(a: torch.Tensor, b: torch.Tensor) -> complex:
    """<a, b> = sum(conj(a) * b) in double precision."""
    return complex((a.conj().to(torch.complex128) * b.to(torch.complex128)).sum())


@contextlib.contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one intra-op thread inside the block, the previous count restored after.

    Tiny tensors gain nothing from intra-op threads and lose a lot on a busy machine; equal thread
    counts also keep results identical to those of child processes run with ``OMP_NUM_THREADS=1``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
