"""Conventional (non-learned) reconstruction: zero-filled SENSE, CG-SENSE, temporally regularised SENSE.

The fallback when no model is available, and the reference a learned recon must beat.
Shapes follow the core convention (DESIGN.md):

    kspace  (batch, coils, frames, ky, kx)   complex64, zero where unsampled
    mask    (batch | 1, 1, frames, ky, kx|1) real or bool
    sens    (batch, coils, 1 | frames, y, x) complex64
    images  (batch, frames, y, x)            complex64

Torch, batched and device-agnostic: every (batch, frame) item is its own linear system, solved
together with per-item step sizes (no Python loop over frames).

Per-frame CG-SENSE of dynamic data at R = 8 and more along one phase-encoding direction is
hopelessly ill-conditioned (on synthetic cines it is *worse* than zero-filling). What
:func:`conventional_recon` does instead (measured in ``benchmarks/fallback_quality.py``,
results in ``benchmarks/results/fallback_quality.md``):

* frames whose masks differ (ktGaussian, ktUniform, ktRadial): :func:`temporal_sense`, SENSE
  regularised towards the time-averaged image (TSENSE / k-t with training data in spirit). The
  time-averaged k-space of a kt pattern is nearly fully sampled, so its SENSE image is well
  posed; each frame then keeps its own measured k-space exactly and borrows, softly, the
  reference's k-space where it has no sample. Full sampling reduces it exactly to the plain
  solution ``A^H y``.
* one frame, or the same mask in every frame (Uniform): CG-SENSE with a Tikhonov prior towards
  the low-resolution image of the (windowed) calibration block, which keeps it at least as good
  as zero-filling at R = 8 where plain CG-SENSE amplifies noise.
* full sampling (every location in every frame): nothing to unfold, so the magnitude is the
  root-sum-of-squares of the coil images, the standard combination (Gadgetron's own Cartesian
  chains combine fully sampled data this way), with the phase of the sensitivity-weighted
  combination so the complex images stay meaningful (:func:`rss_full_sampling`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from .cg import conjugate_gradient
from .checks import check_complex, check_ndim, check_tensor
from .coils import calibration_window, check_kspace_mask, estimate_sensitivities, find_acs
from .fft import ifft2c
from .sense import rss, sens_expand, sens_reduce

logger = logging.getLogger(__name__)

#: Reconstruction methods of :func:`conventional_recon`.
RECON_METHODS = ("cg_sense", "zero_filled")
#: Sensitivity methods of :func:`conventional_recon` ("auto" chooses between the other two).
SENS_CHOICES = ("auto", "acs", "time_average")
#: Regularisations that :func:`conventional_recon` reports in :attr:`ConventionalResult.regularization`.
REGULARIZATIONS = ("temporal", "low_resolution_prior", "tikhonov", "none", "rss_full_sampling")

#: Defaults chosen on synthetic cines (benchmarks/fallback_quality.py, 8 coils, 12 frames,
#: ktGaussian / ktUniform R = 4..24, Uniform R = 4, 8). Weights are relative to the operator
#: scale: the maps are rss-normalised, so ``A^H A`` has eigenvalues in [0, 1].
#: Weight of the temporal reference in :func:`temporal_sense` (0.1 .. 0.25 were within 0.1 dB).
DEFAULT_TEMPORAL_WEIGHT = 0.15
#: Tikhonov weight of the time-averaged reference's own SENSE solve (its union mask has holes
#: at high R, ktUniform R = 24 especially; 1e-3 there was worse than zero-filling).
DEFAULT_REFERENCE_L2 = 0.2
#: CG iterations of the reference solve (nearly fully sampled: converges quickly).
REFERENCE_ITERATIONS = 10
#: Weight of the low-resolution prior for single-frame / same-mask data (0.1 .. 0.3 measured;
#: 0.2 keeps Uniform R = 8, where SENSE with 8 coils is beyond its limit, above zero-filled).
DEFAULT_PRIOR_WEIGHT = 0.2
#: Relative residual at which :func:`conventional_recon` stops its CG iterations.
DEFAULT_TOL = 1e-3
#: Default ``sens_threshold`` of :func:`conventional_recon`: 0.05 zeroed the maps over the lungs
#: and cost 1.5 dB even with full sampling; 0.01 .. 0.02 were best.
DEFAULT_SENS_THRESHOLD = 0.02

def _check_inputs(kspace: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor) -> None:
    check_kspace_mask(kspace, mask)
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


def _check_number(name: str, value: object, *, upper: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf") \
            or (upper is not None and value > upper):
        bound = f" and <= {upper:g}" if upper is not None else ""
        raise ValueError(f"{name} must be a finite number >= 0{bound}, got {value!r}")


def _check_n_iter(n_iter: object) -> None:
    if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
        raise ValueError(f"n_iter must be an integer >= 0, got {n_iter!r}")


def _check_prior(prior: torch.Tensor, images_shape: tuple[int, ...]) -> None:
    check_tensor("prior", prior)
    check_ndim("prior", prior, 4, "(batch | 1, frames | 1, y, x)")
    check_complex("prior", prior)
    b, t, n_y, n_x = images_shape
    pb, pt, p_y, p_x = prior.shape
    if pb not in (1, b) or pt not in (1, t) or (p_y, p_x) != (n_y, n_x):
        raise ValueError(
            f"prior shape {tuple(prior.shape)} does not fit the images' shape {tuple(images_shape)}: "
            f"expected ({b} or 1, {t} or 1, {n_y}, {n_x})"
        )


def cg_sense(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    sens: torch.Tensor,
    *,
    n_iter: int = 20,
    l2: float = 0.0,
    tol: float = 1e-6,
    prior: torch.Tensor | None = None,
    prior_weight: float = 0.0,
) -> torch.Tensor:
    """CG-SENSE: solve ``(A^H A + l2 I) x = A^H y`` with ``A = M F S`` (``sens_expand``).

    ``kspace (B, C, T, ky, kx)``, ``mask (B|1, 1, T, ky, kx|1)``, ``sens (B, C, 1|T, y, x)`` ->
    ``images (B, T, y, x)`` complex64. Each (batch, frame) item runs its own conjugate-gradient
    iteration (own step sizes) starting from 0; an item stops once its residual
    ``||A^H y - (A^H A + l2) x|| / ||A^H y||`` is below ``tol``, and the loop ends when all have
    stopped or after ``n_iter`` iterations.

    With a ``prior (B|1, T|1, y, x)`` complex image and ``prior_weight`` w > 0 the problem is
    ``min ||A x - y||^2 + l2 ||x||^2 + w ||x - prior||^2``, i.e.
    ``(A^H A + (l2 + w) I) x = A^H y + w prior`` (Tikhonov towards a prior image).
    """
    _check_inputs(kspace, mask, sens)
    _check_n_iter(n_iter)
    _check_number("l2", l2)
    _check_number("tol", tol)
    _check_number("prior_weight", prior_weight)
    shift = l2 + (prior_weight if prior is not None else 0.0)

    def normal(image: torch.Tensor) -> torch.Tensor:
        out = sens_reduce(sens_expand(image, sens, mask), sens, mask)  # M applied twice: A^H A for weighted masks too
        return out + shift * image if shift > 0 else out

    rhs = sens_reduce(kspace, sens, mask)
    if prior is not None:
        _check_prior(prior, tuple(rhs.shape))
        if prior_weight > 0:
            rhs = rhs + prior_weight * prior.to(device=rhs.device, dtype=rhs.dtype)
    return conjugate_gradient(normal, rhs, n_iter=n_iter, tol=tol, name="cg_sense")


def time_average_kspace(kspace: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Average the sampled k-space over frames, each location divided by its sample count.

    ``kspace (B, C, T, ky, kx)``, ``mask (B|1, 1, T, ky, kx|1)`` -> ``(average (B, C, 1, ky, kx)``
    complex, ``union (B|1, 1, 1, ky, kx|1)`` float, 1 where any frame sampled). For kt patterns the
    union is (nearly) all of k-space.
    """
    check_kspace_mask(kspace, mask)
    sampled = (mask != 0).to(device=kspace.device, dtype=kspace.real.dtype)
    count = sampled.sum(dim=2, keepdim=True)
    average = (kspace * sampled).sum(dim=2, keepdim=True) / count.clamp(min=1.0)
    return average, (count > 0).to(sampled.dtype)


def temporal_reference(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    sens: torch.Tensor,
    *,
    l2: float = DEFAULT_REFERENCE_L2,
    n_iter: int = REFERENCE_ITERATIONS,
) -> torch.Tensor:
    """SENSE image of the time-averaged k-space (:func:`time_average_kspace`), by CG-SENSE with
    Tikhonov weight ``l2`` on the union of the frames' masks.

    ``kspace (B, C, T, ky, kx)``, ``mask (B|1, 1, T, ky, kx|1)``, ``sens (B, C, 1|T, y, x)`` ->
    ``reference (B, 1|T, y, x)`` complex64 (one image per frame only for per-frame maps).
    """
    _check_inputs(kspace, mask, sens)
    average, union = time_average_kspace(kspace, mask)
    if sens.shape[2] > 1:  # per-frame maps: one reference per frame from the same average
        n_frames = kspace.shape[2]
        average = average.expand(-1, -1, n_frames, -1, -1)
        union = union.expand(-1, -1, n_frames, -1, -1)
    return cg_sense(average, union, sens, n_iter=n_iter, l2=l2, tol=1e-6)


def temporal_sense(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    sens: torch.Tensor,
    *,
    weight: float = DEFAULT_TEMPORAL_WEIGHT,
    n_iter: int = 20,
    tol: float = DEFAULT_TOL,
    reference: torch.Tensor | None = None,
    reference_l2: float = DEFAULT_REFERENCE_L2,
) -> torch.Tensor:
    """Temporally regularised SENSE for dynamic data whose masks differ between frames.

    ``kspace (B, C, T, ky, kx)``, ``mask (B|1, 1, T, ky, kx|1)``, ``sens (B, C, 1|T, y, x)`` ->
    ``images (B, T, y, x)`` complex64. Solves, for every frame t,

        min_x ||A_t x_t - y_t||^2 + weight * ||P_t F S (x_t - x_ref)||^2

    where ``P_t`` selects the k-space locations frame t did *not* sample and ``x_ref`` is
    ``reference (B|1, 1|T, y, x)``, by default :func:`temporal_reference` (the SENSE image of the
    time-averaged k-space, Tikhonov ``reference_l2``). Each frame keeps its own samples and
    borrows, softly, the reference's coil k-space where it has none (TSENSE / k-t SENSE with
    training data in spirit, without their x-f priors). Written as ``x = x_ref + d``, the normal
    equations are ``S^H F^H (M_t^2 + weight P_t) F S d = A^H (y - A x_ref)``, with eigenvalues in
    ``[weight, 1]`` for rss-normalised maps: CG (per frame, batched) converges in a few
    iterations and stops at relative residual ``tol`` or after ``n_iter`` iterations.

    With every location sampled (``P = 0``) the solution is the plain one ``(S^H S)^-1 A^H y``:
    ``A^H y`` where the maps are rss-normalised. ``weight = 0`` is unregularised SENSE (started
    from the reference). Where all maps are 0 the images are 0.
    """
    _check_inputs(kspace, mask, sens)
    _check_n_iter(n_iter)
    _check_number("weight", weight)
    _check_number("tol", tol)
    _check_number("reference_l2", reference_l2)
    real_dtype = kspace.real.dtype
    if reference is None:
        reference = temporal_reference(kspace, mask, sens, l2=reference_l2)
    else:
        _check_prior(reference, (kspace.shape[0], kspace.shape[2], kspace.shape[3], kspace.shape[4]))
    # Nothing constrains x where every map is 0: keep it 0 there, as CG-SENSE does.
    support = (sens != 0).any(dim=1)  # (B, 1|T, y, x)
    reference = reference.to(device=kspace.device, dtype=kspace.dtype) * support
    n_frames = kspace.shape[2]
    full_reference = reference.expand(kspace.shape[0], n_frames, -1, -1)

    weights = mask.to(device=kspace.device, dtype=real_dtype)
    unsampled = (mask == 0).to(device=kspace.device, dtype=real_dtype)
    k_weight = weights * weights + weight * unsampled  # (B|1, 1, T, ky, kx|1)

    def normal(image: torch.Tensor) -> torch.Tensor:
        return sens_reduce(sens_expand(image, sens) * k_weight, sens)

    residual_kspace = kspace - sens_expand(full_reference, sens, mask)
    rhs = sens_reduce(residual_kspace, sens, mask)
    update = conjugate_gradient(normal, rhs, n_iter=n_iter, tol=tol, name="temporal_sense")
    return (full_reference + update).to(kspace.dtype)


def low_resolution_prior(kspace: torch.Tensor, mask: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
    """SENSE combination of the windowed calibration block sampled in every frame.

    ``kspace (B, C, T, ky, kx)``, ``mask (B|1, 1, T, ky, kx|1)``, ``sens (B, C, 1|T, y, x)`` ->
    ``images (B, T, y, x)`` complex64: per frame, the k-space of :func:`cardiomm_core.coils.find_acs`
    weighted by the same separable Tukey window as the sensitivity estimate, inverse FFT, combined
    with the conjugate maps. ValueError when there is no calibration block.
    """
    _check_inputs(kspace, mask, sens)
    ky_slice, kx_slice = find_acs(mask)
    window = torch.from_numpy(calibration_window(ky_slice, kx_slice, kspace.shape[-2], kspace.shape[-1]))
    return sens_reduce(kspace * window.to(device=kspace.device, dtype=kspace.real.dtype), sens)


def rss_full_sampling(kspace: torch.Tensor, sens: torch.Tensor) -> torch.Tensor:
    """Root-sum-of-squares magnitude with the phase of the sensitivity-weighted combination.

    ``kspace (B, C, T, ky, kx)`` complex, fully sampled; ``sens (B|1, C, 1|T, y, x)`` complex ->
    ``images (B, T, y, x)`` complex: ``|images| = rss(ifft2c(kspace))`` exactly and
    ``angle(images) = angle(sum_c conj(S_c) img_c)`` (the phase of the SENSE / CG-SENSE solution,
    whose denominator ``S^H S + l2`` is real and positive). Where that combination is 0 (maps
    thresholded to 0) the images are real and non-negative.

    Fully sampled data needs no unfolding; rss is the usual magnitude combination, and unlike the
    SENSE combination with low-resolution maps it does not lose the signal the maps miss.
    """
    check_tensor("kspace", kspace)
    check_ndim("kspace", kspace, 5, "(batch, coils, frames, ky, kx)")
    check_complex("kspace", kspace)
    coil_images = ifft2c(kspace)
    magnitude = rss(coil_images, dim=1)
    combined = sens_reduce(kspace, sens)
    size = combined.abs()
    phase = torch.where(size > 0, combined / torch.where(size > 0, size, torch.ones_like(size)),
                        torch.ones_like(combined))
    return (magnitude * phase).to(kspace.dtype)


@dataclass
class ConventionalResult:
    """Output of :func:`conventional_recon`.

    ``images (B, T, y, x)`` complex64, ``sens (B, C, 1, y, x)`` complex64 (the estimated maps),
    ``method``: the reconstruction method used (``"cg_sense"`` or ``"zero_filled"``),
    ``sens_method``: the sensitivity method used (``"acs"`` or ``"time_average"``),
    ``regularization``: how CG-SENSE was regularised, one of :data:`REGULARIZATIONS`
    (``"temporal"``: :func:`temporal_sense`; ``"low_resolution_prior"``: Tikhonov towards
    :func:`low_resolution_prior`; ``"tikhonov"``: plain ``l2``; ``"none"``: zero-filled;
    ``"rss_full_sampling"``: fully sampled data, :func:`rss_full_sampling` for either method).
    """

    images: torch.Tensor
    sens: torch.Tensor
    method: str
    sens_method: str = ""
    regularization: str = ""


def masks_differ_over_frames(mask: torch.Tensor) -> bool:
    """True when ``mask (B|1, 1, T, ky, kx|1)`` has several frames that are not all the same
    (kt patterns: :func:`conventional_recon` then regularises in time and uses time-averaged maps)."""
    if mask.shape[2] < 2:
        return False
    sampled = mask != 0
    return not bool((sampled == sampled[:, :, :1]).all())


def _fully_sampled(mask: torch.Tensor) -> bool:
    return bool((mask != 0).all())


def conventional_recon(
    kspace: torch.Tensor,
    mask: torch.Tensor,
    *,
    method: str = "cg_sense",
    n_iter: int = 20,
    l2: float = 1e-3,
    sens_method: str = "auto",
    sens_threshold: float = DEFAULT_SENS_THRESHOLD,
    temporal_weight: float = DEFAULT_TEMPORAL_WEIGHT,
    prior_weight: float = DEFAULT_PRIOR_WEIGHT,
    tol: float = DEFAULT_TOL,
) -> ConventionalResult:
    """Estimate sensitivities, then reconstruct.

    ``kspace (B, C, T, ky, kx)`` complex64 (zero where unsampled), ``mask (B|1, 1, T, ky, kx|1)``
    -> :class:`ConventionalResult`. ``method`` is ``"cg_sense"`` or ``"zero_filled"``.
    ``"cg_sense"`` chooses its regularisation from the sampling (``result.regularization``):

    * every location sampled in every frame (for ``"zero_filled"`` too):
      :func:`rss_full_sampling`, regularisation ``"rss_full_sampling"``: magnitude the
      root-sum-of-squares of the coil images, phase that of the sensitivity-weighted combination.
      There is nothing to unfold, and rss is the standard magnitude combination (Gadgetron's
      Cartesian chains use it); the SENSE combination with low-resolution maps differed from it
      by ~8 % on a fully sampled Shepp-Logan scan;
    * several frames whose masks differ (kt patterns): :func:`temporal_sense` with
      ``temporal_weight`` (0: per-frame CG-SENSE with ``l2``, the behaviour before it existed);
    * otherwise (one frame, or the same mask in every frame): CG-SENSE with ``l2`` and a
      Tikhonov prior of weight ``prior_weight`` towards :func:`low_resolution_prior`
      (0: plain CG-SENSE with ``l2``).

    CG runs at most ``n_iter`` iterations and stops an item at relative residual ``tol``.
    ``sens_method`` is ``"acs"``, ``"time_average"`` or ``"auto"``: time average when there are
    several frames whose masks differ, ACS otherwise. ``sens_threshold`` zeroes the maps where the
    low-resolution rss is below that fraction of its maximum (see
    :func:`cardiomm_core.coils.estimate_sensitivities`), which keeps background noise out of the
    SENSE unfolding.
    """
    if method not in RECON_METHODS:
        raise ValueError(f"method must be one of {RECON_METHODS}, got {method!r}")
    if sens_method not in SENS_CHOICES:
        raise ValueError(f"sens_method must be one of {SENS_CHOICES}, got {sens_method!r}")
    check_kspace_mask(kspace, mask)
    _check_n_iter(n_iter)
    _check_number("l2", l2)
    _check_number("temporal_weight", temporal_weight)
    _check_number("prior_weight", prior_weight)
    _check_number("tol", tol)
    dynamic = masks_differ_over_frames(mask)
    if sens_method == "auto":
        sens_method = "time_average" if dynamic else "acs"
    sens = estimate_sensitivities(kspace, mask, method=sens_method, threshold=sens_threshold)
    if _fully_sampled(mask):
        images, regularization = rss_full_sampling(kspace * mask.to(kspace.real.dtype), sens), "rss_full_sampling"
    elif method == "zero_filled":
        images, regularization = zero_filled(kspace, mask, sens), "none"
    elif temporal_weight == 0 if dynamic else prior_weight == 0:
        images, regularization = cg_sense(kspace, mask, sens, n_iter=n_iter, l2=l2, tol=tol), "tikhonov"
    elif dynamic:
        images = temporal_sense(kspace, mask, sens, weight=temporal_weight, n_iter=n_iter, tol=tol)
        regularization = "temporal"
    else:
        try:
            prior = low_resolution_prior(kspace, mask, sens)
        except ValueError as exc:  # no block sampled in every frame: plain Tikhonov
            logger.debug("conventional_recon: no low-resolution prior (%s); Tikhonov l2 + prior_weight", exc)
            prior = torch.zeros_like(kspace[:, 0])
        images = cg_sense(kspace, mask, sens, n_iter=n_iter, l2=l2, tol=tol, prior=prior, prior_weight=prior_weight)
        regularization = "low_resolution_prior"
    logger.debug("conventional_recon: %s (%s) with %s sensitivities", method, regularization, sens_method)
    return ConventionalResult(images=images, sens=sens, method=method, sens_method=sens_method,
                              regularization=regularization)


def effective_acceleration(mask: torch.Tensor) -> float:
    """Locations in ``mask (B|1, 1, T, ky, kx|1)`` over sampled ones (calibration included), >= 1;
    ``inf`` when nothing is sampled."""
    check_tensor("mask", mask)
    n_sampled = int((mask != 0).sum())
    return float("inf") if n_sampled == 0 else max(1.0, mask.numel() / n_sampled)


def direct_recon(kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Direct reconstruction of (nearly) fully sampled data: zero-filled inverse FFT, root-sum-of-squares.

    ``kspace (B, C, T, ky, kx)`` complex, ``mask (B|1, 1, T, ky, kx|1)`` -> ``images (B, T, y, x)``
    complex64 with ``|images| = rss(ifft2c(kspace * mask))`` exactly; the phase is that of the
    sensitivity-weighted combination (:func:`rss_full_sampling`) when sensitivities can be estimated
    from a calibration region, else the images are real and non-negative. No iteration, no model:
    for data whose effective acceleration is so low that there is nothing to fill in.
    """
    check_kspace_mask(kspace, mask)
    sampled = kspace * (mask != 0).to(kspace.real.dtype)
    try:
        sens = estimate_sensitivities(sampled, mask, method="acs")
    except ValueError as exc:  # no calibration block: magnitude only
        logger.debug("direct_recon: no sensitivities (%s); real rss images", exc)
        return rss(ifft2c(sampled), dim=1).to(torch.complex64)
    return rss_full_sampling(sampled, sens).to(torch.complex64)
