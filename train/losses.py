"""Training loss: SSIM + L1 on the magnitude, in the intensity scale the inference engine uses.

The network sees k-space multiplied by ``cardiomm_core.engine.normalisation_scale`` (the same
function the InferenceEngine applies, so training and inference agree); the target is scaled by
the same per-slice factor, so the loss compares magnitudes of order 1 whatever the scanner's
intensity units.

SSIM follows skimage / fastMRI's ``SSIMLoss``: a uniform ``window x window`` window (7 by
default), K1 = 0.01, K2 = 0.03, sample covariance, the mean over valid windows, and the data range
of each 2D image the maximum of its (scaled) target. It is differentiable (average pooling), so
``1 - SSIM`` is a loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cardiomm_core.readout import crop_image_readout

__all__ = ["LossTerms", "ReconLoss", "crop_to_target", "ssim_torch"]


def _check_pair(recon: torch.Tensor, target: torch.Tensor) -> None:
    for name, value in (("recon", recon), ("target", target)):
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor (batch, frames, y, x), got {type(value).__name__}")
        if value.ndim != 4 or value.is_complex():
            raise ValueError(f"{name} must be a real (batch, frames, y, x) tensor, got {value.dtype} "
                             f"{tuple(value.shape)}")
    if recon.shape != target.shape:
        raise ValueError(f"recon {tuple(recon.shape)} and target {tuple(target.shape)} must have the same shape")


def ssim_torch(recon: torch.Tensor, target: torch.Tensor, window: int = 7, k1: float = 0.01,
               k2: float = 0.03) -> torch.Tensor:
    """Differentiable SSIM of ``recon`` against ``target``, both real ``(B, T, y, x)``.

    Returns ``(B, T)``: the mean SSIM of each 2D image; data range = each target image's maximum.
    Matches ``cardiomm_core.metrics.ssim`` (skimage's definition) on the same inputs.
    """
    _check_pair(recon, target)
    if isinstance(window, bool) or not isinstance(window, int) or window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 3, got {window!r}")
    if min(target.shape[-2:]) < window:
        raise ValueError(f"images must be at least window={window} in y and x, got {tuple(target.shape)}")
    n_b, n_t = target.shape[:2]
    x = target.reshape(n_b * n_t, 1, *target.shape[-2:]).float()
    y = recon.reshape(n_b * n_t, 1, *recon.shape[-2:]).float()
    data_range = x.detach().amax(dim=(-2, -1), keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    n_points = window * window
    cov_norm = n_points / (n_points - 1.0)
    ux = F.avg_pool2d(x, window, stride=1)
    uy = F.avg_pool2d(y, window, stride=1)
    vx = cov_norm * (F.avg_pool2d(x * x, window, stride=1) - ux * ux)
    vy = cov_norm * (F.avg_pool2d(y * y, window, stride=1) - uy * uy)
    vxy = cov_norm * (F.avg_pool2d(x * y, window, stride=1) - ux * uy)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    ssim_map = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux ** 2 + uy ** 2 + c1) * (vx + vy + c2))
    return ssim_map.mean(dim=(1, 2, 3)).reshape(n_b, n_t)


def crop_to_target(image: torch.Tensor, n_x: int) -> torch.Tensor:
    """Central ``n_x`` columns of ``image (..., y, x_enc)`` (the recon FOV of a readout-oversampled
    acquisition, as ``train.data.sample.crop_to_recon_fov``); unchanged when ``x_enc == n_x``."""
    width = int(image.shape[-1])
    if n_x > width or n_x < 1:
        raise ValueError(f"cannot crop {width} readout columns to {n_x}")
    return crop_image_readout(image, n_x)


@dataclass
class LossTerms:
    """The loss and its parts (``ssim`` is the mean SSIM, not ``1 - SSIM``)."""

    loss: torch.Tensor
    l1: torch.Tensor
    ssim: torch.Tensor


class ReconLoss(torch.nn.Module):
    """``ssim_weight * (1 - SSIM) + l1_weight * mean|recon - target|`` over ``(B, T, y, x)`` magnitudes."""

    def __init__(self, ssim_weight: float = 0.84, l1_weight: float = 0.16, window: int = 7) -> None:
        super().__init__()
        if ssim_weight < 0 or l1_weight < 0 or ssim_weight + l1_weight <= 0:
            raise ValueError(f"loss weights must be >= 0 with a positive sum, got ssim {ssim_weight}, l1 {l1_weight}")
        self.ssim_weight = float(ssim_weight)
        self.l1_weight = float(l1_weight)
        self.window = int(window)

    def forward(self, recon: torch.Tensor, target: torch.Tensor) -> LossTerms:
        _check_pair(recon, target)
        recon = recon.float()
        target = target.float()
        l1 = (recon - target).abs().mean()
        ssim = ssim_torch(recon, target, self.window).mean()
        loss = self.ssim_weight * (1.0 - ssim) + self.l1_weight * l1
        return LossTerms(loss, l1.detach(), ssim.detach())
