"""Coil compression, calibration-region detection and coil sensitivity estimation.

Shapes follow the core convention (DESIGN.md):

    kspace  (batch, coils, frames, ky, kx)   complex64, zero where unsampled
    mask    (batch | 1, 1, frames, ky, kx|1) real or bool, kx = 1 for line masks
    sens    (batch, coils, 1, y, x)          complex64

Sensitivity estimation (``estimate_sensitivities``) follows E2E-VarNet / fastMRI: a
low-resolution image per coil from the (windowed) fully sampled centre of k-space, divided by
its root-sum-of-squares over coils. Two ways to choose that centre:

``method="acs"``
    The auto-calibration block sampled in *every* frame (``find_acs``), averaged over frames.
    Best for static scans, for masks that do not change over time (Uniform), and for
    dynamic scans with strong motion: every frame contributes the same k-space region, so the
    maps are a clean time average of the low-resolution coil images.

``method="time_average"``
    TSENSE-like: the sampled k-space is averaged over frames, each location divided by the
    number of frames that sampled it, and the fully sampled centre of that *union* is used.
    Best for dynamic data whose masks change from frame to frame (ktUniform, ktGaussian,
    ktRadial): the union covers far more of k-space than the per-frame ACS (all of it for
    ktUniform), giving sharper maps, and it is the only option when there is no common
    calibration block. Motion blurs the averaged object, but the blur largely cancels in the
    division by the root-sum-of-squares.

Both are differentiable, batched torch code without loops over frames.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from .checks import as_numpy, check_complex, check_ndim, check_tensor
from .fft import ifft2c

logger = logging.getLogger(__name__)

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)

#: Relative floor for the root-sum-of-squares in the sensitivity normalisation: pixels whose
#: rss is below ``_RSS_FLOOR * max(rss)`` (no signal) are divided by that floor instead.
_RSS_FLOOR = 1e-4

#: Fraction of the calibration block's length covered by the cosine tapers of its window.
_WINDOW_TAPER = 0.5

#: Sensitivity estimation methods.
SENS_METHODS = ("acs", "time_average")


@dataclass(frozen=True)
class SvdCoilCompression:
    """A coil compression: ``n_virtual`` virtual coils as linear combinations of ``n_coils``.

    ``matrix (n_virtual, n_coils)`` complex64 has orthonormal rows (the leading left singular
    vectors of the calibration data, conjugated); ``singular_values (n_coils,)`` float64 are
    those of the calibration data (descending); ``energy_kept`` is the fraction of the
    calibration data's energy that the virtual coils keep. With ``n_virtual == n_coils`` the
    matrix is unitary and ``matrix^H`` recovers the original coils.
    """

    matrix: np.ndarray
    singular_values: np.ndarray
    energy_kept: float

    def __post_init__(self) -> None:
        if not isinstance(self.matrix, np.ndarray) or self.matrix.ndim != 2:
            raise ValueError("matrix must be a 2D numpy array (n_virtual, n_coils)")
        if self.matrix.shape[0] > self.matrix.shape[1] or self.matrix.shape[0] < 1:
            raise ValueError(f"matrix must be (n_virtual, n_coils) with 1 <= n_virtual <= n_coils, got {self.matrix.shape}")
        if self.singular_values.shape != (self.matrix.shape[1],):
            raise ValueError(
                f"singular_values must have shape (n_coils,) = ({self.matrix.shape[1]},), "
                f"got {self.singular_values.shape}"
            )

    @property
    def n_virtual(self) -> int:
        """Number of virtual (output) coils."""
        return int(self.matrix.shape[0])

    @property
    def n_coils(self) -> int:
        """Number of physical (input) coils."""
        return int(self.matrix.shape[1])

    def apply(self, data: ArrayT, coil_axis: int) -> ArrayT:
        """Compress ``data (..., n_coils, ...)`` along ``coil_axis`` -> ``(..., n_virtual, ...)``.

        Works on numpy arrays and torch tensors (any device; differentiable); the result has the
        input's type and complex dtype (complex64 unless the input is complex128).
        """
        if not isinstance(data, (np.ndarray, torch.Tensor)):
            raise ValueError(f"data must be a numpy array or torch.Tensor, got {type(data).__name__}")
        if data.ndim < 1 or not -data.ndim <= coil_axis < data.ndim:
            raise ValueError(f"coil_axis {coil_axis} is out of range for data of shape {tuple(data.shape)}")
        if data.shape[coil_axis] != self.n_coils:
            raise ValueError(
                f"data has {data.shape[coil_axis]} coils on axis {coil_axis}, "
                f"the compression expects {self.n_coils}"
            )
        if isinstance(data, torch.Tensor):
            dtype = torch.complex128 if data.dtype in (torch.complex128, torch.float64) else torch.complex64
            matrix_t = torch.from_numpy(self.matrix).to(device=data.device, dtype=dtype)
            out_t = torch.tensordot(matrix_t, data.to(dtype), dims=([1], [coil_axis]))
            return torch.movedim(out_t, 0, coil_axis)
        np_dtype = np.complex128 if data.dtype in (np.complex128, np.float64) else np.complex64
        out = np.tensordot(self.matrix.astype(np_dtype), data.astype(np_dtype, copy=False), axes=([1], [coil_axis]))
        return np.moveaxis(out, 0, coil_axis)


def coil_compression(
    calib: np.ndarray,
    coil_axis: int = 0,
    *,
    n_virtual: int | None = None,
    energy: float | None = None,
) -> SvdCoilCompression:
    """SVD coil compression from calibration data ``calib (..., n_coils, ...)`` (coils on ``coil_axis``).

    Give exactly one of ``n_virtual`` (1..n_coils) or ``energy`` (0 < energy <= 1: the smallest
    number of virtual coils whose energy fraction is >= ``energy``). All other axes of ``calib``
    are samples. Returns a :class:`SvdCoilCompression`.
    """
    calib = as_numpy("calib", calib)
    if calib.ndim < 2:
        raise ValueError(f"calib must have a coil axis and at least one sample axis, got shape {calib.shape}")
    if not -calib.ndim <= coil_axis < calib.ndim:
        raise ValueError(f"coil_axis {coil_axis} is out of range for calib of shape {calib.shape}")
    if (n_virtual is None) == (energy is None):
        raise ValueError("give exactly one of n_virtual or energy")
    n_coils = calib.shape[coil_axis]
    if n_virtual is not None:
        if isinstance(n_virtual, bool) or not isinstance(n_virtual, (int, np.integer)) or not 1 <= n_virtual <= n_coils:
            raise ValueError(f"n_virtual must be an integer in 1..{n_coils} (the number of coils), got {n_virtual!r}")
    if energy is not None:
        if not isinstance(energy, (int, float, np.floating)) or not np.isfinite(energy) or not 0 < energy <= 1:
            raise ValueError(f"energy must be a number with 0 < energy <= 1, got {energy!r}")
    x = np.moveaxis(calib, coil_axis, 0).reshape(n_coils, -1).astype(np.complex128)
    if not np.all(np.isfinite(x)):
        raise ValueError("calib contains NaN or infinite values")
    # Full U (n_coils x n_coils) even with fewer samples than coils, so all-coil compression is unitary.
    u, s, _ = np.linalg.svd(x, full_matrices=x.shape[1] < n_coils)
    singular_values = np.zeros(n_coils, dtype=np.float64)
    singular_values[: s.size] = s
    power = singular_values**2
    total = float(power.sum())
    if total == 0.0:
        raise ValueError("calib is all zero: no energy to compress")
    cumulative = np.cumsum(power) / total
    if n_virtual is None:
        # Smallest k whose cumulative energy reaches the target (tolerating rounding).
        n_virtual = min(int(np.searchsorted(cumulative, float(energy or 1.0) - 1e-12)) + 1, n_coils)
    n_virtual = int(n_virtual)
    energy_kept = float(min(cumulative[n_virtual - 1], 1.0))
    matrix = u[:, :n_virtual].conj().T.astype(np.complex64)
    logger.debug("coil compression %d -> %d coils keeps %.4f of the energy", n_coils, n_virtual, energy_kept)
    return SvdCoilCompression(matrix=matrix, singular_values=singular_values, energy_kept=energy_kept)


def _grow_centre(sampled: np.ndarray, centre: tuple[int, ...]) -> list[tuple[int, int]] | None:
    """Largest block around ``centre`` in which ``sampled`` (bool, any ndim) is all True.

    Grows one step per side per round (balanced), each side stopping at its first edge that is not
    fully sampled. Returns ``[(lo, hi), ...]`` per axis (hi exclusive), or None if the centre is
    not sampled.
    """
    if not sampled[centre]:
        return None
    bounds = [[c, c + 1] for c in centre]
    grow = [[True, True] for _ in centre]
    while any(g for pair in grow for g in pair):
        for axis in range(sampled.ndim):
            for side in (0, 1):
                if not grow[axis][side]:
                    continue
                lo, hi = bounds[axis]
                new = lo - 1 if side == 0 else hi
                if new < 0 or new >= sampled.shape[axis]:
                    grow[axis][side] = False
                    continue
                index = tuple(
                    slice(new, new + 1) if a == axis else slice(bounds[a][0], bounds[a][1])
                    for a in range(sampled.ndim)
                )
                if sampled[index].all():
                    bounds[axis][side] = new if side == 0 else new + 1
                else:
                    grow[axis][side] = False
    return [(lo, hi) for lo, hi in bounds]


def _mask_to_numpy(mask: np.ndarray | torch.Tensor, name: str = "mask") -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        if mask.is_complex():
            raise ValueError(f"{name} must be real or bool, got dtype {mask.dtype}")
        return (mask.detach() != 0).cpu().numpy()
    if isinstance(mask, np.ndarray):
        if np.iscomplexobj(mask):
            raise ValueError(f"{name} must be real or bool, got dtype {mask.dtype}")
        return mask != 0
    raise ValueError(f"{name} must be a torch.Tensor or numpy array, got {type(mask).__name__}")


def _central_block(sampled: np.ndarray, min_size: int, what: str) -> tuple[slice, slice]:
    """Central fully sampled block of a bool ``(ky, kx|1)`` map -> (ky slice, kx slice)."""
    n_ky, n_kx = sampled.shape
    if n_kx == 1:
        block = _grow_centre(sampled[:, 0], (n_ky // 2,))
        if block is None:
            raise ValueError(f"no calibration region: the central line ky={n_ky // 2} is not sampled in {what}")
        (lo, hi), = block
        if hi - lo < min_size:
            raise ValueError(
                f"no calibration region: only {hi - lo} contiguous central line(s) are sampled in {what} "
                f"(need at least {min_size})"
            )
        return slice(lo, hi), slice(None)
    block = _grow_centre(sampled, (n_ky // 2, n_kx // 2))
    if block is None:
        raise ValueError(
            f"no calibration region: the k-space centre (ky={n_ky // 2}, kx={n_kx // 2}) is not sampled in {what}"
        )
    (ky_lo, ky_hi), (kx_lo, kx_hi) = block
    if min(ky_hi - ky_lo, kx_hi - kx_lo) < min_size:
        raise ValueError(
            f"no calibration region: the fully sampled centre in {what} is only "
            f"{ky_hi - ky_lo} x {kx_hi - kx_lo} (need at least {min_size} x {min_size})"
        )
    return slice(ky_lo, ky_hi), slice(kx_lo, kx_hi)


def find_acs(mask: torch.Tensor | np.ndarray, *, min_size: int = 4) -> tuple[slice, slice]:
    """Central auto-calibration block of ``mask (..., frames, ky, kx|1)`` -> ``(ky slice, kx slice)``.

    The block is the largest rectangle around the k-space centre (``ky // 2``, ``kx // 2``) that is
    sampled in every frame (and every leading index, e.g. batch). For line masks (``kx == 1``) the
    kx slice is ``slice(None)``. A region narrower than ``min_size`` lines counts as none:
    ValueError says what is missing.
    """
    sampled = _mask_to_numpy(mask)
    if sampled.ndim < 3:
        raise ValueError(f"mask must have at least 3 dimensions (..., frames, ky, kx|1), got shape {sampled.shape}")
    if sampled.shape[-2] < 1 or sampled.shape[-1] < 1:
        raise ValueError(f"mask has an empty ky or kx axis: shape {sampled.shape}")
    common = np.asarray(sampled.reshape(-1, *sampled.shape[-2:]).all(axis=0))
    return _central_block(common, min_size, "every frame")


def _window(length: int, taper: float = _WINDOW_TAPER) -> np.ndarray:
    """Tukey window over ``length`` samples: flat centre, cosine tapers over ``taper`` of the
    length (split between both ends), end points non-zero; all ones for a single sample.

    A compromise measured on synthetic cines: a rectangular window rings at sharp object edges,
    a full Hann window blurs the maps; Tukey(0.5) is close to the better of the two in both cases.
    """
    position = (np.arange(length) + 1.0) / (length + 1.0)  # in (0, 1), end points excluded
    window = np.ones(length)
    half = taper / 2.0
    rising = position < half
    falling = position > 1.0 - half
    window[rising] = 0.5 * (1.0 + np.cos(np.pi * (position[rising] / half - 1.0)))
    window[falling] = 0.5 * (1.0 + np.cos(np.pi * ((position[falling] - 1.0) / half + 1.0)))
    return window


def calibration_window(ky_slice: slice, kx_slice: slice, n_ky: int, n_kx: int) -> np.ndarray:
    """``(ky, kx)`` float32 weight: a separable Tukey window on the calibration block
    ``(ky_slice, kx_slice)`` (from :func:`find_acs`), 0 elsewhere; it tapers the block before a
    low-resolution image is made of it (sensitivities, the fallback's prior)."""
    ky_range = range(n_ky)[ky_slice]
    kx_range = range(n_kx)[kx_slice]
    weight = np.zeros((n_ky, n_kx), dtype=np.float32)
    weight[ky_range.start : ky_range.stop, kx_range.start : kx_range.stop] = np.outer(
        _window(len(ky_range)), _window(len(kx_range))
    )
    return weight


def check_kspace_mask(kspace: torch.Tensor, mask: torch.Tensor) -> None:
    """ValueError unless ``kspace (B, C, T, ky, kx)`` is a complex tensor and ``mask`` a real or
    bool ``(B|1, 1, T, ky, kx|1)`` that fits it."""
    check_tensor("kspace", kspace)
    check_ndim("kspace", kspace, 5, "(batch, coils, frames, ky, kx)")
    check_complex("kspace", kspace)
    check_tensor("mask", mask)
    check_ndim("mask", mask, 5, "(batch | 1, 1, frames, ky, kx | 1)")
    if mask.is_complex():
        raise ValueError(f"mask must be real or bool, got dtype {mask.dtype}")
    b, _, t, n_ky, n_kx = kspace.shape
    mb, mc, mt, m_ky, m_kx = mask.shape
    if mb not in (1, b) or mc != 1 or mt != t or m_ky != n_ky or m_kx not in (1, n_kx):
        raise ValueError(
            f"mask shape {tuple(mask.shape)} does not fit kspace shape {tuple(kspace.shape)}: "
            f"expected ({b} or 1, 1, {t}, {n_ky}, {n_kx} or 1)"
        )


def estimate_sensitivities(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    *,
    method: str = "acs",
    threshold: float = 0.0,
) -> torch.Tensor:
    """Coil sensitivities from undersampled k-space.

    ``kspace (B, C, T, ky, kx)`` complex64 (zero where unsampled), ``mask (B|1, 1, T, ky, kx|1)``
    -> ``sens (B, C, 1, y, x)`` complex64 with root-sum-of-squares over coils equal to 1 wherever
    there is signal (below ``1e-4`` of the maximum rss the maps fall smoothly to 0).

    ``threshold`` (0 <= threshold < 1): where the low-resolution rss is below ``threshold`` times
    its maximum (per batch item) the maps are set to 0. The default 0 gives fastMRI-style maps
    that cover the whole field of view (what a learned model expects); a few per cent helps
    CG-SENSE, because maps in the background are normalised noise or motion ghosts that corrupt
    the unfolding, while zero maps there let the regulariser keep the background at 0.

    ``method``: ``"acs"`` uses the block sampled in every frame (:func:`find_acs`);
    ``"time_average"`` averages the sampled k-space over frames (each location divided by its
    sample count) and uses the fully sampled centre of the union of the frames' masks. The
    block is weighted by a separable Tukey(0.5) window before the inverse FFT. See the module
    docstring for when each is better. Differentiable with respect to ``kspace``. The maps carry
    the object's low-resolution phase (common to all coils), so SENSE images made with them have
    that phase removed.
    """
    if method not in SENS_METHODS:
        raise ValueError(f"method must be one of {SENS_METHODS}, got {method!r}")
    if not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
        raise ValueError(f"threshold must be a number with 0 <= threshold < 1, got {threshold!r}")
    check_kspace_mask(kspace, mask)
    n_ky, n_kx = kspace.shape[-2:]
    real_dtype = kspace.real.dtype
    weights = mask.to(device=kspace.device, dtype=real_dtype)
    count = weights.sum(dim=2, keepdim=True)  # (B|1, 1, 1, ky, kx|1)
    average = (kspace * weights).sum(dim=2, keepdim=True) / count.clamp(min=1.0)  # (B, C, 1, ky, kx)
    if method == "acs":
        ky_slice, kx_slice = find_acs(mask)
    else:
        union = _mask_to_numpy(mask).any(axis=2)  # (B|1, 1, ky, kx|1)
        common_union = np.asarray(union.reshape(-1, *union.shape[-2:]).all(axis=0))
        ky_slice, kx_slice = _central_block(common_union, 4, "the union of the frames' masks")
    weight = torch.from_numpy(calibration_window(ky_slice, kx_slice, n_ky, n_kx)).to(
        device=kspace.device, dtype=real_dtype
    )
    low_res = ifft2c(average * weight)  # (B, C, 1, y, x)
    power = (low_res.real**2 + low_res.imag**2).sum(dim=1, keepdim=True)  # (B, 1, 1, y, x)
    floor = (_RSS_FLOOR**2) * power.detach().amax(dim=(-2, -1), keepdim=True)
    floor = floor.clamp(min=torch.finfo(real_dtype).tiny)
    rss = torch.sqrt(torch.maximum(power, floor))
    sens = low_res / rss
    if threshold > 0:
        peak = power.detach().amax(dim=(-2, -1), keepdim=True)
        sens = sens * (power.detach() >= (threshold**2) * peak).to(real_dtype)
    return sens.to(torch.complex64) if kspace.dtype == torch.complex64 else sens


def acs_region_mask(mask: torch.Tensor) -> torch.Tensor:
    """The auto-calibration region of each slice's mask as a 0/1 float ``(B, 1, 1, ky, kx)``.

    ``mask (B, 1, T, ky, kx|1)``. Uses :func:`cardiomm_core.coils.find_acs` per slice (ACS lines of
    Cartesian masks, the fully sampled centre of radial masks). A slice whose mask has no
    calibration region gets the whole k-space (the sensitivity network then works from the
    time-averaged data), with a warning.
    """
    check_tensor("mask", mask)
    check_ndim("mask", mask, 5, "(batch, 1, frames, ky, kx)")
    n_b, _, _, n_ky, _ = mask.shape
    regions = []
    for b in range(n_b):
        m = mask[b:b + 1].detach().to("cpu")
        region = torch.zeros(1, 1, 1, n_ky, mask.shape[-1], dtype=torch.float32)
        try:
            ky_sl, kx_sl = find_acs(m)
        except ValueError as exc:
            logger.warning("no auto-calibration region in the mask of slice %d (%s); using all of k-space", b, exc)
            ky_sl, kx_sl = slice(None), slice(None)
        region[..., ky_sl, kx_sl] = 1.0
        regions.append(region)
    return torch.cat(regions, dim=0).to(mask.device)


__all__ = [
    "acs_region_mask",
    "SvdCoilCompression",
    "calibration_window",
    "check_kspace_mask",
    "coil_compression",
    "find_acs",
    "estimate_sensitivities",
    "SENS_METHODS",
]
