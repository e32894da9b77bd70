"""The phantom's signal physics: tissue T1/T2 at the field strength, the sequence weighting of
cine (bSSFP), T1 mapping (inversion recovery) and T2 mapping (T2 preparation), frame timing and
contraction, textures and the B0-like phase."""

from __future__ import annotations

import math

import numpy as np

from .anatomy import (
    MID_DIASTOLE,
    N_TISSUES,
    RELAXATION,
    TISSUE_INDEX,
    TISSUES,
    ScanGeometry,
    SliceAnatomy,
    Subject,
    contraction_curve,
    subject_es_fraction,
)

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


# --------------------------------------------------------------------------------------------
# Signal
# --------------------------------------------------------------------------------------------

def _relaxation(subject: Subject, field_strength_t: float) -> dict[str, tuple[float, float]]:
    """(T1, T2) in ms per tissue at ``field_strength_t`` (power law through 1.5 T and 3 T)."""
    b = min(max(field_strength_t, 0.35), 7.0)
    exponent = math.log(b / 1.5) / math.log(2.0)
    out = {}
    for (name, ((t1a, t2a), (t1b, t2b))), (j1, j2) in zip(RELAXATION.items(), subject.relax_jitter):
        out[name] = (t1a * (t1b / t1a) ** exponent * j1, t2a * (t2b / t2a) ** exponent * j2)
    return out


def tissue_relaxation_arrays(subject: Subject, field_strength_t: float) -> tuple[np.ndarray, np.ndarray]:
    relax = _relaxation(subject, field_strength_t)
    t1 = np.ones(N_TISSUES)
    t2 = np.ones(N_TISSUES)
    for k, name in enumerate(TISSUES):
        key = "blood" if name.endswith("blood") else name
        if key in relax:
            t1[k], t2[k] = relax[key]
    return t1, t2


def signal_weights(subject: Subject, key: str, frame_times: np.ndarray, field_strength_t: float) -> np.ndarray:
    """(T, K) signal of each tissue per frame before texture and phase."""
    t1, t2 = tissue_relaxation_arrays(subject, field_strength_t)
    pd = np.array([_PROTON_DENSITY[name] for name in TISSUES]) * subject.pd_jitter
    if key == "cine":
        flip = math.radians((50.0 if field_strength_t >= 2.0 else 65.0) + subject.flip_jitter)
        ratio = t1 / t2
        ssfp = math.sin(flip) / ((ratio + 1.0) - math.cos(flip) * (ratio - 1.0))
        inflow = np.ones(N_TISSUES)
        inflow[[TISSUE_INDEX["lv_blood"], TISSUE_INDEX["rv_blood"], TISSUE_INDEX["vessel_blood"]]] = subject.inflow
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


def textures(rng: np.random.Generator, geom: ScanGeometry) -> np.ndarray:
    """(K, ny, nx) float32 multiplicative texture per tissue, global intensity variation included."""
    ny, nx, pix = geom.ny, geom.nx, geom.pixel
    low = _smooth_fields(rng, N_TISSUES, ny, nx, pix, 25.0)
    fine = _smooth_fields(rng, 1, ny, nx, pix, 3.0)[0]
    overall = 1.0 + 0.06 * _smooth_fields(rng, 1, ny, nx, pix, 80.0)[0]
    amp = np.array([_TEXTURE[name] for name in TISSUES])
    tex = 1.0 + amp[:, 0, None, None] * low + amp[:, 1, None, None] * fine
    return (np.clip(tex, 0.2, None) * overall).astype(np.float32)


def phase_map(subject: Subject, geom: ScanGeometry, slice_index: int, anatomy: SliceAnatomy) -> np.ndarray:
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


def frame_timing(subject: Subject, key: str, n_frames: int) -> np.ndarray:
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


def frame_contraction(subject: Subject, key: str, frame_times: np.ndarray) -> np.ndarray:
    if key != "cine":
        return np.full(len(frame_times), MID_DIASTOLE)
    rr = 60000.0 / subject.heart_rate
    return contraction_curve(np.asarray(frame_times) / rr, subject_es_fraction(subject))
