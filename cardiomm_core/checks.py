"""Input validation shared by the public functions of cardiomm_core (and used by gadgets and train).

Every check raises ValueError with a message that names the argument and what was expected,
so a wrong shape or dtype is reported at the public boundary instead of deep inside torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
import torch


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


def check_int(name: str, value: object, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an ``int`` when it is an integer (Python or numpy, not bool) in
    ``[minimum, maximum]`` (no upper bound when ``maximum`` is None); ValueError naming ``name``."""
    wanted = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an integer {wanted}, got {value!r}")
    return int(value)


def check_int_range(name: str, value: object, minimum: int) -> tuple[int, int] | None:
    """None, or an inclusive ``(low, high)`` pair of integers ``minimum <= low <= high``
    (a tuple or list of two); ValueError naming ``name`` otherwise."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name} must be an inclusive range [low, high], got {value!r}")
    low = check_int(f"{name}[0]", value[0], minimum)
    high = check_int(f"{name}[1]", value[1], minimum)
    if high < low:
        raise ValueError(f"{name} must be [low, high] with low <= high, got {value!r}")
    return low, high


def as_numpy(name: str, x: object) -> np.ndarray:
    """``x`` as a numpy array (a torch.Tensor is detached and copied to the CPU); ValueError otherwise."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name} must be a numpy array or torch.Tensor, got {type(x).__name__}")
    return x


def check_model_inputs(masked_kspace: Any, mask: Any, metadata_emb: Any, sampling_emb: Any, *,
                       text_dim: int, hint: str) -> None:
    """The inputs every reconstruction network takes: ``masked_kspace (B, C, T, ky, kx)``
    complex64, ``mask (1|B, 1, 1|T, ky, 1|kx)`` real or bool, ``metadata_emb`` and ``sampling_emb``
    ``(1|B, text_dim)``; ValueError naming what is wrong (``hint`` ends the embedding message)."""
    check_tensor("masked_kspace", masked_kspace)
    check_ndim("masked_kspace", masked_kspace, 5, "(batch, coils, frames, ky, kx)")
    check_complex("masked_kspace", masked_kspace)
    if masked_kspace.dtype != torch.complex64:
        raise ValueError(f"masked_kspace must be complex64, got {masked_kspace.dtype}")
    check_tensor("mask", mask)
    check_ndim("mask", mask, 5, "(batch, 1, frames, ky, kx)")
    if mask.is_complex():
        raise ValueError(f"mask must be real or bool, got dtype {mask.dtype}")
    n_b, _, n_t, n_ky, n_kx = masked_kspace.shape
    if mask.shape[0] not in (1, n_b) or mask.shape[1] != 1 or mask.shape[2] not in (1, n_t) \
            or mask.shape[3] != n_ky or mask.shape[4] not in (1, n_kx):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not fit masked_kspace {tuple(masked_kspace.shape)}; "
                         f"expected (1|{n_b}, 1, 1|{n_t}, {n_ky}, 1|{n_kx})")
    for name, emb in (("metadata_emb", metadata_emb), ("sampling_emb", sampling_emb)):
        check_tensor(name, emb)
        if emb.ndim != 2 or emb.shape[0] not in (1, n_b) or emb.shape[1] != text_dim:
            raise ValueError(f"{name} must have shape ({n_b}, text_dim={text_dim}), got {tuple(emb.shape)} ({hint})")


def dataclass_to_json(instance: Any) -> dict[str, Any]:
    """A dataclass instance as a JSON-ready mapping of its fields (tuples become lists)."""
    out = dataclasses.asdict(instance)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def dataclass_fields_from(cls: type, values: object, label: str, *,
                          may_be_missing: Collection[str] | None = ()) -> dict[str, Any]:
    """``values`` (a mapping) as the keyword arguments of the dataclass ``cls``, checked: an
    unknown key, or a missing field that is not in ``may_be_missing`` (None: every field may be
    missing and takes its default), is a ValueError naming them (``label`` starts the message)."""
    if not isinstance(values, Mapping):
        raise ValueError(f"values must be a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    missing = [] if may_be_missing is None else sorted(known - set(values) - set(may_be_missing))
    if unknown or missing:
        raise ValueError(f"{label} does not match: unknown key(s) {unknown}, missing key(s) {missing}; "
                         f"known: {sorted(known)}")
    return dict(values)
