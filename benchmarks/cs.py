"""Compressed sensing with spatio-temporal sparsity, through sigpy's own solver (issue 14's CS peer).

    min_x  1/2 || M F S x - y ||_2^2  +  lamda_wavelet || W x ||_1  +  lamda_tv || D_t x ||_1

``x (T, y, x)`` complex images of one slice, ``S`` the coil sensitivities, ``F`` the centred
orthonormal 2D FFT, ``M`` the sampling mask, ``W`` a Daubechies-4 wavelet over (y, x) of each
frame (L1-wavelet in space) and ``D_t`` the circular finite difference along the frames
(temporal total variation: cine is periodic; for mapping the frames are the contrast
weightings). Solved by ``sigpy.app.LinearLeastSquares`` with ``G = [W; D_t]`` and ``proxg`` the
stacked L1 proximal operators, which runs sigpy's primal-dual hybrid gradient (Chambolle-Pock)
with step sizes from a power iteration. No solver code here: only the operators and the call.

Why sigpy: it installs here (0.1.27, pure Python over numpy/scipy, with numba and PyWavelets;
it imports with numpy 2.4 on Python 3.11 and with numpy 1.26 on Python 3.10), is maintained by
the group that wrote the MRI apps it ships, and its operators follow the same centred
orthonormal FFT convention as ``cardiomm_core.fft`` (checked in tests/benchmarks). BART's Python
binding needs the BART binaries built from source. numba costs an llvmlite wheel of about 60 MB
and a first-call compilation of sigpy's kernels of a few seconds per process.

Sensitivities: ``cardiomm_core.coils.estimate_sensitivities`` chosen and thresholded as the
project's CG-SENSE fallback chooses them (``cardiomm_core.conventional.conventional_recon``: the
time-averaged calibration for kt patterns, the ACS block otherwise, maps zeroed below 2 % of the
low-resolution RSS). The data are scaled to a unit 99th percentile of the zero-filled RSS
(``cardiomm_core.engine.normalisation_scale``) before the solve and back after it, so the
regularisation weights do not depend on the scanner's intensity. The weights are tuned on a
separate tuning seed by ``benchmarks/cs_tuning.py`` (``benchmarks/results/cs_tuning.json``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["CSSettings", "TUNING_FILE", "cs_recon", "load_tuned_settings"]

#: Where the tuning script writes the chosen weights.
TUNING_FILE = Path(__file__).resolve().parent / "results" / "cs_tuning.json"


@dataclass(frozen=True)
class CSSettings:
    """Regularisation weights (in the normalised intensity) and the iteration budget."""

    lamda_wavelet: float = 0.003
    lamda_tv: float = 0.01
    max_iter: int = 60
    wave_name: str = "db4"

    def to_dict(self) -> dict[str, Any]:
        return {"lamda_wavelet": self.lamda_wavelet, "lamda_tv": self.lamda_tv, "max_iter": self.max_iter,
                "wave_name": self.wave_name}


def load_tuned_settings(path: str | Path | None = None) -> tuple[CSSettings, str]:
    """(settings, where they come from): the tuning file's choice, or the defaults when there is none."""
    path = Path(path) if path is not None else TUNING_FILE
    if not path.is_file():
        return CSSettings(), "defaults (no tuning file)"
    data = json.loads(path.read_text(encoding="utf-8"))
    best = data["best"]
    return (CSSettings(float(best["lamda_wavelet"]), float(best["lamda_tv"]), int(best["max_iter"]),
                       str(best.get("wave_name", "db4"))),
            f"{path.name} (tuned on seed {data.get('seed')})")


def _sensitivities(kspace: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """``kspace (1, C, T, ky, kx)``, ``mask (1, 1, T, ky, kx|1)`` -> maps ``(C, 1, y, x)`` complex64,
    as the CG-SENSE fallback estimates them."""
    from cardiomm_core.conventional import conventional_recon

    sens = conventional_recon(kspace, mask, method="zero_filled").sens  # the fallback's own maps (sens_method auto)
    return sens[0].numpy().astype(np.complex64)


def cs_recon(kspace: np.ndarray | torch.Tensor, mask: np.ndarray | torch.Tensor,
             settings: CSSettings | None = None) -> np.ndarray:
    """L1-wavelet + temporal-TV reconstruction of one slice.

    ``kspace (C, T, ky, kx)`` complex (zeros where unsampled), ``mask (T, ky, kx|1)`` real or
    bool -> images ``(T, y, x)`` complex64 in the input's intensity. Raises ValueError for wrong
    shapes, ImportError (with the install line) when sigpy is missing.
    """
    try:
        import sigpy as sp
    except ImportError as error:  # pragma: no cover - the bench extra installs it
        raise ImportError("the CS peer needs sigpy: pip install 'sigpy>=0.1.27' (or the project's bench extra)") \
            from error
    from cardiomm_core.engine import normalisation_scale

    settings = settings or CSSettings()
    k = torch.as_tensor(np.asarray(kspace)).to(torch.complex64)
    m = torch.as_tensor(np.asarray(mask)).to(torch.float32)
    if k.ndim != 4:
        raise ValueError(f"kspace must be (coils, frames, ky, kx), got shape {tuple(k.shape)}")
    n_c, n_t, n_ky, n_kx = k.shape
    if m.ndim != 3 or m.shape[0] != n_t or m.shape[1] != n_ky or m.shape[2] not in (1, n_kx):
        raise ValueError(f"mask must be ({n_t}, {n_ky}, 1|{n_kx}), got shape {tuple(m.shape)}")
    k5, m5 = k[None], (m != 0).to(torch.float32)[None, None]
    k5 = k5 * m5
    scale = float(normalisation_scale(k5, m5)[0])
    sens = _sensitivities(k5, m5)                                          # (C, 1, y, x)
    y = (k5[0] * scale).numpy().astype(np.complex64)                       # (C, T, ky, kx)
    weights = m5[0].numpy().astype(np.float32)                             # (1, T, ky, kx|1)

    shape = (n_t, n_ky, n_kx)
    S = sp.linop.Multiply(shape, sens)                                     # (T,y,x) -> (C,T,y,x)
    F = sp.linop.FFT(S.oshape, axes=(-2, -1), center=True)                 # centred orthonormal
    M = sp.linop.Multiply(F.oshape, weights)
    A = M * F * S
    W = sp.linop.Wavelet(shape, axes=(-2, -1), wave_name=settings.wave_name)
    D = sp.linop.FiniteDifference(shape, axes=(0,))
    G = sp.linop.Vstack([W, D])
    proxg = sp.prox.Stack([sp.prox.L1Reg(W.oshape, settings.lamda_wavelet),
                           sp.prox.L1Reg(D.oshape, settings.lamda_tv)])
    app = sp.app.LinearLeastSquares(A, y, proxg=proxg, G=G, max_iter=settings.max_iter, show_pbar=False)
    x = app.run()
    return (np.asarray(x) / scale).astype(np.complex64)
