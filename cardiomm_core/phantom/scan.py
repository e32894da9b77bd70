"""The phantom's public face: ``simulate_cardiac_scan`` (anatomy x signal x coils -> k-space with
noise), the ``PhantomScan`` / ``PhantomGeometry`` containers, ``noise_free_rss`` (the reference a
chain is scored against) and ``phantom_geometry``."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..checks import check_int
from ..context import ScanContext
from ..readout import crop_image_readout, pad_image_readout
from .anatomy import ScanGeometry, Subject, draw_subject, make_geometry, render_slice
from .coil_physics import coil_sensitivities, correlated_noise, fft_modulations
from .signal import frame_contraction, frame_timing, phase_map, signal_weights, textures

log = logging.getLogger(__name__)

_MODALITIES = {"cine": "cine", "mapping": "t1map", "t1map": "t1map", "t2map": "t2map"}
CONTEXT_MODALITY = {"cine": "Cine", "t1map": "T1 mapping", "t2map": "T2 mapping"}

# --------------------------------------------------------------------------------------------
# Public containers
# --------------------------------------------------------------------------------------------

@dataclass
class PhantomScan:
    """A simulated, fully sampled multi-coil scan of one subject.

    Attributes (S slices, C coils, T frames, recon matrix ny x nx, nx_enc = nx * oversampling):
        kspace            (S, C, T, ky, kx_enc) complex64, with noise
        images            (S, T, y, x) complex64 coil-free ground truth on the recon FOV, max |.| = 1
        sensitivities     (S, C, y, x_enc) complex64 on the encoded FOV
        noise_covariance  (C, C) complex64 Hermitian PD, E[n n^H] of the k-space noise
                          (the zero matrix when the scan was simulated with noise_level 0)
        context           ScanContext of the scan (full sampling, acceleration 1)
        frame_times_ms    (T,) float64: cine trigger delays over one RR interval, or the TI
                          (T1 mapping) or TE (T2 mapping) of each frame
        readout_oversampling  int
        seed              int, the subject
    """

    kspace: np.ndarray
    images: np.ndarray
    sensitivities: np.ndarray
    noise_covariance: np.ndarray
    context: ScanContext
    frame_times_ms: np.ndarray
    readout_oversampling: int
    seed: int

    def noise_samples(self, n_samples: int, seed: int = 0) -> np.ndarray:
        """Noise-only samples ``(coils, n_samples)`` complex64 drawn with ``noise_covariance``.

        Deterministic for (scan seed, ``seed``); what a noise-adjust prescan would record.
        """
        if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive integer, got {n_samples!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        rng = np.random.default_rng([int(self.seed), 7, int(seed)])
        return correlated_noise(rng, self.noise_covariance, (int(n_samples),))


@dataclass(frozen=True)
class PhantomGeometry:
    """Physical geometry of a phantom scan.

    pixel_spacing_mm    square in-plane pixel size
    recon_fov_mm        (x readout, y phase) of the recon matrix
    encoded_fov_mm      (x readout, y phase) of the encoded matrix (readout oversampled)
    slice_thickness_mm  nominal slice thickness
    slice_positions_mm  (S,) position of each slice along the stack axis, base (slice 0) to apex
    """

    pixel_spacing_mm: float
    recon_fov_mm: tuple[float, float]
    encoded_fov_mm: tuple[float, float]
    slice_thickness_mm: float
    slice_positions_mm: np.ndarray



# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------

def noise_free_rss(images: np.ndarray, sensitivities: np.ndarray, mixing: np.ndarray | None = None) -> np.ndarray:
    """Root-sum-of-squares of the noise-free coil images, after a coil mixing: a perfect
    reconstruction of what a chain hands on, and the reference to score it against.

    ``images (..., T, y, x)`` complex object; ``sensitivities (..., C, y, x_enc)`` (the leading
    axes, e.g. slices, match those of ``images``); ``mixing (C_out, C)`` (prewhitening, coil
    compression or their product; None: the coils as they are) -> ``(..., T, y, x)`` float32
    ``|x| * ||M s||`` with the coil norm cropped along the readout to the recon ``x``.
    """
    sens = np.asarray(sensitivities)
    if sens.ndim < 3 or np.ndim(images) != sens.ndim:
        raise ValueError(f"images (..., T, y, x) and sensitivities (..., C, y, x_enc) must have the same number of "
                         f"axes, got {np.shape(images)} and {sens.shape}")
    if mixing is not None:
        mixing = np.asarray(mixing)
        if mixing.ndim != 2 or mixing.shape[1] != sens.shape[-3]:
            raise ValueError(f"mixing must be (C_out, C={sens.shape[-3]}), got shape {mixing.shape}")
        sens = np.moveaxis(np.tensordot(mixing, sens, axes=([1], [sens.ndim - 3])), 0, -3)
    coil_norm = crop_image_readout(np.sqrt((np.abs(sens) ** 2).sum(axis=-3)), np.shape(images)[-1])   # (..., y, x)
    return (np.abs(images) * coil_norm[..., None, :, :]).astype(np.float32)


def simulate_cardiac_scan(*, seed: int = 0, n_slices: int = 1, n_frames: int = 12, n_coils: int = 8,
                          matrix: tuple[int, int] = (128, 112), readout_oversampling: int = 2,
                          modality: str = "cine", noise_level: float = 0.01, field_strength_t: float = 3.0,
                          vendor: str = "Siemens", scanner_model: str = "Vida") -> PhantomScan:
    """Simulate a fully sampled multi-coil short-axis scan of the subject ``seed``.

    ``matrix`` is (nx readout, ny phase) of the recon space; the readout is encoded with
    ``nx * readout_oversampling`` columns. ``modality``: "cine", "mapping" (= "t1map") or "t2map".
    ``noise_level`` is the noise std (sqrt of the mean per-coil E|n|^2 of the complex k-space
    noise) relative to the max ground-truth magnitude, which is 1.

    Returns a PhantomScan with kspace (S, C, T, ky, kx_enc), images (S, T, y, x),
    sensitivities (S, C, y, x_enc); kspace = fft2c(sensitivities * pad_image_readout(images)) + noise.
    """
    seed = check_int("seed", seed, 0, 2 ** 63 - 1)
    n_slices = check_int("n_slices", n_slices, 1, 64)
    n_frames = check_int("n_frames", n_frames, 1, 256)
    n_coils = check_int("n_coils", n_coils, 1, 128)
    readout_oversampling = check_int("readout_oversampling", readout_oversampling, 1, 4)
    if not isinstance(matrix, (tuple, list)) or len(matrix) != 2:
        raise ValueError(f"matrix must be a pair (nx readout, ny phase), got {matrix!r}")
    nx = check_int("matrix[0] (nx)", matrix[0], 8, 1024)
    ny = check_int("matrix[1] (ny)", matrix[1], 8, 1024)
    if not isinstance(modality, str) or modality.lower() not in _MODALITIES:
        raise ValueError(f"modality must be one of {sorted(_MODALITIES)}, got {modality!r}")
    key = _MODALITIES[modality.lower()]
    if isinstance(noise_level, bool) or not isinstance(noise_level, (int, float, np.floating)) \
            or not math.isfinite(noise_level) or noise_level < 0:
        raise ValueError(f"noise_level must be a finite number >= 0, got {noise_level!r}")
    if isinstance(field_strength_t, bool) or not isinstance(field_strength_t, (int, float, np.floating)) \
            or not math.isfinite(field_strength_t) or field_strength_t <= 0:
        raise ValueError(f"field_strength_t must be a positive number of tesla, got {field_strength_t!r}")
    context = ScanContext(field_strength_t=float(field_strength_t), vendor=vendor, scanner_model=scanner_model,
                          modality=CONTEXT_MODALITY[key], view="short-axis", acceleration=1.0, pattern="full")

    start = time.perf_counter()
    subject = draw_subject(seed)
    geom = make_geometry(subject, n_slices, (nx, ny), readout_oversampling)
    frame_times = frame_timing(subject, key, n_frames)
    contraction = frame_contraction(subject, key, frame_times)
    weights = signal_weights(subject, key, frame_times, float(field_strength_t)).astype(np.float32)
    texture_rng = np.random.default_rng([seed, 2])
    images = np.empty((n_slices, n_frames, ny, nx), np.complex64)
    for s in range(n_slices):
        anatomy = render_slice(subject, geom, s, contraction)
        tex = textures(texture_rng, geom)
        magnitude = np.einsum("tk,kyx->tyx", weights, anatomy.static * tex)
        ys, xs = anatomy.window
        magnitude[:, ys, xs] = np.einsum("tk,tkyx->tyx", weights, anatomy.heart * tex[:, ys, xs])
        images[s] = magnitude * np.exp(1j * phase_map(subject, geom, s, anatomy))[None]
    images /= np.abs(images).max()
    t_anatomy = time.perf_counter() - start

    sens, correlation = coil_sensitivities(subject, geom, n_coils, seed)
    covariance = (correlation * noise_level ** 2).astype(np.complex64)
    covariance = (0.5 * (covariance + covariance.conj().T)).astype(np.complex64)
    t_coils = time.perf_counter() - start - t_anatomy

    # k-space = fft2c(sens * object) (cardiomm_core.fft.fft2c, computed as post * fft2(pre * x)
    # to skip the index shifts) + noise; torch for the FFT and the noise (multi-threaded).
    kspace = np.empty((n_slices, n_coils, n_frames, ny, geom.nx_enc), np.complex64)
    pre, post = (torch.from_numpy(m) for m in fft_modulations(ny, geom.nx_enc))
    generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 4]).generate_state(1)[0]))
    chol = torch.from_numpy(np.linalg.cholesky(covariance.astype(np.complex128)).astype(np.complex64)) \
        if noise_level > 0 else None
    for s in range(n_slices):
        obj = torch.from_numpy(pad_image_readout(images[s], geom.nx_enc)) * pre
        out = torch.from_numpy(kspace[s])
        torch.mul(torch.from_numpy(sens[s])[:, None], obj[None], out=out)
        torch.mul(torch.fft.fft2(out, norm="ortho"), post, out=out)
        if chol is not None:
            white = torch.randn((n_coils, out[0].numel()), dtype=torch.complex64, generator=generator)
            out.view(n_coils, -1).addmm_(chol, white)
    log.debug("phantom seed %d: anatomy %.2fs, coils %.2fs, k-space %.2fs", seed, t_anatomy, t_coils,
              time.perf_counter() - start - t_anatomy - t_coils)
    return PhantomScan(kspace=kspace, images=images, sensitivities=sens, noise_covariance=covariance,
                       context=context, frame_times_ms=np.asarray(frame_times, np.float64),
                       readout_oversampling=readout_oversampling, seed=seed)


def _scan_key(scan: PhantomScan) -> str:
    modality = scan.context.modality
    for key, name in CONTEXT_MODALITY.items():
        if name == modality:
            return key
    raise ValueError(f"scan.context.modality {modality!r} is not a phantom modality")


def scan_model(scan: PhantomScan) -> tuple[Subject, ScanGeometry, str]:
    if not isinstance(scan, PhantomScan):
        raise ValueError(f"scan must be a PhantomScan, got {type(scan).__name__}")
    if scan.images.ndim != 4:
        raise ValueError(f"scan.images must have 4 dimensions (slices, frames, y, x), got {scan.images.shape}")
    n_slices, _, ny, nx = scan.images.shape
    subject = draw_subject(scan.seed)
    return subject, make_geometry(subject, n_slices, (nx, ny), scan.readout_oversampling), _scan_key(scan)


def phantom_geometry(scan: PhantomScan) -> PhantomGeometry:
    """Physical geometry (pixel size, FOVs, slice positions) of a scan from simulate_cardiac_scan."""
    _, geom, _ = scan_model(scan)
    return PhantomGeometry(pixel_spacing_mm=geom.pixel, recon_fov_mm=(geom.nx * geom.pixel, geom.ny * geom.pixel),
                           encoded_fov_mm=(geom.nx_enc * geom.pixel, geom.ny * geom.pixel),
                           slice_thickness_mm=geom.slice_thickness, slice_positions_mm=geom.slice_z.copy())
