"""Input validation shared by the public functions of cardiomm_core.

Every check raises ValueError with a message that names the argument and what was expected,
so a wrong shape or dtype is reported at the public boundary instead of deep inside torch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

ArrayLike = "np.ndarray | torch.Tensor"


def check_ndim(name: str, x: np.ndarray | torch.Tensor, ndim: int, layout: str) -> None:
    """Raise ValueError unless ``x`` has ``ndim`` dimensions (``layout`` names them)."""
    if x.ndim != ndim:
        raise ValueError(
            f"{name} must have {ndim} dimensions {layout}, got shape {tuple(x.shape)}"
        )


def check_complex(name: str, x: np.ndarray | torch.Tensor) -> None:
    """Raise ValueError unless ``x`` has a complex dtype."""
    is_complex = x.is_complex() if isinstance(x, torch.Tensor) else np.iscomplexobj(x)
    if not is_complex:
        raise ValueError(f"{name} must be complex (complex64), got dtype {x.dtype}")


def check_tensor(name: str, x: object) -> torch.Tensor:
    """Raise ValueError unless ``x`` is a torch.Tensor; return it."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def check_broadcast(names: Sequence[str], shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Return the broadcast shape of ``shapes`` or raise ValueError naming the arguments."""
    try:
        return tuple(torch.broadcast_shapes(*[torch.Size(s) for s in shapes]))
    except RuntimeError:
        described = ", ".join(f"{n} {tuple(s)}" for n, s in zip(names, shapes))
        raise ValueError(f"shapes do not broadcast: {described}") from None


def check_positive(name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a finite number > 0."""
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def as_numpy(name: str, x: object) -> np.ndarray:
    """``x`` as a numpy array (a torch.Tensor is detached and copied to the CPU); ValueError otherwise."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or torch.Tensor, got {type(x).__name__}")
    return x
