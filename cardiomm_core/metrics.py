"""Image quality metrics as the CMRxRecon challenges compute them.

What was matched (CmrxRecon/CMRxRecon ``Evaluation/Evaluation.py`` for 2023,
CmrxRecon/CMRxRecon2025-snippets ``evaluation-2024/Evaluation.py`` and
``evaluation-2025/Evaluation.py``; all three derive from fastMRI's evaluate.py):

- Metrics are computed per 2D image (one slice, one frame) and then averaged.
- PSNR: ``skimage.metrics.peak_signal_noise_ratio(gt, pred, data_range=gt.max())``, i.e.
  ``10 log10(data_range^2 / mean((gt - pred)^2))`` with the data range the maximum of the
  (normalised) ground truth, not max - min.
- SSIM: ``skimage.metrics.structural_similarity(gt, pred, data_range=gt.max())`` with skimage's
  defaults: a 7 x 7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance (N / (N - 1)), and the
  mean of the SSIM map over the pixels at least 3 from the border (skimage crops the map by
  (win_size - 1) // 2). Only windows lying fully inside the image count, so no boundary mode enters.
- NMSE: ``||gt - pred||^2 / ||gt||^2``.
- Normalisation of each 2D image before the metrics, separately for reconstruction and target:
  2023 divides by the image maximum; 2024 subtracts the mean and divides by the (population)
  standard deviation (``normalize_std``); 2025 takes the magnitude and divides by its 99.5th
  percentile (``normalize_percentile``, numpy's linear interpolation; left unchanged when that
  percentile is 0).
- Crop: the submission script ``run4Ranking`` (CmrxRecon/CMRxRecon ``CMRxReconDemo/run4Ranking.m``,
  CmrxRecon/CMRxRecon2024 ``CMRxReconDemo/run4Ranking.m`` / ``ReconTutorial/run4ranking.py``, and
  its 2025 successor ``run4Ranking_2025``) keeps the central 1/6 of each image: round(sx / 3) of
  the readout axis and round(sy / 2) of the phase-encoding axis, centred as MATLAB's ``crop``
  (start ``floor(n / 2) + ceil(-c / 2)``, MATLAB rounding). In the core layout ``(..., y, x)``
  that is round(n_y / 2) rows (phase encoding) and round(n_x / 3) columns (readout). The same crop
  serves all three conventions. (run4Ranking also picks the central slices and first frames;
  that selection is the caller's, not done here.)

One deliberate difference: the challenge's scoring scripts call ``calmetric(gt, recon)`` on a
function declared ``calmetric(pred_recon, gt_recon)``, so in places the data range and the NMSE
denominator come from the reconstruction. Here they always come from the target (the ground
truth), as the metric functions themselves intend.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .checks import as_numpy

#: Normalisation conventions, by challenge year.
CONVENTIONS: tuple[str, ...] = ("2023", "2024", "2025")


def _as_magnitude(name: str, x: object) -> np.ndarray:
    """numpy or torch, real or complex -> float64 numpy magnitude (complex) or value (real)."""
    x = as_numpy(name, x)
    if x.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dimensions (..., y, x), got shape {x.shape}")
    if np.iscomplexobj(x):
        x = np.abs(x)
    elif not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_):
        raise ValueError(f"{name} must be real or complex numeric, got dtype {x.dtype}")
    return np.asarray(x, dtype=np.float64)


def _pair(recon: object, target: object) -> tuple[np.ndarray, np.ndarray]:
    r = _as_magnitude("recon", recon)
    t = _as_magnitude("target", target)
    if r.shape != t.shape:
        raise ValueError(f"recon and target must have the same shape (..., y, x), got {r.shape} and {t.shape}")
    return r, t


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")


def _data_range(target: np.ndarray, data_range: float | None) -> np.ndarray:
    """Per-image data range ``(n_images,)``: ``data_range`` or each target image's maximum."""
    images = target.reshape(-1, *target.shape[-2:])
    if data_range is None:
        ranges = images.max(axis=(-2, -1))
        if np.any(ranges <= 0):
            raise ValueError(
                "data_range is None and a target image has maximum <= 0; pass data_range explicitly"
            )
        return ranges
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float, np.integer, np.floating)) \
            or not math.isfinite(data_range) or data_range <= 0:
        raise ValueError(f"data_range must be a positive finite number or None, got {data_range!r}")
    return np.full(images.shape[0], float(data_range))


def psnr(recon: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB, per 2D image over the last two axes, averaged.

    ``recon``, ``target``: ``(..., y, x)`` of equal shape, numpy or torch, real or complex (complex
    -> magnitude). ``data_range``: the peak; None -> each target image's maximum (CMRxRecon).
    An image reconstructed exactly gives +inf.
    """
    r, t = _pair(recon, target)
    ranges = _data_range(t, data_range)
    mse = ((r - t) ** 2).reshape(-1, *t.shape[-2:]).mean(axis=(-2, -1))
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(ranges**2 / mse)
    return float(values.mean())


def ssim(
    recon: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    data_range: float | None = None,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> float:
    """Structural similarity, per 2D image over the last two axes, averaged (skimage's SSIM).

    ``recon``, ``target``: ``(..., y, x)`` of equal shape, both y and x >= ``win_size``; numpy or
    torch, real or complex (complex -> magnitude). ``data_range``: None -> each target image's
    maximum (CMRxRecon). Uniform ``win_size`` x ``win_size`` window (odd), sample covariance,
    constants ``(k1 L)^2`` and ``(k2 L)^2``; mean over the valid (fully inside) windows.
    """
    r, t = _pair(recon, target)
    if isinstance(win_size, bool) or not isinstance(win_size, (int, np.integer)) or win_size < 3 or win_size % 2 == 0:
        raise ValueError(f"win_size must be an odd integer >= 3, got {win_size!r}")
    if min(t.shape[-2:]) < win_size:
        raise ValueError(f"images must be at least win_size={win_size} in y and x, got shape {t.shape}")
    for name, k in (("k1", k1), ("k2", k2)):
        if not isinstance(k, (int, float)) or not math.isfinite(k) or k <= 0:
            raise ValueError(f"{name} must be a positive number, got {k!r}")
    ranges = torch.from_numpy(_data_range(t, data_range)).view(-1, 1, 1, 1)
    x = torch.from_numpy(np.ascontiguousarray(t.reshape(-1, 1, *t.shape[-2:])))
    y = torch.from_numpy(np.ascontiguousarray(r.reshape(-1, 1, *r.shape[-2:])))

    def mean_filter(z: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(z, kernel_size=win_size, stride=1)

    n_points = win_size * win_size
    cov_norm = n_points / (n_points - 1.0)
    ux, uy = mean_filter(x), mean_filter(y)
    vx = cov_norm * (mean_filter(x * x) - ux * ux)
    vy = cov_norm * (mean_filter(y * y) - uy * uy)
    vxy = cov_norm * (mean_filter(x * y) - ux * uy)
    c1 = (k1 * ranges) ** 2
    c2 = (k2 * ranges) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return float(ssim_map.mean(dim=(1, 2, 3)).mean())


def nmse(recon: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor) -> float:
    """Normalised MSE ``||target - recon||^2 / ||target||^2`` per 2D image, averaged.

    ``recon``, ``target``: ``(..., y, x)`` of equal shape, numpy or torch, real or complex
    (complex -> magnitude). A target image that is all zero is a ValueError.
    """
    r, t = _pair(recon, target)
    shape = (-1, *t.shape[-2:])
    energy = (t**2).reshape(shape).sum(axis=(-2, -1))
    if np.any(energy == 0):
        raise ValueError("target has an all-zero image: NMSE is undefined")
    error = ((t - r) ** 2).reshape(shape).sum(axis=(-2, -1))
    return float((error / energy).mean())


def normalise(image: np.ndarray | torch.Tensor, convention: str) -> np.ndarray:
    """Normalise each 2D image (last two axes) as the CMRxRecon evaluation of a year does.

    ``image``: ``(..., y, x)`` numpy or torch, real or complex (complex -> magnitude).
    ``convention``: "2023" divide by the maximum; "2024" (x - mean) / std; "2025" divide by the
    99.5th percentile. An image whose maximum / std / percentile is 0 is returned unscaled
    (2024: mean-subtracted). Returns float64 numpy of the same shape.
    """
    _check_convention(convention)
    x = _as_magnitude("image", image)
    axes = (-2, -1)
    if convention == "2023":
        scale = x.max(axis=axes, keepdims=True)
    elif convention == "2024":
        x = x - x.mean(axis=axes, keepdims=True)
        scale = x.std(axis=axes, keepdims=True)
    else:
        scale = np.percentile(x, 99.5, axis=axes, keepdims=True)
    scale = np.where(scale == 0, 1.0, scale)
    return x / scale


def _matlab_round(value: float) -> int:
    return int(math.floor(value + 0.5))


def central_crop(image: np.ndarray | torch.Tensor, convention: str = "2024") -> np.ndarray:
    """The challenge's central crop of the last two axes: ``(..., y, x)`` -> ``(..., cy, cx)``.

    ``cy = round(y / 2)`` (phase encoding), ``cx = round(x / 3)`` (readout), MATLAB rounding,
    starting at ``y // 2 - cy // 2`` and ``x // 2 - cx // 2``. The dtype is kept (torch -> numpy).
    """
    _check_convention(convention)
    image = as_numpy("image", image)
    if image.ndim < 2:
        raise ValueError(f"image must have at least 2 dimensions (..., y, x), got shape {image.shape}")
    n_y, n_x = image.shape[-2:]
    c_y, c_x = max(_matlab_round(n_y / 2), 1), max(_matlab_round(n_x / 3), 1)
    y0, x0 = n_y // 2 - c_y // 2, n_x // 2 - c_x // 2
    return image[..., y0:y0 + c_y, x0:x0 + c_x]


def evaluate(
    recon: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    convention: str = "2024",
    crop: bool = True,
) -> dict[str, float]:
    """CMRxRecon scoring of ``recon`` against ``target``: ``{"psnr", "ssim", "nmse"}``.

    ``recon``, ``target``: ``(..., y, x)`` of equal shape (complex -> magnitude). Optionally the
    challenge's central crop, then each 2D image of each normalised by ``convention``, then
    PSNR / SSIM (data range = the normalised target image's maximum) and NMSE per image, averaged.
    """
    _check_convention(convention)
    r, t = _pair(recon, target)
    if crop:
        r, t = central_crop(r, convention), central_crop(t, convention)
    r, t = normalise(r, convention), normalise(t, convention)
    return {"psnr": psnr(r, t), "ssim": ssim(r, t), "nmse": nmse(r, t)}
