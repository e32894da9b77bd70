"""The phantom's anatomy: one subject's random draws (``draw_subject``), the scan geometry
(``make_geometry``) and the anti-aliased drawing of the tissues as partial-volume fractions
(``render_slice``); see the package docstring for what is drawn."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Tissue classes of the phantom, in the order of the fraction maps.
TISSUES: tuple[str, ...] = (
    "air", "fat", "muscle", "soft", "lung", "liver", "spleen", "bone", "marrow", "csf",
    "myocardium", "lv_blood", "rv_blood", "vessel_blood",
)
TISSUE_INDEX = {name: index for index, name in enumerate(TISSUES)}
N_TISSUES = len(TISSUES)

#: Relaxation times (T1 ms, T2 ms) at 1.5 T and 3 T; blood classes share "blood".
RELAXATION = {
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

#: Contraction state of the static anatomy of mapping scans (mid-diastole, diastasis).
MID_DIASTOLE = 0.13
_SOFT_EDGE = 0.5  # half-width of the partial-volume ramp, in pixels

# --------------------------------------------------------------------------------------------
# Subject and geometry
# --------------------------------------------------------------------------------------------

@dataclass
class Subject:
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


def draw_subject(seed: int) -> Subject:
    rng = np.random.default_rng([seed, 1])
    u = rng.uniform
    body_ax = u(140.0, 175.0)
    body_ay = body_ax * u(0.62, 0.78)
    fat_ant = u(6.0, 24.0)
    return Subject(
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
        relax_jitter=u(0.95, 1.05, (len(RELAXATION), 2)), pd_jitter=u(0.92, 1.08, N_TISSUES),
        flip_jitter=u(-8.0, 8.0), inflow=np.array([u(1.2, 1.45), u(1.1, 1.35), u(1.0, 1.3)]),
        phase_offset=u(-np.pi, np.pi), phase_poly=rng.normal(0.0, [0.5, 0.5, 0.3, 0.3, 0.3]),
        phase_poly_z=rng.normal(0.0, 0.2, 5), phase_bump=u(0.3, 0.8),
    )


@dataclass
class ScanGeometry:
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


def slice_fractions(n_slices: int) -> np.ndarray:
    """Where the slices of an ``n_slices`` stack cut the left ventricle, as fractions of its length
    (0 = base, 1 = apex): one slice is mid-ventricular (0.4), a stack spans 0.08 (base) to 0.88."""
    return np.array([0.4]) if n_slices == 1 else np.linspace(0.08, 0.88, n_slices)


def make_geometry(subject: Subject, n_slices: int, matrix: tuple[int, int], oversampling: int) -> ScanGeometry:
    nx, ny = matrix
    pixel = max(2.0 * subject.body_ax * 1.1 / nx, 2.0 * subject.body_ay * 1.15 / ny)
    margin = np.array([nx * pixel / 2.0 - subject.body_ax, ny * pixel / 2.0 - subject.body_ay])
    slice_u = slice_fractions(n_slices)
    spacing = 10.0 if n_slices == 1 else 0.8 * subject.lv_length / (n_slices - 1)
    slice_z = (np.arange(n_slices) - (n_slices - 1) / 2.0) * spacing
    return ScanGeometry(nx=nx, ny=ny, nx_enc=nx * oversampling, pixel=float(pixel),
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
            fractions = np.zeros((N_TISSUES, len(y), len(x)), np.float32)
            fractions[TISSUE_INDEX["air"]] = 1.0
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

    def mask(self, **shape: Any) -> np.ndarray:
        """Coverage of a shape on the whole canvas (for intersections)."""
        return self.coverage(_shape_sd(self.x[None, :], self.y[:, None], **shape))

    def paint(self, tissue: str, window: tuple[slice, slice] | None, within: np.ndarray | None = None,
              **shape: Any) -> None:
        """Paint ``shape`` (see _shape_sd) with ``tissue`` over what is there, inside ``window``."""
        if window is None:
            return
        ys, xs = window
        m = self.coverage(_shape_sd(self.x[xs][None, :], self.y[ys][:, None], **shape))
        if within is not None:
            m = np.minimum(m, within[ys, xs])
        region = self.fractions[..., ys, xs]
        region *= (1.0 - m)[..., None, :, :]
        region[..., TISSUE_INDEX[tissue], :, :] += m

    def paint_shape(self, tissue: str, within: np.ndarray | None = None, **shape: Any) -> None:
        """Paint a shape, windowed to its bounding disc."""
        a, b = np.max(shape["a"]), np.max(shape["b"])
        wobble = 1.0 + sum(abs(float(np.max(h[1]))) for h in shape.get("harmonics", ()))
        window = self.box(float(shape["cx"]), float(shape["cy"]), float(max(a, b) * wobble * 1.42))
        self.paint(tissue, window, within, **shape)


def _harm(orders: tuple[int, ...], table: np.ndarray, scale: _Scalar = 1.0) -> tuple[tuple[int, _Scalar, float], ...]:
    return tuple((order, amp * scale, phase) for order, (amp, phase) in zip(orders, table))


def contraction_curve(phase: np.ndarray, es_fraction: float) -> np.ndarray:
    """Contraction state c in [0, 1] at fractions ``phase`` of the RR interval (0 = ED, 1 = ES)."""
    t = np.mod(phase, 1.0)
    systole = 0.5 * (1.0 - np.cos(np.pi * np.clip(t / es_fraction, 0.0, 1.0)))
    s = np.clip((t - es_fraction) / (1.0 - es_fraction), 0.0, 1.0)
    early = 1.0 - 0.85 * 0.5 * (1.0 - np.cos(np.pi * np.clip(s / 0.35, 0.0, 1.0)))
    diastasis = 0.15 - 0.03 * np.clip((s - 0.35) / 0.43, 0.0, 1.0)
    atrial = 0.12 * 0.5 * (1.0 + np.cos(np.pi * np.clip((s - 0.78) / 0.22, 0.0, 1.0)))
    diastole = np.where(s < 0.35, early, np.where(s < 0.78, diastasis, atrial))
    return np.where(t < es_fraction, systole, diastole)


def subject_es_fraction(subject: Subject) -> float:
    rr = 60000.0 / subject.heart_rate
    return (0.2 * rr + 140.0) / rr


@dataclass
class SliceAnatomy:
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


def render_slice(subject: Subject, geom: ScanGeometry, slice_index: int, contraction: np.ndarray) -> SliceAnatomy:
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
    return SliceAnatomy(static=canvas.fractions, window=window, heart=heart.fractions,
                         cavity_center=np.array([ccx, ccy]), lv_center=np.array([lvx, lvy]), r_epi=r_epi_ed)
