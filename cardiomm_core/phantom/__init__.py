"""Synthetic multi-coil 2D+t cardiac MR scans (short-axis cine, T1 and T2 mapping).

Modules: ``anatomy`` (subject, geometry, tissue drawing), ``signal`` (relaxation and sequence
physics), ``coil_physics`` (sensitivities, noise), ``scan`` (``simulate_cardiac_scan`` and the
containers).

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

from .anatomy import TISSUES
from .scan import (
    CONTEXT_MODALITY,
    PhantomGeometry,
    PhantomScan,
    noise_free_rss,
    phantom_geometry,
    simulate_cardiac_scan,
)

__all__ = [
    "CONTEXT_MODALITY",
    "TISSUES",
    "PhantomGeometry",
    "PhantomScan",
    "noise_free_rss",
    "phantom_geometry",
    "simulate_cardiac_scan",
]
