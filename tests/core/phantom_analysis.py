"""Analysis of phantom scans for the tests: tissue fractions and relaxation, LV blood-pool areas,
volumes and ejection fraction (re-rendered from the scan's subject; meant for small scans)."""

from __future__ import annotations

import numpy as np

from cardiomm_core.phantom.anatomy import TISSUE_INDEX, TISSUES, render_slice
from cardiomm_core.phantom.scan import PhantomScan, scan_model
from cardiomm_core.phantom.signal import frame_contraction, tissue_relaxation_arrays


def tissue_fractions(scan: PhantomScan) -> dict[str, np.ndarray]:
    """Partial-volume fraction of each tissue in TISSUES: ``{name: (S, T, y, x) float32}``.

    Re-renders the anatomy of the scan's subject (meant for checks on small scans). The
    fractions sum to 1 in every pixel.
    """
    subject, geom, key = scan_model(scan)
    contraction = frame_contraction(subject, key, scan.frame_times_ms)
    per_slice = [render_slice(subject, geom, s, contraction).full() for s in range(len(geom.slice_u))]
    stacked = np.stack(per_slice)                                       # (S, T, K, y, x)
    return {name: stacked[:, :, k] for k, name in enumerate(TISSUES)}


def tissue_relaxation(scan: PhantomScan) -> dict[str, tuple[float, float]]:
    """(T1 ms, T2 ms) of each tissue of the scan's subject at its field strength."""
    subject, _, _ = scan_model(scan)
    t1, t2 = tissue_relaxation_arrays(subject, scan.context.field_strength_t)
    return {name: (float(t1[k]), float(t2[k])) for k, name in enumerate(TISSUES) if name != "air"}


def lv_blood_pool_areas(scan: PhantomScan) -> np.ndarray:
    """LV blood-pool area (papillary muscles excluded) per slice and frame: ``(S, T)`` in mm^2."""
    subject, geom, key = scan_model(scan)
    contraction = frame_contraction(subject, key, scan.frame_times_ms)
    areas = np.empty((len(geom.slice_u), len(contraction)))
    k = TISSUE_INDEX["lv_blood"]
    for s in range(len(geom.slice_u)):
        heart = render_slice(subject, geom, s, contraction).heart
        areas[s] = heart[:, k].sum(axis=(-2, -1), dtype=np.float64) * geom.pixel ** 2
    return areas


def cardiac_phase_volumes(scan: PhantomScan) -> np.ndarray:
    """LV blood-pool volume per frame ``(T,)`` in mL: slice areas times slice spacing (Simpson)."""
    _, geom, _ = scan_model(scan)
    spacing = float(geom.slice_z[1] - geom.slice_z[0]) if len(geom.slice_z) > 1 else geom.slice_thickness
    return lv_blood_pool_areas(scan).sum(axis=0) * spacing / 1000.0


def ejection_fraction(volumes: np.ndarray) -> float:
    """(max - min) / max of a volume (or area) curve ``(T,)``."""
    volumes = np.asarray(volumes, np.float64)
    if volumes.ndim != 1 or volumes.size < 2 or volumes.max() <= 0:
        raise ValueError(f"volumes must be a positive curve of shape (frames >= 2,), got shape {volumes.shape}")
    return float((volumes.max() - volumes.min()) / volumes.max())
