"""Synthetic multi-coil 2D+t cardiac MR scans (short-axis cine, T1 and T2 mapping).

The phantom is an anatomical cartoon drawn with anti-aliased (partial-volume) shapes in physical
units (mm), so it looks the same at any matrix size:

* torso (super-ellipse) with a bright subcutaneous fat layer of varying thickness, chest-wall and
  back muscles, ribs, sternum, a vertebra (cortex, marrow, spinal canal with CSF);
* a thoracic cavity holding two dark lungs with small vessels, the liver (with vessels) and the
  spleen towards the apex, the descending aorta beside the spine;
* the heart: left-ventricular blood pool and myocardial ring (trabeculated endocardium, two
  papillary muscles), a crescent right ventricle with a thin free wall, epicardial fat. Over the
  cardiac cycle the LV cavity area follows ``1 - EF * c(t)`` (``c`` is 0 at end-diastole, 1 at
  end-systole), the myocardium keeps (slightly more than) its area so the wall thickens in
  systole, and the RV contracts too. Slices run from base (slice 0) to apex, the heart shrinking
  towards the apex.

Tissue signal follows the physics of the sequence: balanced SSFP for cine (blood bright through
T2/T1 and inflow, fat bright, myocardium and liver grey, lungs dark), ideal inversion recovery
``PD * (1 - 2 exp(-TI / T1))`` (signed, MOLLI-like TI list) for T1 mapping, and
``PD * exp(-TE / T2)`` (T2-prepared) for T2 mapping, with tissue T1/T2 at the field strength
(published 1.5 T and 3 T values, power-law in between). Smooth low-frequency textures, a global
intensity variation and a smooth B0-like phase are multiplied in.

Coil sensitivities come from the Biot-Savart law: circular loops (anterior array conforming to
the chest, posterior array flat in the table) evaluated on the image plane of each slice
(receive field ``B_x - i B_y``, times a per-coil cable phase). The coil noise covariance is a
sample-noise proxy (the overlap of the coils' fields over the body) plus independent receiver
noise: Hermitian positive definite, with realistic correlations between neighbouring coils.

Every draw comes from ``seed``: one seed is one subject (body and heart size, position and
orientation, ejection fraction, heart rate, tissue values). The subject does not depend on the
matrix size, number of slices, frames or coils.

Geometry: the recon image is ``(ny, nx)`` with square pixels; the readout is encoded with
``nx_enc = nx * readout_oversampling`` columns, and the recon FOV is the central part of the
encoded FOV, starting at column ``nx_enc // 2 - nx // 2`` (the centre pixel ``n // 2`` of the
centred FFT convention is kept; see ``cardiomm_core.readout``). The body always fits
inside the recon FOV, so the object is zero outside it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .checks import check_int
from .context import ScanContext
from .readout import crop_image_readout, pad_image_readout

log = logging.getLogger(__name__)

#: Tissue classes of the phantom, in the order of the fraction maps.
TISSUES: tuple[str, ...] = (
    "air", "fat", "muscle", "soft", "lung", "liver", "spleen", "bone", "marrow", "csf",
    "myocardium", "lv_blood", "rv_blood", "vessel_blood",
)
_K = {name: index for index, name in enumerate(TISSUES)}
_N_TISSUES = len(TISSUES)

#: Relaxation times (T1 ms, T2 ms) at 1.5 T and 3 T; blood classes share "blood".
_RELAXATION = {
    #               1.5 T            3 T
    "fat":        ((260.0, 70.0), (400.0, 60.0)),
    "muscle":     ((1000.0, 40.0), (1400.0, 35.0)),
    "soft":       ((900.0, 50.0), (1100.0, 45.0)),
    "lung":       ((1100.0, 40.0), (1300.0, 35.0)),
    "liver":      ((580.0, 45.0), (800.0, 35.0)),
    "spleen":     ((1060.0, 70.0), (1330.0, 60.0)),
    "bone":       ((300.0, 5.0), (400.0, 5.0)),
    "marrow":     ((450.0, 60.0), (550.0, 50.0)),
    "csf":        ((3700.0, 1800.0), (4100.0, 1500.0)),
    "myocardium": ((1000.0, 50.0), (1200.0, 45.0)),
    "blood":      ((1550.0, 250.0), (1900.0, 250.0)),
}
#: Relative proton density (times receive chain) per tissue.
_PROTON_DENSITY = {
    "air": 0.0, "fat": 0.90, "muscle": 0.75, "soft": 0.70, "lung": 0.10, "liver": 0.75,
    "spleen": 0.80, "bone": 0.03, "marrow": 0.80, "csf": 1.0, "myocardium": 0.80,
    "lv_blood": 0.95, "rv_blood": 0.95, "vessel_blood": 0.95,
}
#: Texture amplitudes per tissue: (low-frequency, fine grain), relative.
_TEXTURE = {
    "air": (0.0, 0.0), "fat": (0.06, 0.03), "muscle": (0.08, 0.05), "soft": (0.10, 0.05),
    "lung": (0.30, 0.20), "liver": (0.06, 0.04), "spleen": (0.05, 0.03), "bone": (0.20, 0.10),
    "marrow": (0.10, 0.08), "csf": (0.03, 0.01), "myocardium": (0.05, 0.03),
    "lv_blood": (0.06, 0.02), "rv_blood": (0.08, 0.02), "vessel_blood": (0.08, 0.02),
}

_MODALITIES = {"cine": "cine", "mapping": "t1map", "t1map": "t1map", "t2map": "t2map"}
_CONTEXT_MODALITY = {"cine": "Cine", "t1map": "T1 mapping", "t2map": "T2 mapping"}
#: Contraction state of the static anatomy of mapping scans (mid-diastole, diastasis).
_MID_DIASTOLE = 0.13
_SOFT_EDGE = 0.5  # half-width of the partial-volume ramp, in pixels


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
        return _correlated_noise(rng, self.noise_covariance, (int(n_samples),))


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
# Subject and geometry
# --------------------------------------------------------------------------------------------

@dataclass
class _Subject:
    """All random draws that define one subject (depend on the seed only)."""

    body_ax: float
    body_ay: float
    body_p: float
    body_offset: np.ndarray        # (2,) in units of the free margin, within [-0.3, 0.3]
    fat_ant: float
    fat_lat: float
    fat_post: float
    fat_harm: np.ndarray           # (3, 2) amplitude, phase for orders 3..5
    muscle_ant: float
    muscle_lat: float
    back: float
    lv_offset: np.ndarray          # (2,) mm from the cavity centre
    heart_rot: float
    heart_shift_per_u: np.ndarray  # (2,) mm from base to apex
    r_endo: float
    wall: float
    endo_ellipticity: float
    epi_ellipticity: float
    shape_rot: float
    endo_harm: np.ndarray          # (3, 2) orders 2..4
    trab_harm: np.ndarray          # (5, 2) orders 7..11
    epi_harm: np.ndarray           # (2, 2) orders 2..3
    pm_angles: np.ndarray          # (2,)
    pm_radius: float
    rv_width: float
    rv_length: float
    rv_wall: float
    epi_fat: float
    epi_fat_harm: np.ndarray       # (3, 2) orders 2..4
    ef: float
    ef_rv: float
    heart_rate: float
    lv_length: float
    lung_jitter: np.ndarray        # (4,)
    lung_vessels: np.ndarray       # (2, 8, 3) rho, angle, radius
    liver_jitter: np.ndarray       # (3,)
    liver_vessels: np.ndarray      # (6, 3)
    spine_x: float
    vertebra_r: float
    aorta_r: float
    aorta_offset: np.ndarray       # (2,)
    rib_angles: np.ndarray         # (8,)
    relax_jitter: np.ndarray       # (n_relax, 2)
    pd_jitter: np.ndarray          # (K,)
    flip_jitter: float
    inflow: np.ndarray             # (3,) lv, rv, vessels
    phase_offset: float
    phase_poly: np.ndarray         # (5,)
    phase_poly_z: np.ndarray       # (5,)
    phase_bump: float


def _draw_subject(seed: int) -> _Subject:
    rng = np.random.default_rng([seed, 1])
    u = rng.uniform
    body_ax = u(140.0, 175.0)
    body_ay = body_ax * u(0.62, 0.78)
    fat_ant = u(6.0, 24.0)
    return _Subject(
        body_ax=body_ax, body_ay=body_ay, body_p=u(2.1, 2.6), body_offset=u(-0.3, 0.3, 2),
        fat_ant=fat_ant, fat_lat=fat_ant * u(1.0, 1.4), fat_post=fat_ant * u(0.8, 1.3),
        fat_harm=np.stack([u(0.0, 0.15, 3), u(0, 2 * np.pi, 3)], axis=1),
        muscle_ant=u(9.0, 15.0), muscle_lat=u(12.0, 20.0), back=u(45.0, 60.0),
        lv_offset=np.array([u(5.0, 25.0), u(-5.0, 12.0)]), heart_rot=u(0.35, 0.8),
        heart_shift_per_u=u(-6.0, 6.0, 2),
        r_endo=u(22.0, 28.0), wall=u(7.0, 10.0),
        endo_ellipticity=u(0.9, 1.0), epi_ellipticity=u(0.93, 1.0), shape_rot=u(0, np.pi),
        endo_harm=np.stack([u(0.0, 0.04, 3), u(0, 2 * np.pi, 3)], axis=1),
        trab_harm=np.stack([u(0.005, 0.02, 5), u(0, 2 * np.pi, 5)], axis=1),
        epi_harm=np.stack([u(0.0, 0.03, 2), u(0, 2 * np.pi, 2)], axis=1),
        pm_angles=np.array([u(-0.9, -0.4), u(1.4, 2.0)]), pm_radius=u(3.0, 4.5),
        rv_width=u(0.4, 0.65), rv_length=u(0.95, 1.15), rv_wall=u(3.0, 4.5),
        epi_fat=u(1.0, 3.0), epi_fat_harm=np.stack([u(0.3, 0.8, 3), u(0, 2 * np.pi, 3)], axis=1),
        ef=u(0.55, 0.70), ef_rv=u(0.45, 0.60), heart_rate=u(55.0, 85.0), lv_length=u(80.0, 100.0),
        lung_jitter=u(-1.0, 1.0, 4),
        lung_vessels=np.stack([np.sqrt(u(0, 1, (2, 8))) * 0.8, u(0, 2 * np.pi, (2, 8)),
                               u(1.0, 2.8, (2, 8))], axis=-1),
        liver_jitter=u(-1.0, 1.0, 3),
        liver_vessels=np.stack([np.sqrt(u(0, 1, 6)) * 0.7, u(0, 2 * np.pi, 6), u(2.0, 5.5, 6)], axis=-1),
        spine_x=u(-8.0, 8.0), vertebra_r=u(16.0, 20.0), aorta_r=u(10.0, 13.0),
        aorta_offset=np.array([u(18.0, 30.0), u(-32.0, -22.0)]),
        rib_angles=np.array([-2.6, -2.2, -1.9, -1.25, -0.95, -0.6, 0.0, np.pi]) + u(-0.1, 0.1, 8),
        relax_jitter=u(0.95, 1.05, (len(_RELAXATION), 2)), pd_jitter=u(0.92, 1.08, _N_TISSUES),
        flip_jitter=u(-8.0, 8.0), inflow=np.array([u(1.2, 1.45), u(1.1, 1.35), u(1.0, 1.3)]),
        phase_offset=u(-np.pi, np.pi), phase_poly=rng.normal(0.0, [0.5, 0.5, 0.3, 0.3, 0.3]),
        phase_poly_z=rng.normal(0.0, 0.2, 5), phase_bump=u(0.3, 0.8),
    )


@dataclass
class _Geometry:
    nx: int
    ny: int
    nx_enc: int
    pixel: float
    body_center: np.ndarray    # (2,) x, y in mm, image coordinates (y down = posterior)
    slice_u: np.ndarray        # (S,) 0 = base ... 1 = apex
    slice_z: np.ndarray        # (S,) mm along the stack axis
    slice_thickness: float

    @property
    def x(self) -> np.ndarray:
        return ((np.arange(self.nx) - self.nx // 2) * self.pixel).astype(np.float32)

    @property
    def y(self) -> np.ndarray:
        return ((np.arange(self.ny) - self.ny // 2) * self.pixel).astype(np.float32)

    @property
    def x_enc(self) -> np.ndarray:
        return ((np.arange(self.nx_enc) - self.nx_enc // 2) * self.pixel).astype(np.float32)


def _make_geometry(subject: _Subject, n_slices: int, matrix: tuple[int, int], oversampling: int) -> _Geometry:
    nx, ny = matrix
    pixel = max(2.0 * subject.body_ax * 1.1 / nx, 2.0 * subject.body_ay * 1.15 / ny)
    margin = np.array([nx * pixel / 2.0 - subject.body_ax, ny * pixel / 2.0 - subject.body_ay])
    if n_slices == 1:
        slice_u = np.array([0.4])
        spacing = 10.0
    else:
        slice_u = np.linspace(0.08, 0.88, n_slices)
        spacing = 0.8 * subject.lv_length / (n_slices - 1)
    slice_z = (np.arange(n_slices) - (n_slices - 1) / 2.0) * spacing
    return _Geometry(nx=nx, ny=ny, nx_enc=nx * oversampling, pixel=float(pixel),
                     body_center=subject.body_offset * margin, slice_u=slice_u, slice_z=slice_z,
                     slice_thickness=float(min(8.0, spacing)))


# --------------------------------------------------------------------------------------------
# Drawing: anti-aliased shapes painted as tissue fractions
# --------------------------------------------------------------------------------------------

_Scalar = float | np.ndarray  # a number, or an array broadcasting with the grid


def _shape_sd(x: np.ndarray, y: np.ndarray, cx: _Scalar, cy: _Scalar, a: _Scalar, b: _Scalar, rot: float = 0.0,
              p: float = 2.0, harmonics: tuple[tuple[int, _Scalar, float], ...] = ()) -> np.ndarray:
    """Radial signed distance (mm, < 0 inside) to a (super-)ellipse with harmonic wobble.

    ``harmonics``: (order, amplitude, phase) triples; the radius is multiplied by
    ``1 + sum(amplitude * cos(order * angle + phase))``. Parameters broadcast with x and y.
    """
    dx = x - cx
    dy = y - cy
    cos_r, sin_r = np.cos(rot), np.sin(rot)
    u = dx * cos_r + dy * sin_r
    v = dy * cos_r - dx * sin_r
    rho = np.hypot(u, v)
    safe = np.where(rho > 0, rho, 1.0)
    cos_phi, sin_phi = np.where(rho > 0, u / safe, 1.0), v / safe
    if p == 2.0:
        radius = 1.0 / np.sqrt((cos_phi / a) ** 2 + (sin_phi / b) ** 2)
    else:
        radius = (np.abs(cos_phi / a) ** p + np.abs(sin_phi / b) ** p) ** (-1.0 / p)
    if harmonics:
        phi = np.arctan2(v, u)
        wobble = 1.0
        for order, amp, phase in harmonics:
            wobble = wobble + amp * np.cos(order * phi + phase)
        radius = radius * wobble
    return rho - radius


class _Canvas:
    """Tissue fractions ``(..., K, h, w)`` on a grid of pixel centres ``x (w,)``, ``y (h,)``."""

    def __init__(self, x: np.ndarray, y: np.ndarray, pixel: float, fractions: np.ndarray | None = None):
        self.x, self.y, self.pixel = x, y, pixel
        if fractions is None:
            fractions = np.zeros((_N_TISSUES, len(y), len(x)), np.float32)
            fractions[_K["air"]] = 1.0
        self.fractions = fractions

    def box(self, cx: float, cy: float, radius: float) -> tuple[slice, slice] | None:
        """Index window covering the disc (cx, cy, radius) plus the edge ramp, or None."""
        step, pad = self.pixel, radius + 2 * self.pixel
        x0, y0 = float(self.x[0]), float(self.y[0])
        i0 = max(0, int(math.floor((cy - pad - y0) / step)))
        i1 = min(len(self.y), int(math.ceil((cy + pad - y0) / step)) + 1)
        j0 = max(0, int(math.floor((cx - pad - x0) / step)))
        j1 = min(len(self.x), int(math.ceil((cx + pad - x0) / step)) + 1)
        if i0 >= i1 or j0 >= j1:
            return None
        return slice(i0, i1), slice(j0, j1)

    def coverage(self, sd: np.ndarray) -> np.ndarray:
        return np.clip(_SOFT_EDGE - sd / (2 * _SOFT_EDGE * self.pixel), 0.0, 1.0).astype(np.float32)

    def mask(self, **shape: _Scalar) -> np.ndarray:
        """Coverage of a shape on the whole canvas (for intersections)."""
        return self.coverage(_shape_sd(self.x[None, :], self.y[:, None], **shape))

    def paint(self, tissue: str, window: tuple[slice, slice] | None, within: np.ndarray | None = None,
              **shape: _Scalar) -> None:
        """Paint ``shape`` (see _shape_sd) with ``tissue`` over what is there, inside ``window``."""
        if window is None:
            return
        ys, xs = window
        m = self.coverage(_shape_sd(self.x[xs][None, :], self.y[ys][:, None], **shape))
        if within is not None:
            m = np.minimum(m, within[ys, xs])
        region = self.fractions[..., ys, xs]
        region *= (1.0 - m)[..., None, :, :]
        region[..., _K[tissue], :, :] += m

    def paint_shape(self, tissue: str, within: np.ndarray | None = None, **shape: _Scalar) -> None:
        """Paint a shape, windowed to its bounding disc."""
        a, b = np.max(shape["a"]), np.max(shape["b"])
        wobble = 1.0 + sum(abs(float(np.max(h[1]))) for h in shape.get("harmonics", ()))
        window = self.box(float(shape["cx"]), float(shape["cy"]), float(max(a, b) * wobble * 1.42))
        self.paint(tissue, window, within, **shape)


def _harm(orders: tuple[int, ...], table: np.ndarray, scale: _Scalar = 1.0) -> tuple[tuple[int, _Scalar, float], ...]:
    return tuple((order, amp * scale, phase) for order, (amp, phase) in zip(orders, table))


def _contraction(phase: np.ndarray, es_fraction: float) -> np.ndarray:
    """Contraction state c in [0, 1] at fractions ``phase`` of the RR interval (0 = ED, 1 = ES)."""
    t = np.mod(phase, 1.0)
    systole = 0.5 * (1.0 - np.cos(np.pi * np.clip(t / es_fraction, 0.0, 1.0)))
    s = np.clip((t - es_fraction) / (1.0 - es_fraction), 0.0, 1.0)
    early = 1.0 - 0.85 * 0.5 * (1.0 - np.cos(np.pi * np.clip(s / 0.35, 0.0, 1.0)))
    diastasis = 0.15 - 0.03 * np.clip((s - 0.35) / 0.43, 0.0, 1.0)
    atrial = 0.12 * 0.5 * (1.0 + np.cos(np.pi * np.clip((s - 0.78) / 0.22, 0.0, 1.0)))
    diastole = np.where(s < 0.35, early, np.where(s < 0.78, diastasis, atrial))
    return np.where(t < es_fraction, systole, diastole)


def _es_fraction(subject: _Subject) -> float:
    rr = 60000.0 / subject.heart_rate
    return (0.2 * rr + 140.0) / rr


@dataclass
class _SliceAnatomy:
    static: np.ndarray                 # (K, ny, nx) fractions without the heart
    window: tuple[slice, slice]        # heart window into (ny, nx)
    heart: np.ndarray                  # (T, K, h, w) fractions in the window, per frame
    cavity_center: np.ndarray          # (2,) mm
    lv_center: np.ndarray              # (2,) mm at end-diastole
    r_epi: float                       # mm, end-diastole

    def full(self) -> np.ndarray:
        """(T, K, ny, nx) fractions per frame."""
        out = np.repeat(self.static[None], self.heart.shape[0], axis=0)
        out[:, :, self.window[0], self.window[1]] = self.heart
        return out


def _render_slice(subject: _Subject, geom: _Geometry, slice_index: int, contraction: np.ndarray) -> _SliceAnatomy:
    """Tissue fractions of one slice; the heart is drawn per frame at ``contraction (T,)``."""
    s = subject
    u_pos = float(geom.slice_u[slice_index])
    canvas = _Canvas(geom.x, geom.y, geom.pixel)
    bx, by = geom.body_center
    p = s.body_p
    # Torso: fat, then muscle under a fat layer of varying thickness, then the thoracic cavity.
    canvas.paint_shape("fat", cx=bx, cy=by, a=s.body_ax, b=s.body_ay, p=p)
    canvas.paint_shape("muscle", cx=bx, cy=by + (s.fat_ant - s.fat_post) / 2, a=s.body_ax - s.fat_lat,
                       b=s.body_ay - (s.fat_ant + s.fat_post) / 2, p=p, harmonics=_harm((3, 4, 5), s.fat_harm, 0.08))
    top = by - s.body_ay + s.fat_ant + s.muscle_ant
    bottom = by + s.body_ay - s.fat_post - s.back
    cav = dict(cx=bx, cy=(top + bottom) / 2, a=s.body_ax - s.fat_lat - s.muscle_lat, b=(bottom - top) / 2, p=2.2)
    cavity = canvas.mask(**cav)
    canvas.paint_shape("soft", **cav)
    ccx, ccy, cax, cay = cav["cx"], cav["cy"], cav["a"], cav["b"]
    # Lungs (image left = patient right), shrinking towards the apex, with small vessels.
    lung_scale = 1.0 - 0.18 * u_pos
    lungs = []
    for side, (jx, jy) in zip((-1.0, 1.0), s.lung_jitter.reshape(2, 2)):
        lung = dict(cx=ccx + side * cax * (0.5 + 0.04 * jx), cy=ccy - 0.05 * cay + 0.05 * cay * jy,
                    a=cax * 0.5 * lung_scale, b=cay * 0.95 * lung_scale, p=2.3)
        lungs.append(lung)
        canvas.paint_shape("lung", within=cavity, **lung)
    for lung, vessels in zip(lungs, s.lung_vessels):
        lung_mask = canvas.mask(**lung) * cavity
        for rho, angle, radius in vessels:
            vx = lung["cx"] + rho * lung["a"] * math.cos(angle)
            vy = lung["cy"] + rho * lung["b"] * math.sin(angle)
            canvas.paint_shape("vessel_blood", within=lung_mask, cx=vx, cy=vy, a=radius, b=radius)
    # Liver (image bottom left), growing towards the apex, with vessels; spleen at the apex.
    liver_scale = 0.35 + 0.75 * u_pos
    liver = dict(cx=ccx - cax * (0.3 + 0.05 * s.liver_jitter[0]), cy=ccy + cay * (0.75 - 0.25 * u_pos + 0.05 * s.liver_jitter[1]),
                 a=cax * 0.62 * liver_scale, b=cay * 0.62 * liver_scale * (1 + 0.1 * s.liver_jitter[2]), rot=0.3, p=2.0)
    canvas.paint_shape("liver", within=cavity, **liver)
    liver_mask = canvas.mask(**liver) * cavity
    for rho, angle, radius in s.liver_vessels:
        vx = liver["cx"] + rho * liver["a"] * math.cos(angle)
        vy = liver["cy"] + rho * liver["b"] * math.sin(angle)
        canvas.paint_shape("vessel_blood", within=liver_mask, cx=vx, cy=vy, a=radius * liver_scale, b=radius * liver_scale)
    spleen_scale = float(np.clip((u_pos - 0.35) / 0.5, 0.0, 1.0))
    if spleen_scale > 0:
        canvas.paint_shape("spleen", within=cavity, cx=ccx + cax * 0.6, cy=ccy + cay * 0.65,
                           a=cax * 0.3 * spleen_scale, b=cay * 0.35 * spleen_scale, rot=-0.5)
    # Spine: vertebral body (cortex + marrow), canal with CSF, spinous process; aorta beside it.
    vx, vy, vr = bx + s.spine_x, bottom + 0.3 * s.vertebra_r, s.vertebra_r
    canvas.paint_shape("bone", cx=vx, cy=vy, a=vr, b=vr * 0.9)
    canvas.paint_shape("marrow", cx=vx, cy=vy, a=vr - 2.2, b=vr * 0.9 - 2.2)
    canal_y = vy + vr * 0.9 + 9.0
    canvas.paint_shape("bone", cx=vx, cy=canal_y, a=13.0, b=12.0)
    canvas.paint_shape("csf", cx=vx, cy=canal_y, a=7.5, b=7.0)
    canvas.paint_shape("marrow", cx=vx, cy=canal_y + 18.0, a=3.0, b=7.0)
    canvas.paint_shape("vessel_blood", cx=vx + s.aorta_offset[0], cy=vy + s.aorta_offset[1], a=s.aorta_r, b=s.aorta_r)
    # Ribs along the cavity wall and the sternum.
    for angle in s.rib_angles + 0.25 * (u_pos - 0.5):
        ca, sa = math.cos(angle), math.sin(angle)
        r_wall = (abs(ca / cax) ** 2.2 + abs(sa / cay) ** 2.2) ** (-1 / 2.2)
        rx, ry = ccx + (r_wall + 4.0) * ca, ccy + (r_wall + 4.0) * sa
        canvas.paint_shape("bone", cx=rx, cy=ry, a=4.5, b=8.0, rot=angle)
        canvas.paint_shape("marrow", cx=rx, cy=ry, a=2.8, b=6.2, rot=angle)
    canvas.paint_shape("bone", cx=ccx, cy=top - 5.0, a=14.0, b=6.0)
    canvas.paint_shape("marrow", cx=ccx, cy=top - 5.0, a=12.0, b=4.2)

    # Heart, per frame, in a window around the LV.
    size = math.sqrt(max(0.0, 1.0 - (max(0.0, u_pos - 0.3) / 0.7) ** 2))
    size = 0.3 + 0.7 * size if u_pos > 0.3 else 1.0
    r_endo_ed = s.r_endo * size
    wall_ed = s.wall * (0.8 + 0.2 * size)
    r_epi_ed = r_endo_ed + wall_ed
    rv_size = math.sqrt(max(0.0, 1.0 - (u_pos / 0.85) ** 2))
    lvx = ccx + s.lv_offset[0] + s.heart_shift_per_u[0] * u_pos
    lvy = ccy + s.lv_offset[1] + s.heart_shift_per_u[1] * u_pos
    rot = s.heart_rot
    radius = 1.75 * r_epi_ed + 1.3 * s.rv_wall + 4.0 * s.epi_fat + 3.0 * geom.pixel
    window = canvas.box(lvx, lvy, radius)
    if window is None:  # cannot happen: the heart is inside the body, which is inside the FOV
        raise RuntimeError("phantom heart lies outside the field of view")
    ys, xs = window
    c = np.asarray(contraction, np.float32).reshape(-1, 1, 1)
    heart = _Canvas(geom.x[xs], geom.y[ys], geom.pixel,
                    np.repeat(canvas.fractions[None, :, ys, xs], c.shape[0], axis=0))
    full = (slice(None), slice(None))
    cx = lvx + 1.5 * c
    cy = lvy + 2.0 * c
    r_endo = r_endo_ed * np.sqrt(1.0 - s.ef * c)
    r_epi = np.sqrt(r_endo ** 2 + (r_epi_ed ** 2 - r_endo_ed ** 2) * (1.0 + 0.12 * c))
    # RV crescent: free wall moves towards the septum, septal edge inside the LV.
    rv_w = s.rv_width * r_epi_ed * rv_size * (1.0 - s.ef_rv * c)
    rv_ax = (rv_w + 1.1 * r_epi) / 2.0
    rv_ay = s.rv_length * r_epi * (0.4 + 0.6 * rv_size) * (1.0 - 0.12 * c)
    rv_local_x = 0.1 * r_epi - rv_ax
    rv_local_y = -0.1 * r_epi
    rv_cx = cx + rv_local_x * math.cos(rot) - rv_local_y * math.sin(rot)
    rv_cy = cy + rv_local_x * math.sin(rot) + rv_local_y * math.cos(rot)
    rv_wall = s.rv_wall * (1.0 + 0.3 * c)
    # Epicardial fat: outer border moves half as much as the epicardium.
    fat_lv = r_epi + s.epi_fat * 0.6 + 0.5 * (r_epi_ed - r_epi)
    fat_h = _harm((2, 3, 4), s.epi_fat_harm, s.epi_fat / max(r_epi_ed, 1.0))
    heart.paint("fat", full, cx=cx, cy=cy, a=fat_lv, b=fat_lv, harmonics=fat_h)
    has_rv = rv_size > 0.05
    if has_rv:
        rv_ax_ed = (s.rv_width * r_epi_ed * rv_size + 1.1 * r_epi_ed) / 2.0
        fat_rv = s.epi_fat * 1.5 + 0.5 * (rv_ax_ed - rv_ax)
        heart.paint("fat", full, cx=rv_cx, cy=rv_cy, a=rv_ax + rv_wall + fat_rv, b=rv_ay + rv_wall + fat_rv, rot=rot,
                    harmonics=fat_h)
        heart.paint("myocardium", full, cx=rv_cx, cy=rv_cy, a=rv_ax + rv_wall, b=rv_ay + rv_wall, rot=rot)
        heart.paint("rv_blood", full, cx=rv_cx, cy=rv_cy, a=rv_ax, b=rv_ay, rot=rot)
    heart.paint("myocardium", full, cx=cx, cy=cy, a=r_epi, b=r_epi * s.epi_ellipticity, rot=s.shape_rot,
                harmonics=_harm((2, 3), s.epi_harm))
    trab = _harm((7, 8, 9, 10, 11), s.trab_harm, (1.0 - c) * size)
    heart.paint("lv_blood", full, cx=cx, cy=cy, a=r_endo, b=r_endo * s.endo_ellipticity, rot=s.shape_rot,
                harmonics=_harm((2, 3, 4), s.endo_harm) + trab)
    pm_scale = math.exp(-(((u_pos - 0.5) / 0.28) ** 2))
    pm_r = s.pm_radius * pm_scale * size
    if pm_r > 0.3 * geom.pixel:
        for angle in s.pm_angles + rot:
            rho = r_endo - 0.7 * pm_r
            heart.paint("myocardium", full, cx=cx + rho * math.cos(angle), cy=cy + rho * math.sin(angle), a=pm_r, b=pm_r)
    return _SliceAnatomy(static=canvas.fractions, window=window, heart=heart.fractions,
                         cavity_center=np.array([ccx, ccy]), lv_center=np.array([lvx, lvy]), r_epi=r_epi_ed)


# --------------------------------------------------------------------------------------------
# Signal
# --------------------------------------------------------------------------------------------

def _relaxation(subject: _Subject, field_strength_t: float) -> dict[str, tuple[float, float]]:
    """(T1, T2) in ms per tissue at ``field_strength_t`` (power law through 1.5 T and 3 T)."""
    b = min(max(field_strength_t, 0.35), 7.0)
    exponent = math.log(b / 1.5) / math.log(2.0)
    out = {}
    for (name, ((t1a, t2a), (t1b, t2b))), (j1, j2) in zip(_RELAXATION.items(), subject.relax_jitter):
        out[name] = (t1a * (t1b / t1a) ** exponent * j1, t2a * (t2b / t2a) ** exponent * j2)
    return out


def _tissue_relaxation_arrays(subject: _Subject, field_strength_t: float) -> tuple[np.ndarray, np.ndarray]:
    relax = _relaxation(subject, field_strength_t)
    t1 = np.ones(_N_TISSUES)
    t2 = np.ones(_N_TISSUES)
    for k, name in enumerate(TISSUES):
        key = "blood" if name.endswith("blood") else name
        if key in relax:
            t1[k], t2[k] = relax[key]
    return t1, t2


def _signal_weights(subject: _Subject, key: str, frame_times: np.ndarray, field_strength_t: float) -> np.ndarray:
    """(T, K) signal of each tissue per frame before texture and phase."""
    t1, t2 = _tissue_relaxation_arrays(subject, field_strength_t)
    pd = np.array([_PROTON_DENSITY[name] for name in TISSUES]) * subject.pd_jitter
    if key == "cine":
        flip = math.radians((50.0 if field_strength_t >= 2.0 else 65.0) + subject.flip_jitter)
        ratio = t1 / t2
        ssfp = math.sin(flip) / ((ratio + 1.0) - math.cos(flip) * (ratio - 1.0))
        inflow = np.ones(_N_TISSUES)
        inflow[[_K["lv_blood"], _K["rv_blood"], _K["vessel_blood"]]] = subject.inflow
        return np.repeat((pd * ssfp * inflow)[None], len(frame_times), axis=0)
    t = np.asarray(frame_times, np.float64)[:, None]
    if key == "t1map":
        return pd * (1.0 - 2.0 * np.exp(-t / t1))
    return pd * np.exp(-t / t2)


def _smooth_fields(rng: np.random.Generator, n: int, ny: int, nx: int, pixel: float, corr_mm: float) -> np.ndarray:
    """(n, ny, nx) smooth random fields, zero mean, unit std, correlation length ``corr_mm``."""
    noise = rng.standard_normal((n, ny, nx))
    ky = np.fft.fftfreq(ny, d=pixel)[:, None]
    kx = np.fft.rfftfreq(nx, d=pixel)[None, :]
    filt = np.exp(-0.5 * (2 * np.pi * corr_mm) ** 2 * (ky ** 2 + kx ** 2) / 4.0)
    fields = np.fft.irfft2(np.fft.rfft2(noise) * filt, s=(ny, nx))
    fields -= fields.mean(axis=(-2, -1), keepdims=True)
    std = fields.std(axis=(-2, -1), keepdims=True)
    return fields / np.where(std > 1e-12, std, 1.0)


def _textures(rng: np.random.Generator, geom: _Geometry) -> np.ndarray:
    """(K, ny, nx) float32 multiplicative texture per tissue, global intensity variation included."""
    ny, nx, pix = geom.ny, geom.nx, geom.pixel
    low = _smooth_fields(rng, _N_TISSUES, ny, nx, pix, 25.0)
    fine = _smooth_fields(rng, 1, ny, nx, pix, 3.0)[0]
    overall = 1.0 + 0.06 * _smooth_fields(rng, 1, ny, nx, pix, 80.0)[0]
    amp = np.array([_TEXTURE[name] for name in TISSUES])
    tex = 1.0 + amp[:, 0, None, None] * low + amp[:, 1, None, None] * fine
    return (np.clip(tex, 0.2, None) * overall).astype(np.float32)


def _phase_map(subject: _Subject, geom: _Geometry, slice_index: int, anatomy: _SliceAnatomy) -> np.ndarray:
    """(ny, nx) smooth B0-like phase in radians."""
    xn = geom.x[None, :] / (geom.nx * geom.pixel / 2)
    yn = geom.y[:, None] / (geom.ny * geom.pixel / 2)
    coeffs = subject.phase_poly + subject.phase_poly_z * geom.slice_z[slice_index] / 50.0
    phase = subject.phase_offset + coeffs[0] * xn + coeffs[1] * yn + coeffs[2] * xn ** 2 \
        + coeffs[3] * yn ** 2 + coeffs[4] * xn * yn
    direction = subject.heart_rot
    bump_x = anatomy.lv_center[0] + (anatomy.r_epi + 8.0) * math.cos(direction)
    bump_y = anatomy.lv_center[1] + (anatomy.r_epi + 8.0) * math.sin(direction)
    dist2 = (geom.x[None, :] - bump_x) ** 2 + (geom.y[:, None] - bump_y) ** 2
    return (phase + subject.phase_bump * np.exp(-dist2 / (2 * 20.0 ** 2))).astype(np.float32)


def _frame_times(subject: _Subject, key: str, n_frames: int) -> np.ndarray:
    rr = 60000.0 / subject.heart_rate
    if key == "cine":
        return np.arange(n_frames) * rr / n_frames
    if key == "t1map":
        # MOLLI-like: 5 images after the first inversion, then groups of 3, TI shifted by 80 ms.
        times = []
        group, remaining = 0, n_frames
        while remaining > 0:
            count = min(5 if group == 0 else 3, remaining)
            times += [100.0 + 80.0 * group + k * rr for k in range(count)]
            remaining -= count
            group += 1
        return np.sort(np.array(times))
    if n_frames == 3:
        return np.array([0.0, 35.0, 55.0])  # CMRxRecon T2 mapping T2-prep durations
    return np.linspace(0.0, 80.0, n_frames) if n_frames > 1 else np.array([0.0])


def _frame_contraction(subject: _Subject, key: str, frame_times: np.ndarray) -> np.ndarray:
    if key != "cine":
        return np.full(len(frame_times), _MID_DIASTOLE)
    rr = 60000.0 / subject.heart_rate
    return _contraction(np.asarray(frame_times) / rr, _es_fraction(subject))


# --------------------------------------------------------------------------------------------
# Coils
# --------------------------------------------------------------------------------------------

def _array_grid(n: int) -> list[tuple[int, int, int]]:
    """(row, column, columns in that row) for ``n`` coils in rows along the stack axis."""
    rows = 1 if n < 4 else (2 if n <= 12 else 3)
    cols = math.ceil(n / rows)
    out = []
    for i in range(n):
        row = i // cols
        in_row = min(cols, n - row * cols)
        out.append((row, i % cols, in_row))
    return out


def _coil_layout(subject: _Subject, geom: _Geometry, n_coils: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loop centres (C, 3), unit normals (C, 3) and radii (C,) in mm (x, y, z)."""
    n_ant = math.ceil(n_coils / 2)
    n_post = n_coils - n_ant
    bx, by = geom.body_center
    ax, ay, p = subject.body_ax, subject.body_ay, subject.body_p
    centres, normals, radii = [], [], []
    rows_ant = max(r for r, _, _ in _array_grid(n_ant)) + 1
    cols_ant = math.ceil(n_ant / rows_ant)
    spread = 2.4  # rad of the anterior arc
    r_ant = float(np.clip(0.7 * spread / max(cols_ant, 1) * 0.5 * (ax + ay) if cols_ant > 1 else 0.4 * ax, 50.0, 110.0))
    for row, col, in_row in _array_grid(n_ant):
        angle = -np.pi / 2 + spread * ((col + 0.5) / in_row - 0.5) if in_row > 1 else -np.pi / 2
        ca, sa = math.cos(angle), math.sin(angle)
        r = (abs(ca / ax) ** p + abs(sa / ay) ** p) ** (-1 / p)
        px, py = r * ca, r * sa
        normal = np.array([px / ax ** 2, py / ay ** 2, 0.0])
        normal /= np.linalg.norm(normal)
        z = (row - (rows_ant - 1) / 2) * 1.7 * r_ant
        centres.append(np.array([bx + px, by + py, z]) + 20.0 * normal)
        normals.append(normal)
        radii.append(r_ant)
    if n_post:
        rows_post = max(r for r, _, _ in _array_grid(n_post)) + 1
        cols_post = math.ceil(n_post / rows_post)
        r_post = float(np.clip(0.7 * 1.3 * ax / cols_post, 50.0, 110.0))
        for row, col, in_row in _array_grid(n_post):
            x = bx + 1.3 * ax * ((col + 0.5) / in_row - 0.5)
            z = (row - (rows_post - 1) / 2) * 1.7 * r_post
            centres.append(np.array([x, by + ay + 25.0, z]))
            normals.append(np.array([0.0, 1.0, 0.0]))
            radii.append(r_post)
    return np.array(centres), np.array(normals), np.array(radii)


def _biot_savart(points: np.ndarray, centre: np.ndarray, normal: np.ndarray, radius: float,
                 n_segments: int = 24, softening: float = 15.0) -> np.ndarray:
    """Field (N, 3) of a unit-current circular loop at ``points (N, 3)`` (mm, arbitrary units).

    Sum over straight segments of dl x r / |r|^3, the kernel softened by ``softening`` mm so the
    field stays finite at the wire.
    """
    helper = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(normal, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    phi = (np.arange(n_segments) + 0.5) * 2 * np.pi / n_segments
    mid = centre + radius * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)      # (Ns, 3)
    dl = radius * 2 * np.pi / n_segments * (-np.sin(phi)[:, None] * e1 + np.cos(phi)[:, None] * e2)
    rx = points[:, 0, None] - mid[None, :, 0]                                            # (N, Ns)
    ry = points[:, 1, None] - mid[None, :, 1]
    rz = points[:, 2, None] - mid[None, :, 2]
    inv = (rx * rx + ry * ry + rz * rz + softening ** 2) ** -1.5
    field = np.stack([
        ((dl[:, 1] * rz - dl[:, 2] * ry) * inv).sum(axis=1),
        ((dl[:, 2] * rx - dl[:, 0] * rz) * inv).sum(axis=1),
        ((dl[:, 0] * ry - dl[:, 1] * rx) * inv).sum(axis=1),
    ], axis=1)
    return field * 1000.0


def _interp_axis(values: np.ndarray, coarse: np.ndarray, fine: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``values`` sampled at ``coarse`` (ascending) to ``fine`` along ``axis``."""
    if len(coarse) == len(fine) and np.allclose(coarse, fine):
        return values
    idx = np.clip(np.searchsorted(coarse, fine) - 1, 0, len(coarse) - 2)
    t = np.clip((fine - coarse[idx]) / (coarse[idx + 1] - coarse[idx]), 0.0, 1.0).astype(np.float32)
    shape = [1] * values.ndim
    shape[axis] = len(fine)
    t = t.reshape(shape)
    return values.take(idx, axis=axis) * (1.0 - t) + values.take(idx + 1, axis=axis) * t


def _coarse_axis(fine: np.ndarray, step: float = 10.0) -> np.ndarray:
    n = int(math.ceil((fine[-1] - fine[0]) / step)) + 1
    if n >= len(fine):
        return fine.astype(np.float64)
    return np.linspace(float(fine[0]), float(fine[-1]), max(n, 2))


def _coil_sensitivities(subject: _Subject, geom: _Geometry, n_coils: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivities (S, C, ny, nx_enc) complex64 and noise correlation (C, C) (mean diagonal 1).

    Evaluated on a coarse grid (10 mm) and interpolated linearly: the fields are smooth on the
    scale of the loops.
    """
    rng = np.random.default_rng([seed, 3, n_coils])
    centres, normals, radii = _coil_layout(subject, geom, n_coils)
    cy = _coarse_axis(geom.y)
    cx = _coarse_axis(geom.x_enc)
    yy, xx = np.meshgrid(cy, cx, indexing="ij")
    n_slices = len(geom.slice_z)
    shape = (n_slices,) + xx.shape
    points = np.stack([np.broadcast_to(xx, shape), np.broadcast_to(yy, shape),
                       np.broadcast_to(geom.slice_z[:, None, None], shape)], axis=-1).reshape(-1, 3)
    cable = np.exp(1j * rng.uniform(-np.pi, np.pi, n_coils))
    coarse = np.empty((n_coils, points.shape[0]), np.complex128)
    for c in range(n_coils):
        field = _biot_savart(points, centres[c], normals[c], radii[c])
        coarse[c] = (field[:, 0] - 1j * field[:, 1]) * cable[c]
    coarse = coarse.reshape(n_coils, n_slices, len(cy), len(cx)).transpose(1, 0, 2, 3)
    # Body mask on the coarse grid: noise correlation proxy and normalisation.
    bx, by = geom.body_center
    inside = (np.abs((xx - bx) / subject.body_ax) ** subject.body_p
              + np.abs((yy - by) / subject.body_ay) ** subject.body_p) < 1.0
    body = coarse[:, :, inside]                                                 # (S, C, Nb)
    scale = np.sqrt((np.abs(body) ** 2).sum(axis=1)).mean()
    coarse = (coarse / scale).astype(np.complex64)
    flat = body.transpose(1, 0, 2).reshape(n_coils, -1) / scale
    sample = flat @ flat.conj().T / flat.shape[1]
    sample /= np.real(np.diag(sample)).mean()
    receiver = np.diag(rng.uniform(0.7, 1.3, n_coils))
    correlation = 0.75 * sample + 0.25 * receiver
    correlation /= np.real(np.diag(correlation)).mean()
    sens = _interp_axis(coarse, cx, geom.x_enc.astype(np.float64), axis=3)
    sens = _interp_axis(sens, cy, geom.y.astype(np.float64), axis=2)
    return np.ascontiguousarray(sens, dtype=np.complex64), correlation


def _fft_modulations(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """(pre, post) (ny, nx) complex64 with fft2c(x) = post * fft2(pre * x, norm="ortho").

    The centred transform without the two index shifts: for n0 = n // 2,
    fftshift(fft(ifftshift(x)))[k] = exp(-2 pi i n0^2 / n) exp(2 pi i n0 k / n) fft(x exp(2 pi i n0 m / n))[k].
    """
    def one(n: int) -> tuple[np.ndarray, np.ndarray]:
        n0, k = n // 2, np.arange(n)
        pre = np.exp(2j * np.pi * ((k * n0) % n) / n)
        post = pre * np.exp(-2j * np.pi * ((n0 * n0) % n) / n)
        return pre, post

    pre_y, post_y = one(ny)
    pre_x, post_x = one(nx)
    return np.outer(pre_y, pre_x).astype(np.complex64), np.outer(post_y, post_x).astype(np.complex64)


def _correlated_noise(rng: np.random.Generator, covariance: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Complex Gaussian noise ``(C, *shape)`` complex64 with E[n n^H] = covariance."""
    n_coils = covariance.shape[0]
    size = int(np.prod(shape))
    if not np.any(covariance):
        return np.zeros((n_coils,) + shape, np.complex64)
    chol = np.linalg.cholesky(covariance.astype(np.complex128)).astype(np.complex64)
    white = np.empty((n_coils, size), np.complex64)
    white.real = rng.standard_normal((n_coils, size), dtype=np.float32)
    white.imag = rng.standard_normal((n_coils, size), dtype=np.float32)
    white *= np.float32(math.sqrt(0.5))
    return (chol @ white).reshape((n_coils,) + shape)


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
                          modality=_CONTEXT_MODALITY[key], view="short-axis", acceleration=1.0, pattern="full")

    start = time.perf_counter()
    subject = _draw_subject(seed)
    geom = _make_geometry(subject, n_slices, (nx, ny), readout_oversampling)
    frame_times = _frame_times(subject, key, n_frames)
    contraction = _frame_contraction(subject, key, frame_times)
    weights = _signal_weights(subject, key, frame_times, float(field_strength_t)).astype(np.float32)
    texture_rng = np.random.default_rng([seed, 2])
    images = np.empty((n_slices, n_frames, ny, nx), np.complex64)
    for s in range(n_slices):
        anatomy = _render_slice(subject, geom, s, contraction)
        tex = _textures(texture_rng, geom)
        magnitude = np.einsum("tk,kyx->tyx", weights, anatomy.static * tex)
        ys, xs = anatomy.window
        magnitude[:, ys, xs] = np.einsum("tk,tkyx->tyx", weights, anatomy.heart * tex[:, ys, xs])
        images[s] = magnitude * np.exp(1j * _phase_map(subject, geom, s, anatomy))[None]
    images /= np.abs(images).max()
    t_anatomy = time.perf_counter() - start

    sens, correlation = _coil_sensitivities(subject, geom, n_coils, seed)
    covariance = (correlation * noise_level ** 2).astype(np.complex64)
    covariance = (0.5 * (covariance + covariance.conj().T)).astype(np.complex64)
    t_coils = time.perf_counter() - start - t_anatomy

    # k-space = fft2c(sens * object) (cardiomm_core.fft.fft2c, computed as post * fft2(pre * x)
    # to skip the index shifts) + noise; torch for the FFT and the noise (multi-threaded).
    kspace = np.empty((n_slices, n_coils, n_frames, ny, geom.nx_enc), np.complex64)
    pre, post = (torch.from_numpy(m) for m in _fft_modulations(ny, geom.nx_enc))
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
    for key, name in _CONTEXT_MODALITY.items():
        if name == modality:
            return key
    raise ValueError(f"scan.context.modality {modality!r} is not a phantom modality")


def _scan_model(scan: PhantomScan) -> tuple[_Subject, _Geometry, str]:
    if not isinstance(scan, PhantomScan):
        raise ValueError(f"scan must be a PhantomScan, got {type(scan).__name__}")
    if scan.images.ndim != 4:
        raise ValueError(f"scan.images must have 4 dimensions (slices, frames, y, x), got {scan.images.shape}")
    n_slices, _, ny, nx = scan.images.shape
    subject = _draw_subject(scan.seed)
    return subject, _make_geometry(subject, n_slices, (nx, ny), scan.readout_oversampling), _scan_key(scan)


def phantom_geometry(scan: PhantomScan) -> PhantomGeometry:
    """Physical geometry (pixel size, FOVs, slice positions) of a scan from simulate_cardiac_scan."""
    _, geom, _ = _scan_model(scan)
    return PhantomGeometry(pixel_spacing_mm=geom.pixel, recon_fov_mm=(geom.nx * geom.pixel, geom.ny * geom.pixel),
                           encoded_fov_mm=(geom.nx_enc * geom.pixel, geom.ny * geom.pixel),
                           slice_thickness_mm=geom.slice_thickness, slice_positions_mm=geom.slice_z.copy())


def tissue_fractions(scan: PhantomScan) -> dict[str, np.ndarray]:
    """Partial-volume fraction of each tissue in TISSUES: ``{name: (S, T, y, x) float32}``.

    Re-renders the anatomy of the scan's subject (meant for checks on small scans). The
    fractions sum to 1 in every pixel.
    """
    subject, geom, key = _scan_model(scan)
    contraction = _frame_contraction(subject, key, scan.frame_times_ms)
    per_slice = [_render_slice(subject, geom, s, contraction).full() for s in range(len(geom.slice_u))]
    stacked = np.stack(per_slice)                                       # (S, T, K, y, x)
    return {name: stacked[:, :, k] for k, name in enumerate(TISSUES)}


def tissue_relaxation(scan: PhantomScan) -> dict[str, tuple[float, float]]:
    """(T1 ms, T2 ms) of each tissue of the scan's subject at its field strength."""
    subject, _, _ = _scan_model(scan)
    t1, t2 = _tissue_relaxation_arrays(subject, scan.context.field_strength_t)
    return {name: (float(t1[k]), float(t2[k])) for k, name in enumerate(TISSUES) if name != "air"}


def lv_blood_pool_areas(scan: PhantomScan) -> np.ndarray:
    """LV blood-pool area (papillary muscles excluded) per slice and frame: ``(S, T)`` in mm^2."""
    subject, geom, key = _scan_model(scan)
    contraction = _frame_contraction(subject, key, scan.frame_times_ms)
    areas = np.empty((len(geom.slice_u), len(contraction)))
    k = _K["lv_blood"]
    for s in range(len(geom.slice_u)):
        heart = _render_slice(subject, geom, s, contraction).heart
        areas[s] = heart[:, k].sum(axis=(-2, -1), dtype=np.float64) * geom.pixel ** 2
    return areas


def cardiac_phase_volumes(scan: PhantomScan) -> np.ndarray:
    """LV blood-pool volume per frame ``(T,)`` in mL: slice areas times slice spacing (Simpson)."""
    _, geom, _ = _scan_model(scan)
    spacing = float(geom.slice_z[1] - geom.slice_z[0]) if len(geom.slice_z) > 1 else geom.slice_thickness
    return lv_blood_pool_areas(scan).sum(axis=0) * spacing / 1000.0


def ejection_fraction(volumes: np.ndarray) -> float:
    """(max - min) / max of a volume (or area) curve ``(T,)``."""
    volumes = np.asarray(volumes, np.float64)
    if volumes.ndim != 1 or volumes.size < 2 or volumes.max() <= 0:
        raise ValueError(f"volumes must be a positive curve of shape (frames >= 2,), got shape {volumes.shape}")
    return float((volumes.max() - volumes.min()) / volumes.max())
