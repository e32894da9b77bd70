"""Noise covariance and prewhitening with the semantics of Gadgetron's NoiseAdjustGadget.

Reference: gadgetron/gadgetron ``gadgets/mri_core/NoiseAdjustGadget.cpp`` (Gadgetron 4.x).
What that gadget does, and what this module reproduces:

1. Every noise acquisition (flag ``ISMRMRD_ACQ_IS_NOISE_MEASUREMENT``) is accumulated into a
   channel-by-channel matrix, ``covariance += D^H D`` with ``D`` the ``(samples, channels)``
   data of the acquisition, and the number of samples is counted (``add_noise``). The noise dwell
   time is the ``sample_time_us`` of the first noise acquisition.
2. Before the first imaging acquisition the sum is divided by ``n_samples - 1`` (unbiased,
   ``normalize_covariance``), then ``W_g = inv(trimatu(chol(cov)))``: Armadillo's ``chol`` gives
   the upper factor ``R`` with ``R^H R = cov`` and ``W_g = R^-1`` (``computeNoisePrewhitener``).
   An all-zero covariance gives the identity instead.
3. ``W_g`` is multiplied by ``calculate_scale_factor(acquisition dwell, noise dwell, relative
   receiver noise bandwidth)`` (see :func:`noise_bandwidth_scale`) and every imaging
   acquisition is right-multiplied: ``D <- D W_g``.

In this module's layout the coil axis comes first (``noise (coils, samples)``), so
``covariance = X X^H / (n - 1)`` (the transpose of Armadillo's ``D^H D / (n - 1)``), its
Cholesky factor is ``L = R^T`` (lower, ``L L^H = covariance``) and the prewhitening matrix is
``W = scale * L^-1`` (lower triangular), applied as ``X <- W X``. The result equals Gadgetron's
``D W_g`` exactly (``(D R^-1)^T = R^-T D^T``), and ``W covariance W^H = scale^2 I``. Reading
Gadgetron's column-major ``(CHA, CHA)`` covariance or prewhitener buffer as a C-order numpy
array gives exactly this module's ``covariance`` and ``W``.

Deviations: the covariance is accumulated in complex128 (Gadgetron uses complex float);
Gadgetron's ``scale_only_channels`` option (which zeroes off-diagonal terms of chosen channels)
is not reproduced.
"""

from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger(__name__)

#: Gadgetron's default relative receiver noise bandwidth (used when the ISMRMRD header's
#: acquisitionSystemInformation.relativeReceiverNoiseBandwidth is missing).
DEFAULT_RECEIVER_NOISE_BANDWIDTH = 0.793


def _check_noise_block(name: str, noise: np.ndarray) -> np.ndarray:
    if not isinstance(noise, np.ndarray):
        raise ValueError(f"{name} must be a numpy array (coils, samples), got {type(noise).__name__}")
    if noise.ndim != 2:
        raise ValueError(f"{name} must have 2 dimensions (coils, samples), got shape {noise.shape}")
    if not (np.iscomplexobj(noise) or np.issubdtype(noise.dtype, np.floating)):
        raise ValueError(f"{name} must be complex (complex64), got dtype {noise.dtype}")
    if noise.shape[0] < 1:
        raise ValueError(f"{name} must have at least one coil, got shape {noise.shape}")
    if not np.all(np.isfinite(noise)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return noise


def noise_covariance(noise: np.ndarray) -> np.ndarray:
    """Unbiased noise covariance: ``noise (coils, samples)`` complex -> ``(coils, coils)`` complex128.

    ``cov = X X^H / (samples - 1)`` (Hermitian), as Gadgetron's NoiseAdjustGadget normalises it.
    Needs at least two samples.
    """
    noise = _check_noise_block("noise", noise)
    n_samples = noise.shape[1]
    if n_samples < 2:
        raise ValueError(f"noise needs at least 2 samples for an unbiased covariance, got {n_samples}")
    x = noise.astype(np.complex128, copy=False)
    cov = (x @ x.conj().T) / (n_samples - 1)
    return 0.5 * (cov + cov.conj().T)


def noise_bandwidth_scale(
    noise_dwell_time_us: float,
    acquisition_dwell_time_us: float,
    receiver_noise_bandwidth: float = DEFAULT_RECEIVER_NOISE_BANDWIDTH,
) -> float:
    """Gadgetron's noise bandwidth scale factor for the prewhitening matrix.

    From ``calculate_scale_factor`` in gadgetron/gadgetron gadgets/mri_core/NoiseAdjustGadget.cpp::

        if noise_dwell_time_us == 0 or acquisition_dwell_time_us == 0:  scale = 1
        else: scale = sqrt(2 * acquisition_dwell_time_us / noise_dwell_time_us * receiver_noise_bandwidth)

    evaluated, as there, in single precision and left to right (the returned float is the
    float32 value Gadgetron multiplies its prewhitener with). Dwell times are in microseconds
    (ISMRMRD ``sample_time_us``); ``receiver_noise_bandwidth`` is the header's
    ``relativeReceiverNoiseBandwidth`` (default 0.793).
    """
    values = {
        "noise_dwell_time_us": noise_dwell_time_us,
        "acquisition_dwell_time_us": acquisition_dwell_time_us,
        "receiver_noise_bandwidth": receiver_noise_bandwidth,
    }
    for name, value in values.items():
        if not isinstance(value, (int, float, np.floating, np.integer)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    noise_dwell = np.float32(noise_dwell_time_us)
    acq_dwell = np.float32(acquisition_dwell_time_us)
    if noise_dwell == 0 or acq_dwell == 0:
        return 1.0
    product = np.float32(2.0) * acq_dwell / noise_dwell * np.float32(receiver_noise_bandwidth)
    return float(np.sqrt(np.float32(product)))


def prewhitening_matrix(covariance: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Prewhitening matrix ``W = scale * L^-1``: ``covariance (coils, coils)`` -> ``(coils, coils)`` complex64.

    ``L`` is the lower Cholesky factor of ``covariance`` (``L L^H = covariance``), so ``W`` is
    lower triangular and ``W covariance W^H = scale^2 I``. ``scale`` is Gadgetron's bandwidth
    factor (:func:`noise_bandwidth_scale`), multiplied onto the matrix as NoiseAdjustGadget does.
    An all-zero covariance gives ``scale * I`` (as Gadgetron does for an empty accumulation).
    """
    if not isinstance(covariance, np.ndarray):
        raise ValueError(f"covariance must be a numpy array (coils, coils), got {type(covariance).__name__}")
    if covariance.ndim != 2 or covariance.shape[0] != covariance.shape[1] or covariance.shape[0] < 1:
        raise ValueError(f"covariance must be a square matrix (coils, coils), got shape {covariance.shape}")
    if not np.all(np.isfinite(covariance)):
        raise ValueError("covariance contains NaN or infinite values")
    if not isinstance(scale, (int, float, np.floating, np.integer)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    cov = covariance.astype(np.complex128)
    n_coils = cov.shape[0]
    magnitude = float(np.abs(cov).max())
    if magnitude == 0.0:
        logger.warning("noise covariance is all zero; using the identity as prewhitener")
        return (scale * np.eye(n_coils)).astype(np.complex64)
    if not np.allclose(cov, cov.conj().T, rtol=1e-5, atol=1e-6 * magnitude):
        raise ValueError("covariance must be Hermitian (covariance == covariance.conj().T)")
    cov = 0.5 * (cov + cov.conj().T)
    try:
        lower = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        raise ValueError(
            "covariance is not positive definite (Cholesky failed): too few noise samples, or a dead coil"
        ) from None
    inverse = np.linalg.solve(lower, np.eye(n_coils, dtype=np.complex128))
    return (scale * np.tril(inverse)).astype(np.complex64)


def prewhiten(data: np.ndarray, matrix: np.ndarray, coil_axis: int = 0) -> np.ndarray:
    """Apply a prewhitening (or any coil-mixing) matrix along ``coil_axis``.

    ``data (..., coils, ...)`` complex, ``matrix (coils_out, coils)`` -> complex64 with
    ``coils_out`` on ``coil_axis``: ``out[..., i, ...] = sum_j matrix[i, j] data[..., j, ...]``.
    """
    if not isinstance(data, np.ndarray) or not isinstance(matrix, np.ndarray):
        raise ValueError("data and matrix must be numpy arrays")
    if matrix.ndim != 2:
        raise ValueError(f"matrix must have 2 dimensions (coils_out, coils), got shape {matrix.shape}")
    if data.ndim < 1:
        raise ValueError("data must have at least one dimension (the coil axis)")
    if not -data.ndim <= coil_axis < data.ndim:
        raise ValueError(f"coil_axis {coil_axis} is out of range for data of shape {data.shape}")
    if data.shape[coil_axis] != matrix.shape[1]:
        raise ValueError(
            f"data has {data.shape[coil_axis]} coils on axis {coil_axis} but matrix expects "
            f"{matrix.shape[1]} (matrix shape {matrix.shape})"
        )
    out = np.tensordot(matrix.astype(np.complex64), data.astype(np.complex64, copy=False), axes=([1], [coil_axis]))
    return np.moveaxis(out, 0, coil_axis)


class NoiseAccumulator:
    """Accumulates noise acquisitions the way NoiseAdjustGadget does (``sum X X^H`` and a count).

    >>> acc = NoiseAccumulator()
    >>> acc.add(block)          # block (coils, samples), one per noise acquisition
    >>> w = prewhitening_matrix(acc.covariance, noise_bandwidth_scale(acc.dwell_time_us, 2.5))

    ``dwell_time_us`` is kept from the first block that names one (Gadgetron keeps the first
    noise acquisition's ``sample_time_us``).
    """

    def __init__(self) -> None:
        self._sum: np.ndarray | None = None
        self._n_samples = 0
        self.dwell_time_us: float = 0.0

    def add(self, noise_block: np.ndarray, dwell_time_us: float | None = None) -> None:
        """Add one noise acquisition ``noise_block (coils, samples)``."""
        block = _check_noise_block("noise_block", noise_block).astype(np.complex128, copy=False)
        if self._sum is not None and block.shape[0] != self._sum.shape[0]:
            raise ValueError(
                f"noise_block has {block.shape[0]} coils but earlier blocks had {self._sum.shape[0]}"
            )
        if self._sum is None:
            self._sum = np.zeros((block.shape[0], block.shape[0]), dtype=np.complex128)
        self._sum += block @ block.conj().T
        self._n_samples += block.shape[1]
        if dwell_time_us is not None and self.dwell_time_us == 0.0:
            if not math.isfinite(dwell_time_us) or dwell_time_us < 0:
                raise ValueError(f"dwell_time_us must be a finite number >= 0, got {dwell_time_us!r}")
            self.dwell_time_us = float(dwell_time_us)

    @property
    def n_samples(self) -> int:
        """Number of noise samples (per coil) added so far."""
        return self._n_samples

    @property
    def n_coils(self) -> int:
        """Number of coils (0 before the first block)."""
        return 0 if self._sum is None else self._sum.shape[0]

    @property
    def covariance(self) -> np.ndarray:
        """Unbiased covariance ``(coils, coils)`` complex128 of everything added so far."""
        if self._sum is None or self._n_samples < 2:
            raise ValueError(f"need at least 2 noise samples for a covariance, have {self._n_samples}")
        cov = self._sum / (self._n_samples - 1)
        return 0.5 * (cov + cov.conj().T)
